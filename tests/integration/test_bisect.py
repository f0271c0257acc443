"""`klab bisect` on a real regression: a git tree made from Debian's linux-source-6.12, twelve commits on top.

The scenario (made once in the cache, reused while intact so warm runs rebuild
nothing but what each step changes):
  base    Debian's tree as shipped                                    (--good, tag klab-good)
  1..12   harmless comment and doc changes in security/ and Documentation/, and:
  5       an unrelated failure of the same test: ptrace denials answer EACCES instead of EPERM
          (the test fails "expected EPERM, got EACCES"); it sits at the first midpoints
  8       reverts 5: the test passes again
  10      the regression: domain_scope_le() lets a sandboxed tracer reach a tracee without a
          domain, so a Landlock-restricted child may ptrace its unrestricted parent ("got success")
  11      a build break (undeclared identifier in security/landlock/syscalls.c); 12 fixes it
  12      the tip                                                     (--bad, tag klab-bad)
A signature-blind bisect (--any-failure) steps on 5..7, calls them bad and blames commit 5; the
default bisect records the failure at --bad ("expected EPERM, got success"), skips 5..7 as a
different failure, and names commit 10. bench/bisection.py runs both and compares steps and wall time.
Run: `pytest -m kernel tests/integration/test_bisect.py -s` to see the report: culprit, each
step's build, boot+test and total seconds, and the wall time (also in the work dir's bisect.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab import arches
from lab.cli import bisect_cmd
from lab.kernel import kconfig, source
from lab.paths import cache_dir
from lab.run import prepare
from tests.integration.scenario_repo import debian_612_as_git, git

pytestmark = pytest.mark.kernel

TEST = "landlock_ptrace.attach_child_to_parent__child_domain"
SCENARIO_VERSION = "2"  # bump when the commits below change: the scenario is then rebuilt


@dataclass(frozen=True)
class Change:
    """One commit: replace `old` by `new` in `path` (each must occur once)."""

    subject: str
    path: str
    old: str
    new: str


_ABI = "const int landlock_abi_version = LANDLOCK_ABI_VERSION;"
_DENIAL = "\tif (task_is_scoped(parent, child))\n\t\treturn 0;\n\treturn -EPERM;\n"


def _comment(subject: str, path: str, line: str, note: str) -> Change:
    return Change(subject, path, line + "\n", f"{line} /* {note} */\n")


CHANGES = (
    Change(
        "Documentation/landlock: Mention ptrace scoping",
        "Documentation/userspace-api/landlock.rst",
        ".. Copyright © 2021-2022 Microsoft Corporation\n",
        ".. Copyright © 2021-2022 Microsoft Corporation\n.. Ptrace is scoped to a domain and its descendants.\n",
    ),
    _comment(
        "landlock: Fix comment wording in ruleset.c",
        "security/landlock/ruleset.c",
        "#include <linux/bits.h>",
        "access masks",
    ),
    _comment(
        "landlock: Comment the filesystem hooks", "security/landlock/fs.c", "#include <linux/atomic.h>", "refcounts"
    ),
    _comment(
        "yama: Comment the ptrace scope sysctl", "security/yama/yama_lsm.c", "#include <linux/lsm_hooks.h>", "hooks"
    ),
    Change(
        "landlock: Return EACCES for denied ptrace accesses",
        "security/landlock/task.c",
        _DENIAL,
        _DENIAL.replace("EPERM", "EACCES"),
    ),
    _comment(
        "landlock: Comment the network hooks", "security/landlock/net.c", "#include <linux/net.h>", "socket hooks"
    ),
    _comment("landlock: Comment the setup code", "security/landlock/setup.c", "#include <linux/init.h>", "__init"),
    Change(
        'Revert "landlock: Return EACCES for denied ptrace accesses"',
        "security/landlock/task.c",
        _DENIAL.replace("EPERM", "EACCES"),
        _DENIAL,
    ),
    _comment(
        "landlock: Comment the credential hooks", "security/landlock/cred.c", "#include <linux/cred.h>", "domains"
    ),
    Change(
        "landlock: Simplify domain_scope_le() for unsandboxed tasks",
        "security/landlock/task.c",
        "\tif (!child)\n\t\treturn false;\n",
        "\tif (!child)\n\t\treturn true;\n",
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
)
UNRELATED, UNRELATED_FIXED, REGRESSION, BUILD_BREAK = 5, 8, 10, 11  # 1-based commit numbers in CHANGES


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
    tmp = debian_612_as_git(repo, "klab-good")
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
    prepare.build_kernel(source.fetch("6.12"), arches.get("x86_64"), kconfig.DEFAULT_FRAGMENTS)
    return ensure_scenario()


def run_bisect(scenario: Scenario, work: Path, *extra: str) -> tuple[int, dict[str, Any], float]:
    parser = argparse.ArgumentParser(prog="klab")
    bisect_cmd.register(parser.add_subparsers(dest="command", required=True))
    argv = ["bisect", "--src", str(scenario.repo), "--good", "klab-good", "--bad", "klab-bad"]
    argv += ["--build-dir", str(cache_dir("bisect-scenario") / "build" / "x86_64")]
    args = parser.parse_args([*argv, "--arch", "x86_64", "--test", TEST, "--results", str(work), *extra])
    start = time.monotonic()
    rc = args.func(args)
    wall = time.monotonic() - start
    doc = json.loads((work / "bisect.json").read_text())
    steps = [s for s in doc["steps"] if s["phase"] == "bisect"]
    print(f"bisect {' '.join(extra) or '(signature-aware)'}: {len(steps)} steps for {doc['commits']} commits, "
          f"wall {wall:.0f}s (per step: see the table above)")  # fmt: skip
    return rc, doc, wall


def _assert_tree_restored(scenario: Scenario) -> None:
    assert git(scenario.repo, "symbolic-ref", "--short", "HEAD") == "main"
    assert git(scenario.repo, "rev-parse", "HEAD") == scenario.bad
    assert git(scenario.repo, "status", "--porcelain", "--untracked-files=no") == ""


def test_bisect_names_the_landlock_regression_past_an_unrelated_failure(scenario: Scenario, tmp_path: Path) -> None:
    work = tmp_path / "bisect"
    rc, doc, _ = run_bisect(scenario, work)
    steps = [s for s in doc["steps"] if s["phase"] == "bisect"]
    by_commit = {s["commit"]: s for s in steps}
    assert rc == 0
    assert doc["culprit"]["commit"] == scenario.commits[REGRESSION]
    assert doc["culprit"]["subject"] == CHANGES[REGRESSION - 1].subject
    assert doc["commits"] == len(CHANGES)
    assert doc["hunted"].endswith("expected EPERM, got success"), doc["hunted"]
    # The unrelated failure was stepped on and skipped as a different failure, never blamed.
    different = [s for s in steps if UNRELATED <= scenario.commits.index(s["commit"]) < UNRELATED_FIXED]
    assert different, "the first midpoints are in the unrelated failure's range"
    for step in different:
        assert (step["verdict"], step["exit"]) == ("skip", 125), step
        assert step["reason"].startswith(f"different failure at {step['commit'][:12]}: ")
        assert step["reason"].endswith("expected EPERM, got EACCES"), step["reason"]
    for commit, step in by_commit.items():
        index = scenario.commits.index(commit)
        if index == BUILD_BREAK:
            assert (step["verdict"], step["exit"]) == ("skip", 125) and "build failed" in step["reason"]
        elif not UNRELATED <= index < UNRELATED_FIXED:
            assert step["verdict"] == ("bad" if index >= REGRESSION else "good"), (index, step)
    # One build dir for every commit, and every bisect step an incremental rebuild of it (no commit
    # touches a Kconfig file, so no step configures again), or, for a tree built before (a warm
    # run), the kernel kept from that build.
    built = [s for s in doc["steps"] if s.get("build_dir")]
    kept = cache_dir("kernels")
    assert len({s["build_dir"] for s in built if Path(s["build_dir"]).parent != kept}) <= 1
    print(f"steps served by kept kernels: {sum(Path(s['build_dir']).parent == kept for s in built)} of {len(built)}")
    for s in steps:
        first_line = Path(s["build_log"]).read_text().partition("\n")[0]
        assert first_line.startswith("# .config kept"), (s["commit"], first_line)
    for s in built:
        assert Path(s["results"]).is_file() and all(Path(c).is_file() for c in s["consoles"])
    _assert_tree_restored(scenario)
    assert "# first bad commit" in (work / "bisect.log").read_text()
