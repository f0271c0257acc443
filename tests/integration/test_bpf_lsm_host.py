"""Run the bpf_lsm suite on this host's kernel and check the run is clean.

The suite loads BPF LSM programs, so it needs root, `bpf` in the active LSM
list and vmlinux BTF; without them the test is skipped with the reason. Every
program the suite loads filters on the tgid of one of its own helper processes,
or (the local storage tests) denies only a task or an inode the test itself
labelled, so running it on a developer's host does not disturb anything else.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.integration.host_suites import assert_clean, run_suite

LSM_LIST = Path("/sys/kernel/security/lsm")
BTF = Path("/sys/kernel/btf/vmlinux")


def _host_gate() -> str:
    """Why this host cannot run the suite ('' when it can)."""
    if sys.platform != "linux":
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (loads BPF LSM programs)"
    if not BTF.exists():
        return f"no {BTF} (kernel without CONFIG_DEBUG_INFO_BTF)"
    try:
        lsms = LSM_LIST.read_text().strip().split(",")
    except OSError:
        return f"cannot read {LSM_LIST} (securityfs not mounted)"
    if "bpf" not in lsms:
        return f"bpf is not an active LSM on this host ({','.join(lsms)})"
    return ""


@pytest.mark.host
def test_bpf_lsm_suite_on_host(tmp_path: Path) -> None:
    gate = _host_gate()
    if gate:
        pytest.skip(gate)
    run = run_suite("bpf_lsm", tmp_path, timeout=300)
    assert_clean(run)
    by_name = run.tests
    canary = by_name["canary_counts_file_open"]
    if canary["status"] == "SKIP":
        # Only a local policy refusing every BTF-attached program may skip the canary.
        assert "refuses every BTF-attached BPF program" in canary["reason"], canary["reason"]
        pytest.skip(f"this host cannot load BPF LSM programs: {canary['reason']}")
    assert canary["status"] == "PASS", canary
