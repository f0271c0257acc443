"""results.json: a run's metadata, one record per cell, one flat record per test (easy to query with jq).

It is what CI merges, what `klab report`, `compare` and `reproduce` start
from, and what the LAVA importer writes: readers get typed cells back, and a
malformed file is a UserError naming the record.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import manifest
from lab.errors import EXIT_FAILED, EXIT_INTERRUPTED, UserError
from lab.manifest import Record
from lab.results.consolelog import KernelEvent
from lab.results.model import CellResult, TestResult, exit_status
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
    interrupted: bool = False  # Ctrl-C or SIGTERM stopped the run: only the cells that finished are here


@dataclass
class Run:
    """A results.json read back."""

    meta: RunMeta
    cells: list[CellResult]


# Written beside a cell's own fields, for people and jq; worked out again when read.
_CELL_DERIVED = ("verdict",)
_EVENT_DERIVED = ("signature",)
# Written into each flat test record from its cell, so one record answers a query alone.
_TEST_FROM_CELL = ("cell", "arch", "kernel_release", "accel")


def write(path: Path, cells: list[CellResult], meta: RunMeta) -> None:
    """results.json: run metadata, one record per cell, one flat record per test (easy to query)."""
    doc = {
        "format": FORMAT,
        "meta": meta.to_json(),
        "exit_status": run_exit_status(cells, meta),
        "cells": [_cell_to_dict(cell) for cell in cells],
        "tests": [_test_to_dict(cell, test) for cell in cells for test in cell.tests],
    }
    manifest.write_json(path, doc)


def run_exit_status(cells: list[CellResult], meta: RunMeta) -> int:
    """The run's exit status as `klab test` gave it: the cells', unless expired entries or an interruption overrule."""
    if meta.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FAILED if meta.problems else exit_status(cells)


def _cell_to_dict(cell: CellResult) -> dict[str, Any]:
    doc = {k: v for k, v in cell.fields_json().items() if k != "tests"}
    doc["verdict"] = cell.verdict().value
    doc["kernel_events"] = [e.fields_json() | {"signature": of_event(e)} for e in cell.kernel_events]
    return doc


def _test_to_dict(cell: CellResult, test: TestResult) -> dict[str, Any]:
    return {"cell": cell.id, "arch": cell.arch, "kernel_release": cell.kernel_release, "accel": cell.accel} | (
        test.fields_json()
    )


def load(path: Path) -> Run:
    """Read results.json back into typed cells and metadata; every problem is one UserError naming the file."""
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise UserError(f"{path}: cannot read results: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise UserError(f"{path}: not a kernel-lab results file: it is not JSON (cut short or overwritten?)") from exc
    if not isinstance(doc, dict) or not str(doc.get("format", "")).startswith("kernel-lab/results/"):
        raise UserError(f"{path}: not a kernel-lab results file (no format {FORMAT!r}); give a results.json of klab")
    if doc["format"] != FORMAT:
        raise UserError(
            f"{path}: written by another klab (format {doc['format']!r}; this klab reads {FORMAT!r}): "
            "read it with the klab that wrote it, or rerun the tests"
        )
    where = str(path)
    cells: dict[str, CellResult] = {}
    for i, rec in enumerate(_list(doc, "cells", where)):
        cell = CellResult.from_fields(_without(rec, ("tests", "kernel_events", *_CELL_DERIVED)), f"{where}: cells[{i}]")
        cell.kernel_events = [KernelEvent.from_fields(_without(e, _EVENT_DERIVED), f"{where}: cells[{i}]") for e in
                              _list(rec, "kernel_events", f"{where}: cells[{i}]")]  # fmt: skip
        cells[cell.id] = cell
    for i, rec in enumerate(_list(doc, "tests", where)):
        at = f"{where}: tests[{i}]"
        cell_id = rec.get("cell") if isinstance(rec, dict) else None
        if cell_id not in cells:
            raise UserError(f"{at}: unknown cell {cell_id!r}")
        cells[cell_id].tests.append(TestResult.from_fields(_without(rec, _TEST_FROM_CELL), at))
    meta = RunMeta.from_json(doc.get("meta"), f"{where}: meta")
    return Run(meta, list(cells.values()))


def claim(path: Path, *, overwrite: bool, marker: str = "results.json") -> None:
    """Check, before anything boots, that a run may write into `path`: two runs never mix in one dir.

    A new or empty dir is fine. An earlier run (it has `marker`) is replaced only
    with --overwrite; a dir holding anything else is never written into.
    """
    if not path.exists():
        return
    if not path.is_dir():
        raise UserError(f"--results {path} is a file; give a new or empty directory")
    if not any(path.iterdir()):
        return
    if not (path / marker).is_file():
        raise UserError(f"--results {path} is not empty and holds no klab results; give a new or empty directory")
    if not overwrite:
        raise UserError(f"--results {path} holds an earlier run; pass --overwrite to replace it, or another --results")
    shutil.rmtree(path)


def _list(doc: Any, key: str, where: str) -> list[Any]:
    value = doc.get(key, []) if isinstance(doc, dict) else None
    if not isinstance(value, list):
        raise UserError(f"{where}: {key!r} must be a list")
    return value


def _without(rec: Any, keys: tuple[str, ...]) -> Any:
    return {k: v for k, v in rec.items() if k not in keys} if isinstance(rec, dict) else rec


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
