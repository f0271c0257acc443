"""`klab bisect`: find the commit that broke a suite test, with `git bisect run` in the user's own tree.

The driver checks the inputs, proves the endpoints (good passes, bad fails),
then lets `git bisect run` call one step per commit (`python -m lab.bisect
--state FILE`). Every step rebuilds in the same build dir (the build dir of a
git tree is keyed by its path, so each step is incremental), boots once and
runs only the selected tests. This module is where kernel-lab's errors become
`git bisect run` answers (STYLE.md): 0 good, 1 bad, 125 untestable, 129 abort.
A lab fault aborts the bisect (git stops on >127), so it never marks a commit
bad. Everything a step leaves lies in one work dir; `bisect.log` there lets a
rerun of the same command resume with `git bisect replay`.
"""

from __future__ import annotations

import argparse
import enum
import json
import math
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lab import arches, build, kconfig, ktap, manifest, pipeline, proc, results, source, testrun
from lab.errors import BuildError, ConfigMismatch, LabBaseError, LabError, UserError
from lab.paths import REPO_ROOT

GIT_TIMEOUT = 600.0
RUN_TIMEOUT = 48 * 3600.0  # the whole `git bisect run`; each step has its own build and boot deadlines
BOOT_FAILURE_CHOICES = ("skip", "bad")


class Verdict(enum.Enum):
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
_EXIT_CODES = {Verdict.GOOD: 0, Verdict.BAD: 1, Verdict.SKIP: 125, Verdict.ABORT: 129}


@dataclass(frozen=True)
class Attempt:
    """One boot of one commit, judged on the selected tests only."""

    verdict: Verdict
    reason: str
    boot_failure: bool = False  # the kernel died before any selected test started


@dataclass(frozen=True)
class Outcome:
    """A commit's verdict over all its attempts (--retries)."""

    verdict: Verdict
    reason: str
    flaky: bool = False  # it failed at least once and passed at least once


def classify(cell: results.Cell, patterns: Sequence[str], boot_failure: str, tests_start: int | None) -> Attempt:
    """Judge a cell by the selected tests; `tests_start` is the console offset where the first suite began."""
    selected = [t for t in cell.tests if any(p in t.full_name for p in patterns)]
    fatal = next((e for e in cell.kernel_events if e.fatal), None)
    if fatal is not None and (tests_start is None or fatal.offset < tests_start):
        verdict = Verdict.BAD if boot_failure == "bad" else Verdict.SKIP
        return Attempt(verdict, f"boot failure before the test started: kernel {fatal.kind}", boot_failure=True)
    failed = [t for t in selected if t.status in (results.Status.FAIL, results.Status.ERROR)]
    if failed:
        return Attempt(Verdict.BAD, f"{failed[0].full_name} {failed[0].status.value}: {failed[0].reason}".rstrip(": "))
    missing = [t for t in selected if t.status is results.Status.MISS]
    if missing and fatal is not None:
        return Attempt(Verdict.BAD, f"{missing[0].full_name}: kernel {fatal.kind} during the test")
    if cell.error:
        return Attempt(Verdict.ABORT, f"lab error: {cell.error}")
    if missing or not selected:
        return Attempt(Verdict.ABORT, f"the selected test(s) never reported and the kernel said nothing: {cell.id}")
    skipped = [t for t in selected if t.status is results.Status.SKIP]
    if skipped:
        return Attempt(Verdict.SKIP, f"{skipped[0].full_name} skipped: {skipped[0].reason}")
    return Attempt(Verdict.GOOD, f"{len(selected)} selected test(s) passed")


def should_retry(attempt: Attempt) -> bool:
    """A failure or a boot failure may be flaky; a pass, a test's own skip or a lab fault is final."""
    return attempt.verdict is Verdict.BAD or attempt.boot_failure


def combine(attempts: Sequence[Attempt]) -> Outcome:
    """Bad only when every attempt failed; any pass makes the commit good (flaky if it also failed)."""
    if not attempts:
        raise ValueError("no attempts to combine")
    abort = next((a for a in attempts if a.verdict is Verdict.ABORT), None)
    if abort is not None:
        return Outcome(Verdict.ABORT, abort.reason)
    passes = sum(a.verdict is Verdict.GOOD for a in attempts)
    fails = [a for a in attempts if a.verdict is Verdict.BAD]
    if passes:
        if fails:
            return Outcome(Verdict.GOOD, f"flaky: passed {passes} of {len(attempts)} runs ({fails[0].reason})", True)
        return Outcome(Verdict.GOOD, attempts[-1].reason)
    if len(fails) == len(attempts):
        runs = f" (all {len(attempts)} runs)" if len(attempts) > 1 else ""
        return Outcome(Verdict.BAD, fails[0].reason + runs)
    skip = next(a for a in attempts if a.verdict is Verdict.SKIP)
    return Outcome(Verdict.SKIP, skip.reason, flaky=bool(fails))


