"""bpf_lsm: BPF_LSM_CGROUP programs, attached to a cgroup instead of globally.

A BPF_LSM_CGROUP program returns 1 (allow) or 0 (deny: -EPERM, or the errno
it set with bpf_set_retval) and runs only for tasks of its cgroup and its
descendants: for file_open, the cgroup of the opening task. The tests build
a small cgroup2 tree of their own (mounting cgroup2 in a private mount
namespace when the guest has none), move workers in and out, and remove the
tree at the end; the harness never joins it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile
import time

import _bpf
import _klab
from _bpf import FN_GET_RETVAL, FN_SET_RETVAL, R0, R1, R6, Asm, BpfError
from _klab import Failure, Skip, errname, expect, expect_eq
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.common import errno_of, hook_id, require, store_into

test = suite.test

LSM_CGROUP = _bpf.BPF_LSM_CGROUP
MULTI = _bpf.BPF_F_ALLOW_MULTI
CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18


def _cgroup2_mount() -> str | None:
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return fields[1]
    return None


class CgroupTree:
    """A directory of cgroups of our own under the cgroup2 root; removed (and unmounted) on exit."""

    def __init__(self, *names: str) -> None:
        self.names = names
        self.mounted = ""
        self.created: list[str] = []
        self.fds: dict[str, int] = {}

    def __enter__(self) -> CgroupTree:
        root = _cgroup2_mount()
        if root is None:
            # A private mount namespace: the mount vanishes with the test process whatever happens.
            _klab.expect_errno(_klab.syscall("unshare", CLONE_NEWNS), 0, "unshare(CLONE_NEWNS)")
            if _klab.libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
                raise Failure(f"making / private: {errname(ctypes.get_errno())}")
            self.mounted = root = tempfile.mkdtemp(prefix="klab-cgroup2-")
            if _klab.libc.mount(b"cgroup2", root.encode(), b"cgroup2", 0, None) != 0:
                err = ctypes.get_errno()
                os.rmdir(root)
                raise Skip(f"cannot mount cgroup2 ({errname(err)}): kernel without CONFIG_CGROUPS?")
        self.base = os.path.join(root, f"klab-bpf-lsm-{os.getpid()}")
        for name in ("", *self.names):
            path = self.path(name)
            os.mkdir(path)
            self.created.append(path)
        return self

    def path(self, name: str) -> str:
        return os.path.join(self.base, name) if name else self.base

    def fd(self, name: str) -> int:
        if name not in self.fds:
            self.fds[name] = os.open(self.path(name), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self.fds[name]

    def move(self, pid: int, name: str | None) -> None:
        """Move a process into cgroup `name` (None: back to the cgroup2 root)."""
        where = self.path(name) if name is not None else os.path.dirname(self.base)
        with open(os.path.join(where, "cgroup.procs"), "w") as f:
            f.write(str(pid))

    def remove(self, name: str) -> None:
        if name in self.fds:
            os.close(self.fds.pop(name))
        os.rmdir(self.path(name))
        self.created.remove(self.path(name))

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds.values():
            os.close(fd)
        for path in reversed(self.created):
            try:
                os.rmdir(path)
            except OSError:
                pass
        if self.mounted:
            _klab.libc.umount2(self.mounted.encode(), 0)
            os.rmdir(self.mounted)


def cg_load(hook: str, asm: Asm) -> int:
    try:
        return _bpf.prog_load(asm.assemble(), hook_id(hook), attach_type=LSM_CGROUP)
    except BpfError as exc:
        raise Failure(f"loading a BPF_LSM_CGROUP {hook} program: {exc}") from None


def deny_prog(err: int = 0) -> Asm:
    """Deny: return 0 (-EPERM), or bpf_set_retval(-err) first for another errno."""
    asm = Asm()
    if err:
        asm.mov64(R1, imm=-err).call(FN_SET_RETVAL)
    return asm.ret(0)


def prog_id(fd: int) -> int:
    return _bpf.prog_info(fd)[1]


def attach(cgroup_fd: int, prog: int, flags: int = 0, replace: int = 0) -> None:
    try:
        _bpf.prog_attach(cgroup_fd, prog, LSM_CGROUP, flags, replace)
    except BpfError as exc:
        if exc.errno in (_bpf.ENOTSUPP, errno.EOPNOTSUPP) and _klab.MACHINE == "aarch64":
            raise Skip(f"no BPF trampoline on this arm64 kernel ({exc}): BPF_LSM_CGROUP needs one") from None
        raise Failure(f"BPF_PROG_ATTACH of a BPF_LSM_CGROUP program: {exc}") from None


def query(cgroup_fd: int, effective: bool = False) -> list[int]:
    return _bpf.prog_query(cgroup_fd, LSM_CGROUP, _bpf.BPF_F_QUERY_EFFECTIVE if effective else 0)


@suite.test
def cgroup_program_applies_to_its_cgroup_subtree_only() -> None:
    """A file_open BPF_LSM_CGROUP program on cgroup A denies tasks in A and below, not in B nor at the root.

    Membership is looked up at each call: a task moved from A to B is allowed
    at once, one moved into A is denied. BPF_PROG_DETACH lifts it.
    """
    require()
    with CgroupTree("a", "a/sub", "b") as tree, Worker() as in_a, Worker() as in_sub, Worker() as in_b, Worker() as out:
        for worker, name in ((in_a, "a"), (in_sub, "a/sub"), (in_b, "b")):
            tree.move(worker.pid, name)
        prog = cg_load("file_open", deny_prog())
        attach(tree.fd("a"), prog)
        for worker, where, want in (
            (in_a, "cgroup A", errno.EPERM),
            (in_sub, "A/sub (inherits A's programs)", errno.EPERM),
            (in_b, "cgroup B", 0),
            (out, "the cgroup2 root", 0),
        ):
            expect_result(worker.do("open", "/dev/null"), want, f"open by a task in {where}")
        tree.move(in_a.pid, "b")
        tree.move(in_b.pid, "a")
        expect_result(in_a.do("open", "/dev/null"), 0, "open by the task moved from A to B")
        expect_result(in_b.do("open", "/dev/null"), errno.EPERM, "open by the task moved from B to A")
        _bpf.prog_detach(tree.fd("a"), prog, LSM_CGROUP)
        expect_result(in_b.do("open", "/dev/null"), 0, "open in A after BPF_PROG_DETACH")
        expect_result(in_sub.do("open", "/dev/null"), 0, "open in A/sub after BPF_PROG_DETACH")
        for worker in (in_a, in_sub, in_b):
            tree.move(worker.pid, None)
        os.close(prog)


@suite.test
def cgroup_prog_query_counts_attached_and_effective() -> None:
    """BPF_PROG_QUERY(BPF_LSM_CGROUP) lists a cgroup's programs over all hooks; EFFECTIVE adds the inherited ones."""
    require("file_mprotect")
    with CgroupTree("a", "a/sub", "b") as tree:
        progs = [
            cg_load("file_open", deny_prog()),
            cg_load("file_open", deny_prog()),
            cg_load("file_mprotect", deny_prog()),
        ]
        ids = [prog_id(p) for p in progs]
        expect_eq(query(tree.fd("a")), [], "programs attached to A before any attach")
        for prog in progs:
            attach(tree.fd("a"), prog, MULTI)
        expect_eq(sorted(query(tree.fd("a"))), sorted(ids), "ids attached to A (two file_open, one file_mprotect)")
        expect_eq(sorted(query(tree.fd("a"), effective=True)), sorted(ids), "ids effective in A")
        expect_eq(query(tree.fd("a/sub")), [], "ids attached to A/sub itself")
        expect_eq(sorted(query(tree.fd("a/sub"), effective=True)), sorted(ids), "ids effective in A/sub (inherited)")
        expect_eq((query(tree.fd("b")), query(tree.fd("b"), effective=True)), ([], []), "(attached, effective) in B")
        _bpf.prog_detach(tree.fd("a"), progs[1], LSM_CGROUP)
        expect_eq(sorted(query(tree.fd("a"))), sorted([ids[0], ids[2]]), "ids attached to A after one detach")
        got = errno_of(_bpf.prog_detach, tree.fd("a"), progs[1], LSM_CGROUP)
        expect_eq(got, errno.ENOENT, "BPF_PROG_DETACH of a program no longer attached")
        for prog in progs:
            if prog != progs[1]:
                _bpf.prog_detach(tree.fd("a"), prog, LSM_CGROUP)
            os.close(prog)
        expect_eq(query(tree.fd("a/sub"), effective=True), [], "ids effective in A/sub after every detach")


