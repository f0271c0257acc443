"""seccomp: ptrace."""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import threading

import _klab
import _seccomp as sc
from _klab import Skip, expect_eq, expect_errno

from seccomp import suite
from seccomp.common import MAGIC, TRACE_DATA, deny, target

test = suite.test


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


@suite.test
def get_filter_and_metadata_need_cap_sys_admin() -> None:
    """PTRACE_SECCOMP_GET_METADATA reports per filter (0 = oldest) the flags that matter later (only
    FLAG_LOG), ENOENT past the newest and EINVAL for a buffer too small for filter_off; without
    CAP_SYS_ADMIN the tracer gets EACCES from it and from PTRACE_SECCOMP_GET_FILTER."""
    sc.require_filter_mode()
    _require_checkpoint_restore()

    def before_stop() -> None:
        _klab.set_no_new_privs()
        sc.must_install(deny(sc.RET_ERRNO | 1), sc.FLAG_LOG)
        sc.must_install(deny(sc.RET_ERRNO | 2), sc.FLAG_SPEC_ALLOW)

    pid, rfd = sc.spawn_traced(lambda wfd: None, before_stop=before_stop)
    try:
        size = ctypes.sizeof(sc.SeccompMetadata)
        expect_eq(sc.seccomp_metadata(pid, 0), ((size, 0), sc.FLAG_LOG), "metadata of filter 0 ((ret, errno), flags)")
        expect_eq(sc.seccomp_metadata(pid, 1), ((size, 0), 0), "metadata of filter 1 (SPEC_ALLOW is not reported)")
        expect_errno(sc.seccomp_metadata(pid, 2)[0], errno.ENOENT, "metadata of filter 2 of 2")
        expect_errno(sc.seccomp_metadata(pid, 0, size=4)[0], errno.EINVAL, "metadata with a 4-byte buffer")
        _klab.drop_caps(_klab.CAP_SYS_ADMIN)
        expect_errno(sc.seccomp_metadata(pid, 0)[0], errno.EACCES, "GET_METADATA without CAP_SYS_ADMIN")
        got = sc.ptrace(sc.PTRACE_SECCOMP_GET_FILTER, pid, 0, 0)
        expect_errno(got, errno.EACCES, "GET_FILTER without CAP_SYS_ADMIN")
    finally:
        sc.kill_tracee(pid, rfd)
