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
/proc/PID/status does no ptrace check and stays readable, but a proc instance
mounted with hidepid=ptraceable lists PID only where ptrace_may_access()
allows a read: the proc_status check pins both (ENOENT: not listed).

Tests: the ptrace_test.c parent/child matrix, one test per (check, direction,
variant), named CHECK_DIRECTION__VARIANT (and traceme_child__VARIANT); every
kind of domain; one ruleset enforced twice; three generations and siblings;
CAP_SYS_PTRACE (no bypass) and CAP_PERFMON (the v6.15 mm_access() exception);
self and per-thread access; Yama scopes 0-2 and PR_SET_PTRACER, where the
result must be the Landlock decision AND the Yama decision. Expected results
all come from one model, _ptrace_lab.Lab.expected().
"""

from __future__ import annotations

import importlib

import _klab

suite = _klab.Suite("landlock_ptrace", parallel=True)

# Importing a module registers its tests: this order is the run order.
MODULES = ("matrix", "domains", "generations", "caps", "yama")
for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")
