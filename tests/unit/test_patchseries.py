"""lab.series and `klab try` on a toy git tree: series forms, worktree life, comparison, --each attribution.

The toy tree stands for a kernel: t/SUITE.TEST holds the test's outcome
("PASS", "FAIL: reason", "SKIP: reason"), and `build` says "broken" when the
kernel would not compile. A fake judge reads them from the worktree, so a
whole `klab try` runs in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lab import cli
from lab.cli import try_cmd
from lab.errors import BuildError, LabError, UserError
from lab.results import compare, signature
from lab.results.consolelog import KernelEvent
from lab.results.model import CellResult, Status
from lab.results.model import TestResult as Result
from lab.series import (
    Change,
    Series,
    SeriesKind,
    Step,
    am_failure,
    diff_cells,
    parse_series,
    run_series,
)
from lab.series import Tested as Judged

BREAK_A = "layer 16: expected success (0), got E2BIG (7)"
SIG_A = signature.of_test("landlock", "a", "FAIL", BREAK_A)
REASON_B = "open: expected EACCES (13), got success (0)"
SIG_B = signature.of_test("landlock", "b", "FAIL", REASON_B)


def _git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="T", GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="T")
    env["GIT_COMMITTER_EMAIL"] = "t@example.org"
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout


def _commit(repo: Path, subject: str, files: dict[str, str]) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text + "\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", subject)
    return _git(repo, "rev-parse", "HEAD").strip()


BRANCHES: dict[str, list[tuple[str, dict[str, str]]]] = {
    # harmless, then the break, then a fix of an old failure and a new test
    "series": [
        ("docs: Mention layers", {"README": "layers\n"}),
        ("landlock: Break a", {"t/landlock.a": f"FAIL: {BREAK_A}"}),
        ("landlock: Fix b, add d", {"t/landlock.b": "PASS", "t/landlock.d": "PASS"}),
    ],
    # a break in the middle, fixed by the next patch: the net result hides it
    "midbreak": [
        ("landlock: Break a", {"t/landlock.a": f"FAIL: {BREAK_A}"}),
        ("landlock: Unbreak a", {"t/landlock.a": "PASS"}),
    ],
    "buildbreak": [
        ("landlock: Rename a helper", {"build": "broken"}),
        ("landlock: Finish the rename", {"build": "ok"}),
    ],
    # a base where the series' second patch cannot apply
    "other": [("landlock: Touch a", {"t/landlock.a": "PASS, differently"})],
    "nobuild": [("break the build", {"build": "broken"})],
    "laberror": [("a lab fault", {"build": "lab-error"})],
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The toy tree with a branch per scenario, and the series as an mbox and as format-patch dirs."""
    root = tmp_path_factory.mktemp("toy")
    repo = root / "linux"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "work")
    base = _commit(
        repo,
        "base",
        {
            "build": "ok", "t/landlock.a": "PASS", "t/landlock.b": "FAIL: open: expected EACCES (13), got success (0)",
            "t/landlock.c": "SKIP: needs ABI 9", "Kconfig": "", "scripts/kconfig/merge_config.sh": "",
        },
    )  # fmt: skip
    shas: dict[str, list[str]] = {}
    for branch, commits in BRANCHES.items():
        _git(repo, "checkout", "-q", "-b", branch, base)
        shas[branch] = [_commit(repo, subject, files) for subject, files in commits]
    _git(repo, "checkout", "-q", "work")
    series = root / "series"
    for branch in BRANCHES:
        _git(repo, "format-patch", "-q", "--cover-letter", "-o", str(series / branch), f"{base}..{branch}")
        mbox = _git(repo, "format-patch", "--stdout", "--cover-letter", f"{base}..{branch}")
        (series / f"{branch}.mbox").write_text(mbox)
    return {"root": root, "repo": repo, "base": base, "shas": shas, "series": series}


