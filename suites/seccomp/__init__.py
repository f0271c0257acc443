"""seccomp suite: filter installation rules, actions and their precedence, inheritance, ptrace and
user-notification interplay, and stacking with Landlock and the BPF LSM.

Modelled on tools/testing/selftests/seccomp/seccomp_bpf.c. Python makes syscalls of its own, so
every filter here targets getppid (which the interpreter never calls) with a magic first argument,
or another call matched on an argument value nothing else uses: the interpreter keeps working
under any verdict. Children that are meant to die turn core dumps off first (PR_SET_DUMPABLE 0).
"""

from __future__ import annotations

import importlib

import _klab

suite = _klab.Suite("seccomp", parallel=True)

# Importing a module registers its tests: this order is the run order.
MODULES = (
    "install",
    "filter_data",
    "actions",
    "precedence",
    "inherit",
    "ptrace",
    "ptrace_syscall",
    "notify",
    "notify_edges",
    "log_audit",
    "releases",
    "stacking",
)
for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")
