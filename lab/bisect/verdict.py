"""How one test run of one commit becomes a `git bisect run` answer: pure functions, tested from tables."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lab.results import model, signature

BOOT_FAILURE_CHOICES = ("skip", "bad")


class StepVerdict(enum.Enum):
    """A step's answer, and the exit status `git bisect run` reads for it."""

    GOOD = "good"
    BAD = "bad"
    SKIP = "skip"  # this commit cannot be tested: it does not build, its config cannot land, it does not boot
    ABORT = "abort"  # the lab failed: stop the bisect rather than guess

    @property
    def exit_code(self) -> int:
        return _EXIT_CODES[self]


# git: 0 good, 1-127 bad except 125, 125 skip, >127 aborts `git bisect run`. 129 rather than
# errors.EXIT_LAB (128) because git itself dies with 128, and a log should tell the two apart.
_EXIT_CODES = {StepVerdict.GOOD: 0, StepVerdict.BAD: 1, StepVerdict.SKIP: 125, StepVerdict.ABORT: 129}


@dataclass(frozen=True)
class Attempt:
    """One boot of one commit, judged on the selected tests only."""

    verdict: StepVerdict
    reason: str
    boot_failure: bool = False  # the kernel died before any selected test started
    signature: str = ""  # how it failed (lab.results.signature), when it failed
    different_failure: bool = False  # skipped because it failed otherwise than the failure hunted
    lab_fault: bool = False  # the lab could not run it (QEMU killed...): says nothing of the commit


@dataclass(frozen=True)
class CommitOutcome:
    """A commit's verdict over all its attempts (--retries)."""

    verdict: StepVerdict
    reason: str
    flaky: bool = False  # it failed at least once and passed at least once
    signature: str = ""  # the failure's signature, when the commit is bad (or failed differently)
    different_failure: bool = False  # skipped: it failed otherwise than the failure hunted


@dataclass(frozen=True)
class Target:
    """What a bisect hunts: the selected tests, and which failure of theirs counts as bad.

    `signature`: only a failure with this signature is bad; another failure
    (another errno, another test, a crash) is skipped as a different failure.
    Empty: any failure is bad (--any-failure). `splat`: judge by a kernel
    report whose title matches this regex instead of by the tests.
    """

    patterns: tuple[str, ...]
    boot_failure: str = "skip"
    signature: str = ""
    splat: str = ""


def classify(cell: model.CellResult, target: Target, tests_start: int | None) -> Attempt:
    """Judge a cell for the target; `tests_start` is the console offset where the first suite began."""
    fatal = next((e for e in cell.kernel_events if e.fatal), None)
    if fatal is not None and (tests_start is None or fatal.offset < tests_start):
        verdict = StepVerdict.BAD if target.boot_failure == "bad" else StepVerdict.SKIP
        why = f"boot failure before the test started: {signature.of_event(fatal)}"
        return Attempt(verdict, why, boot_failure=True, signature=signature.of_event(fatal))
    if target.splat:
        return _by_splat(cell, target.splat)
    selected = [t for t in cell.tests if any(p in t.full_name for p in target.patterns)]
    failed = [(t, t.signature) for t in selected if t.status in (model.Status.FAIL, model.Status.ERROR)]
    missing = [t for t in selected if t.status is model.Status.MISS]
    if missing and fatal is not None:
        failed.append((missing[0], signature.of_event(fatal)))
    if failed:
        wanted = [(t, sig) for t, sig in failed if not target.signature or sig == target.signature]
        if not wanted:
            test, sig = failed[0]
            return Attempt(StepVerdict.SKIP, f"different failure: {sig}", signature=sig, different_failure=True)
        test, sig = wanted[0]
        what = test.reason if test.status is not model.Status.MISS else f"kernel {fatal.kind if fatal else '?'}"
        return Attempt(StepVerdict.BAD, f"{test.full_name} {test.status.value}: {what}".rstrip(": "), signature=sig)
    if cell.error:
        return Attempt(StepVerdict.ABORT, f"lab error: {cell.error}", lab_fault=True)
    if missing or not selected:
        return Attempt(StepVerdict.ABORT, f"the selected test(s) never reported and the kernel said nothing: {cell.id}")
    skipped = [t for t in selected if t.status is model.Status.SKIP]
    if skipped:
        return Attempt(StepVerdict.SKIP, f"{skipped[0].full_name} skipped: {skipped[0].reason}")
    return Attempt(StepVerdict.GOOD, f"{len(selected)} selected test(s) passed")


def _by_splat(cell: model.CellResult, pattern: str) -> Attempt:
    """Bad when a kernel report matches `pattern` (its kernel-CI title or its first line), else good."""
    for event in cell.kernel_events:
        title = signature.of_event(event)
        if re.search(pattern, title) or re.search(pattern, event.title):
            return Attempt(StepVerdict.BAD, f"kernel report {title!r} matches {pattern!r}", signature=title)
    if cell.error:
        return Attempt(StepVerdict.ABORT, f"lab error: {cell.error}", lab_fault=True)
    if not cell.tests or all(t.status is model.Status.MISS for t in cell.tests):
        return Attempt(StepVerdict.ABORT, f"no suite ran, so the splat could not show: {cell.id}")
    ran = sum(t.status is not model.Status.MISS for t in cell.tests)
    return Attempt(StepVerdict.GOOD, f"no kernel report matches {pattern!r} ({ran} tests ran)")


def should_retry(attempt: Attempt) -> bool:
    """A failure or a boot failure may be flaky; a pass, a test's own skip or a lab fault is final."""
    return attempt.verdict is StepVerdict.BAD or attempt.boot_failure


def combine(attempts: Sequence[Attempt]) -> CommitOutcome:
    """Bad only when every attempt failed; any pass makes the commit good (flaky if it also failed)."""
    if not attempts:
        raise ValueError("no attempts to combine")
    abort = next((a for a in attempts if a.verdict is StepVerdict.ABORT), None)
    if abort is not None:
        return CommitOutcome(StepVerdict.ABORT, abort.reason)
    passes = sum(a.verdict is StepVerdict.GOOD for a in attempts)
    fails = [a for a in attempts if a.verdict is StepVerdict.BAD]
    if passes:
        if fails:
            reason = f"flaky: passed {passes} of {len(attempts)} runs ({fails[0].reason})"
            return CommitOutcome(StepVerdict.GOOD, reason, True)
        return CommitOutcome(StepVerdict.GOOD, attempts[-1].reason)
    if len(fails) == len(attempts):
        runs = f" (all {len(attempts)} runs)" if len(attempts) > 1 else ""
        return CommitOutcome(StepVerdict.BAD, fails[0].reason + runs, signature=fails[0].signature)
    skip = next(a for a in attempts if a.verdict is StepVerdict.SKIP)
    return CommitOutcome(
        StepVerdict.SKIP, skip.reason, bool(fails), skip.signature, different_failure=skip.different_failure
    )


LAB_FAULT_RETRIES = 1  # a run the lab could not finish is run again this many times before the bisect aborts


def run_attempts(attempt: Callable[[int], Attempt], retries: int) -> list[Attempt]:
    """Run attempt(0), then retry a failing one up to `retries` more times (a pass stops early).

    An attempt the lab could not run is no evidence: it is replaced by a new
    one, up to LAB_FAULT_RETRIES times, and left as the answer (an abort) after that.
    """
    done: list[Attempt] = []
    faults, number = 0, 0
    while True:
        got = attempt(number)
        number += 1
        if got.lab_fault and faults < LAB_FAULT_RETRIES:
            faults += 1
            continue
        done.append(got)
        if not should_retry(got) or len(done) > retries:
            return done
