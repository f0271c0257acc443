"""seccomp suite: filter installation rules, actions and their precedence, inheritance, ptrace and
user-notification interplay, and stacking with Landlock and the BPF LSM.

Modelled on tools/testing/selftests/seccomp/seccomp_bpf.c. Python makes syscalls of its own, so
every filter here targets getppid (which the interpreter never calls) with a magic first argument,
or another call matched on an argument value nothing else uses: the interpreter keeps working
under any verdict. Children that are meant to die turn core dumps off first (PR_SET_DUMPABLE 0).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import _klab
import _seccomp as sc
from _klab import Failure, Skip, expect, expect_eq, expect_errno

suite = _klab.Suite("seccomp")

MAGIC = 0x5EC0_0C01  # args[0] of every targeted call: nothing else passes it
MAGIC_FD = 777  # a dirfd number for argument-matched openat
NOTIF_VALUE = 4242  # what the supervisor answers when USER_NOTIF wins
TRAP_DATA = 0x0123
TRACE_DATA = 0x1234


def target(*rest: int) -> tuple[int, int]:
    """The call every filter here matches: getppid(MAGIC, ...)."""
    return sc.call("getppid", MAGIC, *rest)


def deny(action: int) -> list[sc.Insn]:
    """A filter returning `action` for the target call and ALLOW for everything else."""
    return sc.rules(("getppid", action, MAGIC))


def expect_allowed(result: tuple[int, int], what: str) -> None:
    """The target call went through: it returned the real parent pid."""
    expect_eq(result, (os.getppid(), 0), f"{what} (getppid result, errno)")


# --- installation rules ------------------------------------------------------------------------------


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


_ALLOW = sc.ret(sc.RET_ALLOW)
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


# --- what a filter sees -----------------------------------------------------------------------------------


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


# --- actions ------------------------------------------------------------------------------------------------


@suite.test
def action_avail_reports_each_action() -> None:
    """SECCOMP_GET_ACTION_AVAIL: 0 for every action this kernel has, EOPNOTSUPP for unassigned values."""
    sc.require_filter_mode()
    r, err = sc.action_avail(sc.RET_ALLOW)
    if err == errno.EINVAL:
        raise Skip("kernel lacks SECCOMP_GET_ACTION_AVAIL (4.14+)")
    for name, action in sc.ACTIONS.items():
        r = sc.action_avail(action)
        if name == "user_notif" and r[1] == errno.EOPNOTSUPP:
            continue  # before 5.0
        expect_errno(r, 0, f"GET_ACTION_AVAIL({name})")
    for bogus in (0x00010000, 0x7FFE0000, 0x7FFD0000):
        expect_errno(sc.action_avail(bogus), errno.EOPNOTSUPP, f"GET_ACTION_AVAIL({bogus:#x})")


@suite.test
def errno_returned_exactly() -> None:
    """ERRNO|E2BIG returns exactly E2BIG for the matched call; unmatched arguments pass."""
    sc.require_filter_mode()
    _klab.set_no_new_privs()
    sc.must_install(deny(sc.RET_ERRNO | errno.E2BIG))
    expect_errno(target(), errno.E2BIG, "target call")
    expect_eq(sc.call("getppid", MAGIC + 1), (os.getppid(), 0), "getppid(MAGIC+1) (result, errno)")


@suite.test
def errno_zero_returns_zero() -> None:
    """ERRNO with data 0 skips the call and returns 0, not -1 (nor the real result)."""
    sc.require_filter_mode()
    _klab.set_no_new_privs()
    sc.must_install(deny(sc.RET_ERRNO | 0))
    expect_eq(target(), (0, 0), "target call under ERRNO|0 (result, errno)")


@suite.test
def errno_capped_at_max_errno() -> None:
    """ERRNO data above MAX_ERRNO (4095) is capped to 4095 (commit 580c57f10768, 4.14)."""
    sc.require_filter_mode()
    _klab.set_no_new_privs()
    sc.must_install(sc.rules(("getppid", sc.RET_ERRNO | 4096, MAGIC), ("getppid", sc.RET_ERRNO | 0xFFFF, MAGIC + 1)))
    expect_errno(target(), sc.MAX_ERRNO, "ERRNO|4096")
    expect_errno(sc.call("getppid", MAGIC + 1), sc.MAX_ERRNO, "ERRNO|0xffff")


@suite.test
def errno_tie_newest_filter_wins() -> None:
    """Three ERRNO filters (11, 13, 12 in install order): the newest (12) decides; the data is not min/max."""
    sc.require_filter_mode()
    _klab.set_no_new_privs()
    for value in (11, 13, 12):
        sc.must_install(deny(sc.RET_ERRNO | value))
    expect_errno(target(), 12, "target call under ERRNO 11, 13, 12")


@suite.test
def trap_without_handler_kills_with_sigsys() -> None:
    """TRAP with SIGSYS at its default disposition: the process dies of SIGSYS before the next line."""
    sc.require_filter_mode()

    def child(wfd: int) -> None:
        _klab.set_no_new_privs()
        sc.must_install(deny(sc.RET_TRAP | TRAP_DATA))
        target()
        os.write(wfd, b"survived")

    status, data = sc.fork_status(child)
    sc.expect_killed_by(status, signal.SIGSYS, "child hitting TRAP with no handler")
    expect_eq(data, b"", "child output after the trapped call")


@suite.test
def trap_siginfo() -> None:
    """TRAP's SIGSYS carries si_code SYS_SECCOMP, si_syscall, si_arch, the filter data in si_errno
    and a call address inside libc (where syscall() is); the handler returns and the task goes on."""
    sc.require_filter_mode()
    _klab.set_no_new_privs()
    sc.install_sigsys_handler()
    sc.must_install(deny(sc.RET_TRAP | TRAP_DATA))
    target()
    expect_eq(len(sc.SIGSYS_SEEN), 1, "SIGSYS deliveries")
    info = sc.SIGSYS_SEEN[0]
    expect_eq(info["signo"], signal.SIGSYS, "si_signo")
    expect_eq(info["code"], sc.SYS_SECCOMP, "si_code")
    expect_eq(info["errno"], TRAP_DATA, "si_errno (the filter's data)")
    expect_eq(info["syscall"], sc.nr("getppid"), "si_syscall")
    expect_eq(info["arch"], sc.AUDIT_ARCH, "si_arch")
    where = _mapping_of(info["call_addr"])
    expect("libc" in where, f"si_call_addr {info['call_addr']:#x}: expected inside libc, got mapping {where!r}")
    expect_allowed(sc.call("getppid", MAGIC + 1), "an unmatched getppid after the trap")


def _mapping_of(addr: int) -> str:
    """The file behind the /proc/self/maps region holding addr ('' when none)."""
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            if lo <= addr < hi:
                return fields[5] if len(fields) > 5 else ""
    return ""


@suite.test
def kill_thread_in_single_thread_process_kills_it() -> None:
    """KILL_THREAD on the last live thread takes the process down with SIGSYS."""
    sc.require_action("kill_thread")

    def child(wfd: int) -> None:
        _klab.set_no_new_privs()
        sc.must_install(deny(sc.RET_KILL_THREAD))
        target()
        os.write(wfd, b"survived")

    status, data = sc.fork_status(child)
    sc.expect_killed_by(status, signal.SIGSYS, "single-threaded child hitting KILL_THREAD")
    expect_eq(data, b"", "child output after the killed call")


@suite.test
def kill_process_from_a_thread_kills_all() -> None:
    """KILL_PROCESS hit by a secondary thread kills the whole process (wait status: SIGSYS)."""
    sc.require_action("kill_process")

    def child(wfd: int) -> None:
        _klab.set_no_new_privs()
        sc.must_install(deny(sc.RET_KILL_PROCESS))
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        time.sleep(5)
        os.write(wfd, b"main thread survived")

    status, data = sc.fork_status(child)
    sc.expect_killed_by(status, signal.SIGSYS, "process whose thread hit KILL_PROCESS")
    expect_eq(data, b"", "main thread output")


@suite.test
def unknown_action_kills_process() -> None:
    """A return value with no known action (0x00010000) is treated as KILL_PROCESS."""
    sc.require_action("kill_process")

    def child(wfd: int) -> None:
        _klab.set_no_new_privs()
        sc.must_install(deny(0x00010000))
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        time.sleep(5)
        os.write(wfd, b"main thread survived")

    status, data = sc.fork_status(child)
    sc.expect_killed_by(status, signal.SIGSYS, "process whose thread hit action 0x00010000")
    expect_eq(data, b"", "main thread output")


@suite.test
def trace_without_tracer_is_enosys() -> None:
    """TRACE with no tracer (or a tracer without PTRACE_O_TRACESECCOMP) skips the call with ENOSYS."""
    sc.require_filter_mode()
    _klab.set_no_new_privs()
    sc.must_install(deny(sc.RET_TRACE | TRACE_DATA))
    expect_errno(target(), errno.ENOSYS, "target call under TRACE, untraced")


@suite.test
def log_action_allows() -> None:
    """LOG lets the call run (the verdict is only logged)."""
    sc.require_action("log")
    _klab.set_no_new_privs()
    sc.must_install(deny(sc.RET_LOG))
    expect_allowed(target(), "target call under LOG")


# --- precedence ---------------------------------------------------------------------------------------------

# Most restrictive first. LOG and ALLOW differ only in the audit log, so that one pair is not observable.
PRECEDENCE = ("kill_process", "kill_thread", "trap", "errno", "user_notif", "trace", "log", "allow")
ERRNO_DATA = errno.E2BIG


def _verdict(name: str) -> int:
    data = {"trap": TRAP_DATA, "errno": ERRNO_DATA, "trace": TRACE_DATA}.get(name, 0)
    return sc.ACTIONS[name] | data


def _expected_outcome(name: str) -> str:
    return {
        "kill_process": "process_killed",
        "kill_thread": "thread_killed",
        "trap": f"trap:{TRAP_DATA}",
        "errno": f"errno:{ERRNO_DATA}",
        "user_notif": f"value:{NOTIF_VALUE}",
        "trace": f"errno:{errno.ENOSYS}",
        "log": "allowed",
        "allow": "allowed",
    }[name]


def _observe_child(wfd: int, names: tuple[str, ...]) -> None:
    """Install one filter per action (oldest first), make the target call from a thread, report."""
    _klab.set_no_new_privs()
    sc.install_sigsys_handler()
    ppid = os.getppid()
    listener = None
    for name in names:
        flags = sc.FLAG_NEW_LISTENER if name == "user_notif" else 0
        fd = sc.must_install(deny(_verdict(name)), flags, f"install {name} filter")
        listener = fd if flags else listener
    result: dict[str, object] = {}
    started, done = threading.Event(), threading.Event()

    def call() -> None:
        result["tid"] = threading.get_native_id()
        started.set()
        result["ret"] = target()
        done.set()

    threading.Thread(target=call, daemon=True).start()
    started.wait(5)
    task = f"/proc/self/task/{result['tid']}"
    deadline = time.monotonic() + 10
    outcome = "hang"
    while time.monotonic() < deadline:
        if done.is_set():
            ret, err = result["ret"]  # type: ignore[misc]
            outcome = f"errno:{err}" if ret == -1 else "allowed" if ret == ppid else f"value:{ret}"
            break
        if not os.path.exists(task) and not done.is_set():  # done is set before a normal thread exit
            outcome = "thread_killed"
            break
        if listener is not None and sc.wait_readable(listener, 0.002):
            notif = sc.notif_recv(listener)
            sc.notif_send(listener, notif.id, val=NOTIF_VALUE)
        else:
            time.sleep(0.002)
    if sc.SIGSYS_SEEN:
        outcome = f"trap:{sc.SIGSYS_SEEN[0]['errno']}"
    os.write(wfd, outcome.encode())


def observe(*names: str) -> str:
    """What the target call met under these filters (installed in this order, oldest first)."""
    status, data = sc.fork_status(_observe_child, names)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS:
        return "process_killed"
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return f"child {sc.describe_status(status)}"
    return data.decode()


def _require_all_actions() -> None:
    for name in PRECEDENCE:
        sc.require_action(name)
    sc.require_user_notif()


def _action_alone(name: str) -> callable:  # type: ignore[valid-type]
    def test() -> None:
        sc.require_action(name)
        if name == "user_notif":
            sc.require_user_notif()
        expect_eq(observe(name), _expected_outcome(name), f"target call under a lone {name} filter")

    test.__doc__ = f"A lone {name} filter gives its own observable outcome (the baseline for precedence)."
    return test


def _precedence(strong: str) -> callable:  # type: ignore[valid-type]
    def test() -> None:
        _require_all_actions()
        weaker = PRECEDENCE[PRECEDENCE.index(strong) + 1 :]
        bad = []
        for weak in weaker:
            if {strong, weak} == {"log", "allow"}:
                continue
            for order in ((weak, strong), (strong, weak)):
                got = observe(*order)
                if got != _expected_outcome(strong):
                    bad.append(f"installed {' then '.join(order)}: got {got}")
        expect(
            not bad,
            f"{strong} must win over every weaker action in either order, expected "
            f"{_expected_outcome(strong)}: " + "; ".join(bad),
        )

    test.__doc__ = f"{strong} beats every less restrictive action, whichever filter is newer."
    return test


for _name in PRECEDENCE:
    suite.add(f"action_{_name}_alone", _action_alone(_name))
for _name in PRECEDENCE[:-2]:
    suite.add(f"precedence_{_name}_wins", _precedence(_name))


# --- inheritance --------------------------------------------------------------------------------------------


@suite.test
def proc_status_reports_mode_and_count() -> None:
    """/proc/PID/status says Seccomp: 2 and counts filters (Seccomp_filters, 5.9+); PR_GET_SECCOMP is 2."""
    sc.require_filter_mode()
    sc.require_no_inherited_filters()
    expect_eq(_klab.syscall("prctl", sc.PR_GET_SECCOMP, 0, 0, 0, 0), (0, 0), "PR_GET_SECCOMP before any filter")
    _klab.set_no_new_privs()
    for _ in range(3):
        sc.must_install(deny(sc.RET_ERRNO | 1))
    status = sc.proc_status()
    expect_eq(status.get("Seccomp"), "2", "Seccomp field")
    if "Seccomp_filters" in status:
        expect_eq(status["Seccomp_filters"], "3", "Seccomp_filters field")
    expect_eq(_klab.syscall("prctl", sc.PR_GET_SECCOMP, 0, 0, 0, 0), (2, 0), "PR_GET_SECCOMP")


@suite.test
def fork_inherits_and_child_cannot_loosen() -> None:
    """A forked child inherits the filter; adding ALLOW, LOG or TRACE filters cannot loosen it; a
    child's own ERRNO filter wins the tie (newest), and none of it reaches the parent."""
    sc.require_action("log")
    sc.require_no_inherited_filters()
    _klab.set_no_new_privs()
    sc.must_install(deny(sc.RET_ERRNO | errno.E2BIG))

    def child() -> None:
        expect_errno(target(), errno.E2BIG, "child: inherited filter")
        for action in (sc.RET_ALLOW, sc.RET_LOG, sc.RET_TRACE | 1):
            sc.must_install(deny(action), what=f"child adds filter {action:#x} for the target call")
        for action in (sc.RET_ALLOW, sc.RET_LOG):
            sc.must_install([sc.ret(action)], what=f"child adds return-only filter {action:#x}")
        expect_errno(target(), errno.E2BIG, "child: after adding ALLOW/LOG/TRACE filters")
        sc.must_install(deny(sc.RET_ERRNO | errno.EXDEV))
        expect_errno(target(), errno.EXDEV, "child: after adding its own ERRNO(EXDEV) filter")
        count = sc.filter_count()
        if count is not None:
            expect_eq(count, 7, "child's Seccomp_filters (1 inherited + 6 own)")

    _klab.in_child(child)
    expect_errno(target(), errno.E2BIG, "parent after the child's filters")
    count = sc.filter_count()
    if count is not None:
        expect_eq(count, 1, "parent's Seccomp_filters")


