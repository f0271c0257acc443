"""`klab try` on a real kernel: a two-patch series against a git repository of Debian's linux-source-6.12.

The scenario repository (made once in the cache, reused while intact) is Debian's
tree as shipped, one commit, tag klab-try-base; it mirrors test_bisect.py's
builder and lives at the same depth under the cache as Debian's tree. The
series is an mbox written here (git format-patch's layout, diffs made with
difflib against the base), so the repository itself never changes:
  1/2  landlock: an off-by-one in landlock_merge_ruleset(): a domain gets 15 layers, not 16,
       so the 16th restrict_self() fails with E2BIG (the Landlock layer tests fail)
  2/2  landlock: a comment in fs.c (harmless)
`klab try` builds base and patched incrementally in one build dir (its checkout, a shared
clone kept between runs, sits under cache/try/<tree>/src/linux-6.12, so ccache serves the
lab's own 6.12 objects).
Run alone, under the build lock: `flock /tmp/klab-kernel-build.lock pytest -m kernel
tests/integration/test_try.py -s -p no:xdist` prints what `klab try` printed and how long each step took.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from lab import arches
from lab.kernel import kconfig, source
from lab.paths import REPO_ROOT, cache_dir
from lab.run import prepare
from tests.integration.scenario_repo import debian_612_as_git, git

pytestmark = pytest.mark.kernel

SCENARIO_VERSION = "1"
BASE_TAG = "klab-try-base"
# (subject, path, old, new): each `old` occurs once in the base file.
PATCHES = (
    (
        "landlock: Count domain layers from one",
        "security/landlock/ruleset.c",
        "\t\tif (parent->num_layers >= LANDLOCK_MAX_NUM_LAYERS)\n",
        "\t\tif (parent->num_layers >= LANDLOCK_MAX_NUM_LAYERS - 1)\n",
    ),
    (
        "landlock: Comment the filesystem hooks",
        "security/landlock/fs.c",
        "#include <linux/atomic.h>\n",
        "#include <linux/atomic.h> /* refcounts of objects */\n",
    ),
)
BREAKING = 1  # 1-based: the off-by-one
SELECTION = ("--suite", "landlock", "-k", "sixteen", "-k", "seventeenth", "-k", "layer_1")
BROKEN = "landlock.sixteen_layers_with_a_rule_grant_at_every_depth"


def _intact(repo: Path) -> bool:
    try:
        return git(repo, "config", "klab.try-scenario") == SCENARIO_VERSION and bool(git(repo, "rev-parse", BASE_TAG))
    except (RuntimeError, OSError):
        return False


def ensure_repo() -> Path:
    """Debian's 6.12 tree as one commit (a few minutes the first time: copying 1.7 GB and hashing it)."""
    repo = cache_dir("try-scenario", "src") / "linux-6.12"
    if repo.is_dir() and _intact(repo):
        return repo
    tmp = debian_612_as_git(repo, BASE_TAG)
    git(tmp, "config", "klab.try-scenario", SCENARIO_VERSION)
    tmp.rename(repo)
    return repo


def write_mbox(repo: Path, path: Path) -> None:
    """The series as `git format-patch --stdout` lays it out, each diff against the base."""
    messages = []
    for number, (subject, file, old, new) in enumerate(PATCHES, 1):
        text = git(repo, "show", f"{BASE_TAG}:{file}") + "\n"
        assert text.count(old) == 1, (file, old)
        diff = difflib.unified_diff(
            text.splitlines(keepends=True), text.replace(old, new).splitlines(keepends=True), f"a/{file}", f"b/{file}"
        )
        messages.append(
            f"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            f"From: Kernel Lab <lab@example.org>\nDate: Wed, 1 Jan 2025 00:00:0{number} +0000\n"
            f"Subject: [PATCH {number}/{len(PATCHES)}] {subject}\n\n{subject}.\n\n"
            f"Signed-off-by: Kernel Lab <lab@example.org>\n---\ndiff --git a/{file} b/{file}\n{''.join(diff)}-- \n"
            "2.39.5\n\n"
        )
    path.write_text("".join(messages))


@pytest.fixture(scope="module")
def repo() -> Path:
    if shutil.which("qemu-system-x86_64") is None or os.uname().machine != "x86_64":
        pytest.skip("needs an x86_64 host with qemu-system-x86_64 (the guest shares the host's /)")
    # The lab's own 6.12 kernel first: its ccache objects make the checkout's first build a cache-hit rebuild.
    prepare.build_kernel(source.fetch("6.12"), arches.get("x86_64"), kconfig.DEFAULT_FRAGMENTS)
    return ensure_repo()


