"""Build and test one checkout of a kernel tree: the judge `klab bisect` and `klab try` share.

A step of either workflow is the same: build the tree as checked out,
incrementally in one build dir (a git tree's build dir is keyed by its path,
so every step reuses it and its .config; a tree built before, by this run or an
earlier one, is not built again: lab.kernel.kept), keep the build log beside the
step's results (the next build rewrites the build dir's own), then boot the
selected suites. A tree that does not build is untestable, not bad
(`Built.error`); how the cells are judged is each workflow's own: git's
answer for bisect, what changed for try.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from lab.arches import Arch
from lab.errors import BuildError, ConfigMismatch
from lab.kernel.record import BuildManifest
from lab.results.model import CellResult
from lab.run import cellrun, prepare


@dataclass(frozen=True)
class Checkout:
    """What every step of a workflow builds and runs: the tree (whatever is checked out) and the selection."""

    tree: Path
    arch: Arch
    fragments: tuple[str, ...]
    suites: tuple[str, ...]
    patterns: tuple[str, ...] = ()
    build_dir: Path | None = None  # default: the lab's cache, keyed by the tree and the fragments
    rootfs: str = "auto"
    append: str = ""
    accel: str = "auto"


@dataclass(frozen=True)
class Built:
    """One step's build: its build.json, or why it did not build; the kept log either way."""

    build: BuildManifest | None
    error: str  # one line (the compiler's first error) when it did not build
    log: str  # the build log, copied into the step's dir ("" when there was none)
    seconds: float


def build(checkout: Checkout, step_dir: Path) -> Built:
    """Build the tree as checked out; a failed build or config is an answer (Built.error), not an exception."""
    start = time.monotonic()
    step_dir.mkdir(parents=True, exist_ok=True)
    try:
        doc = prepare.build_kernel(
            checkout.tree, checkout.arch, checkout.fragments, build_dir=checkout.build_dir, kept=True
        )
    except (BuildError, ConfigMismatch) as exc:
        kept = _keep_log(exc.log if isinstance(exc, BuildError) else None, step_dir)
        return Built(None, build_failure(exc), kept, _since(start))
    return Built(doc, "", _keep_log(Path(doc.artifacts.log), step_dir), _since(start))


def test(checkout: Checkout, doc: BuildManifest, cell_id: str, step_dir: Path) -> CellResult:
    """Boot the step's kernel once and run the selected suites; the cell's files go to step_dir."""
    rootfs, image_hash = prepare.rootfs_for(checkout.arch, checkout.rootfs)
    spec = cellrun.CellSpec(
        id=cell_id,
        arch=checkout.arch,
        kernel=doc.image,
        rootfs=rootfs,
        image_hash=image_hash,
        suites=checkout.suites,
        patterns=checkout.patterns,
        append=checkout.append,
        accel=checkout.accel,
        build=doc,
    )
    return cellrun.run_cell(spec, step_dir)


def build_failure(exc: BuildError | ConfigMismatch) -> str:
    """One line: the compiler's first error when there is one, not the whole make command."""
    if isinstance(exc, ConfigMismatch):
        return f"config: {str(exc).splitlines()[0]}"
    text = exc.log.read_text(errors="replace") if exc.log and exc.log.is_file() else exc.tail
    error = next((line.strip() for line in text.splitlines() if " error: " in line), "")
    return f"build failed: {error}" if error else f"build failed: {str(exc).splitlines()[0]}"


def _keep_log(log: Path | None, step_dir: Path) -> str:
    if log is None or not log.is_file():
        return ""
    shutil.copyfile(log, step_dir / "build.log")
    return str(step_dir / "build.log")


def _since(start: float) -> float:
    return round(time.monotonic() - start, 1)
