"""`klab reproduce` for real: a `klab test` run on the x86_64 7.3 build, then one of its tests again from results.json.

Nothing is built: the 7.3 kernel must already be in the cache (`klab build --src
debian:7.3 --arch x86_64`, as `make test-kernel` does).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab.kernel.record import BuildManifest
from lab.paths import REPO_ROOT
from lab.run import reproduce

pytestmark = pytest.mark.kernel

TEST = "landlock.abi_version_query"


def klab(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


def build_73() -> BuildManifest:
    if shutil.which("qemu-system-x86_64") is None or os.uname().machine != "x86_64":
        pytest.skip("needs an x86_64 host with qemu-system-x86_64 (the guest shares the host's /)")
    found = [d for d in reproduce.cached_builds() if d.arch == "x86_64" and d.short_release == "7.3"]
    found = [d for d in found if d.image.is_file() and d.build_dir.parent.name == "build"]
    if not found:
        pytest.skip("needs the lab's x86_64 7.3 build: klab build --src debian:7.3 --arch x86_64")
    return max(found, key=lambda d: d.finished)


def results(path: Path) -> dict[str, Any]:
    doc = json.loads((path / "results.json").read_text())
    assert isinstance(doc, dict)
    return doc


def test_reproduce_reruns_one_test_on_the_same_kernel(tmp_path: Path) -> None:
    build = build_73()
    first = tmp_path / "first"
    argv = ["test", "--arch", "x86_64", "--build", str(build.build_dir), "--suite", "landlock"]
    run = klab(*argv, "-k", "abi", "-k", "errata", "--append", "printk.time=1", "--results", str(first))
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    before = results(first)
    [cell] = before["cells"]
    assert sorted(f"{t['suite']}.{t['name']}" for t in before["tests"]) == [
        "landlock.abi_version_query", "landlock.errata_query", "landlock.ruleset_attr_fields_by_abi",
    ]  # fmt: skip

    again = tmp_path / "again"
    rerun = klab("reproduce", str(first), TEST, "--results", str(again))
    print(rerun.stderr[-2000:])
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr[-3000:]
    after = results(again)
    [cell2] = after["cells"]
    assert cell2["id"] == cell["id"]
    assert cell2["kernel_sha256"] == cell["kernel_sha256"] and cell2["kernel"] == cell["kernel"]
    assert cell2["kernel_release"] == cell["kernel_release"] and cell2["kernel_release"].startswith("7.3.")
    assert (cell2["append"], cell2["accel"], cell2["image"]) == (cell["append"], cell["accel"], cell["image"])
    assert "printk.time=1" in cell2["cmdline"].split()
    assert cell2["patterns"] == [TEST]
    [test] = after["tests"]
    [was] = [t for t in before["tests"] if f"{t['suite']}.{t['name']}" == TEST]
    assert (f"{test['suite']}.{test['name']}", test["status"]) == (TEST, was["status"]) == (TEST, "PASS")
    assert f"{cell['id']}: kernel {cell['kernel']}" in rerun.stderr
