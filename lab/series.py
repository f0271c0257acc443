"""`klab try`: what a patch series changes, tested before it is merged, as BPF CI tests every series.

A series is an mbox, a directory of `git format-patch` files, or a git range
A..B of the user's tree. It is applied on the lab's own checkout of the tree
(a `git clone --shared` in the cache, reset to the base; `git am` for patches,
a range's commits already exist), which is then checked out step by step: the
base, the tip (or, with --each, every patch in turn). The checkout keeps one
path for every run on that tree, so every step is an incremental build of one
build dir with its .config kept (lab.kernel.build keys a git tree's build dir
by its path), and the next run's checkout rewrites only the files that differ.
The user's own tree, its HEAD, index, branches and worktree list are never
touched.

The driver (`run_series`) takes its judge (build and test the checked-out
step) as an argument, so the whole flow is tested on a toy repository in
milliseconds. What changed between two steps is `klab compare`'s answer
(lab.results.compare.compare_cell: the same rules everywhere in the lab), plus the
build breaking or coming back, which compare cannot see.
"""

from __future__ import annotations

import enum
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab import proc
from lab.errors import BuildError, LabError, UserError
from lab.git import git, git_out, resolve_commit
from lab.results import compare
from lab.results.model import CellResult, CellVerdict

_COVER = re.compile(r"(^0000-|cover-letter)", re.IGNORECASE)
_PATCH_SUFFIXES = (".patch", ".diff", ".mbox", ".eml", ".mbx")
# git am: who commits the throwaway commits (authors come from the patches), and no hook of the user's repo runs.
_AM = ("-c", "user.name=kernel-lab", "-c", "user.email=kernel-lab@localhost", "-c", "core.hooksPath=/dev/null")
_FAILED_AT = re.compile(r"^Patch failed at (\d+) (.*)$", re.MULTILINE)


class SeriesKind(enum.Enum):
    MBOX = "mbox"
    DIR = "patch directory"
    RANGE = "git range"


@dataclass(frozen=True)
class Series:
    """What the user gave as SERIES, checked: the patches to apply, or the range's ends; `base` is a full hash."""

    kind: SeriesKind
    spec: str
    base: str
    patches: tuple[Path, ...] = ()  # MBOX: the file; DIR: its patch files in order (cover letters left out)
    tip: str = ""  # RANGE: B of A..B


def parse_series(spec: str, repo: Path, base: str | None) -> Series:
    """SERIES as an mbox, a patch dir or A..B; --base (default HEAD) is where patches go, a range has its own."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return Series(SeriesKind.DIR, spec, _base(repo, base), patch_files(path))
    if path.is_file():
        return Series(SeriesKind.MBOX, spec, _base(repo, base), (path.resolve(),))
    if "..." in spec:
        raise UserError(f"{spec}: a symmetric range is no series; give A..B (the commits of B not in A)")
    if ".." not in spec:
        raise UserError(f"{spec}: no such mbox or patch directory, and not a git range A..B")
    if base:
        raise UserError(f"--base {base}: a range A..B is tested on top of A; --base goes with patch files")
    left, right = spec.split("..", 1)
    a = resolve_commit(repo, left or "HEAD", "SERIES")
    b = resolve_commit(repo, right or "HEAD", "SERIES")
    start = git(repo, "merge-base", a, b, check=False).output.strip()
    if not start:
        raise UserError(f"{spec}: {left} and {right} share no history")
    if start == b:
        raise UserError(f"{spec}: the range holds no commit")
    return Series(SeriesKind.RANGE, spec, start, tip=b)


def _base(repo: Path, base: str | None) -> str:
    return resolve_commit(repo, base or "HEAD", "--base")


def patch_files(directory: Path) -> tuple[Path, ...]:
    """The patch files of a `git format-patch -o DIR` output, in order; the cover letter has no diff to apply."""
    files = sorted(
        p.resolve() for p in directory.iterdir()
        if p.is_file() and p.suffix in _PATCH_SUFFIXES and not _COVER.search(p.name)
    )  # fmt: skip
    if not files:
        raise UserError(f"{directory} holds no patch files ({', '.join('*' + s for s in _PATCH_SUFFIXES[:2])})")
    return tuple(files)


# --- the lab's checkout of the tree -----------------------------------------------------------------


def reset_worktree(repo: Path, path: Path, base: str) -> None:
    """Make `path` the lab's checkout of `repo`, at `base` and clean; it is kept afterwards for the next run.

    A shared clone reads the user's objects in place (nothing is copied, and
    nothing is registered in the user's tree, as `git worktree add` would), and
    keeping it means a checkout of 1.7 GB happens once per tree, not per run,
    and make rebuilds only the files that changed since the last run. What a
    killed run left (a half-done `git am`, untracked files) is reset here; a
    clone that no longer works (the user's objects pruned under it, a lock a
    killed git left) is made again.
    """
    if not _reset(repo, path, base):
        remove_worktree(repo, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        git(repo, "clone", "--quiet", "--shared", "--no-checkout", str(repo), str(path))
        git(path, "checkout", "--quiet", "--detach", base)


def _reset(repo: Path, path: Path, base: str) -> bool:
    """Bring a kept clone of `repo` to `base`, clean; False when there is none at `path` or it no longer works."""
    alternates = path / ".git" / "objects" / "info" / "alternates"
    if not alternates.is_file():
        return False
    objects = Path(git_out(repo, "rev-parse", "--path-format=absolute", "--git-common-dir")) / "objects"
    if str(objects) not in alternates.read_text().split():
        return False
    git(path, "am", "--abort", check=False)  # a half-done `git am` of a killed run (none: a harmless error)
    steps = (("checkout", "--quiet", "--force", "--detach", base), ("clean", "-ffdxq"))
    return all(git(path, *args, check=False).returncode == 0 for args in steps)


def remove_worktree(repo: Path, path: Path) -> None:
    """Delete what is at `path`: a broken clone, or a `git worktree` an older klab registered in the user's tree."""
    if path.exists():
        git(repo, "worktree", "remove", "--force", "--force", str(path), check=False)
        shutil.rmtree(path, ignore_errors=True)
    git(repo, "worktree", "prune", check=False)