_EXEC_PROBE = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
ret = libc.syscall(ctypes.c_long(int(sys.argv[1])), ctypes.c_long(int(sys.argv[2])))
err = ctypes.get_errno() if ret == -1 else 0
fields = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
print(ret, err, fields["Seccomp"].strip(), fields.get("Seccomp_filters", "-").strip())
"""


@suite.test
def filters_survive_execve() -> None:
    """After execve the new program runs under the same filters (and in filter mode)."""
    sc.require_filter_mode()
    sc.require_no_inherited_filters()
    _klab.set_no_new_privs()
    sc.must_install(deny(sc.RET_ERRNO | errno.E2BIG))
    sc.must_install(sc.rules(("getppid", sc.RET_ERRNO | errno.EXDEV, MAGIC + 1)))
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _EXEC_PROBE, str(sc.nr("getppid")), str(MAGIC)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    expect_eq(out.returncode, 0, f"exec'd probe exit status (stderr: {out.stderr.strip()[-300:]})")
    ret, err, mode, count = out.stdout.split()
    expect_eq((int(ret), int(err)), (-1, errno.E2BIG), "exec'd program's target call (ret, errno)")
    expect_eq(mode, "2", "exec'd program's Seccomp field")
    if count != "-":
        expect_eq(count, "2", "exec'd program's Seccomp_filters")


def _thread_call(results: dict[str, tuple[int, int]], key: str, go: threading.Event) -> threading.Thread:
    def run() -> None:
        go.wait(10)
        results[key] = target()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@suite.test
def filter_reaches_only_threads_created_after() -> None:
    """Without TSYNC, a filter binds the caller and threads it creates later, not existing threads."""
    sc.require_filter_mode()
    _klab.set_no_new_privs()
    results: dict[str, tuple[int, int]] = {}
    go = threading.Event()
    before = _thread_call(results, "before", go)
    sc.must_install(deny(sc.RET_ERRNO | errno.E2BIG))
    after = _thread_call(results, "after", go)
    go.set()
    before.join(10)
    after.join(10)
    expect_allowed(results["before"], "thread created before the filter")
    expect_errno(results["after"], errno.E2BIG, "thread created after the filter")
    expect_errno(target(), errno.E2BIG, "the installing thread")


def _parked_thread(fn=None):  # type: ignore[no-untyped-def]
    """Start a thread that optionally runs fn, then parks until released; returns (tid, release, results)."""
    ready, release = threading.Event(), threading.Event()
    box: dict[str, object] = {}

    def run() -> None:
        box["tid"] = threading.get_native_id()
        if fn is not None:
            box["setup"] = fn()
        ready.set()
        release.wait(10)
        box["call"] = target()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    box["thread"] = thread
    return box["tid"], release, box


@suite.test
def tsync_applies_filter_and_nnp_to_all_threads() -> None:
    """TSYNC installs the filter on every thread at once and carries no_new_privs along."""
    sc.require_flag(sc.FLAG_TSYNC, "SECCOMP_FILTER_FLAG_TSYNC")
    tid, release, box = _parked_thread()
    expect_eq(sc.proc_status(tid=tid).get("NoNewPrivs"), "0", "sibling NoNewPrivs before")
    _klab.set_no_new_privs()  # the caller only: prctl is per-thread
    expect_eq(sc.install(deny(sc.RET_ERRNO | errno.E2BIG), sc.FLAG_TSYNC), (0, 0), "TSYNC install (ret, errno)")
    status = sc.proc_status(tid=tid)
    expect_eq(status.get("Seccomp"), "2", "sibling Seccomp after TSYNC")
    expect_eq(status.get("NoNewPrivs"), "1", "sibling NoNewPrivs after TSYNC")
    if "Seccomp_filters" in status:
        expect_eq(status["Seccomp_filters"], "1", "sibling Seccomp_filters after TSYNC")
    release.set()
    box["thread"].join(10)  # type: ignore[union-attr]
    expect_errno(box["call"], errno.E2BIG, "sibling's target call after TSYNC")  # type: ignore[arg-type]


@suite.test
def tsync_fails_naming_diverged_thread() -> None:
    """TSYNC fails when a sibling has its own filter: it returns that thread's TID and installs nothing."""
    sc.require_flag(sc.FLAG_TSYNC, "SECCOMP_FILTER_FLAG_TSYNC")
    _klab.set_no_new_privs()
    tid, release, box = _parked_thread(lambda: sc.install(deny(sc.RET_ERRNO | errno.EXDEV)))
    expect_eq(box["setup"], (0, 0), "sibling installs its own filter (ret, errno)")
    got = sc.install(deny(sc.RET_ERRNO | errno.E2BIG), sc.FLAG_TSYNC)
    expect_eq(got, (tid, 0), "TSYNC install with a diverged sibling (ret = its TID, errno)")
    expect_eq(sc.proc_status().get("Seccomp"), "0", "caller's Seccomp after the failed TSYNC")
    expect_allowed(target(), "caller's target call after the failed TSYNC")
    release.set()
    box["thread"].join(10)  # type: ignore[union-attr]
    expect_errno(box["call"], errno.EXDEV, "sibling keeps only its own filter")  # type: ignore[arg-type]


