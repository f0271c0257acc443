"""`klab bisect` on a real regression: a git tree made from Debian's linux-source-6.12, ten commits on top.

The scenario (made once in the cache, reused while intact so warm runs rebuild
nothing but what each step changes):
  base    Debian's tree as shipped                                    (--good, tag klab-good)
  1..10   harmless comment and doc changes in security/ and Documentation/, and:
  3       the regression: domain_scope_le() lets a sandboxed tracer reach a tracee without
          a domain, so a Landlock-restricted child may ptrace its unrestricted parent
  5       a build break (undeclared identifier in security/landlock/syscalls.c): it sits at the
          first midpoint, so bisect must step on it and skip it; 6 fixes it
  10      the tip                                                     (--bad, tag klab-bad)
Run: `pytest -m kernel tests/integration/test_bisect.py -s` to see the report: culprit, each step's
build, boot+test and total seconds, and the wall time (also in the work dir's bisect.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import arches, kconfig, pipeline, source
from lab.cli import bisect_cmd
from lab.paths import cache_dir

pytestmark = pytest.mark.kernel

TEST = "landlock_ptrace.attach_child_to_parent__child_domain"
SCENARIO_VERSION = "1"  # bump when the commits below change: the scenario is then rebuilt
AUTHOR = {"GIT_AUTHOR_NAME": "Kernel Lab", "GIT_AUTHOR_EMAIL": "lab@example.org"}
COMMITTER = {"GIT_COMMITTER_NAME": "Kernel Lab", "GIT_COMMITTER_EMAIL": "lab@example.org"}


@dataclass(frozen=True)
class Change:
    """One commit: replace `old` by `new` in `path` (each must occur once)."""

    subject: str
    path: str
    old: str
    new: str


_ABI = "const int landlock_abi_version = LANDLOCK_ABI_VERSION;"
CHANGES = (
    Change(
        "Documentation/landlock: Mention ptrace scoping",
        "Documentation/userspace-api/landlock.rst",
        ".. Copyright © 2021-2022 Microsoft Corporation\n",
        ".. Copyright © 2021-2022 Microsoft Corporation\n.. Ptrace is scoped to a domain and its descendants.\n",
    ),
    Change(
        "landlock: Fix comment wording in ruleset.c",
        "security/landlock/ruleset.c",
        "#include <linux/bits.h>\n",
        "#include <linux/bits.h> /* access masks */\n",
    ),
    Change(
        "landlock: Simplify domain_scope_le() for unsandboxed tasks",
        "security/landlock/task.c",
        "\tif (!child)\n\t\treturn false;\n",
        "\tif (!child)\n\t\treturn true;\n",
    ),
    Change(
        "landlock: Comment the filesystem hooks",
        "security/landlock/fs.c",
        "#include <linux/atomic.h>\n",
        "#include <linux/atomic.h> /* refcounts of objects */\n",
    ),
    Change(
        "landlock: Use a named constant for the ABI version",
        "security/landlock/syscalls.c",
        _ABI,
        "const int landlock_abi_version = LANDLOCK_ABI_CURRENT;",
    ),
    Change(
        "landlock: Define LANDLOCK_ABI_CURRENT",
        "security/landlock/syscalls.c",
        _ABI.replace("VERSION", "CURRENT"),
        "#define LANDLOCK_ABI_CURRENT LANDLOCK_ABI_VERSION\n" + _ABI.replace("VERSION", "CURRENT"),
    ),
    Change(
        "yama: Comment the ptrace scope sysctl",
        "security/yama/yama_lsm.c",
        "#include <linux/lsm_hooks.h>\n",
        "#include <linux/lsm_hooks.h> /* ptrace_access_check, task_prctl */\n",
    ),
    Change(
        "landlock: Comment the network hooks",
        "security/landlock/net.c",
        "#include <linux/net.h>\n",
        "#include <linux/net.h> /* socket hooks */\n",
    ),
    Change(
        "landlock: Comment the setup code",
        "security/landlock/setup.c",
        "#include <linux/init.h>\n",
        "#include <linux/init.h> /* __init, early LSM setup */\n",
    ),
    Change(
        "landlock: Comment the credential hooks",
        "security/landlock/cred.c",
        "#include <linux/cred.h>\n",
        "#include <linux/cred.h> /* domains ride on credentials */\n",
    ),
)
REGRESSION, BUILD_BREAK = 3, 5  # 1-based commit numbers in CHANGES


@dataclass(frozen=True)
class Scenario:
    repo: Path
    commits: list[str]  # base first, then one per change

    @property
    def good(self) -> str:
        return self.commits[0]

    @property
    def bad(self) -> str:
        return self.commits[-1]


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, **AUTHOR, **COMMITTER, GIT_AUTHOR_DATE="2025-01-01T00:00:00Z")
    env["GIT_COMMITTER_DATE"] = env["GIT_AUTHOR_DATE"]
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {repo}: {out.stderr.strip()}")
    return out.stdout.strip()


def _intact(repo: Path) -> Scenario | None:
    """The cached scenario, when it is the current version, on main, clean and not bisecting."""
    try:
        if git(repo, "config", "klab.scenario") != SCENARIO_VERSION:
            return None
        if subprocess.run(["git", "-C", str(repo), "bisect", "log"], capture_output=True).returncode == 0:
            git(repo, "bisect", "reset", "main")  # a run killed hard: take the tree back
        git(repo, "checkout", "-q", "main")
        if git(repo, "status", "--porcelain", "--untracked-files=no"):
            return None
        commits = [
            git(repo, "rev-parse", "klab-good"),
            *git(repo, "rev-list", "--reverse", "klab-good..klab-bad").split(),
        ]
    except (RuntimeError, OSError):
        return None
    return Scenario(repo, commits) if len(commits) == len(CHANGES) + 1 else None


def ensure_scenario() -> Scenario:
    """Make the scenario repository once (a few minutes: copying 1.7 GB and hashing it), then reuse it.

    It and its build dir sit at the same depth under the cache as Debian's tree and the lab's build
    dirs, so ccache serves the bisect's first build from the objects of `make test-kernel`'s.
    """
    repo = cache_dir("bisect-scenario", "src") / "linux-6.12"
    found = _intact(repo) if repo.is_dir() else None
    if found:
        return found
    shutil.rmtree(repo, ignore_errors=True)
    tmp = repo.with_name(repo.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["cp", "-a", str(source.fetch("6.12")), str(tmp)], check=True)
    git(tmp, "init", "-q", "-b", "main")
    git(tmp, "add", "-A", "-f")  # Debian's .gitignore has `/*` (NOTES.md)
    git(tmp, "commit", "-q", "-m", "Debian linux-source-6.12 as shipped")
    git(tmp, "tag", "klab-good")
    for number, change in enumerate(CHANGES, 1):
        path = tmp / change.path
        text = path.read_text()
        if text.count(change.old) != 1:
            raise RuntimeError(f"scenario change {number}: {change.old!r} is not in {change.path} exactly once")
        path.write_text(text.replace(change.old, change.new))
        git(tmp, "commit", "-q", "-a", "-m", change.subject)
    git(tmp, "tag", "klab-bad")
    git(tmp, "config", "klab.scenario", SCENARIO_VERSION)
    tmp.rename(repo)
    scenario = _intact(repo)
    assert scenario is not None
    return scenario


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    if shutil.which("qemu-system-x86_64") is None or os.uname().machine != "x86_64":
        pytest.skip("needs an x86_64 host with qemu-system-x86_64 (the guest shares the host's /)")
    # The lab's own x86_64 kernel first (other tests need it anyway; a parallel worker building it is
    # waited for): its ccache objects then make the scenario's first build a cache-hit rebuild.
    pipeline.build_kernel(source.fetch("6.12"), arches.get("x86_64"), kconfig.DEFAULT_FRAGMENTS)
    return ensure_scenario()


def test_bisect_names_the_landlock_regression(scenario: Scenario, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="klab")
    bisect_cmd.register(parser.add_subparsers(dest="command", required=True))
    work = tmp_path / "bisect"
    argv = ["bisect", "--src", str(scenario.repo), "--good", "klab-good", "--bad", "klab-bad"]
    argv += ["--build-dir", str(cache_dir("bisect-scenario") / "build" / "x86_64")]
    args = parser.parse_args([*argv, "--arch", "x86_64", "--test", TEST, "--results", str(work)])
    start = time.monotonic()
    rc = args.func(args)
    wall = time.monotonic() - start
    doc = json.loads((work / "bisect.json").read_text())
    steps = [s for s in doc["steps"] if s["phase"] == "bisect"]
    by_commit = {s["commit"]: s for s in steps}
    print(f"bisect: {len(steps)} steps for {doc['commits']} commits, wall {wall:.0f}s (per step: see the table above)")

    assert rc == 0
    assert doc["culprit"]["commit"] == scenario.commits[REGRESSION]
    assert doc["culprit"]["subject"] == CHANGES[REGRESSION - 1].subject
    assert doc["commits"] == len(CHANGES)
    assert len(steps) <= math.ceil(math.log2(len(CHANGES))) + 2
    broken = by_commit[scenario.commits[BUILD_BREAK]]  # the first midpoint: bisect must step on it
    assert (broken["verdict"], broken["exit"]) == ("skip", 125) and "build failed" in broken["reason"]
    for commit, step in by_commit.items():
        if step["verdict"] != "skip":
            assert step["verdict"] == ("bad" if scenario.commits.index(commit) >= REGRESSION else "good")
    # One build dir for every commit, and every bisect step an incremental rebuild of it:
    # no commit touches a Kconfig file, so no step configures again, not even after the build break.
    built = [s for s in doc["steps"] if s.get("build_dir")]
    assert len({s["build_dir"] for s in built}) == 1
    for s in steps:
        first_line = Path(s["build_log"]).read_text().partition("\n")[0]
        assert first_line.startswith("# .config kept"), (s["commit"], first_line)
    for s in built:
        assert Path(s["results"]).is_file() and all(Path(c).is_file() for c in s["consoles"])
    # The user's tree is as it was.
    assert git(scenario.repo, "symbolic-ref", "--short", "HEAD") == "main"
    assert git(scenario.repo, "rev-parse", "HEAD") == scenario.bad
    assert git(scenario.repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert "# first bad commit" in (work / "bisect.log").read_text()
