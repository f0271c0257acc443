"""seccomp: what changed for seccomp users between the lab's kernels (6.1, 6.12, 7.3).

uapi/linux/seccomp.h is the same in 6.12 and 7.3; what a seccomp user sees change is around it:
the uprobe syscall joins uretprobe among the calls no filter can stop (kernel/seccomp.c
seccomp_uprobe_exception), and a tracer can rewrite a stopped call's number and arguments with
PTRACE_SET_SYSCALL_INFO, the filters then judging the rewritten call. From 6.1 to 6.12:
SECCOMP_IOCTL_NOTIF_SET_FLAGS. Each test pins the behaviour on both sides of the change.
"""

from __future__ import annotations

import ctypes
import errno
import os

import _klab
import _seccomp as sc
from _klab import Skip, expect, expect_eq, expect_errno

from seccomp import suite
from seccomp.common import MAGIC, NOTIF_VALUE, TRACE_DATA, deny, target

test = suite.test

# x86_64 syscall numbers that _klab's table does not hold (arch/x86/entry/syscalls/syscall_64.tbl).
# arm64 has neither call, and in its (generic) table 295-402 are unassigned: there the same numbers
# must meet the filter like any other.
UPROBE_NR = {"x86_64": {"uretprobe": 335, "uprobe": 336}, "aarch64": {}}[_klab.MACHINE]


def _call_number(wfd: int, number: int, filtered: bool) -> None:
    """Child body: [install ERRNO(E2BIG) for syscall `number`, any args,] call it, report 'ret/errno'."""
    if filtered:
        _klab.set_no_new_privs()
        sc.must_install(sc.rules((number, sc.RET_ERRNO | errno.E2BIG)))
    ctypes.set_errno(0)
    ret = _klab.libc.syscall(ctypes.c_long(number))
    os.write(wfd, f"{ret}/{ctypes.get_errno() if ret == -1 else 0}".encode())


def _outcomes(number: int) -> tuple[tuple[str, str], tuple[str, str]]:
    """(how a direct call of `number` ends, its report): without a filter, and under one denying it."""
    results = []
    for filtered in (False, True):
        status, data = sc.fork_status(_call_number, number, filtered)
        results.append((sc.describe_status(status), data.decode(errors="replace")))
    return results[0], results[1]


def _expect_unchecked(name: str, number: int, unfiltered: tuple[str, str]) -> None:
    """The call ends the same way with and without a filter denying it: the filter was not consulted."""
    plain, denied = _outcomes(number)
    expect_eq(plain, unfiltered, f"direct {name} call ({number}) without a filter (end, 'ret/errno')")
    expect_eq(denied, unfiltered, f"direct {name} call ({number}) under a filter returning ERRNO(E2BIG) for it")


def _expect_filtered(name: str, number: int) -> None:
    """Not a syscall here: ENOSYS without a filter, the filter's E2BIG under one."""
    plain, denied = _outcomes(number)
    expect_eq(plain, ("exited 0", f"-1/{errno.ENOSYS}"), f"{name} ({number}) without a filter (end, 'ret/errno')")
    expect_eq(denied, ("exited 0", f"-1/{errno.E2BIG}"), f"{name} ({number}) under a filter returning ERRNO(E2BIG)")


@test
def uretprobe_syscall_passes_the_filters_unchecked() -> None:
    """x86_64's uretprobe syscall (v6.11) is never filtered (seccomp: passthrough uretprobe systemcall
    without filtering, v6.14, also in 6.12.y): under a filter returning ERRNO for it, a direct call
    still reaches sys_uretprobe, which kills a caller outside the uretprobe trampoline with SIGILL,
    exactly as without the filter. Before, the number was no syscall and the filter answered. On
    arm64 (no such call) 335 is filtered like any other number."""
    sc.require_filter_mode()
    if "uretprobe" in UPROBE_NR and _klab.kernel_version() >= (6, 12):
        _expect_unchecked("uretprobe", UPROBE_NR["uretprobe"], ("killed by SIGILL", ""))
    else:
        _expect_filtered("unassigned syscall" if "uretprobe" not in UPROBE_NR else "uretprobe number", 335)


@test
def uprobe_syscall_passes_the_filters_unchecked() -> None:
    """x86_64's uprobe syscall (v6.18) joined uretprobe in seccomp_uprobe_exception: under a filter
    returning ERRNO for it, a direct call gets sys_uprobe's own refusal of a caller outside a uprobe
    trampoline (an error, ENXIO in 6.18, EPROTO later), exactly as without the filter. Before v6.18
    the number was no syscall and the filter answered. On arm64 (no such call) 336 is filtered."""
    sc.require_filter_mode()
    if "uprobe" in UPROBE_NR and _klab.kernel_version() >= (6, 18):
        plain = _outcomes(UPROBE_NR["uprobe"])[0]
        expect(plain[1].startswith("-1/") and plain[1] != f"-1/{errno.ENOSYS}", f"sys_uprobe's refusal: {plain}")
        _expect_unchecked("uprobe", UPROBE_NR["uprobe"], plain)
    else:
        _expect_filtered("unassigned syscall" if "uprobe" not in UPROBE_NR else "uprobe number", 336)


def _require_set_syscall_info() -> None:
    major, minor = _klab.kernel_version()
    if (major, minor) < (6, 16):
        raise Skip(f"PTRACE_SET_SYSCALL_INFO landed in v6.16; kernel {major}.{minor} lacks it")