@suite.test
def cgroup_replace_and_link_update_swap_the_program() -> None:
    """BPF_F_REPLACE and BPF_LINK_UPDATE swap a program in place: the verdict changes, the count does not.

    Replacing a program that is not attached is ENOENT, BPF_F_REPLACE without
    BPF_F_ALLOW_MULTI EINVAL; a link update naming the wrong old program is
    EPERM and changes nothing. Closing the last link fd detaches.
    """
    require()
    with CgroupTree("a") as tree, Worker() as target:
        tree.move(target.pid, "a")
        cg = tree.fd("a")
        eperm = cg_load("file_open", deny_prog())
        enokey = cg_load("file_open", deny_prog(errno.ENOKEY))
        spare = cg_load("file_open", deny_prog(errno.EACCES))
        attach(cg, eperm, MULTI)
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open under the -EPERM program")
        attach(cg, enokey, MULTI | _bpf.BPF_F_REPLACE, replace=eperm)
        expect_result(target.do("open", "/dev/null"), errno.ENOKEY, "open after BPF_F_REPLACE with the -ENOKEY one")
        expect_eq(query(cg), [prog_id(enokey)], "ids attached after the replace")
        got = errno_of(_bpf.prog_attach, cg, spare, LSM_CGROUP, MULTI | _bpf.BPF_F_REPLACE, eperm)
        expect_eq(got, errno.ENOENT, "BPF_F_REPLACE of a program that is no longer attached")
        got = errno_of(_bpf.prog_attach, cg, spare, LSM_CGROUP, _bpf.BPF_F_REPLACE, enokey)
        expect_eq(got, errno.EINVAL, "BPF_F_REPLACE without BPF_F_ALLOW_MULTI")
        _bpf.prog_detach(cg, enokey, LSM_CGROUP)
        expect_result(target.do("open", "/dev/null"), 0, "open after BPF_PROG_DETACH")
        link = _bpf.link_create(eperm, LSM_CGROUP, cg)
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open under a link to the -EPERM program")
        _bpf.link_update(link, enokey, eperm)
        expect_result(target.do("open", "/dev/null"), errno.ENOKEY, "open after BPF_LINK_UPDATE to -ENOKEY")
        expect_eq(query(cg), [prog_id(enokey)], "ids attached after the link update")
        expect_eq(errno_of(_bpf.link_update, link, spare, eperm), errno.EPERM, "BPF_LINK_UPDATE naming the wrong old")
        expect_result(target.do("open", "/dev/null"), errno.ENOKEY, "open after the refused link update")
        _bpf.link_update(link, spare)
        expect_result(target.do("open", "/dev/null"), errno.EACCES, "open after BPF_LINK_UPDATE without BPF_F_REPLACE")
        os.close(link)
        expect_result(target.do("open", "/dev/null"), 0, "open after the link fd closed")
        tree.move(target.pid, None)
        for fd in (eperm, enokey, spare):
            os.close(fd)