@suite.test
def tsync_esrch_flag_reports_esrch() -> None:
    """With TSYNC_ESRCH (5.7+) the same failure is ESRCH instead of a TID; TSYNC plus NEW_LISTENER
    needs it (EINVAL without)."""
    sc.require_flag(sc.FLAG_TSYNC, "SECCOMP_FILTER_FLAG_TSYNC")
    sc.require_flag(sc.FLAG_TSYNC_ESRCH, "SECCOMP_FILTER_FLAG_TSYNC_ESRCH")
    sc.require_flag(sc.FLAG_NEW_LISTENER, "SECCOMP_FILTER_FLAG_NEW_LISTENER")
    _klab.set_no_new_privs()
    both = sc.FLAG_TSYNC | sc.FLAG_NEW_LISTENER
    expect_errno(sc.install(deny(sc.RET_USER_NOTIF), both), errno.EINVAL, "TSYNC|NEW_LISTENER without TSYNC_ESRCH")
    _, release, box = _parked_thread(lambda: sc.install(deny(sc.RET_ERRNO | errno.EXDEV)))
    expect_eq(box["setup"], (0, 0), "sibling installs its own filter (ret, errno)")
    got = sc.install(deny(sc.RET_ERRNO | errno.E2BIG), sc.FLAG_TSYNC | sc.FLAG_TSYNC_ESRCH)
    expect_errno(got, errno.ESRCH, "TSYNC|TSYNC_ESRCH with a diverged sibling")
    release.set()


