"""Landlock suite: syscall semantics, domain inheritance, filesystem, network and scoping.

Every test pins the exact outcome on both sides (the allowed action succeeds,
the denied one fails with the exact errno), which process is restricted and
which layer decides. Features are gated by probing the ABI version, so a 6.1
kernel (ABI 2) skips what it lacks instead of failing. Runs as root; tests
that need the unprivileged path drop capabilities first, like the kernel's
own selftests (tools/testing/selftests/landlock/).

Restricted code runs in forked children (in_child) so that the unrestricted
test process can create and remove its fresh /tmp tree. Everything the
restricted side calls is imported up front: a lazy import after a READ_FILE
restriction would fail for reasons unrelated to the kernel under test.

Tests run beside each other (and beside other suites' tests): each owns a
mkdtemp directory, abstract socket names carry the test's pid, network tests
get a network namespace of their own, mounts happen in private mount
namespaces. Only the audit tests (audit_log, quiet), which need the one
machine-wide audit daemon role, run alone.
"""

from __future__ import annotations

import importlib

import _klab

suite = _klab.Suite("landlock", parallel=True)

# Importing a module registers its tests: this order is the run order.
MODULES = (
    "abi",
    "ruleset",
    "add_rule",
    "restrict_self",
    "ruleset_fd",
    "inherit",
    "layers",
    "fs",
    "refer",
    "truncate",
    "ioctl",
    "net",
    "scope",
    "audit_log",
    "resolve_unix",
    "udp",
    "no_new_privs",
    "quiet",
    "layer_limits",
    "credentials",
    "scope_edges",
    "privileges",
)
for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")
