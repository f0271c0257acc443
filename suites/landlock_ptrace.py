"""Landlock ptrace scoping: who may trace, inspect or read the memory of whom.

Rule pinned here (security/landlock/task.c, hook_ptrace_access_check and
hook_ptrace_traceme; security/landlock/ptrace.c on 6.1 with the same logic):
a tracer in a Landlock domain may access a tracee only when the tracer's
domain is the tracee's domain or one of its ancestors; a tracer without a
domain is never restricted by Landlock. Any domain counts, whatever it
handles (filesystem, network or scope rights). Landlock has no capability
bypass (no capable()/has_capability_noaudit() call in the hooks, in 6.1, 6.12
or 6.18), so CAP_SYS_PTRACE does not lift its denial; the capability LSM
(cap_ptrace_access_check) and Yama are separate checks, which is why the
matrix drops every capability first, like the kernel selftest
(tools/testing/selftests/landlock/ptrace_test.c).

Every access that goes through ptrace_may_access() is checked, each with its
own errno: PTRACE_ATTACH and PTRACE_TRACEME (EPERM), opening /proc/PID/environ
and /proc/PID/mem and reading /proc/PID/exe (EACCES: mm_access() and
proc_pid_readlink() turn any denial into EACCES), process_vm_readv (EPERM: it
maps mm_access()'s EACCES to EPERM), pidfd_getfd (EPERM) and kcmp (EPERM).
/proc/PID/status does no ptrace check and stays readable.

Tests: the ptrace_test.c parent/child matrix, one test per (check, direction,
variant), named CHECK_DIRECTION__VARIANT (and traceme_child__VARIANT); every
kind of domain; one ruleset enforced twice; three generations and siblings;
CAP_SYS_PTRACE (no bypass) and CAP_PERFMON (the v6.15 mm_access() exception);
self and per-thread access; Yama scopes 0-2 and PR_SET_PTRACER, where the
result must be the Landlock decision AND the Yama decision. Expected results
all come from one model, _ptrace_lab.Lab.expected().
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable

import _klab
import _landlock as ll
from _klab import Skip, errname
from _ptrace_lab import (
    HELPER_REPLY_TIMEOUT,
    PERFMON_MM_READ_SINCE,
    PROBES,
    Lab,
    available,
    kernel_version,
    require_check,
    require_kind,
    restrict,
    run_lab,
    set_yama_scope,
    yama_active,
    yama_scope,
)

suite = _klab.Suite("landlock_ptrace")


# --- the parent/child matrix (ptrace_test.c "hierarchy", checked per access) ------

# variant -> (domain before fork, parent adds a layer after fork, child adds a layer after fork);
# ptrace_test.c names in the comments.
VARIANTS: dict[str, tuple[bool, bool, bool]] = {
    "without_domain": (False, False, False),  # allow_without_domain
    "child_domain": (False, False, True),  # allow_with_one_domain
    "parent_domain": (False, True, False),  # deny_with_parent_domain
    "sibling_domain": (False, True, True),  # deny_with_sibling_domain
    "inherited_domain": (True, False, False),  # allow_sibling_domain
    "nested_domain": (True, False, True),  # allow_with_nested_domain
    "nested_and_parent_domain": (True, True, False),  # deny_with_nested_and_parent_domain
    "forked_domains": (True, True, True),  # deny_with_forked_domain
}


def make_pair(lab: Lab, variant: str) -> None:
    """P1 and its child P2 with the variant's domains (P2 restricts itself before P1 does)."""
    before, parent_after, child_after = VARIANTS[variant]
    if before:
        lab.restrict("p1")
    lab.spawn("p2")
    if child_after:
        lab.restrict("p2")
    if parent_after:
        lab.restrict("p1")


def _matrix_test(variant: str, check: str, direction: str) -> Callable[[], None]:
    def test() -> None:
        if any(VARIANTS[variant]):
            ll.require_abi(1)
        require_check(check if check != "traceme" else "attach")

        def body(lab: Lab) -> None:
            make_pair(lab, variant)
            if direction == "parent_to_child":
                lab.verify("p1", check, "p2")
            else:
                lab.verify("p2", check, "p1")

        run_lab(body)

    test.__doc__ = f"{check} {direction.replace('_', ' ')} in the {variant} variant: Landlock AND Yama."
    return test


for _check in PROBES:
    for _direction in ("parent_to_child", "child_to_parent"):
        for _variant in VARIANTS:
            suite.add(f"{_check}_{_direction}__{_variant}", _matrix_test(_variant, _check, _direction))
for _variant in VARIANTS:
    # PTRACE_TRACEME: the child asks its parent to trace it (the tracer is P1).
    suite.add(f"traceme_child__{_variant}", _matrix_test(_variant, "traceme", "parent_to_child"))


# --- any kind of domain scopes ptrace ---------------------------------------------

DOMAIN_KINDS = {
    "fs_make_block": "fs",
    "fs_all_allowed": "fs_all_allowed",
    "net_only": "net",
    "scope_signal_only": "scope_signal",
    "scope_unix_only": "scope_unix",
}


