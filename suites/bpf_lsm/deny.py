"""bpf_lsm: deny on several hooks."""

from __future__ import annotations

import errno
import os

import _klab
from _klab import kernel_version
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.common import enforce, require, true_binary

test = suite.test


def _deny_hook(hook: str, action: str, arg: str = "", setup: str = "") -> None:
    """-EPERM for one worker on `hook`: its `action` fails with EPERM; a bystander's does not.

    Before attach the target succeeds; after the link fd is closed it succeeds
    again (exec checks that last, since success replaces the worker).
    """
    require(hook)
    with Worker() as target, Worker() as bystander:
        for w in (target, bystander):
            if setup:
                w.do(setup)
        if action != "exec":
            expect_result(target.do(action, arg), 0, f"{action} by the target before attach")
        prog, link = enforce(hook, target.pid, -errno.EPERM)
        expect_result(target.do(action, arg), errno.EPERM, f"{action} by the target tgid under a {hook} deny program")
        want_other = Worker.REPLACED if action == "exec" else 0
        expect_result(bystander.do(action, arg), want_other, f"{action} by another process under the same program")
        os.close(link)
        want = Worker.REPLACED if action == "exec" else 0
        expect_result(target.do(action, arg), want, f"{action} by the target after closing the link fd")
        os.close(prog)


@suite.test
def deny_file_open() -> None:
    """file_open returning -EPERM makes open(2) fail with EPERM for that tgid only."""
    _deny_hook("file_open", "open", "/dev/null")


@suite.test
def deny_file_mprotect() -> None:
    """file_mprotect returning -EPERM makes mprotect(2) fail with EPERM for that tgid only."""
    _deny_hook("file_mprotect", "mprotect")


@suite.test
def deny_exec_bprm_check_security() -> None:
    """bprm_check_security returning -EPERM makes execve(2) fail with EPERM; the caller survives."""
    path = true_binary()
    _deny_hook("bprm_check_security", "exec", path)


@suite.test
def deny_fork_task_alloc() -> None:
    """task_alloc returning -EPERM makes fork(2) fail with EPERM in that tgid only."""
    _deny_hook("task_alloc", "fork")


@suite.test
def deny_ptrace_access_check() -> None:
    """ptrace_access_check returning -EPERM: PTRACE_ATTACH fails with EPERM for that tracer only."""
    _deny_hook("ptrace_access_check", "ptrace", setup="spawn")


# perfmon_capable() is CAP_PERFMON or CAP_SYS_ADMIN: both must go for the LSM to decide a procfs read.
PERFMON_CAPS = [_klab.CAP_PERFMON, _klab.CAP_SYS_ADMIN]

# "mm,procfs: allow read-only remote mm access under CAP_PERFMON" (Andrii
# Nakryiko, v6.15): mm_access() -> may_access_mm() grants PTRACE_MODE_READ to a
# perfmon_capable() caller after ptrace_may_access() (and so every LSM) refused.
PERFMON_READ_SINCE = (6, 15)


@suite.test
def ptrace_deny_reads_as_eacces_in_procfs() -> None:
    """A ptrace_access_check denial (-ENOKEY) surfaces as EACCES for ptrace-mode procfs opens.

    mm_access() turns the failed ptrace_may_access() into EACCES whatever the
    LSM returned, while PTRACE_ATTACH passes the LSM's errno through. The
    reader drops CAP_PERFMON and CAP_SYS_ADMIN: from v6.15 on either of them
    would let it read despite the LSM (see perfmon_reads_environ_despite_ptrace_denial).
    """
    require("ptrace_access_check")
    with Worker() as target:
        target.do("spawn")
        expect_result(target.do("drop_caps", PERFMON_CAPS), 0, "dropping CAP_PERFMON and CAP_SYS_ADMIN")
        expect_result(target.do("environ"), 0, "reading the child's /proc/PID/environ before attach")
        prog, link = enforce("ptrace_access_check", target.pid, -errno.ENOKEY)
        expect_result(target.do("environ"), errno.EACCES, "reading /proc/PID/environ under a -ENOKEY program")
        expect_result(target.do("proc_mem"), errno.EACCES, "opening /proc/PID/mem under a -ENOKEY program")
        expect_result(target.do("ptrace"), errno.ENOKEY, "PTRACE_ATTACH under a -ENOKEY program")
        os.close(link)
        expect_result(target.do("environ"), 0, "reading /proc/PID/environ after the link closed")
        os.close(prog)


@suite.test
def perfmon_reads_environ_despite_ptrace_denial() -> None:
    """From v6.15 CAP_PERFMON (or CAP_SYS_ADMIN) reads /proc/PID/environ whatever the LSMs say; before, EACCES.

    The exception is for PTRACE_MODE_READ only: /proc/PID/mem (PTRACE_MODE_ATTACH)
    and PTRACE_ATTACH stay denied, and without either capability the read is
    denied on every version.
    """
    require("ptrace_access_check")
    since = kernel_version() >= PERFMON_READ_SINCE
    want_read = 0 if since else errno.EACCES
    why = "v6.15+: may_access_mm() lets perfmon_capable() read" if since else "before v6.15 the LSM decides"
    with Worker() as perfmon, Worker() as admin:
        for worker in (perfmon, admin):
            worker.do("spawn")
        expect_result(perfmon.do("drop_caps", [_klab.CAP_SYS_ADMIN]), 0, "dropping CAP_SYS_ADMIN (CAP_PERFMON kept)")
        expect_result(admin.do("drop_caps", [_klab.CAP_PERFMON]), 0, "dropping CAP_PERFMON (CAP_SYS_ADMIN kept)")
        progs = [enforce("ptrace_access_check", w.pid, -errno.ENOKEY) for w in (perfmon, admin)]
        for worker, cap in ((perfmon, "CAP_PERFMON"), (admin, "CAP_SYS_ADMIN")):
            expect_result(worker.do("environ"), want_read, f"reading environ with {cap} under -ENOKEY ({why})")
            expect_result(worker.do("proc_mem"), errno.EACCES, f"opening /proc/PID/mem with {cap} under -ENOKEY")
            expect_result(worker.do("ptrace"), errno.ENOKEY, f"PTRACE_ATTACH with {cap} under -ENOKEY")
        expect_result(perfmon.do("drop_caps", [_klab.CAP_PERFMON]), 0, "dropping CAP_PERFMON as well")
        expect_result(perfmon.do("environ"), errno.EACCES, "reading /proc/PID/environ with neither capability")
        for prog, link in progs:
            os.close(link)
            os.close(prog)
