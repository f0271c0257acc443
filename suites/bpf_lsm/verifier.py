"""bpf_lsm: verifier and attach gates."""

from __future__ import annotations

import errno
import os
import struct

import _bpf
from _bpf import FN_TAIL_CALL, R1, R2, R3, R6, Asm
from _klab import Failure, Skip, errname, expect, expect_eq, kernel_version
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.common import BTF, NON_HOOK_FUNCS, attach, errno_of, filter_tgid, load, require, try_load

test = suite.test


def expect_refused(result: tuple[int, str], err: int, needle: str, what: str) -> None:
    got, log = result
    if got != err:
        raise Failure(f"{what}: expected {errname(err)} ({err}), got {errname(got)} ({got}); log: {log.strip()[-300:]}")
    expect(needle in log, f"{what}: expected the verifier log to mention {needle!r}, got: {log.strip()[-300:]!r}")


@suite.test
def verifier_requires_gpl_license() -> None:
    """LSM programs need a GPL-compatible license: 'Proprietary' is EINVAL, 'Dual BSD/GPL' loads."""
    require()
    ok = Asm().ret(0)
    expect_eq(try_load("file_open", ok, license="GPL"), (0, ""), "(errno, log) loading with license GPL")
    expect_eq(try_load("file_open", ok, license="Dual BSD/GPL"), (0, ""), "(errno, log) with license Dual BSD/GPL")
    expect_refused(try_load("file_open", ok, license="Proprietary"), errno.EINVAL, "GPL", "license Proprietary")


@suite.test
def verifier_rejects_non_hook_attach_target() -> None:
    """attach_btf_id must name a bpf_lsm_* hook FUNC: another FUNC, a FUNC_PROTO or 0 are EINVAL."""
    require()
    other = next((BTF[n] for n in NON_HOOK_FUNCS if n in BTF), None)
    if other is None:
        raise Skip(f"none of {', '.join(NON_HOOK_FUNCS)} in vmlinux BTF")
    ok = Asm().ret(0)
    expect_refused(try_load(other.type_id, ok), errno.EINVAL, other.name, f"LSM program on FUNC {other.name}")
    proto = BTF["bpf_lsm_file_open"].proto_id
    expect_refused(try_load(proto, ok), errno.EINVAL, "is not a function", "LSM program on a FUNC_PROTO id")
    expect_refused(try_load(0, ok), errno.EINVAL, "btf_id", "LSM program without attach_btf_id")


@suite.test
def verifier_rejects_sleepable_on_non_sleepable_hook() -> None:
    """BPF_F_SLEEPABLE is refused on file_mprotect (not in sleepable_lsm_hooks) and accepted on file_open."""
    require("file_mprotect")
    ok = Asm().ret(0)
    expect_eq(try_load("file_open", ok, sleepable=True), (0, ""), "(errno, log) sleepable on file_open")
    expect_refused(
        try_load("file_mprotect", ok, sleepable=True), errno.EINVAL, "is not sleepable", "sleepable on file_mprotect"
    )


# bpf_lsm_get_retval_range() and its use in check_return_code() came with
# "bpf, lsm: Add check for BPF LSM return value" (Xu Kuohai, merged for v6.12;
# selftests progs/verifier_lsm.c); before v6.12 any LSM return value loads.
RETVAL_CHECK_SINCE = (6, 12)


def _require_retval_check() -> None:
    if kernel_version() < RETVAL_CHECK_SINCE:
        raise Skip(
            "LSM return-value range checks landed in v6.12 ('bpf, lsm: Add check for BPF LSM return value'); "
            f"kernel {os.uname().release} accepts any return value"
        )


@suite.test
def verifier_enforces_errno_return_range() -> None:
    """An int hook's program must return 0 or -4095..-1: 1, 4096 and -4096 are EINVAL (v6.12+)."""
    require("file_mprotect")
    _require_retval_check()
    for value in (0, -1, -errno.EPERM, -4095):
        expect_eq(try_load("file_mprotect", Asm().ret(value)), (0, ""), f"(errno, log) returning {value}")
    for value in (1, 4096, -4096):
        expect_refused(
            try_load("file_mprotect", Asm().ret(value)),
            errno.EINVAL,
            f"smin={value} smax={value} should have been in [-4095, 0]",
            f"file_mprotect program returning {value}",
        )


@suite.test
def verifier_enforces_bool_return_range() -> None:
    """A bool hook (inode_xattr_skipcap) accepts 0 and 1 and refuses 2 and -1 (v6.12+)."""
    _require_retval_check()  # first: kernels before v6.12 lack the hook as well as the check
    require("inode_xattr_skipcap")
    for value in (0, 1):
        expect_eq(try_load("inode_xattr_skipcap", Asm().ret(value)), (0, ""), f"(errno, log) returning {value}")
    for value in (2, -1):
        expect_refused(
            try_load("inode_xattr_skipcap", Asm().ret(value)),
            errno.EINVAL,
            "should have been in [0, 1]",
            f"inode_xattr_skipcap program returning {value}",
        )


