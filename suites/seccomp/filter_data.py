"""seccomp: what a filter sees."""

from __future__ import annotations

import errno
import os

import _klab
import _seccomp as sc
from _klab import expect_eq, expect_errno

from seccomp import suite
from seccomp.common import _ALLOW, MAGIC

test = suite.test


@suite.test
def filter_sees_all_six_args_64bit() -> None:
    """seccomp_data carries nr, arch and all six 64-bit arguments: a mismatch in any word lets it through."""
    sc.require_filter_mode()
    _klab.set_no_new_privs()
    args = [MAGIC | (0xA0 << 32), 0x1_0000_0002, 0xFFFF_FFFF_0000_0003, 4, 0x7FFF_0000_0005, 0xDEAD_BEEF_CAFE_F00D]
    prog = sc.arch_guard() + [sc.load(sc.OFF_NR), sc.jump(sc.BPF_JMP | sc.BPF_JEQ | sc.BPF_K, sc.nr("getppid"), 1, 0)]
    prog.append(_ALLOW)
    for i, value in enumerate(args):
        for half, word in ((0, value & 0xFFFFFFFF), (4, value >> 32)):
            prog += [
                sc.load(sc.OFF_ARGS + 8 * i + half),
                sc.jump(sc.BPF_JMP | sc.BPF_JEQ | sc.BPF_K, word, 1, 0),
                _ALLOW,
            ]
    prog.append(sc.ret(sc.RET_ERRNO | errno.EXDEV))
    sc.must_install(prog)
    expect_errno(sc.call("getppid", *args), errno.EXDEV, "getppid with exactly the six matched args")
    for i in range(6):
        for bit in (0, 32 + 7):
            changed = list(args)
            changed[i] ^= 1 << bit
            r = sc.call("getppid", *changed)
            expect_eq(r, (os.getppid(), 0), f"getppid with args[{i}] bit {bit} flipped (result, errno)")


@suite.test
def ld_len_is_seccomp_data_size() -> None:
    """BPF_LD|BPF_LEN in a seccomp filter loads sizeof(struct seccomp_data), 64."""
    sc.require_filter_mode()
    _klab.set_no_new_privs()
    prog = sc.arch_guard() + [
        sc.load(sc.OFF_NR),
        sc.jump(sc.BPF_JMP | sc.BPF_JEQ | sc.BPF_K, sc.nr("getppid"), 1, 0),
        _ALLOW,
        sc.stmt(sc.BPF_LD | sc.BPF_W | sc.BPF_LEN, 0),
        sc.jump(sc.BPF_JMP | sc.BPF_JEQ | sc.BPF_K, sc.SECCOMP_DATA_SIZE, 0, 1),
        sc.ret(sc.RET_ERRNO | errno.EXDEV),
        sc.ret(sc.RET_ERRNO | errno.E2BIG),
    ]
    sc.must_install(prog)
    expect_errno(sc.call("getppid"), errno.EXDEV, "getppid under a filter testing LEN == 64")


@suite.test
def arch_field_is_audit_arch() -> None:
    """seccomp_data.arch is this arch's AUDIT_ARCH value (the guard every filter relies on)."""
    sc.require_filter_mode()
    _klab.set_no_new_privs()
    prog = [
        sc.load(sc.OFF_NR),
        sc.jump(sc.BPF_JMP | sc.BPF_JEQ | sc.BPF_K, sc.nr("getppid"), 1, 0),
        _ALLOW,
        sc.load(sc.OFF_ARCH),
        sc.jump(sc.BPF_JMP | sc.BPF_JEQ | sc.BPF_K, sc.AUDIT_ARCH, 0, 1),
        sc.ret(sc.RET_ERRNO | errno.EXDEV),
        sc.ret(sc.RET_ERRNO | errno.E2BIG),
    ]
    sc.must_install(prog)
    expect_errno(sc.call("getppid"), errno.EXDEV, f"getppid under a filter testing arch == {sc.AUDIT_ARCH:#x}")
