"""LAVA's results back into kernel-lab's: a lava-run log (or a server's export) becomes a CellResult.

LAVA reports one case per in-guest test (lab/guest/lava-cases sends them);
the reasons and logs come from the guest's KTAP on the console, and a planned
test LAVA never reported is MISS, like a cell the lab ran itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from lab.errors import UserError
from lab.results import consolelog, ktap, model
from lab.results.model import CellResult, Status

# LAVA's four results; lava-cases sends ERROR as unknown.
_STATUS = {"pass": Status.PASS, "fail": Status.FAIL, "skip": Status.SKIP, "unknown": Status.ERROR}
LOG_NAME = "lava.log"  # where `lava-run ... > DIR/lava.log 2>&1` puts the dispatcher's log


@dataclass
class LavaRun:
    """What a LAVA job left: its result records, the console, and the job verdict."""

    records: list[dict[str, Any]] = field(default_factory=list)
    console: str = ""
    boot_command: str = ""
    seconds: float = 0.0


def read_lava_results(path: Path) -> LavaRun:
    """A lava-run log (one YAML record a line; a dir means DIR/lava.log) or a server's results export."""
    if path.is_dir():
        path = path / LOG_NAME
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise UserError(f"cannot read LAVA results {path}: {exc.strerror}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        doc = None
    if isinstance(doc, list) and all(isinstance(r, dict) and "suite" in r and "name" in r for r in doc):
        # The server's /results/<job>/yaml: suite is the definition, name the case.
        return LavaRun([dict(r, case=r["name"], definition=r["suite"]) for r in doc])
    return _read_log(text, path)


def _read_log(text: str, path: Path) -> LavaRun:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("{"):
            continue
        try:
            rec = yaml.safe_load(line)
        except yaml.YAMLError as exc:
            raise UserError(f"{path}:{number}: not a LAVA log record: {exc}") from exc
        if isinstance(rec, dict):
            records.append(rec)
    if not records:
        raise UserError(f"{path}: no LAVA log records or results in it; pass lava-run's log or a results export")
    run = LavaRun([r["msg"] for r in records if r.get("lvl") == "results" and isinstance(r.get("msg"), dict)])
    run.console = "".join(f"{r['msg']}\n" for r in records if r.get("lvl") == "target" and isinstance(r["msg"], str))
    boot = [r["msg"] for r in records if isinstance(r.get("msg"), str) and r["msg"].startswith("Boot command: ")]
    run.boot_command = boot[0] if boot else ""
    stamps = [_timestamp(r.get("dt")) for r in records]
    known = [s for s in stamps if s is not None]
    run.seconds = round(max(known) - min(known), 2) if known else 0.0
    return run


def _timestamp(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def to_cell(
    run: LavaRun, cell_id: str, arch: str, planned: list[tuple[str, str]], kernel_release: str = ""
) -> CellResult:
    """One model.CellResult: LAVA's verdict per test, reasons and logs from the guest's KTAP on the console."""
    by_ktap = {(t.suite, t.name): t for t in model.from_ktap(ktap.parse(run.console))} if run.console else {}
    tests = []
    for rec in run.records:
        if rec.get("definition") == "lava" or "case" not in rec:
            continue  # the dispatcher's own actions, not tests
        suite, _, name = str(rec["case"]).partition(".")
        status = _STATUS.get(str(rec.get("result")), Status.ERROR)
        seen = by_ktap.get((suite, name))
        reason = f"LAVA: {rec.get('result')}" if status is not Status.PASS else ""
        if seen and seen.status is status:
            reason = seen.reason
        seconds = _float(rec.get("measurement")) if rec.get("units") == "seconds" else 0.0
        tests.append(
            {"suite": suite, "name": name, "status": status.value, "reason": reason, "duration": seconds}
            | {"log": seen.log if seen else ""}
        )
    events = consolelog.scan(run.console)
    cell = CellResult(id=cell_id, arch=arch, kernel_release=kernel_release or _release(run.console))
    cell.kernel_events = events
    cell.tests = model.collect(planned, {"tests": tests}, None, run.console, events)
    cell.accel = "kvm" if ("accel=kvm" in run.boot_command or "-enable-kvm" in run.boot_command) else "tcg"
    cell.accel_reason = "from the LAVA device's QEMU command line"
    cell.error = _job_error(run.records)
    cell.durations = {"total": run.seconds} if run.seconds else {}
    return cell


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


_BANNER = re.compile(r"Linux version (\S+)")


def _release(text: str) -> str:
    """The kernel's own banner on the console, when the job did not say."""
    match = _BANNER.search(text)
    return match.group(1) if match else ""


def _job_error(records: list[dict[str, Any]]) -> str:
    """LAVA's job verdict: a failed job is a lab error here (a failed test is a test result, not this)."""
    job = next((r for r in records if r.get("definition") == "lava" and r.get("case") == "job"), None)
    if job is None or job.get("result") == "pass":
        return ""
    return f"LAVA job failed ({job.get('error_type', 'unknown')} error): {job.get('error_msg', 'no message')}"