@suite.test
def verifier_void_hook_takes_any_return() -> None:
    """A void hook (file_free_security) has no return range: 4096 loads on every kernel."""
    require("file_free_security")
    expect_eq(try_load("file_free_security", Asm().ret(4096)), (0, ""), "(errno, log) returning 4096 from a void hook")


@suite.test
def verifier_rejects_disabled_hook() -> None:
    """getprocattr is on bpf_lsm_disabled_hooks (v6.12+, 'bpf, lsm: Add disabled BPF LSM hook list'): EINVAL."""
    require("getprocattr")
    if kernel_version() < (6, 12):
        raise Skip(f"the disabled-hook list landed in v6.12; kernel {os.uname().release} lets getprocattr load")
    expect_refused(try_load("getprocattr", Asm().ret(0)), errno.EINVAL, "disabled hook", "LSM program on getprocattr")


# "bpf: Disable file_alloc_security hook" (Amery Hung; posted for bpf-next on
# 2025-11-26, so after v6.18; in the v7.2 and v7.3 trees): a program there
# could walk the not yet initialised file->f_inode. The exact release is v6.19
# or v7.0: v6.19 is left untested rather than guessed.
FILE_ALLOC_DISABLED_SINCE = (7, 0)


@suite.test
def verifier_rejects_file_alloc_security_from_v7_0() -> None:
    """file_alloc_security joined the disabled hooks after v6.18: EINVAL from v7.0, loads before v6.19."""
    require("file_alloc_security")
    version = kernel_version()
    result = try_load("file_alloc_security", Asm().ret(0))
    if version >= FILE_ALLOC_DISABLED_SINCE:
        expect_refused(result, errno.EINVAL, "disabled hook", "LSM program on file_alloc_security")
    elif version < (6, 19):
        expect_eq(result, (0, ""), f"(errno, log) of a file_alloc_security program on {os.uname().release}")
    else:
        raise Skip(f"disabling file_alloc_security landed in v7.0 (or v6.19); kernel {os.uname().release} not pinned")


def _prog_array() -> int:
    return _bpf.map_create(_bpf.BPF_MAP_TYPE_PROG_ARRAY, 4, 4, 1, "klab_jmp")


def _tail_call_prog(tgid: int, prog_array: int) -> Asm:
    """For `tgid`: bpf_tail_call(ctx, prog_array, 0); falls through to 0 when the slot is empty."""
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid)
    asm.mov64(R1, R6).ld_map_fd(R2, prog_array).mov64(R3, imm=0).call(FN_TAIL_CALL)
    return asm.ret(0).label("other").ret(0)


def _set_slot(prog_array: int, prog_fd: int) -> int:
    """Put a program into slot 0 of the prog array; 0 or the errno."""
    return errno_of(_bpf.map_update, prog_array, struct.pack("<I", 0), struct.pack("<I", prog_fd))


@suite.test
def tail_calls_only_between_same_prototype_hooks() -> None:
    """A prog array used by a file_open program takes only programs of the same hook prototype.

    "bpf: Prevent tail call between progs attached to different hooks" (v6.12,
    in 6.1.y stable too) compares attach_func_proto: a file_mprotect program
    is EINVAL, in the map and as a second user of it; file_receive shares
    file_open's int (struct file *) prototype and is accepted, and the tail
    call then runs the callee's verdict for the worker only.
    """
    require("file_mprotect", "file_receive")
    same_proto = BTF["bpf_lsm_file_receive"].proto_id == BTF["bpf_lsm_file_open"].proto_id
    with Worker() as target, Worker() as bystander:
        jmp = _prog_array()
        entry = load("file_open", _tail_call_prog(target.pid, jmp))  # the map's owner: file_open's prototype
        callees = {hook: load(hook, Asm().ret(-errno.EPERM)) for hook in ("file_open", "file_mprotect")}
        expect_eq(_set_slot(jmp, callees["file_mprotect"]), errno.EINVAL, "a file_mprotect program into the map")
        other_user = try_load("file_mprotect", _tail_call_prog(target.pid, jmp))[0]
        expect_eq(other_user, errno.EINVAL, "loading a file_mprotect program that tail-calls through the map")
        link = attach(entry)
        expect_result(target.do("open", "/dev/null"), 0, "open with the slot empty (the tail call falls through)")
        expect_eq(_set_slot(jmp, callees["file_open"]), 0, "a file_open program into the map")
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open tail-calling the -EPERM file_open callee")
        expect_result(bystander.do("open", "/dev/null"), 0, "open by another process (no tail call)")
        if same_proto:
            receive = load("file_receive", Asm().ret(-errno.ENOKEY))
            expect_eq(_set_slot(jmp, receive), 0, "a file_receive program (same prototype) into the map")
            expect_result(target.do("open", "/dev/null"), errno.ENOKEY, "open tail-calling the file_receive callee")
            os.close(receive)
        os.close(link)
        for fd in (entry, *callees.values(), jmp):
            os.close(fd)
