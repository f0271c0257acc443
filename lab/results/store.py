"""results.json: a run's metadata, one record per cell, one flat record per test (easy to query with jq).

It is what CI merges, what `klab report`, `compare` and `reproduce` start
from, and what the LAVA importer writes: readers get typed cells back, and a
malformed file is a UserError naming the record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import manifest
from lab.errors import UserError
from lab.manifest import Record
from lab.results.consolelog import KernelEvent
from lab.results.model import CellResult, TestResult, exit_status, get_field, test_from_dict
from lab.results.signature import of_event

FORMAT = "kernel-lab/results/1"


@dataclass(frozen=True)
class RunMeta(Record):
    """How a run was made: the command, when, how long, and where its parts came from."""

    SCHEMA = 1

    argv: tuple[str, ...] = ()
    started: float = 0.0  # time.time()
    wall_seconds: float = 0.0
    jobs: int = 1
    merged_from: tuple[str, ...] = ()  # CI merge: the cells' results.json files
    lava_results: str = ""  # LAVA import: what it read
    commit: str = ""  # a bisect step: the commit judged
    tests: tuple[str, ...] = ()  # a bisect step: the tests selected
    problems: tuple[str, ...] = ()  # run-level failures that are no cell's: expired known failures
    known_failures: str = ""  # the known-failures file the run applied


@dataclass
class Run:
    """A results.json read back."""

    meta: RunMeta
    cells: list[CellResult]


# The cell's plain text fields, written and read back as they are.
_CELL_TEXT = (
    "arch",
    "kernel_release",
    "describe",
    "config_sha256",
    "qemu_version",
    "accel",
    "accel_reason",
    "image",
    "append",
    "console_log",
    "error",
    "boot",
    "kernel",
    "kernel_sha256",
    "rootfs",
    "cmdline",
    "memory_dump",
)


def write(path: Path, cells: list[CellResult], meta: RunMeta) -> None:
    """results.json: run metadata, one record per cell, one flat record per test (easy to query)."""
    doc = {
        "format": FORMAT,
        "meta": meta.to_json(),
        "exit_status": max(exit_status(cells), 1 if meta.problems else 0),
        "cells": [_cell_to_dict(cell) for cell in cells],
        "tests": [_test_to_dict(cell, test) for cell in cells for test in cell.tests],
    }
    manifest.write_json(path, doc)


def _cell_to_dict(cell: CellResult) -> dict[str, Any]:
    doc: dict[str, Any] = {key: getattr(cell, key) for key in _CELL_TEXT}
    doc.update(id=cell.id, verdict=cell.verdict().value, durations=dict(cell.durations))
    doc["kernel_events"] = [
        {"kind": e.kind, "offset": e.offset, "excerpt": e.excerpt, "fatal": e.fatal, "signature": of_event(e)}
        for e in cell.kernel_events
    ]
    doc["patterns"] = list(cell.patterns)
    doc["repeat"] = cell.repeat
    return doc


def _test_to_dict(cell: CellResult, test: TestResult) -> dict[str, Any]:
    return {
        "cell": cell.id,
        "arch": cell.arch,
        "kernel_release": cell.kernel_release,
        "accel": cell.accel,
        "suite": test.suite,
        "name": test.name,
        "status": test.status.value,
        "duration": test.duration,
        "reason": test.reason,
        "log": test.log,
        "signature": test.signature,
        "runs": list(test.runs),
    }


def load(path: Path) -> Run:
    """Read results.json back into typed cells and metadata."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read results: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"{path}: not a kernel-lab results file (format must be {FORMAT!r})")
    cells: dict[str, CellResult] = {}
    for i, rec in enumerate(get_field(doc, "cells", list, str(path))):
        cell = _cell_from_dict(rec, f"{path}: cells[{i}]")
        cells[cell.id] = cell
    for i, rec in enumerate(get_field(doc, "tests", list, str(path))):
        where = f"{path}: tests[{i}]"
        cell_id = get_field(rec, "cell", str, where)
        if cell_id not in cells:
            raise UserError(f"{where}: unknown cell {cell_id!r}")
        cells[cell_id].tests.append(test_from_dict(rec, where))
    meta = RunMeta.from_json(doc.get("meta"), f"{path}: meta")
    return Run(meta, list(cells.values()))


def load_cells(path: Path) -> list[CellResult]:
    return load(path).cells


def merge(paths: list[Path]) -> list[CellResult]:
    """Cells from several results.json files (one per CI job); a cell id seen twice is an error."""
    seen: dict[str, Path] = {}
    out: list[CellResult] = []
    for path in paths:
        for cell in load_cells(path):
            if cell.id in seen:
                raise UserError(f"cell {cell.id!r} is in both {seen[cell.id]} and {path}")
            seen[cell.id] = path
            out.append(cell)
    return out


def _cell_from_dict(rec: Any, where: str) -> CellResult:
    events = [
        KernelEvent(
            get_field(e, "kind", str, where),
            get_field(e, "offset", int, where),
            get_field(e, "excerpt", str, where),
            get_field(e, "fatal", bool, where),
        )
        for e in get_field(rec, "kernel_events", list, where, [])
    ]
    durations = {
        str(k): get_field({"v": v}, "v", float, f"{where}: durations")
        for k, v in get_field(rec, "durations", dict, where, {}).items()
    }
    text: dict[str, Any] = {key: get_field(rec, key, str, where, "") for key in _CELL_TEXT}
    return CellResult(
        id=get_field(rec, "id", str, where),
        durations=durations,
        kernel_events=events,
        patterns=tuple(str(p) for p in get_field(rec, "patterns", list, where, [])),
        repeat=get_field(rec, "repeat", int, where, 1),
        **text,
    )
