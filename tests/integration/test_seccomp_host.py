"""Run the seccomp suite on this host's kernel and check the run is clean.

Every filter the suite installs lives in a forked test child and targets calls
nothing else makes (getppid with a magic argument, openat on a magic fd), so
running it on a developer's host touches nothing outside those children. Needs
root (it drops capabilities, traces its children, sets PTRACE_O_SUSPEND_SECCOMP)
and a kernel with seccomp filter mode.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.integration.host_suites import assert_clean, run_suite


def _seccomp_status() -> str | None:
    """The Seccomp field of our own /proc status (None: kernel without CONFIG_SECCOMP)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Seccomp:"):
            return line.split(":", 1)[1].strip()
    return None


def _host_gate() -> str:
    """Why this host cannot run the suite ('' when it can)."""
    if sys.platform != "linux":
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (drops capabilities, traces children, suspends seccomp)"
    mode = _seccomp_status()
    if mode is None:
        return "kernel without CONFIG_SECCOMP (no Seccomp field in /proc/self/status)"
    if mode != "0":
        return f"pytest itself already runs under seccomp (Seccomp: {mode}): exact filter counts impossible"
    if os.uname().machine not in ("x86_64", "aarch64"):
        return f"no syscall table for {os.uname().machine}"
    return ""


@pytest.mark.host
def test_seccomp_suite_on_host(tmp_path: Path) -> None:
    gate = _host_gate()
    if gate:
        pytest.skip(gate)
    run = run_suite("seccomp", tmp_path, timeout=300)
    by_name = run.tests
    probe = by_name["install_allowed_with_cap_sys_admin_without_nnp"]
    if probe["status"] == "SKIP" and "CONFIG_SECCOMP_FILTER" in probe["reason"]:
        pytest.skip(f"host kernel lacks seccomp filter mode: {probe['reason']}")
    assert_clean(run)
    # The core of the suite runs on any kernel with filter mode: only gated extras may skip.
    core = ("errno_returned_exactly", "trap_siginfo", "filter_chain_instruction_limit")
    assert all(by_name[n]["status"] == "PASS" for n in core), {n: by_name[n] for n in core}
