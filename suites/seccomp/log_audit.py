"""seccomp: what reaches the audit log.

seccomp_log() (kernel/seccomp.c) emits an AUDIT_SECCOMP record for KILL_* and LOG verdicts, and for
TRAP, ERRNO, USER_NOTIF and TRACE only when the filter whose verdict was taken was installed with
SECCOMP_FILTER_FLAG_LOG; ALLOW is never logged. /proc/sys/kernel/seccomp/actions_logged silences
actions system-wide, so expectations are computed from it. The record's code is the action without
its data, so the calls are told apart by syscall number. The test process is the audit daemon
(suites/_audit.py) while the filtered work happens in forked children.

Both tests run alone: the kernel has one audit daemon at a time (a second AuditLog, of any suite,
waits and then fails), one test writes kernel.seccomp.actions_logged, which silences actions for
every process, and the other computes its expectations from that sysctl.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal

import _audit
import _klab
import _seccomp as sc
from _klab import expect_eq

from seccomp import suite
from seccomp.common import MAGIC

test = suite.test

ACTIONS_LOGGED = "/proc/sys/kernel/seccomp/actions_logged"
AUDIT_CONFIG_CHANGE = 1305
PR_SET_NAME = 15


def _actions_logged() -> str:
    with open(ACTIONS_LOGGED) as f:
        return f.read().strip()


def _write_actions_logged(names: str) -> int:
    """Write the sysctl in one write(2); 0 or the errno the kernel refused it with."""
    fd = os.open(ACTIONS_LOGGED, os.O_WRONLY)
    try:
        return _klab.oserror_errno(os.write, fd, names.encode())
    finally:
        os.close(fd)


Verdict = tuple[str, str, str]  # (syscall, sig, code) fields of an AUDIT_SECCOMP record


def _tag_comm() -> None:
    """Child side: a comm no other process has, so held records of an earlier holder of the pid never match."""
    name = ctypes.create_string_buffer(_comm(os.getpid()).encode())
    expect_eq(_klab.libc.prctl(PR_SET_NAME, ctypes.addressof(name), 0, 0, 0), 0, "prctl(PR_SET_NAME)")


def _comm(pid: int) -> str:
    return f"klabsc{pid:x}"[:15]


def _verdicts(log: _audit.AuditLog, pid: int, last_syscall: int) -> list[Verdict]:
    """pid's AUDIT_SECCOMP records as (syscall, sig, code), collected until the one for last_syscall."""

    def mine(record: _audit.Record) -> bool:
        return record.fields.get("pid") == str(pid) and record.fields.get("comm") == _comm(pid)

    got = log.wait_for(lambda r: mine(r) and r.fields.get("syscall") == str(last_syscall), {_audit.AUDIT_SECCOMP})
    records = [r for r in got + log.records({_audit.AUDIT_SECCOMP}) if mine(r)]
    for r in records:
        expect_eq(r.fields.get("arch"), f"{sc.AUDIT_ARCH:x}", f"arch field of {r.text!r}")
    return [(r.fields.get("syscall", ""), r.fields.get("sig", ""), r.fields.get("code", "")) for r in records]


def _logging_child(wfd: int) -> int:
    """Filters, oldest first: A (FLAG_LOG) ERRNO for getppid(MAGIC) and getppid(MAGIC+1); B ERRNO for
    getpid(MAGIC) and getppid(MAGIC+1); C LOG for gettid(MAGIC) and uname(MAGIC). Reports the results."""
    _tag_comm()
    _klab.set_no_new_privs()
    a = sc.rules(("getppid", sc.RET_ERRNO | errno.E2BIG, MAGIC), ("getppid", sc.RET_ERRNO | errno.E2BIG, MAGIC + 1))
    b = sc.rules(("getpid", sc.RET_ERRNO | errno.EXDEV, MAGIC), ("getppid", sc.RET_ERRNO | errno.EXDEV, MAGIC + 1))
    c = sc.rules(("gettid", sc.RET_LOG, MAGIC), ("uname", sc.RET_LOG, MAGIC))
    sc.must_install(a, sc.FLAG_LOG, "install A with FLAG_LOG")
    sc.must_install(b, 0, "install B")
    sc.must_install(c, 0, "install C")
    calls = [("getppid", MAGIC), ("getpid", MAGIC), ("getppid", MAGIC + 1), ("gettid", MAGIC), ("uname", MAGIC)]
    os.write(wfd, repr([sc.call(name, arg) for name, arg in calls]).encode())
    return 0


def _run_logging_child() -> int:
    pid, rfd = _klab.fork_pipe(_logging_child)
    status = _klab.wait_status(pid)
    report = _klab.read_pipe(rfd)[0].decode(errors="replace")
    expect_eq(sc.describe_status(status), "exited 0", f"logging child (report {report!r})")
    # LOG lets the calls run: gettid returns the (single-threaded) child's pid, uname faults on MAGIC.
    want = [(-1, errno.E2BIG), (-1, errno.EXDEV), (-1, errno.EXDEV), (pid, 0), (-1, errno.EFAULT)]
    expect_eq(report, repr(want), "logging child's calls (ret, errno)")
    return pid


