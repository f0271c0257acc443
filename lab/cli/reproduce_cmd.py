"""`klab reproduce RESULTS [SUITE.TEST]`: rerun a cell, or one test of it, exactly as results.json says it ran.

The planning is lab.run.reproduce's (nothing is built: the kernel and the image are
found by content); the run and its reports are `klab test`'s own
(test_cmds.run_and_report), so the rerun writes a results dir like any other.
Then each failure of the original that was rerun is judged by its signature
(reproduced, fails differently, did NOT reproduce) and the exit status says
which (lab.run.reproduce.exit_status).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.cli import args as common
from lab.cli.test_cmds import run_and_report
from lab.errors import UserError
from lab.results import knownfail, store
from lab.results.store import Run
from lab.run import catalog, reproduce
from lab.run.cellrun import CellSpec
from lab.run.progress import Progress
from lab.run.reproduce import Planned


def results_file(given: str) -> Path:
    """RESULTS may be the results dir or its results.json."""
    path = Path(given)
    return path / "results.json" if path.is_dir() else path


def _known(run: Run) -> tuple[Path | None, tuple[knownfail.Entry, ...]]:
    """The known-failures file the original run applied, when it is still there: the verdicts then mean the same."""
    path = Path(run.meta.known_failures) if run.meta.known_failures else None
    if path is None or not path.is_file():
        return None, ()
    return path, knownfail.load(path)


def describe(planned: Planned) -> str:
    """One line per cell: what will boot, so a user sees it is the same guest."""
    spec = planned.spec
    kernel = f"{spec.kernel}" + (f" ({spec.build.kernelrelease})" if spec.build else "")
    rootfs = spec.rootfs if not spec.image_hash else f"{spec.rootfs} sha256:{spec.image_hash[:12]}"
    parts = [f"kernel {kernel}", f"rootfs {rootfs}", f"accel {spec.accel}", f"suites {' '.join(spec.suites)}"]
    if spec.append:
        parts.append(f"append {spec.append!r}")
    if spec.patterns:
        parts.append("-k " + " -k ".join(spec.patterns))
    if spec.repeat > 1:
        parts.append(f"--repeat {spec.repeat}")
    return f"klab reproduce: {spec.id}: " + ", ".join(parts)


@dataclass(frozen=True)
class Facts:
    """What `klab reproduce` reads of the lab and how it runs: tests give fake build dirs, suites and a runner."""

    look: reproduce.Lookups
    planned_tests: Callable[[tuple[str, ...], tuple[str, ...]], list[tuple[str, str]]] = catalog.planned_tests
    check_suite: Callable[[str, str], None] = catalog.check
    run: Callable[[list[CellSpec], Path, int, Progress, Path | None], int] = run_and_report

    @classmethod
    def real(cls) -> Facts:
        return cls(reproduce.real_lookups())


def cmd_reproduce(args: argparse.Namespace, facts: Facts | None = None) -> int:
    facts = facts or Facts.real()
    path = results_file(args.results_dir)
    run = store.load(path)
    out = Path(args.results) if args.results else reproduce.default_results()
    if out.resolve() == path.parent.resolve():
        raise UserError(f"--results {out} is the run being reproduced: the rerun writes a results dir of its own")
    known_file, known = _known(run)
    planned = reproduce.plan(
        run, str(path), test=args.test, cell_id=args.cell, kernels=args.kernel, accel=args.accel, known=known,
        repeat=args.repeat, look=facts.look,
    )  # fmt: skip
    for item in planned:
        for name in item.spec.suites:
            facts.check_suite(name, f"cell {item.spec.id}")  # a test-only suite (--suite-dir) is not recorded
        for note in item.notes:
            print(f"klab reproduce: note: {note}", file=sys.stderr)
        print(describe(item), file=sys.stderr)
        if args.test:
            also = reproduce.extra_tests(facts.planned_tests(item.spec.suites, item.spec.patterns), args.test)
            if also:
                print(f"klab reproduce: -k {args.test} also selects: {', '.join(also)}", file=sys.stderr)
    store.claim(out, overwrite=args.overwrite)
    with Progress() as progress:
        status = facts.run([p.spec for p in planned], out, args.jobs, progress, known_file)
    rerun = out / "results.json"
    found = reproduce.verdicts(planned, store.load(rerun).cells) if rerun.is_file() else []
    for verdict in found:
        print(f"klab reproduce: {verdict.line}")
    code = reproduce.exit_status(found, status)
    if found:
        print(f"klab reproduce: exit {code} ({_MEANING.get(code, 'the rerun could not judge it')})")
    return code


_MEANING = {
    reproduce.EXIT_REPRODUCED: "a failure came back",
    reproduce.EXIT_FAILS_DIFFERENTLY: "it fails, but not the way it did",
    reproduce.EXIT_NOT_REPRODUCED: "no failure came back",
}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "reproduce",
        help="rerun a results dir's cell (or one test) on the same kernel, rootfs and command line",
        epilog="examples: klab reproduce results/run-20261201-101500\n"
        "          klab reproduce results/run-20261201-101500 landlock.abi_version --cell x86_64.7.3.default\n"
        "          klab reproduce results/run-20261201-101500 landlock.audit_tsync --repeat 20\n"
        "exit: 1 a failure came back, 3 it fails differently (another signature), 0 none came back;\n"
        "      125/128/130 as klab test (nothing tested, lab fault, interrupted)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results_dir", metavar="RESULTS", help="a results dir (or its results.json) written by klab")
    p.add_argument("test", metavar="SUITE.TEST", nargs="?", help="rerun only this test, in the cell that ran it")
    p.add_argument("--cell", help="the cell to rerun (needed when several cells ran SUITE.TEST)")
    p.add_argument(
        "--kernel", type=Path, action="append", default=[],
        help="another place the kernel may be: an image or a build dir (it must have the recorded sha256)",
    )  # fmt: skip
    p.add_argument(
        "--accel", choices=common.ACCELS, help="override the recorded accelerator (default: the one the cell used)"
    )
    p.add_argument("--results", help="where the rerun writes its results (default: results/reproduce-DATE)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --results (else refused)")
    p.add_argument("-n", "--jobs", type=common.positive_int, default=1, help="guests to run at once")
    p.add_argument(
        "--repeat", type=common.positive_int, help="run each test N times (default: as recorded): reproduced k of N"
    )
    p.set_defaults(func=cmd_reproduce)
