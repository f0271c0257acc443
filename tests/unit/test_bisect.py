"""lab.bisect: git bisect run exit codes, how a cell becomes a verdict, retries, and the driver on a toy git tree."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lab import git
from lab.bisect import drive, record, report
from lab.bisect.record import Settings, StepRecord
from lab.bisect.verdict import Attempt, CommitOutcome, Target, classify, combine, run_attempts
from lab.bisect.verdict import StepVerdict as Verdict
from lab.cli import bisect_cmd
from lab.errors import (
    EXIT_FAILED,
    EXIT_LAB,
    EXIT_OK,
    EXIT_UNTESTABLE,
    BuildError,
    ConfigMismatch,
    LabError,
    UserError,
)
from lab.results import signature
from lab.results.consolelog import KernelEvent
from lab.results.model import CellResult, Status
from lab.results.model import TestResult as Result
from lab.run import checkout

TEST = "landlock_ptrace.attach_child_to_parent__child_domain"
OTHER = "landlock_ptrace.attach_parent_to_child__child_domain"
TESTS_START = 1000  # console offset where the first suite began


# --- exit codes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdict", "code"),
    [(Verdict.GOOD, EXIT_OK), (Verdict.BAD, EXIT_FAILED), (Verdict.SKIP, EXIT_UNTESTABLE), (Verdict.ABORT, 129)],
)
def test_exit_codes_are_what_git_bisect_run_reads(verdict: Verdict, code: int) -> None:
    assert verdict.exit_code == code


def test_abort_stops_git_bisect_run_and_skip_is_not_bad() -> None:
    # git bisect run: 125 skips, 1..127 (but 125) is bad, >127 aborts.
    assert Verdict.ABORT.exit_code > 127 and Verdict.ABORT.exit_code > EXIT_LAB
    assert Verdict.SKIP.exit_code == 125
    assert 1 <= Verdict.BAD.exit_code <= 127 and Verdict.BAD.exit_code != 125


# --- classify: one cell -> one attempt ------------------------------------------------------------


def cell(*tests: tuple[str, Status], events: tuple[KernelEvent, ...] = (), error: str = "") -> CellResult:
    out = CellResult(id="x86_64.bisect.abc.run1", arch="x86_64", error=error, kernel_events=list(events))
    out.tests = [Result(*name.split(".", 1), status, reason="why") for name, status in tests]
    return out


PANIC_AT_BOOT = KernelEvent("panic", 10, "Kernel panic - not syncing: VFS", True)
PANIC_IN_TEST = KernelEvent("panic", 2000, "Kernel panic - not syncing: Oops", True)
HANG_AT_BOOT = KernelEvent("boot_timeout", 500, "", True)
WARN = KernelEvent("warning", 2000, "WARNING: CPU: 0 PID: 1", False)

CLASSIFY: list[tuple[str, CellResult, str, int | None, Verdict, bool, str]] = [
    ("pass", cell((TEST, Status.PASS)), "skip", TESTS_START, Verdict.GOOD, False, "passed"),
    ("other tests ignored", cell((TEST, Status.PASS), (OTHER, Status.FAIL)), "skip", 1000, Verdict.GOOD, False, ""),
    ("fail", cell((TEST, Status.FAIL)), "skip", TESTS_START, Verdict.BAD, False, f"{TEST} FAIL"),
    ("error", cell((TEST, Status.ERROR)), "skip", TESTS_START, Verdict.BAD, False, "ERROR"),
    ("panic in test", cell((TEST, Status.MISS), events=(PANIC_IN_TEST,)), "skip", 1000, Verdict.BAD, False, "panic"),
    ("panic at boot", cell((TEST, Status.MISS), events=(PANIC_AT_BOOT,)), "skip", 1000, Verdict.SKIP, True, "boot"),
    ("boot panic bad", cell((TEST, Status.MISS), events=(PANIC_AT_BOOT,)), "bad", 1000, Verdict.BAD, True, "boot"),
    ("hang, no suite", cell((TEST, Status.MISS), events=(HANG_AT_BOOT,)), "skip", None, Verdict.SKIP, True, "boot"),
    ("test skipped", cell((TEST, Status.SKIP)), "skip", TESTS_START, Verdict.SKIP, False, "skipped"),
    ("lab error", cell((TEST, Status.MISS), error="no qemu"), "skip", None, Verdict.ABORT, False, "lab error"),
    ("silent miss", cell((TEST, Status.MISS)), "skip", TESTS_START, Verdict.ABORT, False, "never reported"),
    ("nothing selected", cell((OTHER, Status.PASS)), "skip", TESTS_START, Verdict.ABORT, False, "never reported"),
    ("warning: no verdict", cell((TEST, Status.PASS), events=(WARN,)), "skip", 1000, Verdict.GOOD, False, ""),
    ("fail beats lab error", cell((TEST, Status.FAIL), error="powered off"), "skip", 1000, Verdict.BAD, False, ""),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "the_cell", "boot_failure", "start", "verdict", "boot", "reason"), CLASSIFY, ids=[c[0] for c in CLASSIFY]
)
def test_classify(
    case: str, the_cell: CellResult, boot_failure: str, start: int | None, verdict: Verdict, boot: bool, reason: str
) -> None:
    attempt = classify(the_cell, Target((TEST,), boot_failure), start)
    assert (attempt.verdict, attempt.boot_failure) == (verdict, boot)
    assert reason in attempt.reason


def failing(reason: str) -> CellResult:
    """One cell where TEST failed with `reason` (and its signature, as results.collect gives it)."""
    out = cell((TEST, Status.FAIL))
    out.tests[0].reason = reason
    out.tests[0].signature = signature.of_test(*TEST.split("."), "FAIL", reason)
    return out


HUNTED = signature.of_test(*TEST.split("."), "FAIL", "PTRACE_ATTACH of parent: expected EPERM (1), got success (0)")


@pytest.mark.parametrize(
    ("case", "the_cell", "verdict", "reason"),
    [
        ("the same failure, other numbers",
         failing("PTRACE_ATTACH of parent: expected EPERM (1), got success (0)"), Verdict.BAD, "FAIL"),
        ("another errno", failing("PTRACE_ATTACH of parent: expected EPERM (1), got EACCES (13)"), Verdict.SKIP,
         "different failure: landlock_ptrace.attach_child_to_parent__child_domain: PTRACE_ATTACH of parent: "
         "expected EPERM, got EACCES"),
        ("a crash in the test", cell((TEST, Status.MISS), events=(PANIC_IN_TEST,)), Verdict.SKIP,
         "different failure: kernel panic: Oops"),
        ("passing is good", cell((TEST, Status.PASS)), Verdict.GOOD, "passed"),
    ],
)  # fmt: skip
def test_only_the_hunted_signature_is_bad(case: str, the_cell: CellResult, verdict: Verdict, reason: str) -> None:
    attempt = classify(the_cell, Target((TEST,), "skip", HUNTED), TESTS_START)
    assert attempt.verdict is verdict, attempt
    assert reason in attempt.reason


def test_any_failure_is_bad_without_a_signature() -> None:
    other = failing("PTRACE_ATTACH of parent: expected EPERM (1), got EACCES (13)")
    assert classify(other, Target((TEST,)), TESTS_START).verdict is Verdict.BAD


KASAN = KernelEvent(
    "kasan",
    2000,
    "[ 9.0] BUG: KASAN: slab-use-after-free in landlock_put_ruleset+0x1/0x2\n[ 9.1] Read of size 8",
    False,
)


@pytest.mark.parametrize(
    ("case", "the_cell", "verdict"),
    [
        ("the splat", cell((TEST, Status.PASS), events=(KASAN,)), Verdict.BAD),
        ("another splat", cell((TEST, Status.PASS), events=(WARN,)), Verdict.GOOD),
        ("no splat, a test failing", cell((TEST, Status.FAIL)), Verdict.GOOD),
        ("boot panic", cell((TEST, Status.MISS), events=(PANIC_AT_BOOT,)), Verdict.SKIP),
        ("nothing ran", cell((TEST, Status.MISS), error="no qemu"), Verdict.ABORT),
    ],
)
def test_splat_bisect_judges_by_the_kernel_report(case: str, the_cell: CellResult, verdict: Verdict) -> None:
    attempt = classify(the_cell, Target((), splat=r"KASAN: .* in landlock_"), TESTS_START)
    assert attempt.verdict is verdict, attempt
    if verdict is Verdict.BAD:
        assert attempt.signature == "KASAN: slab-use-after-free Read in landlock_put_ruleset"


# --- retries --------------------------------------------------------------------------------------

GOOD = Attempt(Verdict.GOOD, "passed")
BAD = Attempt(Verdict.BAD, "FAIL: expected EPERM")
SKIP = Attempt(Verdict.SKIP, "skipped: no Landlock")
BOOT_SKIP = Attempt(Verdict.SKIP, "boot failure", boot_failure=True)
ABORT = Attempt(Verdict.ABORT, "lab error")

COMBINE: list[tuple[list[Attempt], Verdict, bool]] = [
    ([GOOD], Verdict.GOOD, False),
    ([BAD], Verdict.BAD, False),
    ([BAD, BAD, BAD], Verdict.BAD, False),
    ([BAD, GOOD], Verdict.GOOD, True),
    ([BAD, BAD, GOOD], Verdict.GOOD, True),
    ([SKIP], Verdict.SKIP, False),
    ([BAD, SKIP], Verdict.SKIP, True),
    ([BOOT_SKIP, GOOD], Verdict.GOOD, False),
    ([BAD, ABORT], Verdict.ABORT, False),
]


@pytest.mark.parametrize(("attempts", "verdict", "flaky"), COMBINE)
def test_combine_bad_only_when_every_run_failed(attempts: list[Attempt], verdict: Verdict, flaky: bool) -> None:
    outcome = combine(attempts)
    assert (outcome.verdict, outcome.flaky) == (verdict, flaky)


def test_combine_says_flaky_and_how_often() -> None:
    assert combine([BAD, BAD, GOOD]) == CommitOutcome(
        Verdict.GOOD, "flaky: passed 1 of 3 runs (FAIL: expected EPERM)", True
    )
    assert "all 3 runs" in combine([BAD, BAD, BAD]).reason


def scripted(*attempts: Attempt) -> tuple[Callable[[int], Attempt], list[int]]:
    calls: list[int] = []

    def attempt(i: int) -> Attempt:
        calls.append(i)
        return attempts[i]

    return attempt, calls


@pytest.mark.parametrize(
    ("script", "retries", "runs"),
    [
        ((GOOD,), 3, 1),  # a pass is final
        ((BAD, BAD, BAD, BAD), 0, 1),  # no retries asked
        ((BAD, BAD, BAD, BAD), 3, 4),  # fails every time: 1 + 3 runs
        ((BAD, GOOD, BAD), 3, 2),  # passes on the first retry: stop
        ((SKIP,), 3, 1),  # the test's own skip is not retried
        ((BOOT_SKIP, BOOT_SKIP, GOOD), 2, 3),  # a boot failure may be flaky too
        ((BAD, ABORT, BAD), 3, 2),  # a lab fault stops at once
    ],
)
def test_run_attempts_retries_only_failures(script: tuple[Attempt, ...], retries: int, runs: int) -> None:
    attempt, calls = scripted(*script)
    assert len(run_attempts(attempt, retries)) == runs
    assert calls == list(range(runs))


def test_build_failure_reason_is_the_compiler_error(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("  CC      security/landlock/fs.o\nsyscalls.c:249:34: error: 'X' undeclared\nmake: *** Error 2\n")
    reason = checkout.build_failure(BuildError("kernel build failed: make -C ... exited 2", log, "make: *** Error 2"))
    assert reason == "build failed: syscalls.c:249:34: error: 'X' undeclared"
    assert checkout.build_failure(BuildError("kernel build failed: make exited 2")) == (
        "build failed: kernel build failed: make exited 2"
    )
    mismatch = ConfigMismatch("1 requested option(s) did not land in .config:\n  CONFIG_BPF_LSM=y ...")
    assert checkout.build_failure(mismatch) == "config: 1 requested option(s) did not land in .config:"


# --- the bisect log -------------------------------------------------------------------------------

LOG = """\
# bad: [bbbb] tip
# good: [aaaa] base
git bisect start 'bbbb' 'aaaa'
# skip: [5555] landlock: Use a named constant
git bisect skip 5555
# bad: [3333] landlock: Simplify domain_scope_le()
git bisect bad 3333
# good: [2222] landlock: Fix a typo
git bisect good 2222
# first bad commit: [3333] landlock: Simplify domain_scope_le()
"""


def test_log_steps_and_culprit() -> None:
    assert report.log_steps(LOG) == [("skip", "5555"), ("bad", "3333"), ("good", "2222")]
    assert report.log_hashes(LOG, "# first bad commit: [") == ["3333"]
    assert drive.finished(LOG)
    assert not drive.finished(LOG.rsplit("# first", 1)[0])


# --- the driver on a toy git tree (a shell-free fake step instead of a kernel) ---------------------

# Commit i writes v=i; r (the "regression") appears in commit 3; b is broken in commit 5 and fixed in 6.
FAKE_STEP = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    log = Path(os.environ["FAKE_STEP_LOG"])
    v = Path("v").read_text().strip()
    with log.open("a") as f:
        f.write(v + "\\n")
    if os.environ.get("FAKE_STEP_ABORT_AT_CALL") == str(len(log.read_text().split())):
        sys.exit(129)
    if os.environ.get("FAKE_STEP_SIGTERM_AT") == v:
        os.kill(int(os.environ["FAKE_STEP_DRIVER"]), 15)
        sys.exit(129)
    if Path("b").read_text().strip() == "broken":
        sys.exit(125)
    sys.exit(1 if Path("r").exists() else 0)
    """
)