@test
def set_syscall_info_rewrites_are_judged_by_the_filters() -> None:
    """PTRACE_SET_SYSCALL_INFO (6.16+) at a seccomp stop changes the call's arguments or number and
    the filters run again on the result: getppid(MAGIC) made getppid(MAGIC+1) meets that call's
    ERRNO rule, made getppid(MAGIC+2) runs, made gettid(MAGIC) returns the TID; at a PTRACE_SYSCALL
    entry stop, getpid(MAGIC+3) made getppid(MAGIC+1) meets the ERRNO rule. Non-zero flags and an op
    other than the stop's are EINVAL."""
    sc.require_filter_mode()
    _require_set_syscall_info()
    getppid, getpid, gettid = sc.nr("getppid"), sc.nr("getpid"), sc.nr("gettid")
    rewrites = [(getppid, MAGIC + 1), (getppid, MAGIC + 2), (gettid, MAGIC)]
    refused: list[tuple[int, int]] = []

    def before_stop() -> None:
        _klab.set_no_new_privs()
        sc.must_install(sc.rules(("getppid", sc.RET_TRACE | TRACE_DATA, MAGIC)))
        sc.must_install(sc.rules(("getppid", sc.RET_ERRNO | errno.EXDEV, MAGIC + 1)))

    def tracee(wfd: int) -> None:
        calls = [target() for _ in rewrites] + [sc.call("getpid", MAGIC + 3)]
        os.write(wfd, f"{calls} {os.getppid()} {_tid()}".encode())

    def on_stop(pid: int, info: sc.SyscallInfo) -> None:
        if info.op == sc.PTRACE_SYSCALL_INFO_SECCOMP and info.args[0] == MAGIC and rewrites:
            if not refused:
                info.flags = 1
                refused.append(sc.set_syscall_info(pid, info))
                info.flags, info.op = 0, sc.PTRACE_SYSCALL_INFO_ENTRY
                refused.append(sc.set_syscall_info(pid, info))
                info.op = sc.PTRACE_SYSCALL_INFO_SECCOMP
            info.nr, info.args[0] = rewrites.pop(0)
            expect_errno(sc.set_syscall_info(pid, info), 0, "PTRACE_SET_SYSCALL_INFO at a seccomp stop")
        elif info.op == sc.PTRACE_SYSCALL_INFO_ENTRY and (info.nr, info.args[0]) == (getpid, MAGIC + 3):
            info.nr, info.args[0] = getppid, MAGIC + 1
            expect_errno(sc.set_syscall_info(pid, info), 0, "PTRACE_SET_SYSCALL_INFO at an entry stop")

    pid, rfd = sc.spawn_traced(tracee, before_stop=before_stop)
    options = sc.PTRACE_O_TRACESYSGOOD | sc.PTRACE_O_TRACESECCOMP | sc.PTRACE_O_EXITKILL
    expect_errno(sc.ptrace(sc.PTRACE_SETOPTIONS, pid, 0, options), 0, "PTRACE_SETOPTIONS")
    status, data = sc.serve_syscalls(pid, rfd, on_stop)
    expect_eq(status, 0, f"tracee wait status (report {data!r})")
    expect_eq(refused, [(-1, errno.EINVAL)] * 2, "SET_SYSCALL_INFO with flags 1, with op ENTRY at a seccomp stop")
    calls, ppid, tid = data.decode().rsplit(" ", 2)
    want = [(-1, errno.EXDEV), (int(ppid), 0), (int(tid), 0), (-1, errno.EXDEV)]
    expect_eq(calls, str(want), "tracee's calls after the rewrites (ret, errno)")


def _tid() -> int:
    return sc.call("gettid")[0]


@test
def notif_set_flags_accepts_only_sync_wake_up() -> None:
    """SECCOMP_IOCTL_NOTIF_SET_FLAGS (6.6+) takes SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP and nothing
    else (EINVAL), and notifications keep working in that mode; before 6.6 the ioctl is unknown
    (EINVAL for every flag)."""
    sc.require_user_notif()
    _klab.set_no_new_privs()
    fd = sc.must_install(deny(sc.RET_USER_NOTIF), sc.FLAG_NEW_LISTENER)
    expect_errno(sc.notif_set_flags(fd, 2), errno.EINVAL, "SET_FLAGS with an unknown flag")
    if _klab.kernel_version() < (6, 6):
        expect_errno(sc.notif_set_flags(fd, sc.USER_NOTIF_FD_SYNC_WAKE_UP), errno.EINVAL, "SET_FLAGS before 6.6")
        return
    expect_errno(sc.notif_set_flags(fd, sc.USER_NOTIF_FD_SYNC_WAKE_UP), 0, "SET_FLAGS(FD_SYNC_WAKE_UP)")

    def caller(wfd: int) -> int:
        os.close(fd)
        os.write(wfd, repr(target()).encode())
        return 0

    pid, rfd = _klab.fork_pipe(caller)
    notif = sc.notif_recv(fd)
    expect_eq(notif.pid, pid, "notif.pid in sync wake-up mode")
    expect_errno(sc.notif_send(fd, notif.id, val=NOTIF_VALUE), 0, "SEND in sync wake-up mode")
    status = _klab.wait_status(pid)
    expect_eq((status, _klab.read_pipe(rfd)[0].decode()), (0, repr((NOTIF_VALUE, 0))), "caller (status, result)")
