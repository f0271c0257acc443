"""BPF LSM (KRSI) suite: BPF programs attached to LSM hooks, loaded by _bpf.py.

Every program filters on one tgid (a helper process the test forks), so a test
never denies anything to the harness, the rest of the guest or the host. Each
deny test checks the denied side (exact errno, which process) and the allowed
side (another process, and the same process before attach or after detach).

The suite runs one test at a time (not parallel=True) although its tests are
written to run side by side: Linux 7.3 x86_64 oopses (NULL RIP in a BPF
trampoline under bpf_lsm_file_open) when two processes attach and detach
file_open programs while both open files, as two of these tests do. A program
attaches globally, so each one decides or records only for what its own test owns: a worker's or
the test process's tgid, a task or inode label in the test's own storage
map, a cgroup of the test's own tree. Every counter, ring buffer and perf
ring belongs to one test, and no test counts or enumerates machine-wide
objects. Pins go in the shared bpffs under unique names; a guest without
bpffs or securityfs gets them mounted in the test's own mount namespace.

Gates: `bpf` must be in /sys/kernel/security/lsm (else LSM programs load and
attach but never run: the canary fails and every other test skips), vmlinux
BTF must be present, and on arm64 the kernel must have BPF trampolines.
"""

from __future__ import annotations

import importlib

import _klab

suite = _klab.Suite("bpf_lsm")

# Importing a module registers its tests: this order is the run order.
MODULES = (
    "canary",
    "deny",
    "args",
    "detach",
    "multi",
    "cgroup",
    "verifier",
    "sleepable",
    "privilege",
    "stacking",
    "audit_ringbuf",
    "audit_ringbuf_limits",
    "audit_perf",
    "audit_exec",
    "helpers",
    "storage",
)
for _module in MODULES:
    importlib.import_module(f"{__name__}.{_module}")
