"""bpf_lsm: detach semantics."""

from __future__ import annotations

import errno
import os
import time

import _bpf
import _klab
from _bpf import BpfError
from _klab import Failure, Skip, errname, expect_eq, kernel_version
from _worker import Worker, expect_eventually, expect_result

from bpf_lsm import suite
from bpf_lsm.common import (
    BPFFS,
    _skip_if_no_trampoline,
    attach,
    enforce,
    errno_of,
    hook_id,
    load,
    private_mount,
    require,
    tgid_prog,
)

test = suite.test


@suite.test
def closing_link_fd_detaches_prog_fd_does_not_hold() -> None:
    """Closing the link fd detaches at once even while the prog fd stays open; re-linking re-enforces."""
    require()
    with Worker() as target:
        prog, link = enforce("file_open", target.pid, -errno.EPERM)
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open while linked")
        os.close(link)
        expect_result(target.do("open", "/dev/null"), 0, "open after the link fd closed (prog fd still open)")
        link = attach(prog)
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open after linking the same prog again")
        os.close(prog)
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open after closing the prog fd (link holds it)")
        os.close(link)
        expect_result(target.do("open", "/dev/null"), 0, "open after the last link fd closed")


@suite.test
def link_detach_is_eopnotsupp() -> None:
    """BPF_LINK_DETACH on an LSM (tracing) link gives EOPNOTSUPP and leaves it enforcing."""
    require()
    with Worker() as target:
        prog, link = enforce("file_open", target.pid, -errno.EPERM)
        _klab.expect_errno(_bpf.link_detach(link), errno.EOPNOTSUPP, "BPF_LINK_DETACH on an LSM link")
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open after the refused BPF_LINK_DETACH")
        os.close(link)
        os.close(prog)


@suite.test
def raw_tracepoint_open_attaches_lsm() -> None:
    """BPF_RAW_TRACEPOINT_OPEN with a NULL name (the pre-LINK_CREATE way) attaches an LSM program too."""
    require()
    with Worker() as target:
        prog = load("file_open", tgid_prog(target.pid, -errno.EPERM))
        try:
            link = _bpf.raw_tracepoint_open(prog)
        except BpfError as exc:
            _skip_if_no_trampoline(exc)
            raise Failure(f"BPF_RAW_TRACEPOINT_OPEN of an LSM program: {exc}") from None
        expect_eq(_bpf.fd_kind(link), "link", "what BPF_RAW_TRACEPOINT_OPEN returned")
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open under a raw_tracepoint_open link")
        os.close(link)
        expect_result(target.do("open", "/dev/null"), 0, "open after closing that link")
        os.close(prog)


def bpffs_dir() -> str:
    """/sys/fs/bpf as a mounted bpffs: the machine's, or else one in the test's own mount namespace.

    A bpffs mounted for the test (common.private_mount) is a superblock of its
    own that nothing else sees: two tests mounting at once never hide each
    other's pins under a second mount, and the host is left as it was.
    """
    with open("/proc/self/mounts") as f:
        if any(line.split()[1:3] == [BPFFS, "bpf"] for line in f):
            return BPFFS
    err = private_mount("bpf", BPFFS)
    if err:
        raise Skip(f"no bpffs at {BPFFS} and mounting one failed: {errname(err)}")
    return BPFFS


def pin_path(tag: str) -> str:
    return os.path.join(bpffs_dir(), f"klab_bpf_lsm_{tag}_{os.getpid()}_{time.monotonic_ns()}")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@suite.test
def pinned_link_outlives_loader() -> None:
    """A pinned link keeps enforcing after the loader exited; unlinking the pin detaches it."""
    require()
    path = pin_path("link")
    try:
        with Worker() as target:

            def loader() -> int:
                _, link = enforce("file_open", target.pid, -errno.EPERM)
                _bpf.obj_pin(link, path)
                return 0  # exiting closes every fd it had

            expect_eq(_klab.in_child(loader), 0, "loader exit code")
            expect_result(target.do("open", "/dev/null"), errno.EPERM, "open after the loader exited (pin holds)")
            fd = _bpf.obj_get(path)
            expect_eq(_bpf.fd_kind(fd), "link", "BPF_OBJ_GET on the pinned link")
            expect_eq(_bpf.link_info(fd).type, _bpf.BPF_LINK_TYPE_TRACING, "bpf_link_info.type of the pinned link")
            os.close(fd)
            expect_result(target.do("open", "/dev/null"), errno.EPERM, "open after closing the BPF_OBJ_GET fd")
            os.unlink(path)
            # bpffs drops the pinned object's reference in ->free_inode, which runs
            # after an RCU grace period: detach on unlink is deferred, not immediate.
            expect_eventually(target, "open", "/dev/null", 0, "open after unlinking the pin")
    finally:
        _unlink_quietly(path)