# --- ptrace ------------------------------------------------------------------------------------------------


def _traced_target(wfd: int) -> None:
    """Tracee body: install a TRACE filter on the target call, make it, report (ret, errno)."""
    _klab.set_no_new_privs()
    sc.must_install(deny(sc.RET_TRACE | TRACE_DATA))
    sc.must_install(sc.rules(("getpid", sc.RET_ERRNO | errno.EXDEV, MAGIC)))
    sc.must_install(sc.rules(("getuid", sc.RET_KILL_PROCESS, MAGIC)))
    ret, err = target()
    os.write(wfd, f"{ret} {err} {os.getpid()} {threading.get_native_id()}".encode())


def _run_traced(on_seccomp, options: int = sc.PTRACE_O_TRACESECCOMP | sc.PTRACE_O_EXITKILL):  # type: ignore[no-untyped-def]
    pid, rfd = sc.spawn_traced(_traced_target)
    expect_errno(sc.ptrace(sc.PTRACE_SETOPTIONS, pid, 0, options), 0, "PTRACE_SETOPTIONS")
    return pid, *sc.serve_tracee(pid, rfd, on_seccomp)


def _parse(data: bytes) -> tuple[int, int, int]:
    ret, err, pid, _tid = (int(x) for x in data.split())
    return ret, err, pid


@suite.test
def trace_stops_tracer_with_filter_data() -> None:
    """TRACE with a PTRACE_O_TRACESECCOMP tracer: PTRACE_EVENT_SECCOMP stop, event message = the
    filter's data, syscall number visible in the regs; left alone, the call then runs."""
    sc.require_filter_mode()
    seen: list[int] = []
    pid, status, data, msgs = _run_traced(lambda p, m: seen.append(sc.get_reg(p, "syscall_nr")))
    expect_eq(msgs, [TRACE_DATA], "PTRACE_GETEVENTMSG values at seccomp stops")
    expect_eq(seen, [sc.nr("getppid")], "syscall number in the tracee's registers at the stop")
    ret, err, _ = _parse(data)
    expect_eq((ret, err), (os.getpid(), 0), "tracee's target call after the tracer let it run (ret, errno)")
    expect_eq(status, 0, "tracee wait status")


