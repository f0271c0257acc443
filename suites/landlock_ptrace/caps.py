"""landlock_ptrace: capabilities, self and threads."""

from __future__ import annotations

import errno
import threading

import _klab
import _landlock as ll
from _klab import Skip, errname

from landlock_ptrace import suite
from landlock_ptrace.lab import (
    HELPER_REPLY_TIMEOUT,
    PERFMON_MM_READ_SINCE,
    Lab,
    available,
    kernel_version,
    restrict,
    run_lab,
)

test = suite.test


def keep_only_caps(*keep: int) -> None:
    """Drop every capability but `keep` (the same in every process of the lab: forked later)."""
    _klab.drop_caps(*(cap for cap in range(64) if cap not in keep))


@suite.test
def cap_sys_ptrace_does_not_bypass_landlock() -> None:
    """With CAP_SYS_PTRACE (and every capability but perfmon_capable() ones), Landlock still denies.

    Landlock's hooks never call capable(); CAP_SYS_PTRACE lifts the capability LSM and Yama checks,
    so here Landlock is the only denier. CAP_PERFMON and CAP_SYS_ADMIN are dropped: since v6.15 they
    grant mm_access() reads on their own (see perfmon_reads_mm_but_not_the_rest).
    """
    _klab.require_root()
    ll.require_abi(1)
    if not _klab.has_cap(_klab.CAP_SYS_PTRACE):
        raise Skip("needs CAP_SYS_PTRACE in the effective set")
    _klab.drop_caps(_klab.CAP_PERFMON, _klab.CAP_SYS_ADMIN)

    def body(lab: Lab) -> None:
        _klab.expect(lab.has_cap and not lab.perfmon, "capabilities: want CAP_SYS_PTRACE without perfmon_capable()")
        lab.spawn("p2")
        lab.restrict("p2")
        checks = available(
            ("attach", "proc_environ", "proc_mem", "proc_exe", "process_vm_readv", "pidfd_getfd", "kcmp")
        )
        for check in checks:
            lab.verify("p2", check, "p1")
            lab.verify("p1", check, "p2")
        lab.verify("p1", "traceme", "p2")
        lab.restrict("p1")
        for check in ("attach", "proc_environ"):
            lab.verify("p1", check, "p2")

    run_lab(body, drop_caps=False)


@suite.test
def perfmon_reads_mm_but_not_the_rest() -> None:
    """A Landlock-denied tracer holding only CAP_PERFMON.

    Since v6.15 (kernel/fork.c may_access_mm()) it may read /proc/PID/environ despite Landlock,
    which that commit bypasses for PTRACE_MODE_READ mm access; before, EACCES. Everything else stays
    denied on every version: attach and /proc/PID/mem (attach mode), /proc/PID/exe and kcmp (no
    mm_access()), process_vm_readv and pidfd_getfd (attach mode).
    """
    _klab.require_root()
    ll.require_abi(1)
    if not _klab.has_cap(_klab.CAP_PERFMON):
        raise Skip("needs CAP_PERFMON (Linux 5.8+) in the effective set")
    keep_only_caps(_klab.CAP_PERFMON)

    def body(lab: Lab) -> None:
        _klab.expect(lab.perfmon and not lab.has_cap, "capabilities: want CAP_PERFMON only")
        lab.spawn("p2")
        lab.restrict("p2")
        checks = available(
            ("attach", "proc_environ", "proc_mem", "proc_exe", "process_vm_readv", "pidfd_getfd", "kcmp")
        )
        for check in checks:
            lab.verify("p2", check, "p1")
            lab.verify("p1", check, "p2")
        want = 0 if kernel_version() >= PERFMON_MM_READ_SINCE else errno.EACCES
        _klab.expect_eq(lab.expected("p2", "proc_environ", "p1"), want, "model for environ under CAP_PERFMON")

    run_lab(body, drop_caps=False)


SELF_CHECKS = ("proc_environ", "proc_mem", "proc_exe", "process_vm_readv", "pidfd_getfd", "kcmp", "proc_status")


@suite.test
def self_access_in_domain() -> None:
    """A process with two layers may still inspect itself.

    __ptrace_may_access() exempts the caller's thread group before any LSM hook, and mm_access()
    the caller's own mm, so no Landlock check applies (attach to oneself is EPERM for other reasons).
    """
    ll.require_abi(1)

    def body(lab: Lab) -> None:
        lab.restrict("p1")
        lab.restrict("p1")
        for check in available(SELF_CHECKS):
            lab.verify("p1", check, "p1")

    run_lab(body, names=(), hidden_proc=True)


@suite.test
def thread_domain_exempt_within_process() -> None:
    """A thread with its own domain may still inspect its own process, but no other process.

    landlock_restrict_self() restricts the calling thread only, so the main thread (the target of
    /proc/PID/...) has no domain. __ptrace_may_access() returns before the LSM hooks for the same
    thread group (proc_exe, kcmp, pidfd_getfd), and mm_access() for the caller's own mm
    (proc_environ, process_vm_readv); a helper process without a domain is denied, as usual.
    """
    ll.require_abi(1)

    def body(lab: Lab) -> None:
        lab.spawn("p2")
        own = available(("proc_exe", "kcmp", "pidfd_getfd", "proc_environ", "process_vm_readv"))
        got: dict[str, int] = {}
        failures: list[BaseException] = []

        def thread() -> None:
            try:
                restrict("fs", lab)
                for check in own:
                    got[f"{check} on its own process"] = lab.probe("p1", check, "p1")
                for check in ("proc_exe", "proc_environ"):
                    got[f"{check} on an unrestricted helper"] = lab.probe("p1", check, "p2")
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                failures.append(exc)

        worker = threading.Thread(target=thread)
        worker.start()
        worker.join(HELPER_REPLY_TIMEOUT)
        if failures:
            raise failures[0]
        _klab.expect(not worker.is_alive(), "the restricted thread did not finish")
        for what, err in got.items():
            want = errno.EACCES if "helper" in what else 0
            _klab.expect(err == want, f"{what} from a restricted thread: expected {errname(want)}, got {errname(err)}")
        # The main thread has no domain: it still reaches P2.
        lab.verify("p1", "proc_environ", "p2")
        lab.verify("p1", "proc_exe", "p2")

    run_lab(body)
