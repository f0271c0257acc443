"""The bisect driver: check the inputs, prove the endpoints, run `git bisect run`, always restore the tree.

`drive()` takes its judge (one commit -> StepRecord) and the step command
`git bisect run` calls as arguments, so resume, SIGTERM and tree restore are
tested on a toy repository in milliseconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from lab import arches, proc
from lab.bisect.record import STATE, Settings, StepRecord, load_settings, step_records
from lab.bisect.report import Report, build_report
from lab.bisect.step import evaluate
from lab.bisect.tree import LOG, is_bisecting, original_head, restore, save_log
from lab.bisect.verdict import StepVerdict
from lab.errors import LabError, UserError
from lab.git import git, git_out, resolve_commit, top_level
from lab.kernel import build, kconfig, source
from lab.kernel.source import SourceKind
from lab.paths import REPO_ROOT
from lab.run import catalog

RUN_TIMEOUT = 48 * 3600.0  # the whole `git bisect run`; each step has its own build and boot deadlines
Judge = Callable[[Settings, Path, str], StepRecord]


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Check every input before anything is checked out or built."""
    repo = Path(args.src).expanduser().resolve()
    src = source.resolve(repo)
    if src.kind is not SourceKind.GIT:
        raise UserError(f"{repo} is not a git tree: klab bisect runs `git bisect` in it")
    if top_level(repo) != repo:
        raise UserError(f"{repo} is inside a git tree but not its top: pass the top of the kernel tree")
    arch = arches.get(args.arch)
    names = args.fragments or list(kconfig.DEFAULT_FRAGMENTS)
    fragments = kconfig.load_fragments(names, f"arch/{arch.name}")
    build.preflight(build.BuildRequest(src, arch, tuple(fragments), build_dir=args.build_dir))
    if args.splat:
        try:
            re.compile(args.splat)
        except re.error as exc:
            raise UserError(f"--splat {args.splat!r} is not a valid regex ({exc})") from exc
        if args.any_failure:
            raise UserError("--any-failure and --splat contradict: --splat judges by a kernel report, not by tests")
    if not args.test and not args.splat:
        raise UserError("name what to bisect: --test SUITE.TEST, or --splat PATTERN for a kernel report")
    chosen: list[str] = []
    if args.splat and not args.test:
        chosen = list(catalog.all_suites() if not args.suite else args.suite)
    for name in args.test:
        found = catalog.planned_tests((), (name,))
        if not found:
            raise UserError(f"no suite test matches {name!r}; list them with `python3 suites/run.py --list`")
        chosen += [s for s, _ in found if s not in chosen]
    if args.retries < 0:
        raise UserError("--retries must be 0 or more")
    good, bad = resolve_commit(repo, args.good, "--good"), resolve_commit(repo, args.bad, "--bad")
    if good == bad or git(repo, "merge-base", "--is-ancestor", good, bad, check=False).returncode != 0:
        raise UserError(f"--good {args.good} must be an ancestor of --bad {args.bad}")
    return Settings(
        src=str(repo),
        good=good,
        bad=bad,
        arch=arch.name,
        tests=tuple(args.test),
        suites=tuple(dict.fromkeys([*chosen, *args.suite])) if args.splat else tuple(chosen),
        fragments=tuple(names),
        retries=args.retries,
        boot_failure=args.boot_failure,
        rootfs=args.rootfs,
        accel=args.accel,
        build_dir=str(args.build_dir.resolve()) if args.build_dir else "",
        any_failure=args.any_failure,
        splat=args.splat or "",
    )


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


def verify_endpoints(settings: Settings, work: Path, judge: Judge) -> Settings:
    """Good must pass and bad must fail, or the bisect would name a meaningless commit; returns what was proven."""
    repo = Path(settings.src)
    for phase, rev, want in (("good", settings.good, StepVerdict.GOOD), ("bad", settings.bad, StepVerdict.BAD)):
        if settings.endpoints.get(rev) == want.value:
            continue
        git(repo, "checkout", "-q", "--detach", rev)
        record = judge(settings, work, phase)
        got = StepVerdict(record.verdict)
        if got is StepVerdict.ABORT:
            raise LabError(f"checking --{phase} {rev[:12]}: {record.reason}")
        if got is not want:
            raise UserError(_endpoint_message(phase, rev, got, record, settings.tests))
        settings = dataclasses.replace(settings, endpoints={**settings.endpoints, rev: got.value})
        if phase == "bad" and not settings.any_failure and not settings.splat:
            # The failure to hunt: a step that fails differently is skipped, not blamed.
            settings = dataclasses.replace(settings, signature=record.signature)
        settings.write(work / STATE)
    return settings


def _endpoint_message(phase: str, rev: str, got: StepVerdict, record: StepRecord, tests: Sequence[str]) -> str:
    what = {
        ("good", StepVerdict.BAD): "already fails: pick an older --good (or --retries N if the test is flaky)",
        ("good", StepVerdict.SKIP): "cannot be tested: pick a --good commit that builds and boots",
        ("bad", StepVerdict.GOOD): "passes: nothing to bisect (or --retries N if the failure is intermittent)",
        ("bad", StepVerdict.SKIP): "cannot be tested: pick a --bad commit that builds and boots",
    }[(phase, got)]
    return f"--{phase} {rev[:12]} {what}; {', '.join(tests)}: {record.reason} (logs: {record.dir})"


def drive(settings: Settings, work: Path, step_argv: Sequence[str] | None = None, judge: Judge = evaluate) -> Report:
    """Endpoints, then `git bisect run` (or a replay of the saved log, then run); the tree is always restored."""
    repo = Path(settings.src)
    start = time.monotonic()
    original = prepare_tree(settings, work)  # first: a refused tree leaves no results dir behind
    work.mkdir(parents=True, exist_ok=True)
    settings.write(work / STATE)
    argv = list(step_argv or [sys.executable, "-m", "lab.bisect", "--state", str(work / STATE)])
    with proc.interrupts_raise():
        try:
            settings = verify_endpoints(settings, work, judge)
            if (work / LOG).is_file():
                git(repo, "bisect", "replay", str(work / LOG))
            else:
                git(repo, "bisect", "start", settings.bad, settings.good)
            save_log(repo, work)
            if not finished(git_out(repo, "bisect", "log")):
                _bisect_run(repo, work, argv)
            save_log(repo, work)
        finally:
            restore(repo, work, original)
    return build_report(settings, work, time.monotonic() - start)


def finished(log: str) -> bool:
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
    if run.returncode == 0 or finished((work / LOG).read_text()):
        return
    last = step_records(work)[-1:]
    if last and last[0].verdict == StepVerdict.ABORT.value:
        raise LabError(f"bisect aborted: {last[0].reason}; fix it and rerun the same command to resume")
    raise LabError(f"git bisect run exited {run.returncode}: {proc.tail_lines(run.output, 5)}")
