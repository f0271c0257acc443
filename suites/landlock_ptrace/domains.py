"""landlock_ptrace: any kind of domain scopes ptrace."""

from __future__ import annotations

from collections.abc import Callable

import _landlock as ll

from landlock_ptrace import suite
from landlock_ptrace.lab import (
    Lab,
    require_kind,
    run_lab,
)

test = suite.test

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
