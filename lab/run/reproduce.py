"""`klab reproduce`: rerun a cell (or one test of it) from its results.json alone, on the same kernel and rootfs.

A results.json cell records what its boot needs (lab.results.model.CellResult): the
kernel's path and sha256, the rootfs and the image's hash, the kernel
command-line additions, the accelerator, the suites, the -k patterns and the
repeat count. `plan` turns a cell into a runnable testrun.CellSpec without
building anything: the kernel is found by content (its recorded path, then
every build dir the lab knows, then the paths the user gives), the image by
its hash. When one is gone, the error names it and the command that makes it
again.

Kernel builds are not bit-for-bit reproducible (the image embeds its build
time), so a kernel rebuilt with that command has another sha256. A build
whose arch, release, `git describe` (or Debian package version) and .config
hash all match the cell's is accepted in its place, with a note saying so;
an image rebuilt at the recorded path (image dirs are keyed by recipe and
builder) likewise. Everything here is pure over `Lookups`: the CLI passes
the real cache, tests pass fakes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from lab import arches, manifest
from lab.arches import Arch
from lab.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_LAB, EXIT_OK, EXIT_UNTESTABLE, UserError
from lab.image.build import MANIFEST as IMAGE_MANIFEST
from lab.image.build import ImageManifest
from lab.kernel.record import MANIFEST, BuildManifest
from lab.paths import cache_root
from lab.results import knownfail
from lab.results.model import BAD, CellResult, TestResult
from lab.results.store import Run
from lab.run.cellrun import CellSpec
from lab.vm.qemu import HOST_ROOTFS

_DEBIAN = re.compile(r"^linux-source-(\d+\.\d+) ")


@dataclass(frozen=True)
class Lookups:
    """Where reproduce looks for artifacts: the real cache in the CLI, fakes in tests."""

    sha256: Callable[[Path], str]  # content hash of a file that exists
    builds: Callable[[], list[BuildManifest]]  # every finished build the lab knows of
    images: Callable[[], list[ImageManifest]]  # every finished guest image
    native: Callable[[Arch], bool]  # can this host's / boot as this arch's rootfs


@dataclass(frozen=True)
class Choice:
    """A cell to rerun, and the one test to rerun in it (None: the cell's whole selection)."""

    cell: CellResult
    test: TestResult | None = None


@dataclass(frozen=True)
class Planned:
    """A runnable spec, what a user should know about how its parts were found, and what it reruns."""

    spec: CellSpec
    notes: tuple[str, ...] = ()
    original: Choice | None = None


# --- which cells and tests -------------------------------------------------------------------------


def choose(run: Run, test: str | None, cell_id: str | None, where: str) -> list[Choice]:
    """The cells to rerun: every cell, the --cell one, or the one that ran TEST (--cell picks among several)."""
    cells = run.cells
    if cell_id is not None:
        cells = [c for c in run.cells if c.id == cell_id]
        if not cells:
            raise UserError(f"--cell {cell_id}: no such cell in {where}; its cells: {_ids(run.cells)}")
    if not cells:
        raise UserError(f"{where} has no cells to reproduce")
    if test is None:
        return [Choice(c) for c in cells]
    if "." not in test:
        raise UserError(f"{test!r}: name the test as SUITE.TEST (e.g. landlock.abi_version)")
    ran = [(c, t) for c in cells for t in c.tests if t.full_name == test]
    if not ran:
        near = sorted({t.full_name for c in cells for t in c.tests if test in t.full_name or t.full_name in test})
        hint = f"; did you mean: {', '.join(near[:5])}" if near else ""
        scope = f"cell {cell_id}" if cell_id else where
        raise UserError(f"{test}: no test of that name ran in {scope}{hint}")
    if len(ran) > 1:
        raise UserError(f"{test} ran in {len(ran)} cells: {_ids([c for c, _ in ran])}; choose one with --cell ID")
    return [Choice(*ran[0])]


def _ids(cells: Iterable[CellResult]) -> str:
    return ", ".join(c.id for c in cells)


# --- the kernel ------------------------------------------------------------------------------------


def rebuild_command(cell: CellResult) -> str:
    """The `klab build` line that makes the cell's kernel again, from its describe and release."""
    found = _DEBIAN.match(cell.describe)
    if found:
        return f"klab build --src debian:{found.group(1)} --arch {cell.arch}"
    tree = f"a tree at {cell.describe}" if cell.describe else f"a {cell.kernel_release or 'kernel'} tree"
    return f"klab build --src TREE --arch {cell.arch}  (TREE: {tree})"


def find_kernel(cell: CellResult, extra: Iterable[Path], look: Lookups) -> tuple[Path, BuildManifest | None, str]:
    """(kernel image, its build.json if known, a note) for the cell: same sha256, else the same build redone."""
    if not cell.kernel_sha256:
        raise UserError(f"cell {cell.id}: results.json records no kernel sha256 (written by an older klab); "
                        "rerun the cell with `klab test`")  # fmt: skip
    builds = [b for b in look.builds() if b.arch == cell.arch]
    by_image = {b.image.resolve(): b for b in builds}
    candidates = [Path(cell.kernel)] if cell.kernel else []
    candidates += [b.image for b in builds]
    candidates += [p for given in extra for p in _kernels_at(given, cell.arch, by_image)]
    seen: set[Path] = set()
    for path in candidates:
        real = path.resolve()
        if real in seen or not real.is_file():
            continue
        seen.add(real)
        if look.sha256(real) == cell.kernel_sha256:
            return path, by_image.get(real), ""
    redone = [b for b in builds if _same_build(b, cell) and b.image.is_file()]
    if redone:
        best = max(redone, key=lambda b: b.finished)
        note = (
            f"{cell.id}: kernel sha256:{cell.kernel_sha256[:12]} is gone; using {best.image}, rebuilt from the "
            f"same tree ({best.source.describe}) with the same .config (sha256:{best.config_sha256[:12]})"
        )
        return best.image, best, note
    raise UserError(
        f"cell {cell.id}: its kernel is gone: no kernel with sha256:{cell.kernel_sha256[:16]}... "
        f"(was {cell.kernel or 'unrecorded'}, {cell.kernel_release or 'release unknown'}) in the lab's build dirs"
        f"{' or the given paths' if extra else ''}; rebuild it with `{rebuild_command(cell)}`, "
        "or pass --kernel PATH where it is"
    )


def _kernels_at(given: Path, arch: str, by_image: dict[Path, BuildManifest]) -> list[Path]:
    """A --kernel path: an image file, or a build dir (its build.json's image, else the arch's image path)."""
    if not given.is_dir():
        return [given]
    doc = BuildManifest.read_if_valid(given / MANIFEST)
    if doc is not None:
        by_image.setdefault(doc.image.resolve(), doc)
        return [doc.image]
    return [given / arches.get(arch).image_path]


def _same_build(doc: BuildManifest, cell: CellResult) -> bool:
    """A rebuild of the cell's kernel: same arch, release, clean source identity and .config."""
    if not (cell.config_sha256 and cell.describe and cell.kernel_release) or "dirty" in cell.describe:
        return False
    return (doc.arch, doc.kernelrelease, doc.source.describe, doc.config_sha256) == (
        cell.arch, cell.kernel_release, cell.describe, cell.config_sha256,
    )  # fmt: skip


# --- the root filesystem ---------------------------------------------------------------------------


def image_command(cell: CellResult) -> str:
    return f"klab image build --arch {cell.arch}"


def find_rootfs(cell: CellResult, look: Lookups) -> tuple[str, str, str]:
    """(rootfs, image sha256, a note): host, or the image with the recorded hash (found by hash if it moved)."""
    arch = arches.get(cell.arch)
    if cell.image == HOST_ROOTFS or (not cell.image and cell.rootfs == HOST_ROOTFS):
        if not look.native(arch):
            raise UserError(f"cell {cell.id} booted the host's / as an {arch.name} rootfs; this host cannot: "
                            f"reproduce it on an {arch.name} machine")  # fmt: skip
        return HOST_ROOTFS, "", ""
    path, want = Path(cell.rootfs), cell.image_sha256
    if not cell.rootfs:
        raise UserError(f"cell {cell.id}: results.json records no rootfs (written by an older klab)")
    images = [d for d in look.images() if d.arch == arch.name]
    if not want:  # a user's own ext4 image: the lab never hashed it
        if path.is_file():
            return str(path), "", ""
        raise UserError(f"cell {cell.id}: its rootfs {path} is gone (a user-given image: put it back)")
    known = {Path(d.image).resolve(): d for d in images}
    if path.is_file():
        doc = known.get(path.resolve())
        if (doc.sha256 if doc else look.sha256(path)) == want:
            return str(path), want, ""
    for doc in images:
        if doc.sha256 == want and Path(doc.image).is_file():
            return doc.image, want, ""
    if path.is_file() and path.resolve() in known:
        doc = known[path.resolve()]
        note = (f"{cell.id}: image sha256:{want[:12]} is gone; using {path}, rebuilt from the same recipe "
                f"(sha256:{doc.sha256[:12]}; package versions may differ)")  # fmt: skip
        return str(path), doc.sha256, note
    raise UserError(
        f"cell {cell.id}: its image is gone: no {arch.name} image with sha256:{want[:16]}... (was {path}); "
        f"rebuild it with `{image_command(cell)}`"
    )


# --- the spec --------------------------------------------------------------------------------------


def spec_for(
    choice: Choice,
    kernel: Path,
    build: BuildManifest | None,
    rootfs: tuple[str, str],
    accel: str | None,
    known: tuple[knownfail.Entry, ...] = (),
    repeat: int | None = None,
) -> CellSpec:
    """The cell's boot again: same id, kernel, rootfs, command line, accelerator, suites, -k and --repeat
    (`repeat` overrides the recorded count: how often does the failure come back?)."""
    cell = choice.cell
    suites = cell.suites() if choice.test is None else [choice.test.suite]
    patterns = cell.patterns if choice.test is None else (choice.test.full_name,)
    return CellSpec(
        id=cell.id,
        arch=arches.get(cell.arch),
        kernel=kernel,
        rootfs=rootfs[0],
        image_hash=rootfs[1],
        suites=tuple(s for s in suites if s),
        patterns=tuple(patterns),
        append=cell.append,
        accel=accel or cell.accel or "auto",
        build=build,
        boot=cell.boot or "default",
        known=known,
        repeat=repeat or max(cell.repeat, 1),
    )


def plan(
    run: Run,
    where: str,
    *,
    test: str | None = None,
    cell_id: str | None = None,
    kernels: Iterable[Path] = (),
    accel: str | None = None,
    known: tuple[knownfail.Entry, ...] = (),
    repeat: int | None = None,
    look: Lookups,
) -> list[Planned]:
    """Every chosen cell as a spec, or a UserError naming what is missing: nothing is built or booted here."""
    out = []
    extra = list(kernels)
    for choice in choose(run, test, cell_id, where):
        if not choice.cell.arch:
            raise UserError(f"{where}: cell {choice.cell.id} records no arch")
        kernel, build, knote = find_kernel(choice.cell, extra, look)
        rootfs, image_hash, rnote = find_rootfs(choice.cell, look)
        spec = spec_for(choice, kernel, build, (rootfs, image_hash), accel, known, repeat)
        if not spec.suites:
            raise UserError(f"cell {choice.cell.id} ran no suite ({choice.cell.error or 'no tests recorded'})")
        out.append(Planned(spec, tuple(n for n in (knote, rnote) if n), choice))
    return out


# --- did it come back ------------------------------------------------------------------------------


class Outcome(StrEnum):
    """What the rerun says of one failure of the original run."""

    REPRODUCED = "reproduced"
    DIFFERENT = "fails differently"
    NOT_REPRODUCED = "did NOT reproduce"
    NOT_RUN = "did not run again"


# `klab reproduce`'s own exit status when the original run had failures (README, "Exit codes"):
# 1 one came back (the kernel is still bad), 3 they fail but differently (another bug, or the same one
# changed), 0 none came back; a rerun that could not test (125, 128, 130) keeps its own code.
EXIT_REPRODUCED = EXIT_FAILED
EXIT_FAILS_DIFFERENTLY = 3
EXIT_NOT_REPRODUCED = EXIT_OK
_NO_VERDICT = (EXIT_UNTESTABLE, EXIT_LAB, EXIT_INTERRUPTED)


@dataclass(frozen=True)
class Verdict:
    test: str
    cell: str
    outcome: Outcome
    line: str


def _failing_runs(test: TestResult) -> tuple[int, int]:
    """(failing runs, runs) of a rerun test: --repeat records each run's status."""
    runs = test.runs or (test.status.value,)
    return sum(r in {s.value for s in BAD} for r in runs), len(runs)


def _judge(was: TestResult, now: TestResult | None) -> tuple[Outcome, str]:
    before = f"was {was.status.value} with signature {was.signature}"
    if now is None:
        return Outcome.NOT_RUN, f"did not run in the rerun ({before})"
    failed, runs = _failing_runs(now)
    of = f" {failed} of {runs} runs" if runs > 1 else ""
    if failed == 0:
        return Outcome.NOT_REPRODUCED, f"did NOT reproduce: {now.status.value} now ({before})"
    if now.signature and now.signature != was.signature:
        return Outcome.DIFFERENT, f"fails differently{of}: {now.signature} ({before})"
    return Outcome.REPRODUCED, f"reproduced{of} ({was.status.value} with signature {was.signature})"


def verdicts(planned: list[Planned], rerun: list[CellResult]) -> list[Verdict]:
    """For each failure the rerun was asked to repeat, whether it came back, by signature."""
    cells = {c.id: c for c in rerun}
    out = []
    for item in planned:
        if item.original is None:
            continue
        chosen = [item.original.test] if item.original.test else item.original.cell.tests
        now = {t.full_name: t for t in cells[item.spec.id].tests} if item.spec.id in cells else {}
        for was in chosen:
            if was.status in BAD:
                outcome, line = _judge(was, now.get(was.full_name))
                out.append(Verdict(was.full_name, item.spec.id, outcome, f"{item.spec.id}: {was.full_name}: {line}"))
    return out


def exit_status(found: list[Verdict], rerun_status: int) -> int:
    """Whether the original failures came back; without any (or without a verdict) the rerun's own status."""
    if not found or rerun_status in _NO_VERDICT:
        return rerun_status
    outcomes = {v.outcome for v in found}
    if Outcome.REPRODUCED in outcomes:
        return EXIT_REPRODUCED
    if Outcome.DIFFERENT in outcomes:
        return EXIT_FAILS_DIFFERENTLY
    if Outcome.NOT_REPRODUCED in outcomes:
        return EXIT_NOT_REPRODUCED
    return EXIT_UNTESTABLE  # none of them ran again


# --- the real lookups ------------------------------------------------------------------------------


def cached_builds() -> list[BuildManifest]:
    """build.json of the lab's build dirs (cache/build/*) and of those beside other trees laid out like the
    cache's (the bisect scenario's cache/*/build/*, `klab try`'s cache/try/*/build/*)."""
    root = cache_root()
    paths = [p for pattern in ("", "*/", "*/*/") for p in root.glob(f"{pattern}build/*/{MANIFEST}")]
    return [doc for doc in (BuildManifest.read_if_valid(p) for p in sorted(set(paths))) if doc is not None]


def cached_images() -> list[ImageManifest]:
    paths = sorted(cache_root().glob(f"images/*/{IMAGE_MANIFEST}"))
    return [doc for doc in (ImageManifest.read_if_valid(p) for p in paths) if doc is not None]


def real_lookups() -> Lookups:
    return Lookups(sha256=manifest.sha256, builds=cached_builds, images=cached_images, native=arches.is_native)


def default_results() -> Path:
    return Path("results") / time.strftime("reproduce-%Y%m%d-%H%M%S")


def extra_tests(planned: list[tuple[str, str]], test: str) -> list[str]:
    """Tests a `-k SUITE.TEST` selects besides TEST itself (-k is a substring match in the guest)."""
    return [f"{s}.{n}" for s, n in planned if f"{s}.{n}" != test]
