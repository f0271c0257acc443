"""Git repositories made from Debian's 6.12 tree, for the bisect and try scenarios.

They sit under the cache at the same depth as Debian's tree, so ccache serves
their builds from the objects of `make test-kernel`'s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from lab.kernel import source

# Fixed names and dates: the same scenario gives the same commit ids on every machine.
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Kernel Lab",
    "GIT_AUTHOR_EMAIL": "lab@example.org",
    "GIT_COMMITTER_NAME": "Kernel Lab",
    "GIT_COMMITTER_EMAIL": "lab@example.org",
    "GIT_AUTHOR_DATE": "2025-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2025-01-01T00:00:00Z",
}


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, env=dict(os.environ, **GIT_ENV), timeout=1800
    )
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo}: {out.stderr.strip()}")
    return out.stdout.strip()


def debian_612_as_git(repo: Path, base_tag: str) -> Path:
    """A fresh `repo.tmp`: Debian's linux-source-6.12 as one commit tagged base_tag (minutes: 1.7 GB copied, hashed).

    The caller adds its commits, then renames it to `repo`: a half-made scenario is never taken for a whole one.
    """
    shutil.rmtree(repo, ignore_errors=True)
    tmp = repo.with_name(repo.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["cp", "-a", str(source.fetch("6.12")), str(tmp)], check=True)
    git(tmp, "init", "-q", "-b", "main")
    git(tmp, "add", "-A", "-f")  # Debian's linux-source tarball ships a .gitignore whose `/*` ignores everything
    git(tmp, "commit", "-q", "-m", "Debian linux-source-6.12 as shipped")
    git(tmp, "tag", base_tag)
    return tmp
