"""Run the bpf_lsm suite on this host's kernel and check the run is clean.

The suite loads BPF LSM programs, so it needs root, `bpf` in the active LSM
list and vmlinux BTF; without them the test is skipped with the reason. Every
program the suite loads filters on the tgid of one of its own helper processes,
so running it on a developer's host does not disturb anything else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "suites" / "run.py"
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


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(RUN), "--suite", "bpf_lsm", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.host
def test_bpf_lsm_suite_on_host(tmp_path: Path) -> None:
    gate = _host_gate()
    if gate:
        pytest.skip(gate)
    listed = _run("--list", timeout=60)
    assert listed.returncode == 0, listed.stderr
    names = [line for line in listed.stdout.splitlines() if line.strip()]
    assert names and all(n.startswith("bpf_lsm.") for n in names), listed.stdout

    out = tmp_path / "bpf_lsm.json"
    proc = _run("--json", str(out), timeout=300)
    doc = json.loads(out.read_text())
    tests = doc["tests"]
    bad = [f"{t['name']}: {t['status']}: {t.get('reason', '')}" for t in tests if t["status"] in ("FAIL", "ERROR")]
    assert not bad, "\n".join(bad) + "\n" + proc.stdout[-4000:]
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert len(tests) == len(names), f"ran {len(tests)} tests, --list names {len(names)}"
    assert {f"{t['suite']}.{t['name']}" for t in tests} == set(names)
    unexplained = [t["name"] for t in tests if t["status"] == "SKIP" and not t.get("reason", "").strip()]
    assert not unexplained, f"SKIPs without a reason: {unexplained}"
    by_name = {t["name"]: t for t in tests}
    canary = by_name["canary_counts_file_open"]
    if canary["status"] == "SKIP":
        # Only a local policy refusing every BTF-attached program may skip the canary.
        assert "refuses every BTF-attached BPF program" in canary["reason"], canary["reason"]
        pytest.skip(f"this host cannot load BPF LSM programs: {canary['reason']}")
    assert canary["status"] == "PASS", canary
