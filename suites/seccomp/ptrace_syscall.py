"""seccomp: PTRACE_SYSCALL entry stops and the filters.

The kernel reports the syscall-entry stop to the tracer first and runs the seccomp filters after it
(kernel/entry/common.c, arch/arm64/kernel/ptrace.c: "Do seccomp after ptrace, to catch any tracer
changes"), so what the filters judge is the call as the tracer left it. The tracer reads each stop
with PTRACE_GET_SYSCALL_INFO and changes the syscall number through the per-arch register table.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import threading

import _klab
import _seccomp as sc
from _klab import expect_eq, expect_errno

from seccomp import suite
from seccomp.common import MAGIC, TRACE_DATA

test = suite.test

ERESTART_RESTARTBLOCK = 516  # what an interrupted nanosleep returns before the kernel restarts it


def _filters(*rules_: tuple) -> callable:  # type: ignore[type-arg, valid-type]
    """before_stop for the tracee: no_new_privs and one filter with these rules."""

    def install() -> None:
        _klab.set_no_new_privs()
        sc.must_install(sc.rules(*rules_))

    return install


def _calls_and_report(wfd: int, calls: list[tuple[str | int, int]]) -> None:
    """Tracee body: make each (syscall name or number, args[0]) call, report 'ret/errno ...' and its TID."""
    results = []
    for name, arg in calls:
        number = sc.nr(name) if isinstance(name, str) else name
        ctypes.set_errno(0)
        ret = _klab.libc.syscall(ctypes.c_long(number), ctypes.c_long(arg))
        results.append(f"{ret}/{ctypes.get_errno() if ret == -1 else 0}")
    os.write(wfd, (" ".join(results) + f" tid={threading.get_native_id()}").encode())


def _trace(calls, before_stop, on_stop, on_signal=None) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    """Run a tracee making `calls` under PTRACE_SYSCALL; returns (wait status, its report)."""
    pid, rfd = sc.spawn_traced(_calls_and_report, calls, before_stop=before_stop)
    options = sc.PTRACE_O_TRACESYSGOOD | sc.PTRACE_O_TRACESECCOMP | sc.PTRACE_O_EXITKILL
    expect_errno(sc.ptrace(sc.PTRACE_SETOPTIONS, pid, 0, options), 0, "PTRACE_SETOPTIONS")
    status, data = sc.serve_syscalls(pid, rfd, on_stop, on_signal)
    return status, data.decode(errors="replace")


def _redirect(table: dict[int, int], seen: list[tuple[int, int]]):  # type: ignore[no-untyped-def]
    """on_stop: at the entry stop of a call with args[0] == MAGIC, log (op, nr) and rewrite nr by `table`."""

    def on_stop(pid: int, info: sc.SyscallInfo) -> None:
        if info.op == sc.PTRACE_SYSCALL_INFO_EXIT or info.args[0] != MAGIC:
            return
        seen.append((info.op, info.nr))
        if info.op == sc.PTRACE_SYSCALL_INFO_ENTRY and info.nr in table:
            sc.set_reg(pid, "syscall_nr", table[info.nr])

    return on_stop


@test
def syscall_entry_redirect_is_checked_by_filters() -> None:
    """A tracer that changes the syscall number at the PTRACE_SYSCALL entry stop gets the new call
    judged by the filters: getppid made getpid meets getpid's ERRNO rule, getpid (denied) made
    gettid is allowed and returns the TID, getppid made getuid meets getuid's KILL_PROCESS rule."""
    sc.require_filter_mode()
    before = _filters(("getpid", sc.RET_ERRNO | errno.EXDEV, MAGIC), ("getuid", sc.RET_KILL_PROCESS, MAGIC))
    getppid, getpid, gettid, getuid = (sc.nr(n) for n in ("getppid", "getpid", "gettid", "getuid"))
    seen: list[tuple[int, int]] = []
    table = {getppid: getpid, getpid: gettid}
    status, report = _trace([("getppid", MAGIC), ("getpid", MAGIC)], before, _redirect(table, seen))
    entry = sc.PTRACE_SYSCALL_INFO_ENTRY
    expect_eq(seen, [(entry, getppid), (entry, getpid)], "entry stops of the MAGIC calls (op, nr)")
    expect_eq(status, 0, "tracee wait status")
    results, _, tid = report.partition(" tid=")
    expect_eq(results, f"-1/{errno.EXDEV} {tid}/0", "getppid->getpid, getpid->gettid ('ret/errno' each)")

    status, report = _trace([("getppid", MAGIC)], before, _redirect({getppid: getuid}, []))
    sc.expect_killed_by(status, signal.SIGSYS, "tracee whose getppid was made getuid (KILL_PROCESS rule)")
    expect_eq(report, "", "report of the tracee killed after the change")


