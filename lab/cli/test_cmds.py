"""Commands that run the suites: `klab test` (one kernel, or a matrix) and `klab test-kernel` (the main job)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from lab import arches, matrix, pipeline, report, results, resultsjson, testrun
from lab import suites as suite_list
from lab.cli import args as common
from lab.errors import UserError
from lab.paths import REPO_ROOT

DEFAULT_MATRIX = REPO_ROOT / "lab.yaml"


def _default_results() -> Path:
    return Path("results") / time.strftime("run-%Y%m%d-%H%M%S")


def _single_kernel_specs(args: argparse.Namespace, suites: tuple[str, ...]) -> list[testrun.CellSpec]:
    arch = arches.get(args.arch)
    kernel, doc = common.kernel_of(args, arch)
    rootfs, image_hash = pipeline.rootfs_for(arch, args.rootfs)
    label = doc.short_release if doc else kernel.stem
    chosen = suites or suite_list.all_suites()
    groups = [(s,) for s in chosen] if args.jobs > 1 and len(chosen) > 1 else [chosen]
    return [
        testrun.CellSpec(
            id=f"{arch.name}.{label}.default" + (f"-{group[0]}" if len(groups) > 1 else ""),
            arch=arch,
            kernel=kernel,
            rootfs=rootfs,
            image_hash=image_hash,
            suites=group,
            patterns=tuple(args.patterns),
            append=args.append,
            accel=args.accel,
            memory_mb=args.mem,
            cpus=args.cpus,
            build=doc,
        )
        for group in groups
    ]


def _run_and_report(specs: list[testrun.CellSpec], results_dir: Path, jobs: int) -> int:
    if not specs:
        raise UserError("nothing to run: no cell matches the requested arches and suites")
    start = time.time()
    print(f"klab: {len(specs)} cell(s), {jobs} at a time; results in {results_dir}", file=sys.stderr)
    cells = testrun.run_cells(specs, results_dir, jobs)
    meta = resultsjson.RunMeta(
        argv=tuple(sys.argv), started=start, wall_seconds=round(time.time() - start, 2), jobs=jobs
    )
    testrun.write_reports(results_dir, cells, meta)
    print(report.summary_table(cells))
    print(f"klab: results: {results_dir}/results.json, junit.xml, results.ktap, console-*.log", file=sys.stderr)
    return results.exit_status(cells)


def _refuse(args: argparse.Namespace, flags: tuple[str, ...], why: str) -> None:
    given = [f"--{f.replace('_', '-')}" for f in flags if getattr(args, f, None)]
    if given:
        raise UserError(f"{' '.join(given)}: {why}")


def cmd_test(args: argparse.Namespace) -> int:
    suites = common.check_suites(args.suite)
    if args.jobs < 1:
        raise UserError("-n/--jobs must be 1 or more")
    results_dir = Path(args.results) if args.results else _default_results()
    if args.matrix:
        _refuse(args, ("arch", "build", "kernel"), "a single kernel's options; --matrix runs the matrix's kernels")
        mtx = matrix.load(Path(args.matrix))
        arch_names = tuple(arches.get(a).name for a in common.split_words(args.arches))
        specs = pipeline.matrix_specs(
            mtx, arch_names=arch_names, suites=suites, patterns=tuple(args.patterns), accel=args.accel
        )
    else:
        _refuse(args, ("arches",), "chooses among a matrix's arches; with --build/--kernel give one --arch")
        if not args.arch or not (args.build or args.kernel):
            raise UserError("klab test needs --arch and --build DIR or --kernel PATH, or --matrix FILE")
        specs = _single_kernel_specs(args, suites)
    return _run_and_report(specs, results_dir, args.jobs)


def cmd_test_kernel(args: argparse.Namespace) -> int:
    """`make test-kernel`: the matrix in lab.yaml, optionally on the user's tree and a subset of arches."""
    suites = common.check_suites(args.suite)
    arch_names = tuple(arches.get(a).name for a in common.split_words(args.arches))
    mtx = matrix.load(Path(args.matrix))
    src = pipeline.source_path(args.src) if args.src else None
    results_dir = Path(args.results) if args.results else _default_results()
    specs = pipeline.matrix_specs(
        mtx, arch_names=arch_names, suites=suites, patterns=tuple(args.patterns), src_override=src, accel=args.accel
    )
    return _run_and_report(specs, results_dir, args.jobs)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    common.add_selection(p)
    p.add_argument("--results", help="results directory (default: results/run-DATE)")
    p.add_argument("-n", "--jobs", type=int, default=1, help="guests to run at once")


def register(sub: Any) -> None:
    tst = sub.add_parser(
        "test",
        help="run the suites in guests; write KTAP, JUnit, JSON and a summary",
        epilog="examples: klab test --arch x86_64 --build BUILD_DIR --suite landlock -k tsync\n"
        "          klab test --matrix lab.yaml --arches arm64",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tst.add_argument("--matrix", help="a matrix file such as lab.yaml (kernels x arches x boots x suites)")
    common.add_arches(tst)
    common.add_arch(tst, required=False)
    common.add_kernel_choice(tst, required=False)
    common.add_guest(tst)
    _add_run_options(tst)
    tst.set_defaults(func=cmd_test)

    tk = sub.add_parser(
        "test-kernel",
        help="the main job: build, image, boot and test the whole matrix",
        epilog="example: klab test-kernel --src ~/linux --arches x86_64 --suite landlock",
    )
    tk.add_argument("--matrix", default=str(DEFAULT_MATRIX), help="matrix file (default: lab.yaml)")
    tk.add_argument("--src", help="kernel tree (or debian:X.Y) to use instead of every kernel of the matrix")
    common.add_arches(tk)
    tk.add_argument("--accel", default="auto", choices=common.ACCELS, help="auto: KVM only where it really works")
    _add_run_options(tk)
    tk.set_defaults(func=cmd_test_kernel)