def _kind_test(kind: str) -> Callable[[], None]:
    def test() -> None:
        require_kind(kind)

        def body(lab: Lab) -> None:
            lab.spawn("p2")
            lab.restrict("p2", kind)  # child domain: P2 may not reach P1, P1 may reach P2
            for check in ("attach", "proc_environ"):
                lab.verify("p2", check, "p1")
                lab.verify("p1", check, "p2")
            lab.restrict("p1", kind)  # sibling domains now: neither way
            for check in ("attach", "proc_environ"):
                lab.verify("p1", check, "p2")
                lab.verify("p2", check, "p1")

        run_lab(body)

    test.__doc__ = f"A domain of kind {kind} (whatever it handles) scopes ptrace like any other."
    return test


for _name, _kind in DOMAIN_KINDS.items():
    suite.add(f"domain_kind__{_name}", _kind_test(_kind))


@suite.test
def same_ruleset_makes_separate_domains() -> None:
    """Two landlock_restrict_self() of one ruleset fd make two unrelated domains (sibling denial)."""
    ll.require_abi(1)

    def body(lab: Lab) -> None:
        lab.make_shared_ruleset()
        lab.spawn("p2")
        lab.restrict("p1", "shared")
        lab.restrict("p2", "shared")
        for check in ("attach", "proc_environ", "proc_mem"):
            lab.verify("p1", check, "p2")
            lab.verify("p2", check, "p1")

    run_lab(body)


@suite.test
def same_ruleset_inherited_is_one_domain() -> None:
    """A domain enforced with a shared ruleset before fork is the same domain in both processes."""
    ll.require_abi(1)

    def body(lab: Lab) -> None:
        lab.make_shared_ruleset()
        lab.restrict("p1", "shared")
        lab.spawn("p2")
        for check in ("attach", "proc_environ"):
            lab.verify("p1", check, "p2")
            lab.verify("p2", check, "p1")

    run_lab(body)


# --- three generations and siblings -----------------------------------------------

CHAIN = ("p2", "p3")  # P1 -> P2 -> P3 (P3 is P1's grandchild)
CHAIN_CHECKS = ("attach", "proc_environ", "process_vm_readv")


def _verify_all_pairs(lab: Lab, names: tuple[str, ...], checks: tuple[str, ...]) -> None:
    for check in available(checks):
        for tracer in names:
            for tracee in names:
                if tracer != tracee:
                    lab.verify(tracer, check, tracee)


@suite.test
def chain_grandparent_traces_grandchild() -> None:
    """P1 (domain A) -> P2 (A) -> P3 (A+C): P1 and P2 may trace P3; P3 may trace neither."""
    ll.require_abi(1)

    def body(lab: Lab) -> None:
        lab.restrict("p1")
        lab.spawn("p2")
        lab.spawn("p3", parent="p2")
        lab.restrict("p3")
        _klab.expect(lab.expected("p1", "proc_environ", "p3") == 0, "model: P1 may read P3")
        _klab.expect(lab.expected("p3", "proc_environ", "p1") != 0, "model: P3 may not read P1")
        _verify_all_pairs(lab, ("p1", "p2", "p3"), CHAIN_CHECKS)

    run_lab(body, CHAIN)


@suite.test
def chain_each_generation_nested() -> None:
    """P1 (A) -> P2 (A+B) -> P3 (A+B+C): each may trace its descendants, never its ancestors."""
    ll.require_abi(1)

    def body(lab: Lab) -> None:
        lab.restrict("p1")
        lab.spawn("p2")
        lab.restrict("p2")
        lab.spawn("p3", parent="p2")
        lab.restrict("p3")
        _verify_all_pairs(lab, ("p1", "p2", "p3"), CHAIN_CHECKS)

    run_lab(body, CHAIN)


@suite.test
def chain_middle_restricts_after_fork() -> None:
    """P1 (A) -> P2 (A, then A+B after forking P3) -> P3 (A+C): P2 and P3 are siblings, P1 reaches both."""
    ll.require_abi(1)

    def body(lab: Lab) -> None:
        lab.restrict("p1")
        lab.spawn("p2")
        lab.spawn("p3", parent="p2")
        lab.restrict("p2")
        lab.restrict("p3")
        _klab.expect(lab.expected("p2", "proc_environ", "p3") != 0, "model: P2 may not read P3")
        _verify_all_pairs(lab, ("p1", "p2", "p3"), CHAIN_CHECKS)

    run_lab(body, CHAIN)


@suite.test
def chain_unrestricted_grandparent() -> None:
    """P1 (none) -> P2 (B) -> P3 (B+C): P1 reaches all; P3 reaches nobody; P2 reaches P3 only."""
    ll.require_abi(1)

    def body(lab: Lab) -> None:
        lab.spawn("p2")
        lab.restrict("p2")
        lab.spawn("p3", parent="p2")
        lab.restrict("p3")
        _verify_all_pairs(lab, ("p1", "p2", "p3"), CHAIN_CHECKS)

    run_lab(body, CHAIN)


