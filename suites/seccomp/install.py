"""seccomp: installation rules."""

from __future__ import annotations

import ctypes
import errno
import signal

import _klab
import _seccomp as sc
from _klab import Failure, Skip, expect_eq, expect_errno

from seccomp import suite
from seccomp.common import _ALLOW, deny, expect_allowed, target

test = suite.test


@suite.test
def install_needs_nnp_or_cap_sys_admin() -> None:
    """Without no_new_privs and without CAP_SYS_ADMIN, both entry points say EACCES; NNP unlocks them."""
    sc.require_filter_mode()
    _klab.drop_caps()
    prog = deny(sc.RET_ERRNO | errno.E2BIG)
    expect_errno(sc.install(prog), errno.EACCES, "seccomp(SET_MODE_FILTER) without NNP or CAP_SYS_ADMIN")
    expect_errno(sc.install_prctl(prog), errno.EACCES, "prctl(PR_SET_SECCOMP) without NNP or CAP_SYS_ADMIN")
    expect_eq(sc.proc_status().get("Seccomp"), "0", "/proc/self/status Seccomp after refused installs")
    expect_allowed(target(), "target call after refused installs")
    _klab.set_no_new_privs()
    expect_errno(sc.install(prog), 0, "seccomp(SET_MODE_FILTER) with NNP, no capabilities")
    expect_errno(target(), errno.E2BIG, "target call under the installed filter")


@suite.test
def install_allowed_with_cap_sys_admin_without_nnp() -> None:
    """CAP_SYS_ADMIN alone is enough to install a filter (the task keeps no_new_privs off)."""
    sc.require_filter_mode()
    if not _klab.has_cap(_klab.CAP_SYS_ADMIN):
        raise Skip("needs CAP_SYS_ADMIN")
    expect_eq(_klab.libc.prctl(_klab.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), 0, "no_new_privs before")
    expect_errno(sc.install_prctl(deny(sc.RET_ERRNO | errno.E2BIG)), 0, "prctl(PR_SET_SECCOMP) with CAP_SYS_ADMIN")
    expect_eq(_klab.libc.prctl(_klab.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), 0, "no_new_privs after install")
    expect_errno(target(), errno.E2BIG, "target call under the installed filter")


def _bad_program(insns: list[sc.Insn], length: int | None = None) -> callable:  # type: ignore[valid-type]
    def test() -> None:
        sc.require_filter_mode()
        _klab.set_no_new_privs()
        prog = sc.Program(insns, length)
        expect_errno(sc.seccomp(sc.SECCOMP_SET_MODE_FILTER, 0, prog.ptr), errno.EINVAL, "install")
        expect_eq(sc.proc_status().get("Seccomp"), "0", "/proc/self/status Seccomp after the refused install")

    test.__doc__ = "The kernel's classic-BPF and seccomp checkers reject this program with EINVAL."
    return test


BAD_PROGRAMS: dict[str, tuple[list[sc.Insn], int | None]] = {
    "empty": ([_ALLOW], 0),
    "over_4096_insns": ([_ALLOW] * (sc.BPF_MAXINSNS + 1), None),
    "unknown_opcode": ([sc.stmt(sc.BPF_ALU | 0xF0, 0), _ALLOW], None),
    "load_past_seccomp_data": ([sc.load(sc.SECCOMP_DATA_SIZE), _ALLOW], None),
    "misaligned_load": ([sc.load(2), _ALLOW], None),
    "byte_load": ([sc.stmt(sc.BPF_LD | sc.BPF_B | sc.BPF_ABS, 0), _ALLOW], None),
    "no_terminating_return": ([sc.load(sc.OFF_NR)], None),
    "jump_past_end": ([sc.jump(sc.BPF_JMP | sc.BPF_JEQ | sc.BPF_K, 0, 5, 0), _ALLOW], None),
    "ja_past_end": ([sc.stmt(sc.BPF_JMP | sc.BPF_JA, 10), _ALLOW], None),
    "divide_by_constant_zero": ([sc.stmt(sc.BPF_ALU | sc.BPF_DIV | sc.BPF_K, 0), _ALLOW], None),
    "scratch_read_before_write": ([sc.stmt(sc.BPF_LD | sc.BPF_MEM, 0), _ALLOW], None),
    "scratch_slot_out_of_range": ([sc.stmt(sc.BPF_ST, 16), _ALLOW], None),
}

