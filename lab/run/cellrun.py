"""Run the in-guest suites in guests, one boot per cell, and turn what comes back into results.

Data flows one way: a CellSpec (kernel, arch, rootfs, boot parameters,
suites) -> one guest boot running suites/run.py -> the guest's JSON and KTAP
(over the results share) plus the console -> a model.CellResult.
"""

from __future__ import annotations

import datetime
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lab import manifest
from lab.arches import Arch
from lab.errors import CommandTimeout, KernelFailure, LabBaseError
from lab.kernel.record import BuildManifest
from lab.paths import HOME
from lab.results import consolelog, knownfail, model
from lab.results.consolelog import HOST_MADE, EventKind
from lab.run import catalog
from lab.run.progress import ConsoleTap, Progress
from lab.vm import accel
from lab.vm.command import make_plan, run_command
from lab.vm.qemu import GUEST_KLAB, GUEST_RESULTS, Machine, kernel_cmdline

# Guest-side deadline for one cell's suites (stretched under TCG by the plan).
SUITE_TIMEOUT = 300.0
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM): the tests that had not reported never ran"


@dataclass(frozen=True)
class CellSpec:
    """Everything one guest boot needs; `id` names the cell in every report."""

    id: str
    arch: Arch
    kernel: Path
    rootfs: str
    suites: tuple[str, ...]
    patterns: tuple[str, ...] = ()
    append: str = ""
    accel: str = "auto"
    memory_mb: int = 0
    cpus: int = 0
    build: BuildManifest | None = None  # the kernel's build.json, when it came from `klab build`
    image_hash: str = ""
    boot: str = "default"  # the matrix's boot name: known failures select by it
    known: tuple[knownfail.Entry, ...] = ()  # known failures that may apply to this cell
    repeat: int = 1  # run each test this many times in the one boot (--repeat): mixed outcomes are FLAKY
    suite_dirs: tuple[str, ...] = ()  # extra suite dirs, relative to the repository (test-only suites)
    gdb_port: int | None = None  # QEMU's gdbstub on 127.0.0.1:PORT, for `--gdb`
    dump_on_failure: bool = False  # save the guest's memory (QMP dump-guest-memory) when the kernel fails


def guest_command(spec: CellSpec) -> str:
    """The shell line the guest runs: KTAP to the console and a file, JSON to the results share."""
    line = catalog.run_line(
        f"{GUEST_KLAB}/suites",
        spec.suites,
        spec.patterns,
        f"{GUEST_RESULTS}/guest.json",
        repeat=spec.repeat,
        suite_dirs=tuple(f"{GUEST_KLAB}/{d}" for d in spec.suite_dirs),
    )
    return f"{line} 2>&1 | tee {GUEST_RESULTS}/guest.ktap"


def qemu_version(arch: Arch) -> str:
    try:
        return accel.qemu_version(arch)
    except LabBaseError:
        return "unknown"


def run_cell(
    spec: CellSpec, results_dir: Path, progress: Progress | None = None, today: datetime.date | None = None
) -> model.CellResult:
    """Boot once, run the cell's suites, collect. Kernel failures become results; lab faults become cell.error."""
    progress = progress or Progress(live=False)
    planned = catalog.planned_tests(spec.suites, spec.patterns, tuple(HOME / d for d in spec.suite_dirs))
    share = _fresh_share(results_dir / "cells" / spec.id)
    cell = _empty_cell(spec)
    start = time.monotonic()
    progress.phase(spec.id, "booting", planned=len(planned))
    booted = _boot(spec, share, cell, progress)
    _judge(spec, cell, planned, share, booted, today or datetime.date.today())
    cell.durations["total"] = round(time.monotonic() - start, 2)
    cell.durations["tests"] = round(cell.durations["total"] - cell.durations.get("boot", 0.0), 2)
    _keep_console(cell, booted.console_log, results_dir)
    progress.phase(spec.id, "done", verdict=cell.verdict().value)
    if booted.interrupted:
        raise Interrupted([cell])
    return cell


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run: the cells that finished, the last one cut short, for the reports."""

    def __init__(self, cells: list[model.CellResult]) -> None:
        super().__init__(f"interrupted after {len(cells)} cell(s)")
        self.cells = cells


@dataclass(frozen=True)
class _Booted:
    """What a cell's boot left besides the share's files: the console, and a hang only the host saw."""

    console_log: Path
    hang: KernelFailure | None = None
    interrupted: bool = False  # Ctrl-C or SIGTERM: the tests that reported still count, the rest never ran


def _fresh_share(share: Path) -> Path:
    """The cell's results share, emptied: a rerun into the same results dir must not read the last run's files."""
    if share.exists():
        shutil.rmtree(share)
    share.mkdir(parents=True)
    return share


def _boot(spec: CellSpec, share: Path, cell: model.CellResult, progress: Progress) -> _Booted:
    """Decide the accelerator, boot, run suites/run.py; what went wrong is recorded on the cell, never raised."""
    console_log = share / "console.log"
    try:
        decision = accel.decide(spec.arch, spec.accel)
        plan = make_plan(
            spec.arch, spec.kernel, decision, workdir=share, results_dir=share, rootfs=spec.rootfs,
            append=spec.append, memory_mb=spec.memory_mb, cpus=spec.cpus, gdb_port=spec.gdb_port,
            qmp=spec.dump_on_failure,
        )  # fmt: skip
        cell.accel, cell.accel_reason, cell.cmdline = decision.accel, decision.why, kernel_cmdline(plan)
        console_log = plan.console_log
        run = run_command(plan, guest_command(spec), SUITE_TIMEOUT * spec.repeat, ConsoleTap(progress, spec.id))
        cell.durations["boot"] = round(run.boot_seconds, 2)
    except CommandTimeout as exc:
        # The guest harness times out each test itself: a run past its whole deadline is a hang.
        return _Booted(console_log, KernelFailure(str(exc), EventKind.TIMEOUT, exc.tail))
    except KernelFailure as exc:
        cell.memory_dump = str(exc.memory_dump or "")
        return _Booted(console_log, exc if exc.kind in HOST_MADE else None)
    except LabBaseError as exc:
        cell.error = str(exc)
    except KeyboardInterrupt:
        cell.error = INTERRUPTED
        return _Booted(console_log, interrupted=True)
    return _Booted(console_log)


def _judge(
    spec: CellSpec,
    cell: model.CellResult,
    planned: list[tuple[str, str]],
    share: Path,
    booted: _Booted,
    today: datetime.date,
) -> None:
    """The guest's JSON or KTAP, the console's reports and the plan -> the cell's tests, known failures applied."""
    text = consolelog.read(booted.console_log)
    events = consolelog.scan(text)
    if booted.hang is not None:
        # No kernel report to point at: the hang, at the end of the console, is the cell's event.
        events.append(consolelog.KernelEvent(EventKind(booted.hang.kind), len(text), booted.hang.excerpt, True))
    guest_json = manifest.read_json(share / "guest.json")
    if guest_json:
        cell.kernel_release = str(guest_json.get("kernel", ""))
    wrong_kernel = _not_the_built_kernel(spec, str(guest_json.get("kernel_version", "")) if guest_json else "")
    if wrong_kernel:
        cell.error = wrong_kernel  # nothing that kernel did is a verdict on this one: a lab error, no tests
        return
    cell.kernel_events = events
    where = knownfail.Where(spec.arch.name, spec.boot, cell.kernel_release, cell.describe)
    collected = model.collect(planned, guest_json, _read(share / "guest.ktap") or None, text, events)
    cell.tests = knownfail.apply(collected, spec.known, where, today)


