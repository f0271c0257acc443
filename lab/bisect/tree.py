"""The user's tree during a bisect: its bisect log kept in the work dir, and the tree put back afterwards."""

from __future__ import annotations

from pathlib import Path

from lab import atomic
from lab.git import git, git_out

LOG = "bisect.log"


def is_bisecting(repo: Path) -> bool:
    return git(repo, "bisect", "log", check=False).returncode == 0


def save_log(repo: Path, work: Path) -> None:
    """Keep `git bisect log` in the work dir: the resume point if this run is interrupted."""
    out = git(repo, "bisect", "log", check=False)
    if out.returncode == 0 and out.output.strip():
        atomic.write_text(work / LOG, out.output)


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