@suite.test
def trace_without_traceseccomp_option_is_enosys() -> None:
    """A tracer that did not ask for PTRACE_O_TRACESECCOMP gets no stop; the call fails with ENOSYS."""
    sc.require_filter_mode()
    pid, status, data, msgs = _run_traced(lambda p, m: None, sc.PTRACE_O_EXITKILL)
    expect_eq(msgs, [], "seccomp stops")
    expect_eq(_parse(data)[:2], (-1, errno.ENOSYS), "tracee's target call (ret, errno)")


@suite.test
def trace_tracer_skips_syscall() -> None:
    """Setting the syscall number to -1 at the seccomp stop skips the call; the tracer's return value
    (-ESRCH) is what the tracee sees."""
    sc.require_filter_mode()

    def skip(pid: int, _msg: int) -> None:
        sc.set_reg(pid, "syscall_nr", -1)
        sc.set_reg(pid, "retval", -errno.ESRCH)

    pid, status, data, msgs = _run_traced(skip)
    expect_eq(msgs, [TRACE_DATA], "seccomp stops")
    expect_eq(_parse(data)[:2], (-1, errno.ESRCH), "tracee's skipped call (ret, errno)")


@suite.test
def trace_redirected_syscall_is_rechecked() -> None:
    """A tracer may change the syscall, and the filters run again on the new one: getppid -> gettid
    is allowed (returns the TID), getppid -> getpid is denied by its ERRNO rule, getppid -> getuid
    hits its KILL_PROCESS rule."""
    sc.require_filter_mode()
    outcomes = {}
    for new in ("gettid", "getpid", "getuid"):
        pid, status, data, msgs = _run_traced(lambda p, m, n=new: sc.set_reg(p, "syscall_nr", sc.nr(n)))
        outcomes[new] = (status, data)
        expect_eq(msgs, [TRACE_DATA], f"seccomp stops (redirect to {new})")
    status, data = outcomes["gettid"]
    ret, err, _pid, tid = (int(x) for x in data.split())
    expect_eq((ret, err), (tid, 0), "getppid redirected to gettid (ret, errno)")
    status, data = outcomes["getpid"]
    expect_eq(_parse(data)[:2], (-1, errno.EXDEV), "getppid redirected to the denied getpid (ret, errno)")
    status, data = outcomes["getuid"]
    sc.expect_killed_by(status, signal.SIGSYS, "getppid redirected to the KILL_PROCESS getuid")
    expect_eq(data, b"", "output of the tracee redirected into KILL_PROCESS")


def _require_checkpoint_restore() -> None:
    """PTRACE_O_SUSPEND_SECCOMP and PTRACE_SECCOMP_GET_FILTER exist only with CONFIG_CHECKPOINT_RESTORE.

    Probe another C/R-only interface, not the ptrace call under test:
    prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE, &size) answers 0 only on such kernels
    (kernel/sys.c prctl_set_mm; without C/R it is EPERM or EINVAL).
    """
    size = ctypes.c_uint(0)
    pr_set_mm, pr_set_mm_map_size = 35, 15
    ctypes.set_errno(0)
    ret = _klab.libc.prctl(pr_set_mm, pr_set_mm_map_size, ctypes.addressof(size), 0, 0)
    if ret != 0 or size.value == 0:
        raise Skip("kernel built without CONFIG_CHECKPOINT_RESTORE (prctl PR_SET_MM_MAP_SIZE refused)")


def _suspend_attempt(prepare_tracer) -> tuple[tuple[int, int], bytes]:  # type: ignore[no-untyped-def]
    """A filtered tracee; the tracer (after prepare_tracer()) asks for PTRACE_O_SUSPEND_SECCOMP."""

    def tracee(wfd: int) -> None:
        ret, err = target()
        os.write(wfd, f"{ret} {err}".encode())

    def before_stop() -> None:
        _klab.set_no_new_privs()
        sc.must_install(deny(sc.RET_ERRNO | errno.E2BIG))

    prepare_tracer()
    pid, rfd = sc.spawn_traced(tracee, before_stop=before_stop)
    got = sc.ptrace(sc.PTRACE_SETOPTIONS, pid, 0, sc.PTRACE_O_SUSPEND_SECCOMP | sc.PTRACE_O_EXITKILL)
    if got[0] != 0:
        expect_errno(sc.ptrace(sc.PTRACE_SETOPTIONS, pid, 0, sc.PTRACE_O_EXITKILL), 0, "PTRACE_SETOPTIONS")
    _, data, _ = sc.serve_tracee(pid, rfd, lambda p, m: None)
    return got, data


@suite.test
def suspend_seccomp_lets_tracee_bypass_filters() -> None:
    """An unfiltered CAP_SYS_ADMIN tracer may set PTRACE_O_SUSPEND_SECCOMP; the tracee's filters then
    do not run (its denied call succeeds)."""
    sc.require_filter_mode()
    _require_checkpoint_restore()
    got, data = _suspend_attempt(lambda: None)
    expect_errno(got, 0, "PTRACE_SETOPTIONS(SUSPEND_SECCOMP) by an unfiltered CAP_SYS_ADMIN tracer")
    expect_eq(data, f"{os.getpid()} 0".encode(), "suspended tracee's target call (ret errno)")


@suite.test
def suspend_seccomp_needs_cap_sys_admin() -> None:
    """Without CAP_SYS_ADMIN the tracer gets EPERM and the tracee stays filtered."""
    sc.require_filter_mode()
    _require_checkpoint_restore()
    got, data = _suspend_attempt(lambda: _klab.drop_caps(_klab.CAP_SYS_ADMIN))
    expect_errno(got, errno.EPERM, "PTRACE_SETOPTIONS(SUSPEND_SECCOMP) without CAP_SYS_ADMIN")
    expect_eq(data, f"-1 {errno.E2BIG}".encode(), "tracee's target call (ret errno)")


