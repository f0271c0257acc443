"""One `git bisect run` step: build the checked-out commit, boot it, run the selected tests, judge.

`python -m lab.bisect --state FILE` comes here. This is where kernel-lab's
errors become `git bisect run` answers: 0 good, 1 bad, 125 untestable, 129
abort. A lab fault is retried once and then aborts the bisect (git stops on
>127), so it never marks a commit good or bad. Building and booting the
checkout is lab.run.checkout's, shared with `klab try`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lab import arches, proc
from lab.bisect.record import AttemptRecord, Settings, StepRecord, append_record, load_settings, step_records
from lab.bisect.tree import save_log
from lab.bisect.verdict import Attempt, CommitOutcome, StepVerdict, classify, combine, run_attempts
from lab.errors import LabBaseError
from lab.git import commit_info
from lab.results import ktap, model, store
from lab.run import checkout


@dataclass
class _Made:
    """What a step made so far, for its record: filled in as the build and the test runs go."""

    durations: dict[str, float] = field(default_factory=dict)
    build_dir: str = ""
    build_log: str = ""
    results: str = ""
    consoles: list[str] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)


def evaluate(settings: Settings, work: Path, phase: str) -> StepRecord:
    """Build and test the commit checked out in the tree; append and return its step record."""
    repo = Path(settings.src)
    info = commit_info(repo, "HEAD")
    number = len(step_records(work)) + 1
    step_dir = work / "steps" / f"{number:02d}-{phase}-{info.commit[:12]}"
    step_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    made = _Made()
    start = time.monotonic()
    try:
        outcome = _build_and_test(settings, step_dir, info.commit, made)
    except LabBaseError as exc:
        outcome = CommitOutcome(StepVerdict.ABORT, f"lab error: {exc}")
    made.durations["total"] = round(time.monotonic() - start, 1)
    if outcome.different_failure:
        why = f"different failure at {info.commit[:12]}: {outcome.signature}"
        outcome = dataclasses.replace(outcome, reason=why)
    record = StepRecord(
        phase=phase,
        verdict=outcome.verdict.value,
        exit=outcome.verdict.exit_code,
        reason=outcome.reason,
        step=number,
        commit=info.commit,
        subject=info.subject,
        author=info.author,
        dir=str(step_dir),
        started=started,
        durations=made.durations,
        flaky=outcome.flaky,
        signature=outcome.signature,
        build_dir=made.build_dir,
        build_log=made.build_log,
        results=made.results,
        consoles=tuple(made.consoles),
        attempts=tuple(AttemptRecord(a.verdict.value, a.reason) for a in made.attempts),
    )
    append_record(work, record)
    d = made.durations
    print(
        f"klab bisect: step {number} ({phase}) {info.commit[:12]} {info.subject[:60]!r}: "
        f"{outcome.verdict.value.upper()} ({outcome.reason}); build {d.get('build', 0):.0f}s, "
        f"test {d.get('test', 0):.0f}s, total {d['total']:.0f}s",
        flush=True,
    )
    return record


def _build_and_test(settings: Settings, step_dir: Path, commit: str, made: _Made) -> CommitOutcome:
    arch = arches.get(settings.arch)
    step = checkout.Checkout(
        tree=Path(settings.src),
        arch=arch,
        fragments=settings.fragments,
        suites=settings.suites,
        patterns=settings.tests,
        build_dir=Path(settings.build_dir) if settings.build_dir else None,
        rootfs=settings.rootfs,
        accel=settings.accel,
    )
    built = checkout.build(step, step_dir)
    made.durations["build"] = built.seconds
    made.build_log = built.log
    if built.build is None:
        return CommitOutcome(StepVerdict.SKIP, f"untestable: {built.error}")
    doc = built.build
    made.build_dir = str(doc.build_dir)
    cells: list[model.CellResult] = []

    def attempt(i: int) -> Attempt:
        cell = checkout.test(step, doc, f"{arch.name}.bisect.{commit[:12]}.run{i + 1}", step_dir)
        cells.append(cell)
        return classify(cell, settings.target(), _tests_start(cell))

    t1 = time.monotonic()
    made.attempts = run_attempts(attempt, settings.retries)
    made.durations["test"] = round(time.monotonic() - t1, 1)
    meta = store.RunMeta(commit=commit, tests=settings.tests)
    store.write(step_dir / "results.json", cells, meta)
    made.results = str(step_dir / "results.json")
    made.consoles = [c.console_log for c in cells]
    return combine(made.attempts)


def _tests_start(cell: model.CellResult) -> int | None:
    """Console offset where the first suite began, or None when no suite ever started."""
    try:
        text = Path(cell.console_log).read_text(errors="replace") if cell.console_log else ""
    except OSError:
        return None
    spans = ktap.suite_spans(text)
    return min(s.start for s in spans) if spans else None


def step_main(argv: Sequence[str] | None = None) -> int:
    """What `git bisect run` calls: judge HEAD, answer 0/1/125, or 129 to abort. Never raises."""
    parser = argparse.ArgumentParser(prog="python -m lab.bisect", description="one `git bisect run` step")
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args(argv)
    work = args.state.parent
    try:
        with proc.interrupts_raise():
            settings = load_settings(args.state)
            save_log(Path(settings.src), work)
            return evaluate(settings, work, "bisect").exit
    except KeyboardInterrupt:
        print("klab bisect: step interrupted: aborting the bisect", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - a bug must abort the bisect, never read as "bad"
        traceback.print_exc()
        abort = StepVerdict.ABORT
        bug = StepRecord(phase="bisect", verdict=abort.value, exit=abort.exit_code, reason=f"bug: {exc!r}")
        append_record(work, bug)
    return StepVerdict.ABORT.exit_code