def run_attempts(attempt: Callable[[int], Attempt], retries: int) -> list[Attempt]:
    """Run attempt(0), then retry a failing one up to `retries` more times (a pass stops early)."""
    done = [attempt(0)]
    while should_retry(done[-1]) and len(done) <= retries:
        done.append(attempt(len(done)))
    return done


# --- settings and the work dir --------------------------------------------------------------------


@dataclass
class Settings:
    """What the driver decided and every step reads (state.json in the work dir)."""

    src: str
    good: str  # full hashes
    bad: str
    arch: str
    tests: list[str]  # the user's --test names (substrings of SUITE.TEST, like -k)
    suites: list[str]
    fragments: list[str]
    retries: int = 0
    boot_failure: str = "skip"
    rootfs: str = "auto"
    accel: str = "auto"
    endpoints: dict[str, str] = field(default_factory=dict)  # hash -> verdict, proven before the bisect
    build_dir: str = ""  # default: the lab's cache, keyed by tree and fragments

    def same_bisect(self, other: Settings) -> bool:
        keys = ("src", "good", "bad", "arch", "tests", "fragments", "retries", "boot_failure", "rootfs", "build_dir")
        return all(getattr(self, k) == getattr(other, k) for k in keys)


STATE = "state.json"
STEPS = "steps.jsonl"
LOG = "bisect.log"


def load_settings(path: Path) -> Settings:
    doc = manifest.read(path)
    if doc is None:
        raise LabError(f"{path} is missing or unreadable: not a klab bisect work dir")
    return Settings(**doc)


def save_settings(work: Path, settings: Settings) -> None:
    manifest.write(work / STATE, asdict(settings))


def step_records(work: Path) -> list[dict[str, Any]]:
    try:
        lines = (work / STEPS).read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def _append_record(work: Path, record: dict[str, Any]) -> None:
    with open(work / STEPS, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


# --- git ------------------------------------------------------------------------------------------


def git(repo: Path, *args: str, check: bool = True) -> proc.Result:
    try:
        return proc.run(["git", "-C", str(repo), *args], deadline=proc.Deadline.after(GIT_TIMEOUT), check=check)
    except proc.CommandFailed as exc:
        raise LabError(f"{exc}: {exc.tail.strip()}") from exc


def git_out(repo: Path, *args: str) -> str:
    return git(repo, *args).output.strip()


def is_bisecting(repo: Path) -> bool:
    return git(repo, "bisect", "log", check=False).returncode == 0


def save_log(repo: Path, work: Path) -> None:
    """Keep `git bisect log` in the work dir: the resume point if this run is interrupted."""
    out = git(repo, "bisect", "log", check=False)
    if out.returncode == 0 and out.output.strip():
        tmp = work / f".{LOG}.tmp"
        tmp.write_text(out.output)
        os.replace(tmp, work / LOG)


def commit_info(repo: Path, rev: str) -> dict[str, str]:
    sha, subject, author = git_out(repo, "show", "-s", "--format=%H%x00%s%x00%an <%ae>", rev).split("\0")
    return {"commit": sha, "subject": subject, "author": author}


def original_head(repo: Path) -> str:
    """The branch the user is on (or the commit, when detached): where the tree goes back to."""
    branch = git(repo, "symbolic-ref", "-q", "--short", "HEAD", check=False)
    return branch.output.strip() if branch.returncode == 0 else git_out(repo, "rev-parse", "HEAD")


def restore(repo: Path, work: Path, original: str) -> None:
    """Save the log, end the bisect, put the user's branch back: whatever happened before."""
    if is_bisecting(repo):
        save_log(repo, work)
        git(repo, "bisect", "reset", original)
    else:
        git(repo, "checkout", "-q", original)


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so `finally` blocks kill children and restore the tree."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- one commit: build, boot, judge ---------------------------------------------------------------


def evaluate(settings: Settings, work: Path, phase: str) -> dict[str, Any]:
    """Build and test the commit checked out in the tree; append and return its step record."""
    repo = Path(settings.src)
    info = commit_info(repo, "HEAD")
    number = len(step_records(work)) + 1
    step_dir = work / "steps" / f"{number:02d}-{phase}-{info['commit'][:12]}"
    step_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"step": number, "phase": phase, **info, "dir": str(step_dir), "started": time.time()}
    record["durations"] = {}
    start = time.monotonic()
    try:
        outcome = _build_and_test(settings, step_dir, record)
    except LabBaseError as exc:
        outcome = Outcome(Verdict.ABORT, f"lab error: {exc}")
    record["durations"]["total"] = round(time.monotonic() - start, 1)
    record.update(verdict=outcome.verdict.value, exit=outcome.verdict.exit_code, reason=outcome.reason)
    record["flaky"] = outcome.flaky
    _append_record(work, record)
    d = record["durations"]
    print(
        f"klab bisect: step {number} ({phase}) {info['commit'][:12]} {info['subject'][:60]!r}: "
        f"{outcome.verdict.value.upper()} ({outcome.reason}); build {d.get('build', 0):.0f}s, "
        f"test {d.get('test', 0):.0f}s, total {d['total']:.0f}s",
        flush=True,
    )
    return record