@test
def syscall_entry_skip_keeps_tracers_return_value() -> None:
    """Syscall number -1 set at the entry stop skips the call; the filters then see nr -1 (no rule
    matches) and the value the tracer put in the return register is what the tracee gets, even
    for a call the filters would have denied."""
    sc.require_filter_mode()
    before = _filters(("getpid", sc.RET_ERRNO | errno.EXDEV, MAGIC))
    values = {sc.nr("getppid"): -errno.ESRCH, sc.nr("getpid"): 45000}

    def skip(pid: int, info: sc.SyscallInfo) -> None:
        if info.op == sc.PTRACE_SYSCALL_INFO_ENTRY and info.args[0] == MAGIC and info.nr in values:
            sc.set_reg(pid, "syscall_nr", -1)
            sc.set_reg(pid, "retval", values[info.nr])

    status, report = _trace([("getppid", MAGIC), ("getpid", MAGIC)], before, skip)
    expect_eq(status, 0, "tracee wait status")
    results = report.partition(" tid=")[0]
    expect_eq(results, f"-1/{errno.ESRCH} 45000/0", "skipped getppid, skipped denied getpid ('ret/errno' each)")


@test
def negative_syscall_numbers_are_enosys() -> None:
    """syscall(-1) and syscall(-101) fail with ENOSYS, untraced and under PTRACE_SYSCALL (the tracer
    sees them at the entry stop); the filters see the negative number too (a rule on -102 answers)."""
    sc.require_filter_mode()
    before = _filters((-102, sc.RET_ERRNO | errno.E2BIG))
    calls = [(-1, MAGIC), (-101, MAGIC), (-102, MAGIC)]
    want = f"-1/{errno.ENOSYS} -1/{errno.ENOSYS} -1/{errno.E2BIG}"

    def untraced(wfd: int) -> None:
        before()
        _calls_and_report(wfd, calls)

    status, data = sc.fork_status(untraced)
    expect_eq((status, data.decode().partition(" tid=")[0]), (0, want), "untraced (status, 'ret/errno' each)")
    seen: list[tuple[int, int]] = []
    status, report = _trace(calls, before, _redirect({}, seen))
    expect_eq((status, report.partition(" tid=")[0]), (0, want), "under PTRACE_SYSCALL (status, 'ret/errno' each)")
    entry = sc.PTRACE_SYSCALL_INFO_ENTRY
    expect_eq(seen, [(entry, -1), (entry, -101), (entry, -102)], "entry stops of the MAGIC calls (op, nr)")


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _restart_run(deny_restart: bool) -> tuple[int, str, list[tuple[str, int]]]:
    """A tracee sleeps in nanosleep(0.1 s); at its entry stop the tracer queues SIGWINCH (ignored by
    default, but a traced task is still woken by it), so the sleep is interrupted and restarted
    through restart_syscall. Returns (wait status, its 'ret/errno', the stops seen)."""
    nanosleep, restart = sc.nr("nanosleep"), sc.nr("restart_syscall")
    names = {nanosleep: "nanosleep", restart: "restart_syscall"}
    seen: list[tuple[str, int]] = []

    def tracee(wfd: int) -> None:
        ts = _Timespec(0, 100_000_000)
        ctypes.set_errno(0)
        ret = _klab.libc.syscall(ctypes.c_long(nanosleep), ctypes.byref(ts), None)
        os.write(wfd, f"{ret}/{ctypes.get_errno() if ret == -1 else 0}".encode())

    def on_stop(pid: int, info: sc.SyscallInfo) -> None:
        if info.op == sc.PTRACE_SYSCALL_INFO_ENTRY and info.nr in names:
            seen.append((f"enter {names[info.nr]}", 0))
            if info.nr == nanosleep:
                os.kill(pid, signal.SIGWINCH)
        elif info.op == sc.PTRACE_SYSCALL_INFO_EXIT and seen and len(seen) % 2:
            seen.append(("exit", info.nr))  # exit.rval overlays nr

    before = _filters(("restart_syscall", sc.RET_ERRNO | errno.E2BIG)) if deny_restart else _filters()
    pid, rfd = sc.spawn_traced(tracee, before_stop=before)
    options = sc.PTRACE_O_TRACESYSGOOD | sc.PTRACE_O_EXITKILL
    expect_errno(sc.ptrace(sc.PTRACE_SETOPTIONS, pid, 0, options), 0, "PTRACE_SETOPTIONS")
    status, data = sc.serve_syscalls(pid, rfd, on_stop)
    return status, data.decode(errors="replace"), seen


