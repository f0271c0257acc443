"""Commands that run the suites: `klab test` (one kernel, or a matrix) and `klab test-kernel` (the main job)."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Any

from lab import arches, proc
from lab.cli import args as common
from lab.errors import EXIT_INTERRUPTED, UserError
from lab.paths import HOME
from lab.results import knownfail, model, store, summary, write
from lab.run import catalog, cellrun, matrix, prepare
from lab.run.progress import Progress
from lab.vm import qemu

DEFAULT_MATRIX = HOME / "lab.yaml"
DEFAULT_KNOWN = HOME / "known-failures.yaml"


def _default_results() -> Path:
    return Path("results") / time.strftime("run-%Y%m%d-%H%M%S")


def known_failures(path: str | None, fallback: str) -> tuple[Path | None, tuple[knownfail.Entry, ...]]:
    """The known-failures file (--known-failures, else the matrix's, else the repository's), none expired."""
    chosen = Path(path) if path else (Path(fallback) if fallback else DEFAULT_KNOWN)
    if path and not chosen.is_file():
        raise UserError(f"--known-failures {path} does not exist; give a known-failures.yaml (see the shipped one)")
    if not chosen.is_file():
        return None, ()
    return chosen, knownfail.check_live(knownfail.load(chosen), datetime.date.today())


def _single_kernel_specs(
    args: argparse.Namespace, suites: tuple[str, ...], known: tuple[knownfail.Entry, ...]
) -> list[cellrun.CellSpec]:
    arch = arches.get(args.arch)
    kernel, doc = common.kernel_of(args, arch)
    rootfs, image_hash = prepare.rootfs_for(arch, args.rootfs)
    label = doc.short_release if doc else kernel.stem
    chosen = suites or catalog.all_suites()
    groups = [(s,) for s in chosen] if args.jobs > 1 and len(chosen) > 1 else [chosen]
    return [
        cellrun.CellSpec(
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
            known=known,
            repeat=args.repeat,
            suite_dirs=tuple(args.suite_dir),
            gdb_port=args.gdb,
            dump_on_failure=args.dump_on_failure,
        )
        for group in groups
    ]


def run_and_report(
    specs: list[cellrun.CellSpec],
    results_dir: Path,
    jobs: int,
    progress: Progress,
    known_file: Path | None,
    *,
    overwrite: bool = False,
) -> int:
    """Run the cells, write every report, end with the totals and the table; the exit status of the run.

    Ctrl-C or SIGTERM stops the run, and what finished is still reported (results.json says
    `interrupted`); the exit status is then 130.
    """
    if not specs:
        raise UserError("nothing to run: no cell matches the requested arches and suites")
    store.claim(results_dir, overwrite=overwrite)
    start = time.time()
    print(f"klab: {len(specs)} cell(s), {jobs} at a time; results in {results_dir}", file=sys.stderr)
    for spec in specs:
        if spec.gdb_port is not None:
            print(f"klab: {spec.id}: gdb: {debugger_command(spec)}", file=sys.stderr)
    interrupted = False
    with proc.interrupts_raise():
        try:
            cells = cellrun.run_cells(specs, results_dir, jobs, progress)
        except cellrun.Interrupted as stop:
            cells, interrupted = stop.cells, True
    meta = store.RunMeta(
        argv=tuple(sys.argv),
        started=start,
        wall_seconds=round(time.time() - start, 2),
        jobs=jobs,
        known_failures=str(known_file or ""),
        interrupted=interrupted,
    )
    write.reports(results_dir, cells, meta)
    print(summary.table(cells, meta), end="")
    print(
        f"klab: results: {results_dir}/report.html, results.json, junit.xml, results.ktap, console-*.log",
        file=sys.stderr,
    )
    if interrupted:
        print(f"klab: interrupted: {len(cells)} of {len(specs)} cell(s) reported, the last cut short", file=sys.stderr)
        return EXIT_INTERRUPTED
    return model.exit_status(cells)


def debugger_command(spec: cellrun.CellSpec) -> str:
    """The gdb line that attaches to the cell's guest (lx-symbols when the build has the kernel's gdb scripts)."""
    vmlinux = spec.build.artifacts.vmlinux if spec.build else "vmlinux"
    assert spec.gdb_port is not None
    return qemu.gdb_command(Path(vmlinux), spec.gdb_port)


def _refuse(args: argparse.Namespace, flags: tuple[str, ...], why: str) -> None:
    given = [f"--{f.replace('_', '-')}" for f in flags if getattr(args, f, None)]
    if given:
        raise UserError(f"{' '.join(given)}: {why}")


def _check_run_options(args: argparse.Namespace, available: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Everything a run needs checked before any build or boot: a typo must not cost a cold build.

    `available`: the suites the run's cells can run (a matrix's); the -k and
    --suite selection must pick at least one test among them.
    """
    dirs = tuple(HOME / d for d in args.suite_dir)
    for d in dirs:
        if not d.is_dir():
            raise UserError(f"--suite-dir {d} is not a directory (suite dirs are relative to {HOME})")
    for name in args.suite:
        catalog.check(name, suite_dirs=dirs)
    chosen = tuple(args.suite) or available
    catalog.check_selection(chosen, tuple(args.patterns), dirs)
    return tuple(args.suite)


