"""seccomp: actions."""

from __future__ import annotations

import errno
import os
import signal
import threading
import time

import _klab
import _seccomp as sc
from _klab import Skip, expect, expect_eq, expect_errno

from seccomp import suite
from seccomp.common import MAGIC, TRACE_DATA, TRAP_DATA, deny, expect_allowed, target

test = suite.test


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


THREAD_HIT_WAIT = 15.0  # seconds the main thread waits for the calling thread to end (fork_status waits 20)


def _thread_hits(action: int) -> tuple[int, bytes]:
    """Fork a process whose second thread calls the target under a filter returning `action`.

    Returns (wait status, what the main thread wrote). The main thread waits for the calling
    thread to be gone from /proc/self/task (the call returned, or killed the thread alone), or
    for THREAD_HIT_WAIT seconds, and then writes: it writes nothing only when the call took the
    whole process down. Waiting for the thread, not a fixed time, keeps a slow start of the thread
    on a loaded machine from reading as a survival.
    """

    def child(wfd: int) -> None:
        _klab.set_no_new_privs()
        sc.must_install(deny(action))
        started = threading.Event()
        box: dict[str, int] = {}

        def call() -> None:
            box["tid"] = threading.get_native_id()
            started.set()
            target()

        deadline = time.monotonic() + THREAD_HIT_WAIT
        threading.Thread(target=call, daemon=True).start()
        if not started.wait(THREAD_HIT_WAIT):
            os.write(wfd, b"main thread survived (the calling thread never started)")
            return
        task = f"/proc/self/task/{box['tid']}"
        while os.path.exists(task) and time.monotonic() < deadline:
            time.sleep(0.005)
        still = os.path.exists(task)
        os.write(wfd, b"main thread survived" + (b" (the calling thread still runs)" if still else b""))

    return sc.fork_status(child)


@suite.test
def kill_process_from_a_thread_kills_all() -> None:
    """KILL_PROCESS hit by a secondary thread kills the whole process (wait status: SIGSYS)."""
    sc.require_action("kill_process")
    status, data = _thread_hits(sc.RET_KILL_PROCESS)
    sc.expect_killed_by(status, signal.SIGSYS, "process whose thread hit KILL_PROCESS")
    expect_eq(data, b"", "main thread output")


@suite.test
def unknown_action_kills_process() -> None:
    """A return value with no known action (0x00010000) is treated as KILL_PROCESS."""
    sc.require_action("kill_process")
    status, data = _thread_hits(0x00010000)
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