def _keep_console(cell: model.CellResult, console_log: Path, results_dir: Path) -> None:
    """The console beside results.json (console-<cell>.log), where report.html and people look for it."""
    if console_log.is_file():
        kept = results_dir / f"console-{cell.id}.log"
        shutil.copyfile(console_log, kept)
        cell.console_log = str(kept)


def _not_the_built_kernel(spec: CellSpec, booted: str) -> str:
    """A lab error when the guest ran another kernel than the build's: its results judge nothing.

    A stale image (a build step served from a cache it should not have been) is caught here
    instead of passing or failing tests on the wrong kernel.
    """
    if spec.build is None:
        return ""
    built = spec.build.uts_version()
    if not built or not booted or built == booted:
        return ""
    return (
        f"the guest ran kernel {booted!r}, not the one built in {spec.build.build_dir} "
        f"({built!r}): its image is stale; rebuild it (rm -rf that build dir) and report this as a lab bug"
    )


def _empty_cell(spec: CellSpec) -> model.CellResult:
    build = spec.build
    return model.CellResult(
        id=spec.id,
        arch=spec.arch.name,
        kernel_release=build.kernelrelease if build else "",
        describe=build.source.describe if build else "",
        config_sha256=build.config_sha256 if build else "",
        qemu_version=qemu_version(spec.arch),
        image=spec.rootfs if spec.rootfs == "host" else f"{spec.rootfs} sha256:{spec.image_hash}",
        append=spec.append,
        boot=spec.boot,
        kernel=str(spec.kernel),
        kernel_sha256=manifest.sha256(spec.kernel) if spec.kernel.is_file() else "",
        rootfs=spec.rootfs,
        image_sha256=spec.image_hash,
        patterns=spec.patterns,
        repeat=spec.repeat,
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def run_cells(
    specs: list[CellSpec], results_dir: Path, jobs: int = 1, progress: Progress | None = None
) -> list[model.CellResult]:
    """Run cells, `jobs` guests at a time; report order follows the specs.

    On Ctrl-C or SIGTERM (see proc.interrupts_raise) the guests still running
    are stopped, and `Interrupted` carries every cell that came back.
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    done: list[model.CellResult] = []
    if jobs <= 1 or len(specs) <= 1:
        try:
            for spec in specs:
                done.append(run_cell(spec, results_dir, progress))
        except Interrupted as stop:
            raise Interrupted(done + stop.cells) from None
        except KeyboardInterrupt:
            raise Interrupted(done) from None
        return done
    pool = ThreadPoolExecutor(max_workers=jobs)
    futures = [pool.submit(run_cell, spec, results_dir, progress) for spec in specs]
    try:
        done = [future.result() for future in futures]
    except KeyboardInterrupt:
        Machine.stop_all()  # the interrupt reaches this thread only: end the guests the others wait on
        pool.shutdown(wait=True, cancel_futures=True)
        raise Interrupted([cell for f in futures if not f.cancelled() for cell in _cells_of(f)]) from None
    pool.shutdown()
    return done


def _cells_of(future: Future[model.CellResult]) -> list[model.CellResult]:
    try:
        return [future.result()]
    except Interrupted as stop:
        return stop.cells
    except LabBaseError:
        return []
