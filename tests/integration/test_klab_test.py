"""`klab test-kernel` and `klab test` for real: the lab.yaml matrix on both arches, and the files they write."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import JUnitXml

from lab import ktap, manifest, suites
from lab.paths import REPO_ROOT

pytestmark = pytest.mark.kernel


def klab(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


def planned(*chosen: str) -> list[str]:
    return [f"{suite}.{name}" for suite, name in suites.planned_tests(chosen)]


def test_test_kernel_matrix_writes_every_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = klab("test-kernel", "-n", "2", "--results", str(out))
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "x86_64.6.12.default" in run.stdout and "arm64.6.12.default" in run.stdout  # the summary table

    doc = json.loads((out / "results.json").read_text())
    cells = {c["id"]: c for c in doc["cells"]}
    assert sorted(cells) == ["arm64.6.12.default", "arm64.6.12.nobpf", "x86_64.6.12.default", "x86_64.6.12.nobpf"]
    everything = planned("landlock", "landlock_ptrace", "bpf_lsm", "seccomp")
    for cell_id, cell in cells.items():
        assert cell["verdict"] == "pass", cell_id
        assert cell["kernel_release"].startswith("6.12."), cell
        assert cell["accel"] in ("kvm", "tcg") and cell["accel_reason"]
        assert cell["qemu_version"].startswith("QEMU emulator version")
        assert len(cell["config_sha256"]) == 64
        assert cell["durations"]["boot"] > 0 and cell["durations"]["total"] >= cell["durations"]["boot"]
        console = (out / f"console-{cell_id}.log").read_text()
        assert "klab-init: init started" in console and "KTAP version 1" in console
        tests = [t for t in doc["tests"] if t["cell"] == cell_id]
        names = sorted(f"{t['suite']}.{t['name']}" for t in tests)
        expected = everything if cell_id.endswith("default") else planned("bpf_lsm")
        assert names == sorted(expected), cell_id
        assert all(t["status"] in ("PASS", "SKIP") for t in tests)
        # Durations come from the guest's clock; under TCG it may fall back to jiffies, so a fast test can read 0.
        assert all(t["duration"] >= 0 for t in tests) and sum(t["duration"] for t in tests) > 0
    x86_build = manifest.read(Path(klab("build", "--arch", "x86_64").stdout.strip()) / "build.json")
    assert x86_build is not None
    assert cells["x86_64.6.12.default"]["config_sha256"] == x86_build["config_sha256"]
    assert cells["x86_64.6.12.default"]["describe"] == x86_build["source"]["describe"]
    arm = cells["arm64.6.12.default"]
    assert arm["image"].startswith("/") and "sha256:" in arm["image"]

    junit = JUnitXml.fromfile(str(out / "junit.xml"))
    cases = [(suite.name, case.classname, case.name) for suite in junit for case in suite]
    assert len([c for c in cases if not c[1].endswith(".cell")]) == len(doc["tests"])
    classnames = {c[1] for c in cases}
    assert "x86_64.6.12.default.landlock" in classnames and "arm64.6.12.nobpf.bpf_lsm" in classnames
    assert junit.failures == 0 and junit.errors == 0

    tree = ktap.parse((out / "results.ktap").read_text())
    assert len(tree.subtests) == 4 and tree.ok()
    assert (out / "summary.md").read_text().count("|") > 10


def test_single_kernel_split_across_guests_with_a_filter(tmp_path: Path) -> None:
    build = klab("build", "--arch", "x86_64")
    assert build.returncode == 0, build.stderr[-2000:]
    bdir = build.stdout.strip().splitlines()[-1]
    out = tmp_path / "r"
    run = klab(
        "test", "--arch", "x86_64", "--build", bdir, "--suite", "landlock", "--suite", "seccomp",
        "-k", "ruleset", "-k", "tsync", "-n", "2", "--results", str(out),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
    doc = json.loads((out / "results.json").read_text())
    assert sorted(c["id"] for c in doc["cells"]) == ["x86_64.6.12.default-landlock", "x86_64.6.12.default-seccomp"]
    names = {f"{t['suite']}.{t['name']}" for t in doc["tests"]}
    wanted = {n for n in planned("landlock", "seccomp") if "ruleset" in n or "tsync" in n}
    assert names == wanted and wanted


def test_invalid_matrix_is_exit_2_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "lab.yaml"
    bad.write_text("kernels:\n  - name: x\n    source: debian:6.12\narches: [x86_64]\nsuits: [landlock]\n")
    run = klab("test", "--matrix", str(bad))
    assert run.returncode == 2
    assert f"{bad}:5: unknown key 'suits' in the matrix" in run.stderr
