"""The one git helper: every git command the lab runs, with one deadline and one error kind.

A git command that fails where the lab expected it to work (a worktree that
cannot be added, a checkout that fails) is a LabError: never a verdict on a
kernel. Questions about the user's input (is this rev a commit? is this the
tree's top?) ask with check=False and turn "no" into a UserError naming the
flag, before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab import proc
from lab.errors import LabError, UserError

TIMEOUT = 600.0  # a worktree add or checkout of a kernel tree on a slow disk takes minutes, not ten


def git(repo: Path, *args: str, check: bool = True) -> proc.Result:
    """`git -C repo ARGS`; with check, a failure is a LabError naming the command and git's last line."""
    try:
        return proc.run(["git", "-C", str(repo), *args], deadline=proc.Deadline.after(TIMEOUT), check=check)
    except proc.CommandFailed as exc:
        last = exc.tail.strip().splitlines()[-1] if exc.tail.strip() else "no output"
        raise LabError(f"{exc}: {last}") from exc


def git_out(repo: Path, *args: str) -> str:
    return git(repo, *args).output.strip()


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


def top_level(path: Path) -> Path | None:
    """The top of the git work tree holding `path`, or None when it is in none."""
    out = git(path, "rev-parse", "--show-toplevel", check=False)
    return Path(out.output.strip()).resolve() if out.returncode == 0 else None