def apply_series(wt: Path, series: Series) -> list[str]:
    """The series' commits on top of the base, oldest first: `git am` for patches, the range's own for a range."""
    if series.kind is SeriesKind.RANGE:
        return git_out(wt, "rev-list", "--reverse", "--topo-order", f"{series.base}..{series.tip}").split()
    out = git(wt, *_AM, "am", "--empty=drop", *map(str, series.patches), check=False)
    if out.returncode != 0:
        message = am_failure(out.output, series)
        git(wt, "am", "--abort", check=False)
        raise UserError(message)
    commits = git_out(wt, "rev-list", "--reverse", f"{series.base}..HEAD").split()
    if not commits:
        raise UserError(f"{series.spec}: no patch in it changes anything (git am applied nothing)")
    return commits


def am_failure(output: str, series: Series) -> str:
    """One message naming the patch that does not apply and git am's own error lines."""
    errors = [ln.strip() for ln in output.splitlines() if ln.startswith(("error:", "fatal:", "Patch is empty"))]
    errors += [ln.strip() for ln in output.splitlines() if "Patch format detection failed" in ln]
    lines = output.strip().splitlines()
    why = "; ".join(dict.fromkeys(errors)) or (lines[-1] if lines else "no output")
    failed = _FAILED_AT.search(output)
    if failed is None:
        return f"{series.spec}: git am cannot apply it on {series.base[:12]}: {why}"
    number, subject = int(failed.group(1)), failed.group(2).strip()
    which = _which(series, number, subject)
    return f"{series.spec}: patch {which} {subject!r} does not apply on {series.base[:12]}: {why}"


def _which(series: Series, number: int, subject: str) -> str:
    """The failed patch as the user knows it: its file, or its [PATCH n/m] tag (git am counts a cover letter too)."""
    if series.kind is SeriesKind.DIR and number <= len(series.patches):
        return f"{number} ({series.patches[number - 1].name})"
    try:
        headers = series.patches[0].read_text(errors="replace").replace("\n ", " ").replace("\n\t", " ")
    except (OSError, IndexError):
        return str(number)
    tagged = re.search(r"^Subject: \[[^\]]*?(\d+/\d+)\] " + re.escape(subject) + "$", headers, re.MULTILINE)
    return tagged.group(1) if tagged else str(number)


# --- steps and what a judge says of one ----------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """A state of the series: 0 is the base, i the first i of `total` patches applied."""

    index: int
    total: int
    commit: str
    subject: str = ""  # the last patch applied; "" for the base

    @property
    def label(self) -> str:
        return "base" if self.index == 0 else f"{self.index}/{self.total}"

    @property
    def slug(self) -> str:
        """For file and cell names."""
        return "base" if self.index == 0 else f"p{self.index}"


def steps(base: str, commits: list[tuple[str, str]], each: bool) -> list[Step]:
    """(commit, subject) of each patch -> the steps to test: base and tip, or base and every patch (--each)."""
    total = len(commits)
    chosen = range(1, total + 1) if each else [total]
    return [Step(0, total, base), *(Step(i, total, *commits[i - 1]) for i in chosen)]