def _list(args: argparse.Namespace, available: tuple[str, ...] = ()) -> int:
    """`--list`: the SUITE.TEST names the selection runs, one a line; nothing is built or booted."""
    dirs = tuple(HOME / d for d in args.suite_dir)
    for name in args.suite:
        catalog.check(name, suite_dirs=dirs)
    chosen = catalog.check_selection(tuple(args.suite) or available, tuple(args.patterns), dirs)
    print("\n".join(f"{suite}.{test}" for suite, test in chosen))
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    if args.list and not args.matrix:
        return _list(args)
    results_dir = Path(args.results) if args.results else _default_results()
    if args.matrix:
        _refuse(
            args, ("arch", "build", "kernel", "gdb"), "a single kernel's options; --matrix runs the matrix's kernels"
        )
        _refuse(args, ("suite_dir",), "test-only suites run on one kernel (--arch with --build or --kernel)")
        mtx = matrix.load(Path(args.matrix))
        if args.list:
            return _list(args, mtx.all_suites())
        suites = _check_run_options(args, mtx.all_suites())
        arch_names = tuple(arches.get(a).name for a in common.split_words(args.arches))
        known_file, known = known_failures(args.known_failures, mtx.known_failures)
        with Progress() as progress:
            specs = prepare.matrix_specs(
                mtx, arch_names=arch_names, suites=suites, patterns=tuple(args.patterns), accel=args.accel,
                known=known, repeat=args.repeat, progress=progress,
            )  # fmt: skip
            return run_and_report(specs, results_dir, args.jobs, progress, known_file, overwrite=args.overwrite)
    _refuse(args, ("arches",), "chooses among a matrix's arches; with --build/--kernel give one --arch")
    suites = _check_run_options(args)
    if not args.arch or not (args.build or args.kernel):
        raise UserError("klab test needs --arch and --build DIR or --kernel PATH, or --matrix FILE")
    known_file, known = known_failures(args.known_failures, "")
    specs = _single_kernel_specs(args, suites, known)
    if args.gdb is not None and len(specs) > 1:
        raise UserError("--gdb debugs one guest: drop -n or give one --suite")
    with Progress() as progress:
        return run_and_report(specs, results_dir, args.jobs, progress, known_file, overwrite=args.overwrite)


def cmd_test_kernel(args: argparse.Namespace) -> int:
    """`make test-kernel`: the matrix in lab.yaml, optionally on the user's tree and a subset of arches."""
    arch_names = tuple(arches.get(a).name for a in common.split_words(args.arches))
    mtx = matrix.load(Path(args.matrix))
    if args.list:
        return _list(args, mtx.all_suites())
    suites = _check_run_options(args, mtx.all_suites())
    known_file, known = known_failures(args.known_failures, mtx.known_failures)
    src = prepare.source_path(args.src) if args.src else None
    results_dir = Path(args.results) if args.results else _default_results()
    with Progress() as progress:
        specs = prepare.matrix_specs(
            mtx, arch_names=arch_names, suites=suites, patterns=tuple(args.patterns), src_override=src,
            accel=args.accel, known=known, repeat=args.repeat, progress=progress,
        )  # fmt: skip
        return run_and_report(specs, results_dir, args.jobs, progress, known_file, overwrite=args.overwrite)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    common.add_selection(p)
    p.add_argument("--list", action="store_true", help="print the SUITE.TEST names the selection runs, and stop")
    p.add_argument("--results", help="results directory (default: results/run-DATE)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --results (else refused)")
    p.add_argument("-n", "--jobs", type=common.positive_int, default=1, help="guests to run at once")
    p.add_argument(
        "--repeat", type=common.positive_int, default=1, help="run each test N times in its boot; mixed outcomes: FLAKY"
    )
    p.add_argument("--known-failures", help="known-failures file (default: the matrix's, else known-failures.yaml)")
    p.add_argument("--suite-dir", action="append", default=[], help=argparse.SUPPRESS)  # test-only suites
    p.add_argument(
        "--dump-on-failure",
        action="store_true",
        help="when the kernel fails, save the guest's memory (ELF, for crash or gdb) beside the console log",
    )


def register(sub: Any) -> None:
    tst = sub.add_parser(
        "test",
        help="run the suites in guests; write KTAP, JUnit, JSON, HTML and a summary",
        epilog="examples: klab test --arch x86_64 --build BUILD_DIR --suite landlock -k tsync\n"
        "          klab test --matrix lab.yaml --arches arm64",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tst.add_argument("--matrix", help="a matrix file such as lab.yaml (kernels x arches x boots x suites)")
    common.add_arches(tst)
    common.add_arch(tst, required=False)
    common.add_kernel_choice(tst, required=False)
    common.add_guest(tst)
    common.add_gdb(tst)
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
