"""Shared by the guest integration tests: the lab.yaml cells, booted once each per test session.

Builds and images are cached under ~/.cache/kernel-lab, so a warm run only
boots. Each boot is recorded in a boot log (one line per boot) so that the
session can prove every cell booted exactly once, with or without xdist.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from lab.paths import REPO_ROOT
from lab.results import knownfail, model, store, write
from lab.run import catalog, cellrun, matrix, prepare

LAB_YAML = REPO_ROOT / "lab.yaml"
RESULTS_ROOT = Path(os.environ.get("KLAB_TEST_RESULTS", REPO_ROOT / "results" / "pytest"))
BOOT_LOG = RESULTS_ROOT / "boots.log"


def lab_matrix() -> matrix.Matrix:
    return matrix.load(LAB_YAML)


# Left to `make test-kernel`: a second cold arm64 build would push a cold `make test` past its hour.
NOT_IN_MAKE_TEST = {("arm64", "7.3")}


def make_test_cells() -> list[matrix.MatrixCell]:
    """The lab.yaml cells `make test` boots (every one but NOT_IN_MAKE_TEST), then 6.1 on x86_64."""
    cells = [c for c in lab_matrix().cells() if (c.arch, c.kernel.name) not in NOT_IN_MAKE_TEST]
    return cells + older_kernel_cells()


def older_kernel_cells() -> list[matrix.MatrixCell]:
    """All suites on Debian's 6.1 as well (Landlock ABI 2, BPF LSM without 6.12's return-value checks):
    the gates for newer features must skip there with the reason, and nothing may fail."""
    lab = lab_matrix()
    older = matrix.Matrix(kernels=(matrix.Kernel("6.1", "debian:6.1"),), arches=("x86_64",), suites=lab.suites)
    return older.cells()


def suite_tests(chosen: tuple[str, ...]) -> list[str]:
    """SUITE.TEST names, statically listed on the host from the same suites/run.py the guest runs."""
    return [f"{suite}.{name}" for suite, name in catalog.planned_tests(chosen)]


def cell_spec(cell: matrix.MatrixCell) -> cellrun.CellSpec:
    """Build (or reuse) the cell's kernel and rootfs; one build at a time (build.py locks the build dir)."""
    known = knownfail.load(Path(lab_matrix().known_failures))
    specs = prepare.matrix_specs(
        matrix.Matrix(
            kernels=(cell.kernel,), arches=(cell.arch,), suites=cell.suites, boots=(cell.boot,), rootfs=cell.rootfs
        ),
        known=known,
    )
    assert len(specs) == 1, specs
    return specs[0]


def record_boot(cell_id: str) -> None:
    RESULTS_ROOT.mkdir(parents=True, exist_ok=True)
    with open(BOOT_LOG, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(f"{cell_id} {os.getpid()}\n")


def boots() -> dict[str, int]:
    counts: dict[str, int] = {}
    if BOOT_LOG.is_file():
        for line in BOOT_LOG.read_text().splitlines():
            counts[line.split()[0]] = counts.get(line.split()[0], 0) + 1
    return counts


def run_cell(cell: matrix.MatrixCell) -> model.CellResult:
    spec = cell_spec(cell)
    record_boot(cell.id)
    out = cellrun.run_cell(spec, RESULTS_ROOT)
    write.reports(RESULTS_ROOT / "cells" / cell.id, [out], store.RunMeta(argv=(cell.id,)))
    return out


def load_cell_json(cell_id: str) -> dict[str, object]:
    return json.loads((RESULTS_ROOT / "cells" / cell_id / "results.json").read_text())