@suite.test
def suspend_seccomp_refused_to_filtered_tracer() -> None:
    """A tracer that is itself under seccomp gets EPERM even with CAP_SYS_ADMIN (no escape by proxy)."""
    sc.require_filter_mode()
    _require_checkpoint_restore()

    def confine_tracer() -> None:
        _klab.set_no_new_privs()
        sc.must_install(sc.rules(("getppid", sc.RET_ERRNO | 1, MAGIC + 7)))

    got, data = _suspend_attempt(confine_tracer)
    expect_errno(got, errno.EPERM, "PTRACE_SETOPTIONS(SUSPEND_SECCOMP) by a filtered tracer")
    expect_eq(data, f"-1 {errno.E2BIG}".encode(), "tracee's target call (ret errno)")


@suite.test
def get_filter_dumps_installed_programs() -> None:
    """PTRACE_SECCOMP_GET_FILTER returns each filter exactly as installed, counting from the oldest
    (index 0; get_nth_filter walks back from the newest), ENOENT past the newest; a filtered tracer
    gets EACCES."""
    sc.require_filter_mode()
    _require_checkpoint_restore()
    first, second = deny(sc.RET_ERRNO | 1), sc.rules(("getppid", sc.RET_ERRNO | 2, MAGIC), ("uname", sc.RET_LOG))

    def before_stop() -> None:
        _klab.set_no_new_privs()
        sc.must_install(first)
        sc.must_install(second)

    pid, rfd = sc.spawn_traced(lambda wfd: None, before_stop=before_stop)
    try:
        for index, prog in ((0, first), (1, second)):
            expect_eq(
                sc.ptrace(sc.PTRACE_SECCOMP_GET_FILTER, pid, index, 0), (len(prog), 0), f"length of filter {index}"
            )
            buf = (sc.SockFilter * len(prog))()
            sc.ptrace(sc.PTRACE_SECCOMP_GET_FILTER, pid, index, ctypes.addressof(buf))
            expect_eq([(i.code, i.jt, i.jf, i.k) for i in buf], prog, f"instructions of filter {index}")
        expect_errno(sc.ptrace(sc.PTRACE_SECCOMP_GET_FILTER, pid, 2, 0), errno.ENOENT, "filter index 2 of 2")
        _klab.set_no_new_privs()
        sc.must_install(sc.rules(("getppid", sc.RET_ERRNO | 1, MAGIC + 7)))
        expect_errno(
            sc.ptrace(sc.PTRACE_SECCOMP_GET_FILTER, pid, 0, 0), errno.EACCES, "GET_FILTER by a filtered tracer"
        )
    finally:
        sc.kill_tracee(pid, rfd)


# --- user notification ---------------------------------------------------------------------------------------


def _listen(action: int = sc.RET_USER_NOTIF) -> int:
    _klab.set_no_new_privs()
    return sc.must_install(deny(action), sc.FLAG_NEW_LISTENER, "install with NEW_LISTENER")


def _call_in_thread(*args: int) -> tuple[threading.Thread, dict[str, object]]:
    box: dict[str, object] = {}
    started = threading.Event()

    def run() -> None:
        box["tid"] = threading.get_native_id()
        started.set()
        box["ret"] = target(*args)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    return thread, box


def _finish(thread: threading.Thread, box: dict[str, object]) -> tuple[int, int]:
    thread.join(10)
    expect(not thread.is_alive(), "the notifying thread is still blocked 10s after the reply")
    return box["ret"]  # type: ignore[return-value]


@suite.test
def notif_sizes_match_uapi() -> None:
    """SECCOMP_GET_NOTIF_SIZES: struct seccomp_notif 80, seccomp_notif_resp 24, seccomp_data 64 bytes."""
    sc.require_user_notif()
    expect_eq(sc.notif_sizes()[0], (sc.NOTIF_SIZE, sc.RESP_SIZE, sc.SECCOMP_DATA_SIZE), "notif sizes")


@suite.test
def notif_recv_reports_call_and_reply_errno() -> None:
    """The supervisor sees the caller's TID, nr, arch and args; the id is valid until answered; an
    error reply becomes the caller's errno; the answered id is then ENOENT for ID_VALID and SEND."""
    sc.require_user_notif()
    fd = _listen()
    expect(fd >= 0, f"NEW_LISTENER returned fd {fd}")
    args = (MAGIC, 2, 3, 0xFFFF_FFFF_FFFF_FFFF, 5, 6)
    thread, box = _call_in_thread(*args[1:])
    notif = sc.notif_recv(fd)
    expect_eq(notif.pid, box["tid"], "notif.pid (the calling thread's TID)")
    expect_eq(notif.flags, 0, "notif.flags")
    expect_eq(notif.data.nr, sc.nr("getppid"), "notif.data.nr")
    expect_eq(notif.data.arch, sc.AUDIT_ARCH, "notif.data.arch")
    expect_eq(tuple(notif.data.args), args, "notif.data.args")
    expect_errno(sc.notif_id_valid(fd, notif.id), 0, "ID_VALID while the call waits")
    expect_errno(sc.notif_id_valid(fd, notif.id + 1), errno.ENOENT, "ID_VALID of an id never issued")
    expect_errno(sc.notif_send(fd, notif.id, error=-errno.EXDEV), 0, "SEND error=-EXDEV")
    expect_errno(_finish(thread, box), errno.EXDEV, "caller's result")
    expect_errno(sc.notif_id_valid(fd, notif.id), errno.ENOENT, "ID_VALID after the reply")
    expect_errno(sc.notif_send(fd, notif.id, val=1), errno.ENOENT, "second SEND for the same id")


@suite.test
def notif_reply_value() -> None:
    """A reply with error 0 returns its val to the caller as the syscall result, without running it."""
    sc.require_user_notif()
    fd = _listen()
    thread, box = _call_in_thread()
    notif = sc.notif_recv(fd)
    expect_errno(sc.notif_send(fd, notif.id, val=NOTIF_VALUE), 0, "SEND val")
    expect_eq(_finish(thread, box), (NOTIF_VALUE, 0), "caller's result (ret, errno)")


