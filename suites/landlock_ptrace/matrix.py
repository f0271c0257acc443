"""landlock_ptrace: the parent/child matrix (ptrace_test.c "hierarchy", checked per access)."""

from __future__ import annotations

from collections.abc import Callable

import _landlock as ll

from landlock_ptrace import suite
from landlock_ptrace.common import VARIANTS, make_pair
from landlock_ptrace.lab import (
    PROBES,
    Lab,
    require_check,
    run_lab,
)


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

        run_lab(body, hidden_proc=check == "proc_status")

    test.__doc__ = f"{check} {direction.replace('_', ' ')} in the {variant} variant: Landlock AND Yama."
    return test


for _check in PROBES:
    for _direction in ("parent_to_child", "child_to_parent"):
        for _variant in VARIANTS:
            suite.add(f"{_check}_{_direction}__{_variant}", _matrix_test(_variant, _check, _direction))

for _variant in VARIANTS:
    # PTRACE_TRACEME: the child asks its parent to trace it (the tracer is P1).
    suite.add(f"traceme_child__{_variant}", _matrix_test(_variant, "traceme", "parent_to_child"))