for _name, (_insns, _len) in BAD_PROGRAMS.items():
    suite.add(f"reject_{_name}", _bad_program(_insns, _len))


@suite.test
def edge_programs_accepted() -> None:
    """The allowed side of each limit: 4096 insns, a load at offset 60, scratch slot 15, BPF_LEN."""
    sc.require_filter_mode()
    _klab.set_no_new_privs()
    good = {
        "4096 insns": [_ALLOW] * sc.BPF_MAXINSNS,
        "load of args[5] high word (offset 60)": [sc.load(60), _ALLOW],
        "scratch M[15] written then read": [sc.stmt(sc.BPF_ST, 15), sc.stmt(sc.BPF_LD | sc.BPF_MEM, 15), _ALLOW],
        "BPF_LD|BPF_W|BPF_LEN": [sc.stmt(sc.BPF_LD | sc.BPF_W | sc.BPF_LEN, 0), _ALLOW],
    }
    for what, insns in good.items():
        expect_errno(sc.install(insns), 0, f"install {what}")


@suite.test
def bad_arguments_rejected() -> None:
    """NULL program is EFAULT; unknown op, unknown flag, strict mode with flags or args are EINVAL."""
    sc.require_filter_mode()
    _klab.set_no_new_privs()
    prog = sc.Program(deny(sc.RET_ERRNO | 1))
    expect_errno(sc.seccomp(sc.SECCOMP_SET_MODE_FILTER, 0, None), errno.EFAULT, "SET_MODE_FILTER with NULL program")
    expect_errno(sc.seccomp(0x7F, 0, prog.ptr), errno.EINVAL, "seccomp(op 0x7f)")
    expect_errno(sc.seccomp(sc.SECCOMP_SET_MODE_FILTER, 1 << 31, prog.ptr), errno.EINVAL, "filter flag 1<<31")
    expect_errno(sc.seccomp(sc.SECCOMP_SET_MODE_STRICT, 1, None), errno.EINVAL, "SET_MODE_STRICT with flags")
    expect_errno(sc.seccomp(sc.SECCOMP_SET_MODE_STRICT, 0, prog.ptr), errno.EINVAL, "SET_MODE_STRICT with args")
    expect_eq(sc.proc_status().get("Seccomp"), "0", "/proc/self/status Seccomp after refused calls")


def _converted_len(n_returns: int) -> int:
    """Length of the eBPF program the kernel makes of a classic filter of n RET|K instructions.

    seccomp stores filters as eBPF converted by bpf_convert_filter() (net/core/filter.c), and the
    chain limit counts that prog->len: a 3-instruction prologue (clear A, clear X, save CTX; no
    LD_ABS cache since seccomp_check_filter rewrites its loads) plus 2 per RET|K (mov32 r0, exit).
    """
    return 3 + 2 * n_returns


@suite.test
def filter_chain_instruction_limit() -> None:
    """ENOMEM once a task's chain would pass MAX_INSNS_PER_PATH (32768): the new filter counts its
    converted length, each attached filter its converted length + 4 (kernel/seccomp.c).

    Three 4096-RET filters cost 3 * (8195 + 4) = 24597; the next may convert to exactly 8171
    instructions (4084 RETs) and not 8173 (4085 RETs); after it not even a 1-RET filter fits.
    """
    sc.require_filter_mode()
    sc.require_no_inherited_filters()
    _klab.set_no_new_privs()
    attached = 0
    for i in range(3):
        expect_errno(sc.install([_ALLOW] * sc.BPF_MAXINSNS), 0, f"4096-insn filter {i + 1} (chain cost {attached})")
        attached += _converted_len(sc.BPF_MAXINSNS) + sc.FILTER_PENALTY
    fit = (sc.MAX_INSNS_PER_PATH - attached - 3) // 2
    expect_eq((fit, _converted_len(fit) + attached), (4084, sc.MAX_INSNS_PER_PATH), "filter size that fills the chain")
    expect_errno(sc.install([_ALLOW] * (fit + 1)), errno.ENOMEM, f"{fit + 1}-insn filter (one RET past the limit)")
    expect_errno(sc.install([_ALLOW] * fit), 0, f"{fit}-insn filter (exactly at the limit)")
    expect_errno(sc.install([_ALLOW]), errno.ENOMEM, "1-insn filter on the full chain")
    count = sc.filter_count()
    if count is not None:
        expect_eq(count, 4, "Seccomp_filters after the limit test")