def _eventually(check, what: str, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Poll `check()` (returns a description of what is still wrong, or '') until it is satisfied."""
    deadline = time.monotonic() + timeout
    while (wrong := check()) and time.monotonic() < deadline:
        time.sleep(0.01)
    if wrong:
        raise Failure(f"{what} (polled {timeout:.0f}s): {wrong}")


@suite.test
def cgroup_removal_detaches_its_programs() -> None:
    """Removing a cgroup detaches what was attached to it: its link goes defunct (cgroup_id 0, updates ENOLINK)
    and a program attached with BPF_PROG_ATTACH whose fd was closed is freed.

    The release runs from a workqueue after the cgroup's last reference: it is polled for, not awaited.
    """
    require()
    with CgroupTree("gone") as tree:
        cgroup_id = os.stat(tree.path("gone")).st_ino
        legacy, linked = cg_load("file_open", deny_prog()), cg_load("file_open", deny_prog(errno.ENOKEY))
        legacy_id = prog_id(legacy)
        attach(tree.fd("gone"), legacy, MULTI)
        os.close(legacy)  # from now on the cgroup holds the only reference
        link = _bpf.link_create(linked, LSM_CGROUP, tree.fd("gone"))
        link_type, link_prog, link_cgroup, link_attach = _bpf.cgroup_link_info(link)
        expect_eq(
            (link_type, link_prog, link_cgroup, link_attach),
            (_bpf.BPF_LINK_TYPE_CGROUP, prog_id(linked), cgroup_id, LSM_CGROUP),
            "(type, prog_id, cgroup_id, attach_type) of the link",
        )
        expect_eq(sorted(query(tree.fd("gone"))), sorted([legacy_id, prog_id(linked)]), "ids attached before rmdir")
        tree.remove("gone")

        def released() -> str:
            cg_id = _bpf.cgroup_link_info(link)[2]
            legacy_gone = errno_of(_bpf.prog_get_fd_by_id, legacy_id)
            if (cg_id, legacy_gone) == (0, errno.ENOENT):
                return ""
            return (
                f"link cgroup_id {cg_id} (want 0), BPF_PROG_GET_FD_BY_ID of the attached prog: {errname(legacy_gone)}"
            )

        _eventually(released, "after rmdir of the cgroup")
        expect_eq(errno_of(_bpf.link_update, link, linked), errno.ENOLINK, "BPF_LINK_UPDATE of the defunct link")
        os.close(link)
        os.close(linked)


def _retval_prog(counters: _bpf.Counters) -> Asm:
    """Allow (1) after recording bpf_get_retval(): the verdict of the programs before it."""
    asm = Asm().call(FN_GET_RETVAL).mov64(R6, R0)
    store_into(asm, counters, 0, R6)
    return asm.ret(1)


@suite.test
def cgroup_later_allow_does_not_override_earlier_deny() -> None:
    """In a cgroup's list (run in attach order) a later program sees the earlier verdict in bpf_get_retval()
    and its allow (1) does not undo the denial."""
    require()
    counters = _bpf.Counters(1)
    with CgroupTree("a") as tree, Worker() as target:
        tree.move(target.pid, "a")
        cg = tree.fd("a")
        recorder = cg_load("file_open", _retval_prog(counters))
        attach(cg, recorder, MULTI)
        expect_result(target.do("open", "/dev/null"), 0, "open with only the recording (allowing) program")
        expect_eq(counters[0], 0, "bpf_get_retval() with no program before it")
        _bpf.prog_detach(cg, recorder, LSM_CGROUP)
        for err, deny in ((errno.EPERM, deny_prog()), (errno.ENOKEY, deny_prog(errno.ENOKEY))):
            first = cg_load("file_open", deny)
            attach(cg, first, MULTI)
            attach(cg, recorder, MULTI)
            expect_result(target.do("open", "/dev/null"), err, f"open: a -{errname(err)} program, then one allowing")
            expect_eq(counters[0], (-err) & ((1 << 64) - 1), "bpf_get_retval() in the second program")
            for prog in (first, recorder):
                _bpf.prog_detach(cg, prog, LSM_CGROUP)
            os.close(first)
        expect(query(cg) == [], f"programs left on the cgroup: {query(cg)}")
        tree.move(target.pid, None)
        os.close(recorder)
