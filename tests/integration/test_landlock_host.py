"""Run the in-guest landlock suite directly on this host and check its verdicts.

The suite must pass or skip (with a reason) on any correct kernel, so a run on
the development host is a cheap end-to-end check of the suite itself.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "suites" / "run.py"
_NR_LANDLOCK_CREATE_RULESET = 444  # same number on x86_64 and aarch64
_LANDLOCK_CREATE_RULESET_VERSION = 1


def _landlock_abi() -> int:
    """The host's Landlock ABI version, or a negative errno when Landlock is unusable."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    ret = libc.syscall(ctypes.c_long(_NR_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return ret if ret >= 0 else -ctypes.get_errno()


def _skip_unless_usable() -> None:
    if sys.platform != "linux":
        pytest.skip("the landlock suite runs on Linux only")
    if os.geteuid() != 0:
        pytest.skip("the landlock suite needs root (it drops capabilities itself)")
    abi = _landlock_abi()
    if abi < 0:
        pytest.skip(f"Landlock is not usable on this host ({os.strerror(-abi)})")


@pytest.mark.host
def test_landlock_suite_passes_on_host(tmp_path: Path) -> None:
    _skip_unless_usable()
    listed = subprocess.run(
        [sys.executable, str(RUN), "--suite", "landlock", "--list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert listed, "run.py --list printed no landlock tests"
    assert all(name.startswith("landlock.") for name in listed)

    out = tmp_path / "landlock.json"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--suite", "landlock", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    doc = json.loads(out.read_text())
    tests = doc["tests"]
    bad = [f"{t['name']}: {t['status']}: {t.get('reason', '')}" for t in tests if t["status"] in ("FAIL", "ERROR")]
    assert not bad, "landlock tests failed on this host:\n" + "\n".join(bad) + f"\n\nKTAP:\n{proc.stdout[-4000:]}"
    assert proc.returncode == 0, f"run.py exited {proc.returncode}\n{proc.stderr[-2000:]}"
    assert len(tests) == len(listed), f"ran {len(tests)} tests, --list shows {len(listed)}"
    assert sorted(f"{t['suite']}.{t['name']}" for t in tests) == sorted(listed)
    unexplained = [t["name"] for t in tests if t["status"] == "SKIP" and not t.get("reason", "").strip()]
    assert not unexplained, f"SKIPs without a reason: {unexplained}"
    assert "KTAP version 1" in proc.stdout.splitlines()[0]
