"""The git plumbing a bisect needs: run git in the user's tree, read commits, put the tree back."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab import atomic, proc
from lab.errors import LabError, UserError

GIT_TIMEOUT = 600.0
LOG = "bisect.log"


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
        atomic.write_text(work / LOG, out.output)


@dataclass(frozen=True)
class CommitInfo:
    commit: str
    subject: str
    author: str


def commit_info(repo: Path, rev: str) -> CommitInfo:
    sha, subject, author = git_out(repo, "show", "-s", "--format=%H%x00%s%x00%an <%ae>", rev).split("\0")
    return CommitInfo(sha, subject, author)


def resolve_commit(repo: Path, rev: str, flag: str) -> str:
    """The full hash of `rev`; a name that is no commit is the user's mistake, named with its flag."""
    out = git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    if out.returncode != 0:
        raise UserError(f"{flag} {rev}: no such commit in {repo}")
    return out.output.strip()


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