def _git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="T", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="T")
    env["GIT_COMMITTER_EMAIL"] = "t@example.org"
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


@pytest.fixture(scope="module")
def toy_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The toy tree, made once per module (eleven commits cost a few hundred ms)."""
    repo = tmp_path_factory.mktemp("toy") / "tree"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "work")
    (repo / "v").write_text("0\n")
    (repo / "b").write_text("ok\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    shas = [_git(repo, "rev-parse", "HEAD").strip()]
    for i in range(1, 11):
        (repo / "v").write_text(f"{i}\n")
        if i == 3:
            (repo / "r").write_text("regression\n")
        if i in (5, 6):
            (repo / "b").write_text("broken\n" if i == 5 else "ok\n")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", f"change {i}")
        shas.append(_git(repo, "rev-parse", "HEAD").strip())
    return repo, shas


@pytest.fixture
def toy(toy_template: tuple[Path, list[str]], tmp_path: Path) -> dict[str, Any]:
    """A fresh copy of the toy tree for each test (tests check out, bisect and dirty it)."""
    template, shas = toy_template
    repo = tmp_path / "tree"
    shutil.copytree(template, repo, symlinks=True)
    script = tmp_path / "fake_step.py"
    script.write_text(FAKE_STEP)
    return {"repo": repo, "shas": shas, "argv": [sys.executable, str(script)], "calls": tmp_path / "calls.txt"}


def fake_judge(settings: Settings, work: Path, phase: str) -> StepRecord:
    """Endpoints without a kernel: the same rule as the fake step."""
    repo = Path(settings.src)
    info = git.commit_info(repo, "HEAD")
    verdict = Verdict.BAD if (repo / "r").exists() else Verdict.GOOD
    done = StepRecord(phase, verdict.value, verdict.exit_code, "", commit=info.commit, subject=info.subject)
    record.append_record(work, done)
    return done


def settings_for(toy: dict[str, Any], **changes: Any) -> Settings:
    shas = toy["shas"]
    settings = Settings(str(toy["repo"]), shas[0], shas[-1], "x86_64", (TEST,), ("landlock_ptrace",), ("base",))
    return dataclasses.replace(settings, **changes)


def calls(toy: dict[str, Any]) -> list[int]:
    path: Path = toy["calls"]
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def assert_restored(repo: Path) -> None:
    assert _git(repo, "symbolic-ref", "--short", "HEAD").strip() == "work"
    assert _git(repo, "status", "--porcelain") == ""
    assert subprocess.run(["git", "-C", str(repo), "bisect", "log"], capture_output=True).returncode != 0


def test_drive_finds_culprit_skips_broken_build_and_restores_tree(
    toy: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_STEP_LOG", str(toy["calls"]))
    work = tmp_path / "work"
    found = drive.drive(settings_for(toy), work, toy["argv"], judge=fake_judge)
    assert found.culprit is not None and found.culprit["commit"] == toy["shas"][3]
    assert found.culprit["subject"] == "change 3" and found.culprit["author"] == "T <t@example.org>"
    verdicts = {toy["shas"].index(s.commit): s.verdict for s in found.bisect_steps()}
    assert verdicts.get(5) == "skip"  # the broken build was stepped on and skipped, not blamed
    assert len(found.bisect_steps()) <= found.max_steps == 6
    assert [s.phase for s in found.steps[:2]] == ["good", "bad"]
    assert (work / "bisect.log").read_text().count("# first bad commit") == 1
    assert json.loads((work / "bisect.json").read_text())["culprit"]["commit"] == toy["shas"][3]
    assert_restored(toy["repo"])
    assert "first bad commit: " + toy["shas"][3] in report.render(found)


def test_lab_abort_restores_tree_and_rerun_resumes(
    toy: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_STEP_LOG", str(toy["calls"]))
    monkeypatch.setenv("FAKE_STEP_ABORT_AT_CALL", "3")  # the lab "fails" on the third step
    work = tmp_path / "work"
    with pytest.raises(LabError, match="git bisect run exited"):
        drive.drive(settings_for(toy), work, toy["argv"], judge=fake_judge)
    assert_restored(toy["repo"])
    before = calls(toy)
    assert len(before) == 3 and before[0] == 5  # the midpoint is the broken build
    assert "git bisect skip" in (work / "bisect.log").read_text()

    monkeypatch.delenv("FAKE_STEP_ABORT_AT_CALL")
    settings = settings_for(toy, endpoints=record.load_settings(work / record.STATE).endpoints)
    found = drive.drive(settings, work, toy["argv"], judge=fake_judge)
    assert found.culprit is not None and found.culprit["commit"] == toy["shas"][3]
    after = calls(toy)[3:]
    assert after[0] == before[2] and not set(after) & set(before[:2])  # resumed at the aborted step, no rework
    assert [json.loads(line)["phase"] for line in (work / "steps.jsonl").read_text().splitlines()] == ["good", "bad"]
    assert_restored(toy["repo"])


def test_sigterm_mid_bisect_restores_tree(toy: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_STEP_LOG", str(toy["calls"]))
    monkeypatch.setenv("FAKE_STEP_SIGTERM_AT", "3")
    monkeypatch.setenv("FAKE_STEP_DRIVER", str(os.getpid()))
    with pytest.raises(KeyboardInterrupt):
        drive.drive(settings_for(toy), tmp_path / "work", toy["argv"], judge=fake_judge)
    assert_restored(toy["repo"])
    assert "git bisect skip" in (tmp_path / "work" / "bisect.log").read_text()


def test_endpoint_that_does_not_fail_stops_with_a_clear_message(toy: dict[str, Any], tmp_path: Path) -> None:
    settings = settings_for(toy, bad=toy["shas"][2])  # before the regression: passes
    with pytest.raises(UserError, match=r"--bad [0-9a-f]{12} passes: nothing to bisect"):
        drive.drive(settings, tmp_path / "work", ["false"], judge=fake_judge)
    assert_restored(toy["repo"])


def test_refuses_a_dirty_tree_and_a_foreign_bisect(toy: dict[str, Any], tmp_path: Path) -> None:
    repo: Path = toy["repo"]
    (repo / "v").write_text("edited\n")
    with pytest.raises(UserError, match="uncommitted changes"):
        drive.drive(settings_for(toy), tmp_path / "work", ["false"], judge=fake_judge)
    assert (repo / "v").read_text() == "edited\n"
    _git(repo, "checkout", "v")
    _git(repo, "bisect", "start")
    with pytest.raises(UserError, match="already in progress"):
        drive.drive(settings_for(toy), tmp_path / "work2", ["false"], judge=fake_judge)
    _git(repo, "bisect", "reset")


def test_cli_flags_parse(tmp_path: Path) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    bisect_cmd.register(parser.add_subparsers(dest="command"))
    argv = ["bisect", "--src", "t", "--good", "v1", "--bad", "v2", "--arch", "x86_64", "--test", TEST]
    args = parser.parse_args([*argv, "--fragments", "base", "landlock", "--retries", "2", "--boot-failure", "bad"])
    assert (args.fragments, args.retries, args.boot_failure, args.func) == (
        ["base", "landlock"],
        2,
        "bad",
        bisect_cmd.cmd_bisect,
    )
    assert parser.parse_args(argv).boot_failure == "skip"
    assert parser.parse_args([*argv, "--build-dir", "out"]).build_dir == Path("out")


def test_a_bisect_in_another_build_dir_is_another_bisect(toy: dict[str, Any]) -> None:
    """Resuming must not mix build dirs: the kept .config and objects belong to one of them."""
    first = settings_for(toy)
    assert first.same_bisect(settings_for(toy))
    assert not first.same_bisect(settings_for(toy, build_dir="/elsewhere"))