@test
def restarted_syscall_passes_the_filters_as_restart_syscall() -> None:
    """An interrupted nanosleep resumes as restart_syscall, and that is the call the filters judge:
    the tracer sees nanosleep's entry, its exit with -ERESTART_RESTARTBLOCK, then restart_syscall's
    entry; a rule denying restart_syscall (ERRNO E2BIG) makes the resumed sleep fail with E2BIG,
    without it the sleep completes (0)."""
    sc.require_filter_mode()
    for deny_restart, result, last in ((False, "0/0", 0), (True, f"-1/{errno.E2BIG}", -errno.E2BIG)):
        status, report, seen = _restart_run(deny_restart)
        what = "restart_syscall denied" if deny_restart else "restart_syscall allowed"
        expect_eq((status, report), (0, result), f"{what}: tracee (wait status, nanosleep 'ret/errno')")
        want = [("enter nanosleep", 0), ("exit", -ERESTART_RESTARTBLOCK), ("enter restart_syscall", 0), ("exit", last)]
        expect_eq(seen, want, f"{what}: stops (entry name or exit rval)")


@test
def seccomp_stop_follows_the_entry_stop() -> None:
    """Under PTRACE_SYSCALL with PTRACE_O_TRACESECCOMP, a call a filter TRACEs stops twice, the
    syscall-entry stop first and the seccomp stop (ret_data = the filter's data) second, and the
    filters judge the number the tracer left at the entry stop: getpid made getppid at the entry
    stop reaches the seccomp stop as getppid."""
    sc.require_filter_mode()
    before = _filters(("getppid", sc.RET_TRACE | TRACE_DATA, MAGIC))
    getppid, getpid = sc.nr("getppid"), sc.nr("getpid")
    seen: list[tuple[int, int, int]] = []

    def on_stop(pid: int, info: sc.SyscallInfo) -> None:
        if info.op == sc.PTRACE_SYSCALL_INFO_EXIT or info.args[0] != MAGIC:
            return
        seen.append((info.op, info.nr, info.ret_data if info.op == sc.PTRACE_SYSCALL_INFO_SECCOMP else 0))
        if info.op == sc.PTRACE_SYSCALL_INFO_ENTRY and info.nr == getpid:
            sc.set_reg(pid, "syscall_nr", getppid)

    status, report = _trace([("getppid", MAGIC), ("getpid", MAGIC)], before, on_stop)
    entry, secc = sc.PTRACE_SYSCALL_INFO_ENTRY, sc.PTRACE_SYSCALL_INFO_SECCOMP
    want = [(entry, getppid, 0), (secc, getppid, TRACE_DATA), (entry, getpid, 0), (secc, getppid, TRACE_DATA)]
    expect_eq(seen, want, "stops of the MAGIC calls (op, nr, ret_data)")
    ppid = os.getpid()  # the tracee's parent is this process
    expect_eq((status, report.partition(" tid=")[0]), (0, f"{ppid}/0 {ppid}/0"), "tracee (status, 'ret/errno' each)")