@suite.test
def obj_get_pin_returns_link_info() -> None:
    """BPF_OBJ_GET on a pinned link gives a tracing link of our prog on the hook; a pinned prog alone never enforces."""
    require()
    link_path, prog_path = pin_path("info_link"), pin_path("info_prog")
    try:
        with Worker() as target:
            prog, link = enforce("file_open", target.pid, -errno.EPERM)
            prog_type, prog_id = _bpf.prog_info(prog)
            expect_eq(prog_type, _bpf.BPF_PROG_TYPE_LSM, "bpf_prog_info.type of the loaded prog")
            _bpf.obj_pin(link, link_path)
            _bpf.obj_pin(prog, prog_path)
            os.close(link)
            got = _bpf.obj_get(link_path)
            info = _bpf.link_info(got)
            expect_eq(_bpf.fd_kind(got), "link", "fdinfo kind of BPF_OBJ_GET(link pin)")
            expect_eq(info.type, _bpf.BPF_LINK_TYPE_TRACING, "bpf_link_info.type")
            expect_eq(info.prog_id, prog_id, "bpf_link_info.prog_id")
            expect_eq(info.attach_type, _bpf.BPF_LSM_MAC, "bpf_link_info.tracing.attach_type")
            # tracing.target_{obj,btf}_id are filled in from v6.0 on (older kernels leave them 0).
            if kernel_version() >= (6, 0) or info.target_btf_id:
                expect_eq(info.target_btf_id, hook_id("file_open"), "bpf_link_info.tracing.target_btf_id")
            os.close(got)
            os.unlink(link_path)  # the detach is RCU-deferred (bpffs ->free_inode)
            expect_eventually(target, "open", "/dev/null", 0, "open with only the prog pinned (no link)")
            pinned_prog = _bpf.obj_get(prog_path)
            expect_eq(_bpf.fd_kind(pinned_prog), "prog", "fdinfo kind of BPF_OBJ_GET(prog pin)")
            expect_eq(_bpf.prog_info(pinned_prog), (_bpf.BPF_PROG_TYPE_LSM, prog_id), "(type, id) of the pinned prog")
            os.close(pinned_prog)
            os.close(prog)
    finally:
        _unlink_quietly(link_path)
        _unlink_quietly(prog_path)


@suite.test
def attaching_a_linked_program_again_is_ebusy_and_relinking_works() -> None:
    """A linked LSM program cannot be linked a second time: EBUSY ("prog already linked"), both ways of attaching.

    The refusal changes nothing; once the link fd closes, a second full
    attach/detach cycle of the same program works (test_lsm.c attaches twice).
    """
    require()
    with Worker() as target:
        prog = load("file_open", tgid_prog(target.pid, -errno.EPERM))
        for cycle in ("first", "second"):
            link = attach(prog)
            expect_result(target.do("open", "/dev/null"), errno.EPERM, f"open while linked ({cycle} cycle)")
            expect_eq(errno_of(_bpf.link_create, prog), errno.EBUSY, f"BPF_LINK_CREATE of the linked prog ({cycle})")
            got = errno_of(_bpf.raw_tracepoint_open, prog)
            expect_eq(got, errno.EBUSY, f"BPF_RAW_TRACEPOINT_OPEN of the linked prog ({cycle} cycle)")
            expect_result(target.do("open", "/dev/null"), errno.EPERM, f"open after the refused attaches ({cycle})")
            os.close(link)
            expect_result(target.do("open", "/dev/null"), 0, f"open after the link closed ({cycle} cycle)")
        os.close(prog)