@dataclass
class Tested:
    """One step built and tested; `cell` is None when it did not build (`build_error` says why)."""

    step: Step
    cell: CellResult | None
    build_error: str = ""
    durations: dict[str, float] = field(default_factory=dict)  # "build", "test" in seconds
    results_dir: str = ""


Judge = Callable[[Path, Step], Tested]  # build and test the checkout as it stands at the step


# --- what changed -----------------------------------------------------------------------------------


class BuildKind(enum.Enum):
    """What lab.results.compare cannot see: a step with no kernel to test. Values are headings, as compare.Kind's."""

    BROKEN = "build broken"
    FIXED = "build fixed"


# lab.results.compare's regressions (a new failure, a new kernel event) and a build the series broke.
FAILING: tuple[compare.Kind | BuildKind, ...] = (*compare.REGRESSIONS, BuildKind.BROKEN)
_TIMING = (compare.Kind.SLOWER, compare.Kind.FASTER)  # a step's timing says nothing of the series


@dataclass(frozen=True)
class Change:
    kind: compare.Kind | BuildKind
    what: str  # SUITE.TEST, "kernel" for a kernel event, "cell" for a lab error, or "build"
    detail: str  # compare's line (with the failure's signature), or the build error


def diff_cells(before: CellResult, after: CellResult) -> list[Change]:
    """What changed from one step's cell to the next: `klab compare`'s rules (lab.results.compare), timing left out."""
    whole = {compare.Kind.NEW_EVENT: "kernel", compare.Kind.LAB_ERROR: "cell"}
    return [
        Change(c.kind, c.test or whole.get(c.kind, "cell"), c.detail.strip())
        for c in compare.compare_cell(before, after, compare.Threshold())
        if c.kind not in _TIMING
    ]


def diff_steps(before: Tested, after: Tested) -> list[Change]:
    """diff_cells, or the build breaking or coming back."""
    if after.cell is None:
        return [] if before.cell is None else [Change(BuildKind.BROKEN, "build", after.build_error)]
    if before.cell is None:
        return [Change(BuildKind.FIXED, "build", f"was: {before.build_error}")]
    return diff_cells(before.cell, after.cell)


@dataclass(frozen=True)
class Outcome:
    """Every step tested, what the whole series changed (base -> tip), and what each step changed (--each)."""

    series: Series
    tested: tuple[Tested, ...]
    net: tuple[Change, ...]
    per_step: tuple[tuple[Step, tuple[Change, ...]], ...]  # each step after the base against the one before it

    @property
    def breaking(self) -> list[Step]:
        """The steps that broke something (only meaningful with --each: otherwise the tip, when it broke)."""
        return [step for step, changes in self.per_step if any(c.kind in FAILING for c in changes)]

    @property
    def exit_status(self) -> int:
        """1 when the series, or any patch on the way (--each), breaks a test or the build; else 0."""
        failing = any(c.kind in FAILING for c in self.net) or self.breaking
        return 1 if failing else 0


def outcome(series: Series, tested: list[Tested]) -> Outcome:
    """Compare the tip with the base, and each step with the one before it."""
    per_step = tuple((b.step, tuple(diff_steps(a, b))) for a, b in zip(tested, tested[1:], strict=False))
    return Outcome(series, tuple(tested), tuple(diff_steps(tested[0], tested[-1])), per_step)


# --- the driver -----------------------------------------------------------------------------------


def run_series(
    repo: Path, series: Series, wt_path: Path, judge: Judge, each: bool, on_applied: Callable[[list[Step]], None]
) -> Outcome:
    """Apply the series on the lab's checkout of the tree, judge each step in it, compare."""
    tested: list[Tested] = []
    with proc.interrupts_raise():
        reset_worktree(repo, wt_path, series.base)
        commits = apply_series(wt_path, series)
        log = git_out(wt_path, "log", "--reverse", "--format=%H%x00%s", f"{series.base}..{commits[-1]}")
        subjects = dict(line.split("\0", 1) for line in log.splitlines())
        plan = steps(series.base, [(c, subjects.get(c, "")) for c in commits], each)
        on_applied(plan)
        for step in plan:
            git(wt_path, "checkout", "--quiet", "--detach", step.commit)
            done = judge(wt_path, step)
            _check(done)
            tested.append(done)
    return outcome(series, tested)


def _check(done: Tested) -> None:
    """A base that does not build, or a step the lab could not run, leaves nothing to compare."""
    if done.step.index == 0 and done.cell is None:
        raise BuildError(f"the base {done.step.commit[:12]} does not build: {done.build_error}")
    if done.cell is not None and done.cell.verdict() is CellVerdict.LAB_ERROR:
        raise LabError(f"step {done.step.label} ({done.step.commit[:12]}): the lab could not run it: {done.cell.error}")