@suite.test
def siblings_same_domain() -> None:
    """Two children inheriting P1's domain share it: Landlock lets each reach the other (Yama may not)."""
    ll.require_abi(1)

    def body(lab: Lab) -> None:
        lab.restrict("p1")
        lab.spawn("p2")
        lab.spawn("p3")
        _verify_all_pairs(lab, ("p1", "p2", "p3"), CHAIN_CHECKS)

    run_lab(body, CHAIN)


@suite.test
def siblings_separate_domains() -> None:
    """Two children each adding a layer to P1's domain: neither reaches the other, P1 reaches both."""
    ll.require_abi(1)

    def body(lab: Lab) -> None:
        lab.restrict("p1")
        lab.spawn("p2")
        lab.spawn("p3")
        lab.restrict("p2")
        lab.restrict("p3")
        _verify_all_pairs(lab, ("p1", "p2", "p3"), CHAIN_CHECKS)

    run_lab(body, CHAIN)


# --- capabilities, self and threads ---------------------------------------------------


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

    run_lab(body, names=())


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


# --- Yama interplay -------------------------------------------------------------------

YAMA_CHECKS = ("attach", "proc_mem", "process_vm_readv", "pidfd_getfd", "proc_environ", "kcmp")


def with_yama_scope(scope: int, scenario: Callable[[], None]) -> None:
    """Run `scenario` in a child with kernel.yama.ptrace_scope set to `scope`; always restore it.

    The scenario runs in a child because it drops capabilities, and restoring the sysctl needs
    CAP_SYS_PTRACE. Scope 3 is never written: Yama makes it sticky until reboot.
    """
    _klab.require_root()
    if not yama_active():
        raise Skip("yama is not an active LSM")
    old = yama_scope()
    if old is None or old > 2:
        raise Skip(f"kernel.yama.ptrace_scope is {old}: scope 3 cannot be lowered until reboot")
    try:
        set_yama_scope(scope)
        _klab.expect_eq(yama_scope(), scope, "kernel.yama.ptrace_scope after writing it")
        _klab.in_child(scenario)
    finally:
        set_yama_scope(old)


def _yama_test(scope: int, variant: str) -> Callable[[], None]:
    def test() -> None:
        if any(VARIANTS[variant]):
            ll.require_abi(1)

        def body(lab: Lab) -> None:
            _klab.expect_eq(lab.scope, scope, "Yama scope seen by the scenario")
            make_pair(lab, variant)
            for check in available(YAMA_CHECKS):
                lab.verify("p1", check, "p2")
                lab.verify("p2", check, "p1")
            lab.verify("p1", "traceme", "p2")

        with_yama_scope(scope, lambda: run_lab(body))

    test.__doc__ = f"Yama ptrace_scope {scope} with the {variant} variant: the result is Landlock AND Yama."
    return test


for _scope in (0, 1, 2):
    for _variant in VARIANTS:
        suite.add(f"yama_scope{_scope}__{_variant}", _yama_test(_scope, _variant))


def _ptracer_test(variant: str, any_tracer: bool) -> Callable[[], None]:
    def test() -> None:
        if any(VARIANTS[variant]):
            ll.require_abi(1)

        def body(lab: Lab) -> None:
            make_pair(lab, variant)
            checks = available(("attach", "proc_mem", "process_vm_readv", "pidfd_getfd"))
            for check in checks:
                lab.verify("p2", check, "p1")  # Yama denies all of them: P2 is not P1's ancestor
            lab.set_ptracer(None if any_tracer else "p2")
            for check in checks:
                lab.verify("p2", check, "p1")  # now only Landlock may deny

        with_yama_scope(1, lambda: run_lab(body))

    how = "PR_SET_PTRACER_ANY" if any_tracer else "PR_SET_PTRACER(child)"
    test.__doc__ = f"Yama scope 1, {variant}: {how} in P1 lifts Yama's denial for P2, never Landlock's."
    return test


for _variant in VARIANTS:
    suite.add(f"yama_set_ptracer__{_variant}", _ptracer_test(_variant, any_tracer=False))
for _variant in ("without_domain", "child_domain", "sibling_domain", "inherited_domain"):
    suite.add(f"yama_set_ptracer_any__{_variant}", _ptracer_test(_variant, any_tracer=True))


@suite.test
def yama_set_ptracer_ignored_at_scope2() -> None:
    """At Yama scope 2 only CAP_SYS_PTRACE counts: PR_SET_PTRACER does not let P2 attach to P1."""

    def body(lab: Lab) -> None:
        lab.spawn("p2")
        lab.set_ptracer("p2")
        for check in ("attach", "proc_mem", "proc_environ"):
            lab.verify("p2", check, "p1")
        _klab.expect_eq(lab.expected("p2", "attach", "p1"), errno.EPERM, "model: attach denied at scope 2")

    with_yama_scope(2, lambda: run_lab(body))