def _killed_child(wfd: int) -> int:
    _tag_comm()
    sc.no_core()
    _klab.set_no_new_privs()
    sc.must_install(sc.rules(("getppid", sc.RET_KILL_PROCESS, MAGIC)))
    sc.call("getppid", MAGIC)
    return 0


@test(alone=True)
def filter_flag_log_records_the_deciding_filters_verdict() -> None:
    """An ERRNO verdict is logged when the filter that decided it has FLAG_LOG (getppid(MAGIC) from A),
    not when another filter decided (getpid(MAGIC) from B while A allows it; getppid(MAGIC+1), where
    the newer B wins the tie with A); LOG verdicts are logged without the flag; a KILL_PROCESS
    verdict is logged with sig=SIGSYS. Records carry pid, arch, syscall and the action as code."""
    sc.require_action("log")
    logged = _actions_logged().split()
    getppid, gettid, uname = sc.nr("getppid"), sc.nr("gettid"), sc.nr("uname")
    with _audit.AuditLog() as log:
        pid = _run_logging_child()
        verdicts = _verdicts(log, pid, uname if "log" in logged else getppid)
        killed, rfd = _klab.fork_pipe(_killed_child)
        status = _klab.wait_status(killed)
        _klab.read_pipe(rfd)
        sc.expect_killed_by(status, signal.SIGSYS, "child hitting KILL_PROCESS")
        kills = _verdicts(log, killed, getppid) if "kill_process" in logged else []
    want = []
    if "errno" in logged:
        want.append((str(getppid), "0", f"{sc.RET_ERRNO:#x}"))
    if "log" in logged:
        want += [(str(gettid), "0", f"{sc.RET_LOG:#x}"), (str(uname), "0", f"{sc.RET_LOG:#x}")]
    expect_eq(verdicts, want, f"logging child's AUDIT_SECCOMP (syscall, sig, code); actions_logged {logged}")
    if "kill_process" in logged:
        want_kill = [(str(getppid), str(int(signal.SIGSYS)), f"{sc.RET_KILL_PROCESS:#x}")]
        expect_eq(kills, want_kill, "killed child's AUDIT_SECCOMP (syscall, sig, code)")


@test(restores=(ACTIONS_LOGGED,))
def actions_logged_sysctl_silences_an_action() -> None:
    """Without errno in actions_logged, FLAG_LOG'd ERRNO verdicts are not recorded while LOG verdicts
    still are; each write of the sysctl is an AUDIT_CONFIG_CHANGE record (op=seccomp-logging, the
    new and old actions, res); allow can never be logged (EINVAL, setting unchanged)."""
    sc.require_action("log")
    _klab.require_root()
    before = _actions_logged()
    quiet = " ".join(n for n in before.split() if n != "errno") or "log"
    if "log" not in quiet.split():
        quiet += " log"
    gettid, uname = sc.nr("gettid"), sc.nr("uname")
    quiet_commas, comma = quiet.replace(" ", ","), before.replace(" ", ",") or "(none)"
    with _audit.AuditLog() as log:
        try:
            expect_eq(_write_actions_logged(f"{before} allow"), errno.EINVAL, "writing 'allow' to actions_logged")
            expect_eq(_actions_logged(), before, "actions_logged after the refused write")
            expect_eq(_write_actions_logged(quiet), 0, f"writing {quiet!r} to actions_logged")
            changes = log.wait_for(lambda r: r.fields.get("actions") == quiet_commas, {AUDIT_CONFIG_CHANGE})
            verdicts = _verdicts(log, _run_logging_child(), uname)
        finally:
            restored = _write_actions_logged(before)
        expect_eq(restored, 0, f"restoring actions_logged to {before!r}")
        expect_eq(_actions_logged(), before, "actions_logged after restoring it")
        changes += log.wait_for(lambda r: r.fields.get("old-actions") == quiet_commas, {AUDIT_CONFIG_CHANGE})
    want = [(str(gettid), "0", f"{sc.RET_LOG:#x}"), (str(uname), "0", f"{sc.RET_LOG:#x}")]
    expect_eq(verdicts, want, f"AUDIT_SECCOMP (syscall, sig, code) with actions_logged {quiet!r}")
    want_changes = [("?", comma, "0"), (quiet_commas, comma, "1"), (comma, quiet_commas, "1")]  # refused, set, restore
    mine = [r for r in changes if r.fields.get("op") == "seccomp-logging"]
    seen = [(r.fields.get("actions"), r.fields.get("old-actions"), r.fields.get("res")) for r in mine]
    expect_eq(seen[-3:], want_changes, "seccomp-logging config changes (actions, old-actions, res)")