@suite.test
def notif_continue_runs_the_call() -> None:
    """SECCOMP_USER_NOTIF_FLAG_CONTINUE (5.5+) lets the call run for real; combined with an error or
    a value it is EINVAL and the call keeps waiting."""
    sc.require_user_notif()
    fd = _listen()
    thread, box = _call_in_thread()
    notif = sc.notif_recv(fd)
    bad = sc.notif_send(fd, notif.id, error=-errno.EPERM, flags=sc.USER_NOTIF_FLAG_CONTINUE)
    expect_errno(bad, errno.EINVAL, "SEND CONTINUE with an error")
    expect_errno(sc.notif_id_valid(fd, notif.id), 0, "ID_VALID after the refused reply")
    got = sc.notif_send(fd, notif.id, flags=sc.USER_NOTIF_FLAG_CONTINUE)
    if got[1] == errno.EINVAL:
        sc.notif_send(fd, notif.id, val=0)
        _finish(thread, box)
        raise Skip("kernel lacks SECCOMP_USER_NOTIF_FLAG_CONTINUE (5.5+)")
    expect_errno(got, 0, "SEND CONTINUE")
    expect_allowed(_finish(thread, box), "caller's result after CONTINUE")


@suite.test
def notif_dead_supervisor_fails_call_with_enosys() -> None:
    """When the supervisor dies after receiving (its listener fd closes), the waiting call gets ENOSYS;
    so does a later call with no listener left."""
    sc.require_user_notif()
    fd = _listen()
    sup = os.fork()
    if sup == 0:
        try:
            notif = sc.notif_recv(fd, 10)
            os._exit(0 if notif.data.nr == sc.nr("getppid") else 2)
        except BaseException:  # noqa: BLE001
            os._exit(3)
    os.close(fd)
    r = target()
    status = _klab.wait_status(sup)
    expect_eq(sc.describe_status(status), "exited 0", "supervisor (received the notification, then died)")
    expect_errno(r, errno.ENOSYS, "call pending when the supervisor died")
    expect_errno(target(), errno.ENOSYS, "call after the listener is gone")


ADDFD_TARGET = 900  # fd number the supervisor asks for in the caller's table