def klab_try(repo: Path, mbox: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    argv = [sys.executable, "-m", "lab", "try", str(mbox), "--src", str(repo), "--base", BASE_TAG, "--arch", "x86_64"]
    start = time.monotonic()
    run = subprocess.run(
        [*argv, *SELECTION, "--results", str(out), *extra], capture_output=True, text=True, timeout=3600, cwd=REPO_ROOT
    )
    return run, time.monotonic() - start


def timings(doc: dict[str, Any], wall: float) -> str:
    steps = ", ".join(
        f"{s['label']}: build {s['durations'].get('build', 0):.0f}s, run {s['durations'].get('test', 0):.0f}s"
        for s in doc["steps"]
    )
    return f"wall {wall:.0f}s ({steps})"


def untouched(repo: Path, head: str) -> None:
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "symbolic-ref", "--short", "HEAD") == "main"
    assert git(repo, "status", "--porcelain") == ""
    assert len(git(repo, "worktree", "list").splitlines()) == 1
    assert git(repo, "branch", "--format=%(refname:short)") == "main"


def incremental_after_first(steps: list[dict[str, Any]], built_before: bool) -> bool:
    """Check that every step built in try's one build dir, after an earlier one, kept the .config.

    A step whose tree some run built before (bisect's scenario shares the base) is the kept
    kernel (lab.kernel.kept), built elsewhere: it leaves the build dir as it was. The first
    build in the dir may configure (the fragments changed since its last run); the ones after
    it are incremental. Returns whether any step was built in the dir.
    """
    store = cache_dir("kernels")
    for step in steps:
        (cell,) = json.loads((Path(step["results"]) / "results.json").read_text())["cells"]
        if Path(cell["kernel"]).is_relative_to(store):
            continue
        log = (Path(step["results"]) / "build.log").read_text()
        assert not built_before or log.startswith("# .config kept"), (step["label"], log[:300])
        built_before = True
    return built_before


def test_try_names_the_new_failure_and_the_patch_that_broke_it(repo: Path, tmp_path: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    mbox = tmp_path / "series.mbox"
    write_mbox(repo, mbox)

    run, wall = klab_try(repo, mbox, tmp_path / "try")
    doc = json.loads((tmp_path / "try" / "try.json").read_text())
    print(f"\n$ klab try (base, tip): exit {run.returncode}, {timings(doc, wall)}\n{run.stdout}")
    assert run.returncode == 1, run.stdout + run.stderr[-3000:]
    assert [s["label"] for s in doc["steps"]] == ["base", "2/2"]
    assert doc["steps"][0]["verdict"] == "pass"
    failures = [c for c in doc["changes"] if c["kind"] == "new failures"]
    assert BROKEN in [c["what"] for c in failures]
    broken = next(c for c in failures if c["what"] == BROKEN)
    assert "expected success, got E2BIG" in broken["detail"] and f"[{BROKEN}:" in broken["detail"]
    assert f"new failures: {BROKEN}: PASS -> FAIL" in run.stdout
    built_here = incremental_after_first(doc["steps"], built_before=False)
    untouched(repo, head)

    each, wall = klab_try(repo, mbox, tmp_path / "each", "--each")
    doc = json.loads((tmp_path / "each" / "try.json").read_text())
    print(f"\n$ klab try --each: exit {each.returncode}, {timings(doc, wall)}\n{each.stdout}")
    assert each.returncode == 1, each.stdout + each.stderr[-3000:]
    assert [s["label"] for s in doc["steps"]] == ["base", "1/2", "2/2"]
    assert doc["breaking"] == [doc["steps"][BREAKING]["commit"]]
    per_step = {p["step"]: p["changes"] for p in doc["per_step"]}
    assert BROKEN in [c["what"] for c in per_step["1/2"] if c["kind"] == "new failures"]
    assert per_step["2/2"] == []
    assert f"first breaking patch: 1/2 {doc['breaking'][0][:12]} '{PATCHES[0][0]}'" in each.stdout
    incremental_after_first(doc["steps"], built_before=built_here)
    untouched(repo, head)
    (kept,) = cache_dir("try").glob("*/src/linux-6.12")  # the lab's checkout of the tree, kept for the next run
    assert git(kept, "status", "--porcelain") == "" and git(kept, "rev-parse", "HEAD") == doc["steps"][-1]["commit"]
