"""Running one in-guest suite directly on this host, and the checks every such run must pass."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "suites" / "run.py"


@dataclass
class HostRun:
    names: list[str]  # SUITE.TEST from --list
    tests: dict[str, dict[str, Any]]  # test name -> its JSON record
    proc: subprocess.CompletedProcess[str]


def run_suite(suite: str, tmp_path: Path, timeout: float = 600) -> HostRun:
    """`run.py --list`, then a real run with --json; nothing asserted yet (callers may skip first)."""
    base = [sys.executable, str(RUN), "--suite", suite]
    listed = subprocess.run([*base, "--list"], capture_output=True, text=True, check=True, timeout=60)
    names = listed.stdout.split()
    assert names and all(n.startswith(f"{suite}.") for n in names), listed.stdout
    out = tmp_path / f"{suite}.json"
    proc = subprocess.run([*base, "--json", str(out)], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    doc = json.loads(out.read_text())
    return HostRun(names, {t["name"]: t for t in doc["tests"]}, proc)


def assert_clean(run: HostRun) -> None:
    """No FAIL/ERROR, exit 0, exactly the listed tests ran, every SKIP says why, KTAP on stdout."""
    tests = list(run.tests.values())
    bad = [f"{t['name']}: {t['status']}: {t.get('reason', '')}" for t in tests if t["status"] in ("FAIL", "ERROR")]
    assert not bad, "\n".join(bad) + f"\n\nKTAP:\n{run.proc.stdout[-4000:]}"
    assert run.proc.returncode == 0, run.proc.stdout[-4000:] + run.proc.stderr[-2000:]
    assert sorted(f"{t['suite']}.{t['name']}" for t in tests) == sorted(run.names)
    unexplained = [t["name"] for t in tests if t["status"] == "SKIP" and not t.get("reason", "").strip()]
    assert not unexplained, f"SKIPs without a reason: {unexplained}"
    assert run.proc.stdout.startswith("KTAP version 1\n")
