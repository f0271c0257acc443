"""Run the in-guest suites in guests, one boot per cell, and turn what comes back into results.

Data flows one way: a CellSpec (kernel, arch, rootfs, boot parameters,
suites) -> one guest boot running suites/run.py -> the guest's JSON and KTAP
(over the results share) plus the console -> a results.CellResult.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from lab import accel, atomic, console, manifest, report, results, resultsjson, suites
from lab.arches import Arch
from lab.buildrecord import BuildManifest
from lab.errors import KernelFailure, LabBaseError
from lab.proc import Deadline
from lab.qemu import GUEST_KLAB, GUEST_RESULTS
from lab.runner import make_plan, run_command

# Guest-side deadline for one cell's suites (stretched under TCG by the plan).
SUITE_TIMEOUT = 300.0


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
    expect_fail: tuple[str, ...] = ()
    accel: str = "auto"
    memory_mb: int = 0
    cpus: int = 0
    build: BuildManifest | None = None  # the kernel's build.json, when it came from `klab build`
    image_hash: str = ""


def guest_command(spec: CellSpec) -> str:
    """The shell line the guest runs: KTAP to the console and a file, JSON to the results share."""
    line = suites.run_line(f"{GUEST_KLAB}/suites", spec.suites, spec.patterns, f"{GUEST_RESULTS}/guest.json")
    return f"{line} 2>&1 | tee {GUEST_RESULTS}/guest.ktap"


def qemu_version(arch: Arch) -> str:
    try:
        return accel.qemu_version(arch)
    except LabBaseError:
        return "unknown"


def run_cell(spec: CellSpec, results_dir: Path) -> results.CellResult:
    """Boot once, run the cell's suites, collect. Kernel failures become results; lab faults become cell.error."""
    planned = suites.planned_tests(spec.suites, spec.patterns)
    share = results_dir / "cells" / spec.id
    if share.exists():
        shutil.rmtree(share)
    share.mkdir(parents=True)
    cell = _empty_cell(spec)
    start = time.monotonic()
    hang: KernelFailure | None = None
    console_log = share / "console.log"
    try:
        plan = make_plan(
            spec.arch,
            spec.kernel,
            rootfs=spec.rootfs,
            accel_request=spec.accel,
            results_dir=share,
            workdir=share,
            append=spec.append,
            memory_mb=spec.memory_mb,
            cpus=spec.cpus,
        )
        cell.accel, cell.accel_reason = plan.accel.accel, plan.accel.why
        console_log = plan.console_log
        run = run_command(plan, guest_command(spec), Deadline.after(plan.scaled(SUITE_TIMEOUT)))
        cell.durations["boot"] = round(run.boot_seconds, 2)
    except KernelFailure as exc:
        cell.error = "" if exc.kind else str(exc)
        hang = exc if exc.kind in ("boot_timeout", "timeout", "died") else None
    except LabBaseError as exc:
        cell.error = str(exc)
    text = console.read(console_log)
    events = console.scan(text)
    if hang is not None:
        # No kernel report to point at: record the hang, at the end of the console, as the cell's event.
        events.append(console.KernelEvent(hang.kind, len(text), hang.excerpt, True))
    guest_json = manifest.read_json(share / "guest.json")
    ktap_text = _read(share / "guest.ktap") or None
    cell.kernel_events = events
    cell.tests = _apply_expectations(results.collect(planned, guest_json, ktap_text, text, events), spec.expect_fail)
    if guest_json:
        cell.kernel_release = str(guest_json.get("kernel", ""))
    cell.durations["total"] = round(time.monotonic() - start, 2)
    cell.durations["tests"] = round(cell.durations["total"] - cell.durations.get("boot", 0.0), 2)
    if console_log.is_file():
        shutil.copyfile(console_log, results_dir / f"console-{spec.id}.log")
        cell.console_log = str(results_dir / f"console-{spec.id}.log")
    return cell


def _empty_cell(spec: CellSpec) -> results.CellResult:
    build = spec.build
    return results.CellResult(
        id=spec.id,
        arch=spec.arch.name,
        kernel_release=build.kernelrelease if build else "",
        describe=build.source.describe if build else "",
        config_sha256=build.config_sha256 if build else "",
        qemu_version=qemu_version(spec.arch),
        image=spec.rootfs if spec.rootfs == "host" else f"{spec.rootfs} sha256:{spec.image_hash}",
        append=spec.append,
    )


def _apply_expectations(tests: list[results.TestResult], expect_fail: tuple[str, ...]) -> list[results.TestResult]:
    """Canaries: a test listed in expect_fail passes by failing, and fails by passing."""
    out = []
    for test in tests:
        if test.full_name in expect_fail:
            if test.status is results.Status.FAIL:
                test = replace(test, status=results.Status.PASS, reason=f"failed as expected: {test.reason}")
            elif test.status is results.Status.PASS:
                test = replace(test, status=results.Status.FAIL, reason="expected to fail in this boot, but passed")
        out.append(test)
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def run_cells(specs: list[CellSpec], results_dir: Path, jobs: int = 1) -> list[results.CellResult]:
    """Run cells, `jobs` guests at a time; report order follows the specs."""
    results_dir.mkdir(parents=True, exist_ok=True)
    if jobs <= 1 or len(specs) <= 1:
        return [run_cell(spec, results_dir) for spec in specs]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda s: run_cell(s, results_dir), specs))


def write_reports(results_dir: Path, cells: list[results.CellResult], meta: resultsjson.RunMeta) -> None:
    """results.json, junit.xml, results.ktap and summary.txt/.md, each written atomically."""
    resultsjson.write(results_dir / "results.json", cells, meta)
    report.write_junit(results_dir / "junit.xml", cells)
    report.write_ktap(results_dir / "results.ktap", cells)
    atomic.write_text(results_dir / "summary.txt", report.summary_table(cells) + "\n")
    atomic.write_text(results_dir / "summary.md", report.summary_markdown(cells) + "\n")
