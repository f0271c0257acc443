"""Cells built from the recorded fixtures, shared by test_results.py and test_report.py.

Events are built by hand from the console text (kind, offset of the report's
first line, the next lines as excerpt) so these tests pin lab.results.model and
lab.results.junit, not lab.results.consolelog's table; test_results.py also runs the real scan.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from lab.results import model
from lab.results.consolelog import KernelEvent
from lab.results.model import CellResult

ROOT = Path(__file__).resolve().parents[1] / "data"
KTAP = ROOT / "ktap"
RESULTS = ROOT / "results"
UPDATE = os.environ.get("KLAB_UPDATE_GOLDEN") == "1"  # rewrite the golden files instead of comparing

PLANNED = [
    ("fsdemo", "open_allowed"),
    ("fsdemo", "open_denied"),
    ("fsdemo", "needs_abi_9"),
    ("fsdemo", "helper_crashes"),
    ("ptracedemo", "attach_parent"),
    ("ptracedemo", "attach_child"),
    ("ptracedemo", "traceme"),
]


def text(name: str) -> str:
    return (KTAP / name).read_text()


def guest_json() -> dict[str, Any]:
    doc = json.loads((RESULTS / "guest-mixed.json").read_text())
    assert isinstance(doc, dict)
    return doc


def event(console: str, marker: str, kind: str, fatal: bool = False, lines: int = 12) -> KernelEvent:
    """The report whose first line contains `marker`, the way a console scanner would record it."""
    start = console.rfind("\n", 0, console.index(marker)) + 1
    return KernelEvent(kind, start, "\n".join(console[start:].splitlines()[:lines]), fatal)


def splat_events(console: str) -> list[KernelEvent]:
    return [event(console, "WARNING: CPU", "warning")]


def panic_events(console: str) -> list[KernelEvent]:
    return [
        event(console, "BUG: kernel NULL", "bug"),
        event(console, "Oops: 0000", "oops"),
        event(console, "Kernel panic", "panic", fatal=True, lines=3),
    ]


def cells() -> list[CellResult]:
    """Three cells: JSON + a WARNING mid-suite; truncated KTAP + a panic; a lab error before boot."""
    splat = text("console-splat.log")
    splat_ev = splat_events(splat)
    good = CellResult(
        id="x86_64.6.12.default",
        arch="x86_64",
        kernel_release="6.12.0-klab",
        describe="v6.12-rc7-12-gabcdef",
        config_sha256="ab" * 32,
        qemu_version="7.2.11",
        accel="tcg",
        accel_reason="KVM probe: guest never reached init",
        image="host",
        append="lsm=landlock,bpf",
        durations={"boot": 3.3, "tests": 2.1, "total": 6.6},
        console_log="runs/x86_64.6.12.default/console.log",
        kernel_events=splat_ev,
        tests=model.collect(PLANNED, guest_json(), None, splat, splat_ev),
    )
    panic = text("console-panic.log")
    panic_ev = panic_events(panic)
    crashed = CellResult(
        id="arm64.6.12.default",
        arch="arm64",
        kernel_release="6.12.0-klab",
        describe="v6.12-rc7-12-gabcdef",
        config_sha256="cd" * 32,
        qemu_version="7.2.11",
        accel="tcg",
        accel_reason="cross-arch: no KVM",
        image="images/bookworm-arm64.ext4 sha256:0123",
        durations={"boot": 1.7, "total": 55.3},
        console_log="runs/arm64.6.12.default/console.log",
        kernel_events=panic_ev,
        tests=model.collect(PLANNED, None, text("guest-truncated.ktap"), panic, panic_ev),
    )
    lab = CellResult(
        id="x86_64.6.1.default",
        arch="x86_64",
        qemu_version="7.2.11",
        accel="tcg",
        image="host",
        error="QEMU exited with status 1 before the kernel started: could not open kernel image",
        tests=model.collect(PLANNED, None, None, "", []),
    )
    return [good, crashed, lab]


def normalise_json(doc: dict[str, Any]) -> dict[str, Any]:
    """Zero the durations: they change each time the fixtures are recorded."""
    for test in doc["tests"]:
        test["duration"] = 0.0
    return doc


def normalise_xml(xml: str) -> str:
    return re.sub(r'time="[^"]*"', 'time="0"', xml)


def golden(name: str, got: str) -> str:
    """The golden text to compare with; with KLAB_UPDATE_GOLDEN=1, write `got` there first."""
    path = RESULTS / name
    if UPDATE:
        path.write_text(got)
    return path.read_text()
