"""landlock_ptrace: shared constants and helpers."""

from __future__ import annotations

from landlock_ptrace.lab import (
    Lab,
)

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