@suite.test
def filter_chain_limit_counts_penalty_per_filter() -> None:
    """The 4-instruction penalty per attached filter: 1-RET filters (5 converted instructions, 9 once
    attached) fit 3641 times, the 3642nd is ENOMEM (9 * 3640 + 5 <= 32768 < 9 * 3641 + 5)."""
    sc.require_filter_mode()
    sc.require_no_inherited_filters()
    _klab.set_no_new_privs()
    cost = _converted_len(1) + sc.FILTER_PENALTY
    fits = (sc.MAX_INSNS_PER_PATH - _converted_len(1)) // cost + 1
    expect_eq(fits, 3641, "1-RET filters that fit")
    prog = sc.Program([_ALLOW])
    for i in range(fits):
        r = sc.seccomp(sc.SECCOMP_SET_MODE_FILTER, 0, prog.ptr)
        if r[0] != 0:
            raise Failure(f"1-RET filter {i + 1} of {fits}: expected success, got {_klab.errname(r[1])} ({r[1]})")
    r = sc.seccomp(sc.SECCOMP_SET_MODE_FILTER, 0, prog.ptr)
    expect_errno(r, errno.ENOMEM, f"1-RET filter {fits + 1}")


@suite.test
def strict_mode_allows_only_read_write_exit() -> None:
    """SECCOMP_MODE_STRICT: write still works, anything else (getppid) is SIGKILL."""
    sc.require_filter_mode()
    msg_a, msg_b = b"A", b"B"
    write_nr, getppid_nr = ctypes.c_long(sc.nr("write")), ctypes.c_long(sc.nr("getppid"))
    one = ctypes.c_long(1)
    syscall = _klab.libc.syscall
    strict = (ctypes.c_long(sc.nr("prctl")), ctypes.c_long(sc.PR_SET_SECCOMP), ctypes.c_long(sc.SECCOMP_MODE_STRICT))

    def child(wfd: int) -> None:
        fd = ctypes.c_long(wfd)
        a, b = ctypes.c_char_p(msg_a), ctypes.c_char_p(msg_b)
        syscall(*strict)
        syscall(write_nr, fd, a, one)
        syscall(getppid_nr)
        syscall(write_nr, fd, b, one)

    status, data = sc.fork_status(child)
    sc.expect_killed_by(status, signal.SIGKILL, "strict-mode child calling getppid")
    expect_eq(data, b"A", "bytes the strict-mode child wrote (A before getppid, B after)")


@suite.test
def filter_mode_cannot_move_to_strict() -> None:
    """Once in filter mode, switching to strict mode is EINVAL (modes never change back or sideways)."""
    sc.require_filter_mode()
    _klab.set_no_new_privs()
    sc.must_install(deny(sc.RET_ERRNO | 1))
    r = _klab.syscall("prctl", sc.PR_SET_SECCOMP, sc.SECCOMP_MODE_STRICT, 0, 0, 0)
    expect_errno(r, errno.EINVAL, "prctl(PR_SET_SECCOMP, STRICT) in filter mode")
    expect_errno(sc.seccomp(sc.SECCOMP_SET_MODE_STRICT, 0, None), errno.EINVAL, "seccomp(SET_MODE_STRICT)")
    expect_eq(_klab.syscall("prctl", sc.PR_GET_SECCOMP, 0, 0, 0, 0), (2, 0), "PR_GET_SECCOMP")
