"""landlock_ptrace: three generations and siblings."""

from __future__ import annotations

import _klab
import _landlock as ll

from landlock_ptrace import suite
from landlock_ptrace.lab import (
    Lab,
    available,
    run_lab,
)

test = suite.test

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