def _addfd_caller(wfd: int, listener: int) -> None:
    """The notifying process: make the call, then report the result and what fd ADDFD_TARGET is."""
    os.close(listener)
    ret, err = target()
    try:
        st = os.fstat(ADDFD_TARGET)
        cloexec = bool(fcntl.fcntl(ADDFD_TARGET, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
        seen = f"{st.st_ino} {int(cloexec)}"
    except OSError as exc:
        seen = f"errno {exc.errno}"
    os.write(wfd, f"{ret} {err} {seen}".encode())


@suite.test
def notif_addfd_installs_fd_in_caller() -> None:
    """SECCOMP_IOCTL_NOTIF_ADDFD (5.9+) puts the supervisor's file into the caller's fd table (at the
    requested number with SETFD, with the requested O_CLOEXEC), not into the supervisor's own."""
    sc.require_user_notif()
    fd = _listen()
    src = os.memfd_create("klab-seccomp-addfd")
    ino = os.fstat(src).st_ino
    rfd, wfd = os.pipe()
    caller = os.fork()
    if caller == 0:
        os.close(rfd)
        try:
            _addfd_caller(wfd, fd)
        finally:
            os._exit(0)
    os.close(wfd)
    try:
        notif = sc.notif_recv(fd)
        got = sc.notif_addfd(fd, notif.id, src, ADDFD_TARGET, sc.ADDFD_FLAG_SETFD, os.O_CLOEXEC)
        if got[1] in (errno.EINVAL, errno.ENOTTY) and sc.notif_addfd(fd, notif.id, src)[1] in (
            errno.EINVAL,
            errno.ENOTTY,
        ):
            sc.notif_send(fd, notif.id, val=0)
            raise Skip("kernel lacks SECCOMP_IOCTL_NOTIF_ADDFD (5.9+)")
        expect_eq(got, (ADDFD_TARGET, 0), "ADDFD with SETFD (fd number in the caller, errno)")
        expect_errno(sc.notif_addfd(fd, notif.id + 1, src), errno.ENOENT, "ADDFD for an id never issued")
        expect_errno(sc.notif_send(fd, notif.id, val=NOTIF_VALUE), 0, "SEND val")
        status = _klab.wait_status(caller)
        data = os.read(rfd, 4096).decode()
    finally:
        os.close(rfd)
    expect_eq(sc.describe_status(status), "exited 0", "caller exit")
    expect_eq(data, f"{NOTIF_VALUE} 0 {ino} 1", "caller: 'result errno inode-of-fd-900 cloexec'")
    expect(not os.path.exists(f"/proc/self/fd/{ADDFD_TARGET}"), "supervisor's own fd table got the fd")


@suite.test
def notif_without_listener_is_enosys() -> None:
    """A USER_NOTIF verdict from a filter installed without NEW_LISTENER fails the call with ENOSYS."""
    sc.require_user_notif()
    _klab.set_no_new_privs()
    sc.must_install(deny(sc.RET_USER_NOTIF))
    expect_errno(target(), errno.ENOSYS, "target call under USER_NOTIF, no listener")


@suite.test
def notif_second_listener_is_ebusy() -> None:
    """Only one listener per filter chain: a second NEW_LISTENER is EBUSY, also in a forked child."""
    sc.require_user_notif()
    _listen()
    expect_errno(sc.install(deny(sc.RET_USER_NOTIF), sc.FLAG_NEW_LISTENER), errno.EBUSY, "second NEW_LISTENER")

    def child() -> None:
        r = sc.install(deny(sc.RET_USER_NOTIF), sc.FLAG_NEW_LISTENER)
        expect_errno(r, errno.EBUSY, "NEW_LISTENER in a child inheriting a listener")

    _klab.in_child(child)


# --- stacking with the other LSMs ------------------------------------------------------------------------------------


def _scratch_dir() -> str:
    path = tempfile.mkdtemp(prefix="klab-seccomp-")
    with open(os.path.join(path, "f"), "w") as f:
        f.write("x")
    os.dup2(os.open(path, os.O_RDONLY | os.O_DIRECTORY), MAGIC_FD)
    return path


def _openat(dirfd: int, name: str, flags: int) -> tuple[int, int]:
    buf = ctypes.create_string_buffer(name.encode())
    r = _klab.syscall("openat", dirfd, buf, flags | os.O_CLOEXEC)
    if r[0] >= 0:
        os.close(r[0])
    return r


AT_FDCWD = -100


def _landlock_then_seccomp() -> None:
    """Landlock denies file writes; seccomp answers EXDEV for openat on MAGIC_FD."""
    import _landlock

    _landlock.require_abi(1)
    _landlock.sandbox(fs=_landlock.ACCESS_FS_WRITE_FILE)
    sc.must_install(sc.rules(("openat", sc.RET_ERRNO | errno.EXDEV, MAGIC_FD)))


def _check_both_layers(path: str) -> None:
    expect_errno(_openat(MAGIC_FD, "f", os.O_WRONLY), errno.EXDEV, "openat(MAGIC_FD, f, O_WRONLY): seccomp first")
    expect_errno(_openat(MAGIC_FD, "f", os.O_RDONLY), errno.EXDEV, "openat(MAGIC_FD, f, O_RDONLY): seccomp")
    full = os.path.join(path, "f")
    expect_errno(_openat(AT_FDCWD, full, os.O_WRONLY), errno.EACCES, "openat(AT_FDCWD, f, O_WRONLY): Landlock")
    expect_errno(_openat(AT_FDCWD, full, os.O_RDONLY), 0, "openat(AT_FDCWD, f, O_RDONLY): allowed by both")


@suite.test
def seccomp_errno_preempts_landlock_denial() -> None:
    """seccomp decides at syscall entry, before any LSM hook: a Landlock-denied open that seccomp
    filters with ERRNO(EXDEV) returns EXDEV, not Landlock's EACCES."""
    sc.require_filter_mode()
    path = _scratch_dir()
    try:
        _landlock_then_seccomp()
        _check_both_layers(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@suite.test
def landlock_and_seccomp_inherited_together() -> None:
    """A forked child inherits both the Landlock domain and the seccomp filter."""
    sc.require_filter_mode()
    path = _scratch_dir()
    try:
        _landlock_then_seccomp()
        _klab.in_child(_check_both_layers, path)
        _klab.in_child(lambda: expect_eq(sc.proc_status().get("Seccomp"), "2", "child's Seccomp field"))
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _bpf_file_open_counter(tgid: int):  # type: ignore[no-untyped-def]
    """Load and attach a BPF LSM file_open program counting this tgid's opens; return (counters, link)."""
    try:
        import _bpf
    except ImportError as exc:
        raise Skip(f"the BPF loader (_bpf) is not available: {exc}") from exc
    needed = (
        *("btf_find_funcs", "BTF_PATH", "Asm", "prog_load", "link_create", "Counters", "BpfError", "ENOTSUPP"),
        *("FN_GET_CURRENT_PID_TGID", "FN_MAP_LOOKUP_ELEM", "R0", "R1", "R2", "R10", "SIZE_W", "SIZE_DW"),
    )
    missing = [n for n in needed if not hasattr(_bpf, n)]
    if missing:
        raise Skip(f"_bpf lacks {', '.join(missing)}")
    if _bpf_lsm_active() is False:
        raise Skip("bpf is not in the active LSM list (/sys/kernel/security/lsm)")
    if not os.path.exists(_bpf.BTF_PATH):
        raise Skip(f"no kernel BTF at {_bpf.BTF_PATH}: BPF LSM programs cannot load")
    funcs = _bpf.btf_find_funcs(["bpf_lsm_file_open"])
    if "bpf_lsm_file_open" not in funcs:
        raise Skip("kernel BTF has no bpf_lsm_file_open (no CONFIG_BPF_LSM)")
    counters = _bpf.Counters(1)
    asm = (
        _bpf.Asm()
        .call(_bpf.FN_GET_CURRENT_PID_TGID)
        .alu64("rsh", _bpf.R0, imm=32)
        .jmp("jne", _bpf.R0, "out", imm=tgid)
        .st(_bpf.SIZE_W, _bpf.R10, -4, 0)
        .mov64(_bpf.R2, _bpf.R10)
        .alu64("add", _bpf.R2, imm=-4)
        .ld_map_fd(_bpf.R1, counters.fd)
        .call(_bpf.FN_MAP_LOOKUP_ELEM)
        .jmp("jeq", _bpf.R0, "out", imm=0)
        .mov64(_bpf.R1, imm=1)
        .atomic_add(_bpf.SIZE_DW, _bpf.R0, 0, _bpf.R1)
        .label("out")
        .ret(0)
    )
    try:
        prog = _bpf.prog_load(asm.assemble(), funcs["bpf_lsm_file_open"].type_id)
        link = _bpf.link_create(prog)
    except _bpf.BpfError as exc:
        if exc.errno == errno.EPERM:
            raise Skip(f"this machine refuses BPF LSM programs to a process with all capabilities ({exc})") from exc
        if exc.errno in (errno.EOPNOTSUPP, _bpf.ENOTSUPP):  # no BPF trampoline on this arch/kernel
            raise Skip(f"cannot attach a BPF LSM program on this kernel: {exc}") from exc
        raise
    return counters, (prog, link)


def _bpf_lsm_active() -> bool | None:
    try:
        with open("/sys/kernel/security/lsm") as f:
            return "bpf" in f.read().split(",")
    except OSError:
        return None


@suite.test
def bpf_lsm_hook_not_reached_for_seccomp_denied_call() -> None:
    """A BPF LSM file_open program counts this process's opens; an open rejected by seccomp never
    reaches it (counter unchanged) while an allowed open still does (counter + 1)."""
    sc.require_filter_mode()
    path = _scratch_dir()
    try:
        counters, _keep = _bpf_file_open_counter(os.getpid())
        expect_errno(_openat(MAGIC_FD, "f", os.O_RDONLY), 0, "open before any filter")
        if counters[0] == 0:
            active = _bpf_lsm_active()
            if active is not True:
                raise Skip("bpf is not an active LSM (program attached, file_open never ran)")
            raise Failure("bpf is an active LSM but the attached file_open program did not count an open")
        _klab.set_no_new_privs()
        sc.must_install(sc.rules(("openat", sc.RET_ERRNO | errno.EXDEV, MAGIC_FD)))
        before = counters[0]
        expect_errno(_openat(MAGIC_FD, "f", os.O_RDONLY), errno.EXDEV, "open denied by seccomp")
        expect_eq(counters[0], before, "file_open count after the seccomp-denied open")
        expect_errno(_openat(AT_FDCWD, os.path.join(path, "f"), os.O_RDONLY), 0, "open allowed by seccomp")
        expect_eq(counters[0], before + 1, "file_open count after the allowed open")
    finally:
        shutil.rmtree(path, ignore_errors=True)