def _build_and_test(settings: Settings, step_dir: Path, record: dict[str, Any]) -> Outcome:
    arch = arches.get(settings.arch)
    durations = record["durations"]
    t0 = time.monotonic()
    try:
        build_dir = Path(settings.build_dir) if settings.build_dir else None
        doc = pipeline.build_kernel(Path(settings.src), arch, tuple(settings.fragments), build_dir=build_dir)
    except (BuildError, ConfigMismatch) as exc:
        durations["build"] = round(time.monotonic() - t0, 1)
        record["build_log"] = _keep_build_log(getattr(exc, "log", None), step_dir)
        return Outcome(Verdict.SKIP, f"untestable: {_build_failure(exc)}")
    durations["build"] = round(time.monotonic() - t0, 1)
    record["build_dir"] = str(Path(doc["artifacts"]["image"]).parent)
    record["build_log"] = _keep_build_log(Path(doc["artifacts"]["log"]), step_dir)
    rootfs, image_hash = pipeline.rootfs_for(arch, settings.rootfs)
    cells: list[results.Cell] = []

    def attempt(i: int) -> Attempt:
        spec = testrun.CellSpec(
            id=f"{arch.name}.bisect.{record['commit'][:12]}.run{i + 1}",
            arch=arch,
            kernel=Path(doc["artifacts"]["image"]),
            rootfs=rootfs,
            image_hash=image_hash,
            suites=tuple(settings.suites),
            patterns=tuple(settings.tests),
            accel=settings.accel,
            build=doc,
        )
        cell = testrun.run_cell(spec, step_dir)
        cells.append(cell)
        return classify(cell, settings.tests, settings.boot_failure, _tests_start(cell))

    t1 = time.monotonic()
    attempts = run_attempts(attempt, settings.retries)
    durations["test"] = round(time.monotonic() - t1, 1)
    results.write_json(step_dir / "results.json", cells, {"commit": record["commit"], "tests": settings.tests})
    record["results"] = str(step_dir / "results.json")
    record["consoles"] = [c.console_log for c in cells]
    record["attempts"] = [{"verdict": a.verdict.value, "reason": a.reason} for a in attempts]
    return combine(attempts)


def _build_failure(exc: BuildError | ConfigMismatch) -> str:
    """One line: the compiler's first error when there is one, not the whole make command."""
    if isinstance(exc, ConfigMismatch):
        return f"config: {str(exc).splitlines()[0]}"
    text = exc.log.read_text(errors="replace") if exc.log and exc.log.is_file() else exc.tail
    error = next((line.strip() for line in text.splitlines() if " error: " in line), "")
    return f"build failed: {error}" if error else f"build failed: {str(exc).splitlines()[0]}"


def _keep_build_log(log: Path | None, step_dir: Path) -> str:
    """Copy the build log into the step dir: the next step's build rewrites the build dir's own."""
    if log is None or not log.is_file():
        return ""
    shutil.copyfile(log, step_dir / "build.log")
    return str(step_dir / "build.log")


