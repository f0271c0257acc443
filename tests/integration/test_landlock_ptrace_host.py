"""Run the in-guest landlock_ptrace suite directly on this host and check its report.

The suite needs root (it drops capabilities, changes Yama's sysctl where Yama
is active, and traces its own helper processes) and an active Landlock.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.host_suites import assert_clean, run_suite

REPO = Path(__file__).resolve().parents[2]
SUITE = "landlock_ptrace"

_ABI_PROBE = "import sys; sys.path.insert(0, sys.argv[1]); import _landlock; print(_landlock.abi_version())"


def _landlock_abi() -> int:
    """The host's Landlock ABI as the suite's own binding sees it (negative errno when absent)."""
    out = subprocess.run(
        [sys.executable, "-c", _ABI_PROBE, str(REPO / "suites")], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


@pytest.mark.host
def test_landlock_ptrace_suite_on_host(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the suite runs on Linux only")
    if os.geteuid() != 0:
        pytest.skip("the landlock_ptrace suite needs root (capabilities, ptrace of its helpers, Yama sysctl)")
    abi = _landlock_abi()
    if abi < 1:
        pytest.skip(f"Landlock is not available on this host (ABI query gave {abi})")

    run = run_suite(SUITE, tmp_path)
    assert_clean(run)
    tests = list(run.tests.values())
    assert any(t["status"] == "PASS" for t in tests), "nothing passed"