@pytest.fixture
def toy(template: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    repo = tmp_path / "linux"
    shutil.copytree(template["repo"], repo, symlinks=True)
    return {**template, "repo": repo, "wt": tmp_path / "cache" / "try" / "h" / "src" / "linux", "tmp": tmp_path}


class FakeJudge:
    """Builds and tests nothing: reads the outcome files of the worktree as checked out."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.seen: list[tuple[str, str]] = []
        self.interrupt_at = interrupt_at

    def __call__(self, wt: Path, step: Step) -> Judged:
        self.seen.append((step.label, _git(wt, "rev-parse", "HEAD").strip()))
        if self.interrupt_at == step.index:
            os.kill(os.getpid(), signal.SIGTERM)
        state = (wt / "build").read_text().strip()
        if state == "broken":
            return Judged(step, None, "build failed: helpers.c:3:1: error: 'x' undeclared")
        cell = CellResult(id=f"x86_64.try.{step.slug}", arch="x86_64")
        if state == "lab-error":
            cell.error = "QEMU exited with status 1"
            return Judged(step, cell)
        for path in sorted((wt / "t").iterdir()):
            suite, name = path.name.split(".", 1)
            status, _, reason = path.read_text().strip().partition(": ")
            test = Result(suite, name, Status(status), reason=reason)
            if test.status is Status.FAIL:
                test.signature = signature.of_test(suite, name, status, reason)
            cell.tests.append(test)
        return Judged(step, cell, "", {"build": 1.0, "test": 2.0})


def untouched(toy: dict[str, Any]) -> None:
    """The user's tree as it was: same branch and HEAD, clean, no worktree, no new branch."""
    repo = toy["repo"]
    assert _git(repo, "symbolic-ref", "--short", "HEAD").strip() == "work"
    assert _git(repo, "rev-parse", "HEAD").strip() == toy["base"]
    assert _git(repo, "status", "--porcelain") == ""
    assert len(_git(repo, "worktree", "list").splitlines()) == 1
    assert sorted(_git(repo, "branch", "--format=%(refname:short)").split()) == sorted([*BRANCHES, "work"])
    if toy["wt"].exists():  # the lab's checkout, kept for the next run: a clone reading the user's objects
        alternates = (toy["wt"] / ".git" / "objects" / "info" / "alternates").read_text().split()
        assert alternates == [str(repo / ".git" / "objects")]


def run(toy: dict[str, Any], spec: str, each: bool = False, base: str | None = None, judge: Any = None) -> Any:
    series = parse_series(spec, toy["repo"], base)
    return run_series(toy["repo"], series, toy["wt"], judge or FakeJudge(), each, lambda plan: None)


def brief(changes: tuple[Change, ...]) -> list[tuple[str, str, str]]:
    return [(c.kind.value, c.what, c.detail) for c in changes]


# --- what SERIES is ---------------------------------------------------------------------------------


def test_series_forms(toy: dict[str, Any]) -> None:
    series_dir = toy["series"] / "series"
    as_dir = parse_series(str(series_dir), toy["repo"], None)
    assert as_dir.kind is SeriesKind.DIR and as_dir.base == toy["base"]
    assert [p.name[:4] for p in as_dir.patches] == ["0001", "0002", "0003"]  # no 0000 cover letter
    mbox = parse_series(str(toy["series"] / "series.mbox"), toy["repo"], "work")
    assert (mbox.kind, mbox.base) == (SeriesKind.MBOX, toy["base"])
    ranged = parse_series("work..series", toy["repo"], None)
    assert (ranged.kind, ranged.base, ranged.tip) == (SeriesKind.RANGE, toy["base"], toy["shas"]["series"][-1])


@pytest.mark.parametrize(
    ("spec", "base", "message"),
    [
        ("nope.mbox", None, "nope.mbox: no such mbox or patch directory, and not a git range A..B"),
        ("work...series", None, "a symmetric range is no series"),
        ("work..series", "work", "--base work: a range A..B is tested on top of A"),
        ("work..nope", None, "SERIES nope: no such commit"),
        ("series..work", None, "series..work: the range holds no commit"),
        ("SERIES.mbox", "nope", "--base nope: no such commit"),
    ],
)
def test_series_refused(toy: dict[str, Any], spec: str, base: str | None, message: str) -> None:
    spec = spec.replace("SERIES.mbox", str(toy["series"] / "series.mbox"))
    with pytest.raises(UserError) as exc:
        parse_series(spec, toy["repo"], base)
    assert message in str(exc.value)


# --- the driver ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["mbox", "dir", "range"])
def test_series_changes_base_to_tip_and_the_tree_is_untouched(toy: dict[str, Any], form: str) -> None:
    spec = {"mbox": str(toy["series"] / "series.mbox"), "dir": str(toy["series"] / "series"), "range": "work..series"}
    judge = FakeJudge()
    outcome = run(toy, spec[form], judge=judge)
    assert [label for label, _ in judge.seen] == ["base", "3/3"]
    assert judge.seen[0][1] == toy["base"]
    assert brief(outcome.net) == [
        ("new failures", "landlock.a", f"PASS -> FAIL: {BREAK_A} [{SIG_A}]"),
        ("fixed", "landlock.b", f"FAIL -> PASS (was: {REASON_B} [{SIG_B}])"),
        ("appeared", "landlock.d", "not in base, now PASS"),
    ]
    assert outcome.exit_status == 1 and outcome.breaking == [outcome.tested[-1].step]
    if form == "range":
        assert judge.seen[1][1] == toy["shas"]["series"][-1]
    untouched(toy)


def test_each_names_the_patch_that_broke_it(toy: dict[str, Any]) -> None:
    judge = FakeJudge()
    outcome = run(toy, str(toy["series"] / "series"), each=True, judge=judge)
    assert [label for label, _ in judge.seen] == ["base", "1/3", "2/3", "3/3"]
    [broke] = outcome.breaking
    assert (broke.label, broke.subject) == ("2/3", "landlock: Break a")
    per_step = {step.label: brief(changes) for step, changes in outcome.per_step}
    assert per_step["1/3"] == []
    assert per_step["2/3"] == [("new failures", "landlock.a", f"PASS -> FAIL: {BREAK_A} [{SIG_A}]")]
    assert [c[0] for c in per_step["3/3"]] == ["fixed", "appeared"]
    untouched(toy)


def test_a_break_fixed_later_is_caught_only_patch_by_patch(toy: dict[str, Any]) -> None:
    quiet = run(toy, "work..midbreak")
    assert (brief(quiet.net), quiet.exit_status) == ([], 0)
    each = run(toy, "work..midbreak", each=True)
    assert each.net == () and each.exit_status == 1
    assert [(s.label, s.subject) for s in each.breaking] == [("1/2", "landlock: Break a")]
    assert brief(each.per_step[1][1]) == [("fixed", "landlock.a", f"FAIL -> PASS (was: {BREAK_A} [{SIG_A}])")]


def test_build_broken_on_the_way(toy: dict[str, Any]) -> None:
    outcome = run(toy, str(toy["series"] / "buildbreak.mbox"), each=True)
    assert [brief(changes) for _, changes in outcome.per_step] == [
        [("build broken", "build", "build failed: helpers.c:3:1: error: 'x' undeclared")],
        [("build fixed", "build", "was: build failed: helpers.c:3:1: error: 'x' undeclared")],
    ]
    assert outcome.breaking[0].label == "1/2" and outcome.exit_status == 1


def test_base_that_does_not_build_is_untestable(toy: dict[str, Any]) -> None:
    with pytest.raises(BuildError, match="the base .* does not build: build failed: helpers.c"):
        run(toy, str(toy["series"] / "series.mbox"), base="nobuild")
    untouched(toy)


def test_lab_fault_is_no_verdict(toy: dict[str, Any]) -> None:
    with pytest.raises(LabError, match="step base .*: the lab could not run it: QEMU exited"):
        run(toy, str(toy["series"] / "series.mbox"), base="laberror")
    untouched(toy)


@pytest.mark.parametrize("form", ["series.mbox", "series"])
def test_a_patch_that_does_not_apply_names_it_and_tests_nothing(toy: dict[str, Any], form: str) -> None:
    judge = FakeJudge()
    with pytest.raises(UserError) as exc:
        run(toy, str(toy["series"] / form), base="other", judge=judge)
    message = str(exc.value)
    assert ("patch 2 (0002-landlock-Break-a.patch)" if form == "series" else "patch 2/3") in message
    assert "'landlock: Break a' does not apply on" in message
    assert "error: t/landlock.a: patch does not apply" in message
    assert judge.seen == []
    untouched(toy)


def test_not_a_patch_at_all(toy: dict[str, Any]) -> None:
    junk = toy["tmp"] / "junk.mbox"
    junk.write_text("hello\n")
    with pytest.raises(UserError, match="junk.mbox: git am cannot apply it on .*: Patch format detection failed"):
        run(toy, str(junk))
    untouched(toy)


def test_sigterm_in_a_step_leaves_the_users_tree_and_the_next_run_starts_clean(toy: dict[str, Any]) -> None:
    with pytest.raises(KeyboardInterrupt):
        run(toy, "work..series", judge=FakeJudge(interrupt_at=3))
    untouched(toy)
    (toy["wt"] / "junk").write_text("half a build\n")
    (toy["wt"] / "build").write_text("broken\n")  # a tracked file the killed step had changed
    judge = FakeJudge()
    assert run(toy, "work..midbreak", judge=judge).exit_status == 0
    assert [label for label, _ in judge.seen] == ["base", "2/2"] and judge.seen[0][1] == toy["base"]
    assert not (toy["wt"] / "junk").exists()
    untouched(toy)


def test_the_next_run_rewrites_only_the_files_that_differ(toy: dict[str, Any]) -> None:
    """The kept checkout is what makes the next run's build incremental: an unchanged file is not written again."""

    def stats() -> dict[str, tuple[int, int]]:
        return {
            p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in [toy["wt"] / "build", *(toy["wt"] / "t").iterdir()]
        }

    assert run(toy, "work..series").exit_status == 1
    before = stats()
    assert run(toy, "work..series").exit_status == 1
    after = stats()
    assert sorted(name for name in after if after[name] != before[name]) == ["landlock.a", "landlock.b", "landlock.d"]
    untouched(toy)


def test_a_leftover_worktree_of_an_older_klab_is_replaced(toy: dict[str, Any]) -> None:
    _git(toy["repo"], "worktree", "add", "-q", "--detach", str(toy["wt"]), "work")
    (toy["wt"] / "junk").write_text("half a build\n")
    assert run(toy, "work..midbreak").exit_status == 0
    assert (toy["wt"] / ".git").is_dir() and not (toy["wt"] / "junk").exists()
    untouched(toy)


def test_a_kept_checkout_that_no_longer_works_is_made_again(toy: dict[str, Any]) -> None:
    assert run(toy, "work..midbreak").exit_status == 0
    (toy["wt"] / ".git" / "index.lock").write_text("")  # what a git killed mid-checkout leaves
    judge = FakeJudge()
    assert run(toy, "work..midbreak", judge=judge).exit_status == 0
    assert judge.seen[0] == ("base", toy["base"]) and not (toy["wt"] / ".git" / "index.lock").exists()
    untouched(toy)


# --- the comparison ------------------------------------------------------------------------------------


def cell(*tests: tuple[str, Status, str], events: tuple[KernelEvent, ...] = ()) -> CellResult:
    out = CellResult(id="c", arch="x86_64", kernel_events=list(events))
    out.tests = [Result(*name.split(".", 1), status, reason=reason) for name, status, reason in tests]
    for test in out.tests:  # as results.collect signs them
        if test.status in (Status.FAIL, Status.ERROR, Status.MISS):
            test.signature = signature.of_test(test.suite, test.name, test.status.value, test.reason)
    return out


EPERM = "attach: expected EPERM (1), got success (0)"
EACCES = "attach: expected EPERM (1), got EACCES (13)"
PANIC = KernelEvent("panic", 10, "Kernel panic - not syncing: VFS: Unable to mount root fs", True)

DIFFS: list[tuple[str, CellResult, CellResult, list[tuple[str, str]]]] = [
    ("same", cell(("s.a", Status.PASS, "")), cell(("s.a", Status.PASS, "")), []),
    ("breaks", cell(("s.a", Status.PASS, "")), cell(("s.a", Status.FAIL, EPERM)), [("new failures", "s.a")]),
    ("fails the same way", cell(("s.a", Status.FAIL, EPERM)), cell(("s.a", Status.FAIL, EPERM)), []),
    ("fails another way", cell(("s.a", Status.FAIL, EPERM)), cell(("s.a", Status.FAIL, EACCES)),
     [("signature changed (failing in both)", "s.a")]),
    ("fixed", cell(("s.a", Status.FAIL, EPERM)), cell(("s.a", Status.PASS, "")), [("fixed", "s.a")]),
    ("new passing", cell(), cell(("s.b", Status.PASS, "")), [("appeared", "s.b")]),
    ("new failing", cell(), cell(("s.b", Status.ERROR, "KeyError: x")), [("new failures", "s.b")]),
    ("skips now", cell(("s.a", Status.PASS, "")), cell(("s.a", Status.SKIP, "needs ABI 6")),
     [("other status changes", "s.a")]),
    ("gone", cell(("s.a", Status.PASS, "")), cell(), [("disappeared", "s.a")]),
    ("missing now", cell(("s.a", Status.PASS, "")), cell(("s.a", Status.MISS, "never reported: kernel panic"),
                                                         events=(PANIC,)),
     [("new failures", "s.a"), ("new kernel events", "kernel")]),
    ("the same panic", cell(events=(PANIC,)), cell(events=(PANIC,)), []),
    ("known failure", cell(("s.a", Status.XFAIL, "")), cell(("s.a", Status.XFAIL, "")), []),
]  # fmt: skip


@pytest.mark.parametrize(("case", "before", "after", "want"), DIFFS, ids=[d[0] for d in DIFFS])
def test_diff_cells(case: str, before: CellResult, after: CellResult, want: list[tuple[str, str]]) -> None:
    assert [(c.kind.value, c.what) for c in diff_cells(before, after)] == want


def test_a_new_failure_carries_its_signature_and_timing_is_no_change() -> None:
    before, after = cell(("s.a", Status.PASS, "")), cell(("s.a", Status.FAIL, EPERM))
    before.tests[0].duration, after.tests[0].duration = 1.0, 9.0
    after.tests[0].signature = "s.a: attach: expected EPERM, got success"
    assert diff_cells(before, after) == [
        Change(compare.Kind.NEW_FAILURE, "s.a", f"PASS -> FAIL: {EPERM} [s.a: attach: expected EPERM, got success]")
    ]


def test_am_failure_without_a_patch_number() -> None:
    series = Series(SeriesKind.MBOX, "x.mbox", "ab" * 20)
    assert am_failure("", series) == f"x.mbox: git am cannot apply it on {'ab' * 6}: no output"


# --- the command ---------------------------------------------------------------------------------------


def try_args(toy: dict[str, Any], series: str, *extra: str) -> list[str]:
    return ["try", series, "--src", str(toy["repo"]), "--arch", "x86_64", "--suite", "landlock", *extra]


@pytest.fixture
def fake_lab(toy: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache of the toy's own: the worktree goes there."""
    monkeypatch.setenv("KLAB_CACHE", str(toy["tmp"] / "cache"))


def run_try(argv: list[str]) -> int:
    """`klab try ARGV` with the fake judge in place of building and booting."""
    return try_cmd.cmd_try(cli.parser().parse_args(argv), judge_for=lambda settings, out: FakeJudge())


def test_cli_prints_what_changed_and_exits_1(
    toy: dict[str, Any], fake_lab: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = toy["tmp"] / "results"
    rc = run_try(try_args(toy, str(toy["series"] / "series"), "--each", "-k", "landlock.", "--results", str(out)))
    printed = capsys.readouterr().out
    assert rc == 1
    assert f"  new failures: landlock.a: PASS -> FAIL: {BREAK_A} [{SIG_A}]" in printed
    assert "first breaking patch: 2/3" in printed and "'landlock: Break a'" in printed
    assert printed.rstrip().endswith("klab try: the series breaks 1 test(s): exit 1")
    assert (out / "try.json").is_file() and (out / "try.txt").read_text() == printed
    (kept,) = (toy["tmp"] / "cache" / "try").glob("*/src/linux")  # the lab's checkout, kept for the next run
    assert _git(kept, "status", "--porcelain") == ""


def test_cli_bad_series_is_exit_2(toy: dict[str, Any], fake_lab: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match="patch 2") as refused:
        run_try(try_args(toy, str(toy["series"] / "series.mbox"), "--base", "other"))
    assert refused.value.exit_code == 2
    untouched(toy)
    assert not list((toy["tmp"] / "cache" / "try").iterdir()), "a refused series leaves nothing in the cache"


def test_cli_refuses_a_tree_that_is_not_a_kernel(toy: dict[str, Any], fake_lab: None, tmp_path: Path) -> None:
    (toy["repo"] / "Kconfig").unlink()
    _git(toy["repo"], "commit", "-qam", "no Kconfig")
    args = argparse.Namespace(src=str(toy["repo"]))
    with pytest.raises(UserError, match="is not a kernel tree"):
        try_cmd.settings_from_args(args)


def test_cli_without_each_shows_the_tip_as_the_whole_series(
    toy: dict[str, Any], fake_lab: None, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = run_try(try_args(toy, "work..midbreak", "--results", str(toy["tmp"] / "r")))
    printed = capsys.readouterr().out
    assert rc == 0
    assert "(the whole series: 2 patches)" in printed and "patch by patch" not in printed
    assert "  nothing: every selected test ends as it began" in printed
    assert printed.rstrip().endswith("klab try: no new failure: exit 0")