def _tests_start(cell: results.Cell) -> int | None:
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
        with interrupts_raise():
            settings = load_settings(args.state)
            save_log(Path(settings.src), work)
            return int(evaluate(settings, work, "bisect")["exit"])
    except KeyboardInterrupt:
        print("klab bisect: step interrupted: aborting the bisect", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - a bug must abort the bisect, never read as "bad"
        traceback.print_exc()
        _append_record(work, {"phase": "bisect", "verdict": "abort", "exit": 129, "reason": f"bug: {exc!r}"})
    return Verdict.ABORT.exit_code


# --- the driver -----------------------------------------------------------------------------------


@dataclass
class Report:
    """What a finished (or stuck) bisect found, and how it got there."""

    work: Path
    commits: int  # commits in good..bad
    culprit: dict[str, str] | None
    candidates: list[str]  # when only skipped commits are left
    steps: list[dict[str, Any]]  # one per commit judged, endpoints first
    wall_seconds: float

    @property
    def max_steps(self) -> int:
        return math.ceil(math.log2(max(self.commits, 1))) + 2

    def bisect_steps(self) -> list[dict[str, Any]]:
        return [s for s in self.steps if s.get("phase") == "bisect"]


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Check every input before anything is checked out or built."""
    repo = Path(args.src).expanduser().resolve()
    src = source.resolve(repo)
    if not src.identity.startswith("git:"):
        raise UserError(f"{repo} is not a git tree: klab bisect runs `git bisect` in it")
    if Path(git_out(repo, "rev-parse", "--show-toplevel")).resolve() != repo:
        raise UserError(f"{repo} is inside a git tree but not its top: pass the top of the kernel tree")
    arch = arches.get(args.arch)
    names = args.fragments or list(kconfig.DEFAULT_FRAGMENTS)
    fragments = kconfig.load_fragments(names, f"arch/{arch.name}")
    build.preflight(build.BuildRequest(src, arch, tuple(fragments), build_dir=args.build_dir))
    suites: list[str] = []
    for name in args.test:
        found = testrun.planned_tests((), (name,))
        if not found:
            raise UserError(f"no suite test matches {name!r}; list them with `python3 suites/run.py --list`")
        suites += [s for s, _ in found if s not in suites]
    if args.retries < 0:
        raise UserError("--retries must be 0 or more")
    good, bad = _commit(repo, args.good, "--good"), _commit(repo, args.bad, "--bad")
    if good == bad or git(repo, "merge-base", "--is-ancestor", good, bad, check=False).returncode != 0:
        raise UserError(f"--good {args.good} must be an ancestor of --bad {args.bad}")
    return Settings(
        str(repo), good, bad, arch.name, list(args.test), suites, list(names), args.retries, args.boot_failure,
        args.rootfs, args.accel, build_dir=str(args.build_dir.resolve()) if args.build_dir else "",
    )  # fmt: skip


def _commit(repo: Path, rev: str, flag: str) -> str:
    out = git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if out.returncode != 0:
        raise UserError(f"{flag} {rev}: no such commit in {repo}")
    return out.output.strip()


def work_dir(settings: Settings, results_dir: str | None, fresh: bool) -> Path:
    """The given --results dir, or an unfinished bisect of the same thing to resume, or a new dir."""
    if results_dir:
        work = Path(results_dir).resolve()
        if (work / STATE).is_file() and not load_settings(work / STATE).same_bisect(settings):
            raise UserError(f"{work} holds another bisect; pick a new --results dir")
        return work
    root = Path("results").resolve()
    if not fresh:
        for state in sorted(root.glob("bisect-*/" + STATE), key=lambda p: p.stat().st_mtime, reverse=True):
            if not (state.parent / "bisect.json").is_file() and load_settings(state).same_bisect(settings):
                return state.parent
    return root / time.strftime("bisect-%Y%m%d-%H%M%S")


def prepare_tree(settings: Settings, work: Path) -> str:
    """Refuse a dirty tree or someone else's bisect; take back our own interrupted one. Returns the original HEAD."""
    repo = Path(settings.src)
    if is_bisecting(repo):
        log = git_out(repo, "bisect", "log")
        if settings.bad not in log or settings.good not in log or not (work / STATE).is_file():
            raise UserError(f"a bisect is already in progress in {repo}; finish it or run `git bisect reset` there")
        save_log(repo, work)
        git(repo, "bisect", "reset")  # back to where that run started (BISECT_START)
    if git_out(repo, "status", "--porcelain", "--untracked-files=no"):
        raise UserError(f"{repo} has uncommitted changes: commit or stash them (bisect checks out other commits)")
    return original_head(repo)


def verify_endpoints(settings: Settings, work: Path, judge: Callable[[Settings, Path, str], dict[str, Any]]) -> None:
    """Good must pass and bad must fail, or the bisect would name a meaningless commit."""
    repo = Path(settings.src)
    for phase, rev, want in (("good", settings.good, Verdict.GOOD), ("bad", settings.bad, Verdict.BAD)):
        if settings.endpoints.get(rev) == want.value:
            continue
        git(repo, "checkout", "-q", "--detach", rev)
        record = judge(settings, work, phase)
        got = Verdict(record["verdict"])
        if got is Verdict.ABORT:
            raise LabError(f"checking --{phase} {rev[:12]}: {record['reason']}")
        if got is not want:
            raise UserError(_endpoint_message(phase, rev, got, record, settings.tests))
        settings.endpoints[rev] = got.value
        save_settings(work, settings)


def _endpoint_message(phase: str, rev: str, got: Verdict, record: dict[str, Any], tests: list[str]) -> str:
    what = {
        ("good", Verdict.BAD): "already fails: pick an older --good (or --retries N if the test is flaky)",
        ("good", Verdict.SKIP): "cannot be tested: pick a --good commit that builds and boots",
        ("bad", Verdict.GOOD): "passes: nothing to bisect (or --retries N if the failure is intermittent)",
        ("bad", Verdict.SKIP): "cannot be tested: pick a --bad commit that builds and boots",
    }[(phase, got)]
    return f"--{phase} {rev[:12]} {what}; {', '.join(tests)}: {record['reason']} (logs: {record['dir']})"


def drive(
    settings: Settings,
    work: Path,
    step_argv: Sequence[str] | None = None,
    judge: Callable[[Settings, Path, str], dict[str, Any]] = evaluate,
) -> Report:
    """Endpoints, then `git bisect run` (or a replay of the saved log, then run); the tree is always restored."""
    repo = Path(settings.src)
    work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    original = prepare_tree(settings, work)
    save_settings(work, settings)
    argv = list(step_argv or [sys.executable, "-m", "lab.bisect", "--state", str(work / STATE)])
    with interrupts_raise():
        try:
            verify_endpoints(settings, work, judge)
            if (work / LOG).is_file():
                git(repo, "bisect", "replay", str(work / LOG))
            else:
                git(repo, "bisect", "start", settings.bad, settings.good)
            save_log(repo, work)
            if not _finished(git_out(repo, "bisect", "log")):
                _bisect_run(repo, work, argv)
            save_log(repo, work)
        finally:
            restore(repo, work, original)
    return _report(settings, work, time.monotonic() - start)


def _finished(log: str) -> bool:
    return "# first bad commit:" in log or "# only skipped commits left to test" in log


def _bisect_run(repo: Path, work: Path, argv: list[str]) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    run = proc.run(
        ["git", "-C", str(repo), "bisect", "run", *argv],
        deadline=proc.Deadline.after(RUN_TIMEOUT),
        log=work / "bisect-run.log",
        env=env,
        check=False,
        on_line=lambda line: print(line, file=sys.stderr, flush=True),
    )
    save_log(repo, work)
    if run.returncode == 0 or _finished((work / LOG).read_text()):
        return
    last = step_records(work)[-1:] or [{}]
    if last[0].get("verdict") == Verdict.ABORT.value:
        raise LabError(f"bisect aborted: {last[0].get('reason')}; fix it and rerun the same command to resume")
    raise LabError(f"git bisect run exited {run.returncode}: {proc.tail_lines(run.output, 5)}")


def _report(settings: Settings, work: Path, wall: float) -> Report:
    repo = Path(settings.src)
    log = (work / LOG).read_text() if (work / LOG).is_file() else ""
    first = _log_hashes(log, "# first bad commit: [")
    records = {(r.get("commit"), r.get("phase")): r for r in step_records(work)}
    steps = [records[(rev, p)] for rev, p in ((settings.good, "good"), (settings.bad, "bad")) if (rev, p) in records]
    for verdict, sha in _log_steps(log):
        steps.append(records.get((sha, "bisect"), {"commit": sha, "phase": "bisect", "verdict": verdict}))
    report = Report(
        work=work,
        commits=int(git_out(repo, "rev-list", "--count", f"{settings.good}..{settings.bad}")),
        culprit=commit_info(repo, first[0]) if first else None,
        candidates=_log_hashes(log, "# possible first bad commit: ["),
        steps=steps,
        wall_seconds=round(wall, 1),
    )
    doc = {k: v for k, v in asdict(report).items() if k != "work"}
    manifest.write(work / "bisect.json", {**doc, "settings": asdict(settings), "max_steps": report.max_steps})
    return report


def _log_hashes(log: str, prefix: str) -> list[str]:
    return [line[len(prefix) :].split("]")[0] for line in log.splitlines() if line.startswith(prefix)]


def _log_steps(log: str) -> list[tuple[str, str]]:
    """(verdict, hash) for each commit judged after `git bisect start`, in order."""
    out: list[tuple[str, str]] = []
    started = False
    for line in log.splitlines():
        started = started or line.startswith("git bisect start")
        verdict, _, rest = line.partition(": [")
        if started and verdict in ("# good", "# bad", "# skip") and rest:
            out.append((verdict[2:], rest.split("]")[0]))
    return out


def render(report: Report) -> str:
    """The culprit, then every step with its times and where its console and results are."""
    lines = []
    if report.culprit:
        c = report.culprit
        lines += [f"first bad commit: {c['commit']}", f"  subject: {c['subject']}", f"  author:  {c['author']}"]
    else:
        lines.append("no single first bad commit: only skipped commits are left; it is one of:")
        lines += [f"  {sha}" for sha in report.candidates]
    n = len(report.bisect_steps())
    lines.append(f"steps: {n} bisect step(s) for {report.commits} commits (bound {report.max_steps}), plus endpoints")
    for s in report.steps:
        d = s.get("durations", {})
        times = f"build {d.get('build', 0):6.1f}s test {d.get('test', 0):5.1f}s total {d.get('total', 0):6.1f}s"
        mark = " FLAKY" if s.get("flaky") else ""
        lines.append(
            f"  {s.get('phase', '?'):6} {s['commit'][:12]} {s['verdict']:5}{mark} {times}  {s.get('reason', '')}"
        )
        for path in s.get("consoles", []):
            lines.append(f"      console: {path}")
        if s.get("results"):
            lines.append(f"      results: {s['results']}")
        elif s.get("build_log"):
            lines.append(f"      build log: {s['build_log']}")
    flaky = [s["commit"][:12] for s in report.steps if s.get("flaky")]
    if flaky:
        lines.append(f"flaky commits (failed, then passed on retry): {', '.join(flaky)}")
    lines.append(f"wall time: {report.wall_seconds:.0f}s; bisect log: {report.work / LOG}; work dir: {report.work}")
    return "\n".join(lines)


def cmd_bisect(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    work = work_dir(settings, args.results, args.fresh)
    if (work / STATE).is_file():
        settings.endpoints = load_settings(work / STATE).endpoints
        print(f"klab bisect: resuming {work}", file=sys.stderr)
    print(f"klab bisect: {settings.good[:12]}..{settings.bad[:12]} in {settings.src}; work dir {work}", file=sys.stderr)
    report = drive(settings, work)
    print(render(report))
    return 0 if report.culprit else 125


def register_cli(sub: Any) -> None:
    """Add `klab bisect` to the command line (cli.py calls this with its subparsers)."""
    p = sub.add_parser("bisect", help="find the commit that broke a suite test (git bisect run: build, boot, test)")
    p.add_argument("--src", required=True, help="the kernel git tree (clean; left as it was found)")
    p.add_argument("--good", required=True, help="a commit where the test passes")
    p.add_argument("--bad", required=True, help="a later commit where it fails")
    p.add_argument("--arch", required=True, help="x86_64 or arm64")
    p.add_argument("--test", required=True, action="append", help="SUITE.TEST (or a substring, like -k); repeatable")
    p.add_argument(
        "-f", "--fragment", "--fragments", dest="fragments", action="extend", nargs="+",
        help=f"kconfig fragments (default: {' '.join(kconfig.DEFAULT_FRAGMENTS)})",
    )  # fmt: skip
    p.add_argument("--retries", type=int, default=0, help="rerun a failing test up to N times; bad only if all fail")
    p.add_argument(
        "--boot-failure", choices=BOOT_FAILURE_CHOICES, default="skip",
        help="a kernel that dies before the test starts: skip the commit (default) or call it bad",
    )  # fmt: skip
    p.add_argument("--rootfs", default="auto", help="host, image, or an ext4 image path (default: auto)")
    p.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    p.add_argument("--build-dir", type=Path, help="build every commit here (default: the lab's cache)")
    p.add_argument("--results", help="work dir (default: resume a matching results/bisect-*, else a new one)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming a matching unfinished bisect")
    p.set_defaults(func=cmd_bisect)


if __name__ == "__main__":
    sys.exit(step_main())
