"""landlock_ptrace: Yama interplay."""

from __future__ import annotations

import errno
from collections.abc import Callable

import _klab
import _landlock as ll
from _klab import Skip

from landlock_ptrace import suite
from landlock_ptrace.common import VARIANTS, make_pair
from landlock_ptrace.lab import (
    YAMA_SYSCTL,
    Lab,
    available,
    run_lab,
    set_yama_scope,
    yama_active,
    yama_scope,
)

test = suite.test

YAMA = (YAMA_SYSCTL,)  # what every Yama test changes and the harness restores
YAMA_CHECKS = ("attach", "proc_mem", "process_vm_readv", "pidfd_getfd", "proc_environ", "kcmp")


def with_yama_scope(scope: int, scenario: Callable[[], None]) -> None:
    """Run `scenario` in a child with kernel.yama.ptrace_scope set to `scope`; always restore it.

    The scenario runs in a child because it drops capabilities, and restoring the sysctl needs
    CAP_SYS_PTRACE. Scope 3 is never written: Yama makes it sticky until reboot. The sysctl is
    machine-wide (every ptrace check of every process, and the scope each Lab reads): every test
    calling this registers with restores=(YAMA_SYSCTL,), so no other test runs while it is changed
    and the harness puts it back when the test is killed before its `finally` runs.
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
        suite.add(f"yama_scope{_scope}__{_variant}", _yama_test(_scope, _variant), restores=YAMA)


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
    suite.add(f"yama_set_ptracer__{_variant}", _ptracer_test(_variant, any_tracer=False), restores=YAMA)

for _variant in ("without_domain", "child_domain", "sibling_domain", "inherited_domain"):
    suite.add(f"yama_set_ptracer_any__{_variant}", _ptracer_test(_variant, any_tracer=True), restores=YAMA)


@suite.test(restores=YAMA)
def yama_set_ptracer_ignored_at_scope2() -> None:
    """At Yama scope 2 only CAP_SYS_PTRACE counts: PR_SET_PTRACER does not let P2 attach to P1."""

    def body(lab: Lab) -> None:
        lab.spawn("p2")
        lab.set_ptracer("p2")
        for check in ("attach", "proc_mem", "proc_environ"):
            lab.verify("p2", check, "p1")
        _klab.expect_eq(lab.expected("p2", "attach", "p1"), errno.EPERM, "model: attach denied at scope 2")

    with_yama_scope(2, lambda: run_lab(body))
