"""`klab test-kernel` and `klab test` for real: the lab.yaml matrix on x86_64, and the files they write.

Every in-guest test of every cell runs in test_guest_suites.py; here the
command itself is under test (its reports, its live progress, its totals),
so each cell runs a handful of tests selected with -k: a boot each, seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from junitparser import JUnitXml

from lab.kernel import record
from lab.paths import REPO_ROOT
from lab.results import ktap
from lab.run import catalog

pytestmark = pytest.mark.kernel
PATTERNS = ("canary_counts_file_open", "seccomp.reject_", "landlock.abi_version_query")
MATRIX_RUN = REPO_ROOT / "results" / "pytest" / "test-kernel"  # kept: report/compare/reproduce tests read it


def klab(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


def planned(*chosen: str) -> list[str]:
    names = [f"{suite}.{name}" for suite, name in catalog.planned_tests(chosen)]
    return [n for n in names if any(p in n for p in PATTERNS)]


def test_test_kernel_matrix_writes_every_report() -> None:
    out = MATRIX_RUN
    selection = [arg for p in PATTERNS for arg in ("-k", p)]
    run = klab("test-kernel", "--arches", "x86_64", *selection, "-n", "2", "--results", str(out), "--overwrite")
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    lines = run.stdout.splitlines()
    assert lines[0].endswith(" in 4 cells") and " 0 failed" in lines[0], lines[0]  # the totals line first
    assert "x86_64.6.12.default" in run.stdout and "x86_64.7.3.default" in run.stdout  # then the table
    assert "klab: x86_64.7.3.default: done" in run.stderr  # plain progress lines off a terminal

    doc = json.loads((out / "results.json").read_text())
    cells = {c["id"]: c for c in doc["cells"]}
    assert sorted(cells) == ["x86_64.6.12.default", "x86_64.6.12.nobpf", "x86_64.7.3.default", "x86_64.7.3.nobpf"]
    everything = planned("landlock", "landlock_ptrace", "bpf_lsm", "seccomp")
    for cell_id, cell in cells.items():
        assert cell["verdict"] == "pass", cell_id
        assert cell["kernel_release"].startswith(cell_id.split(".")[1] + "."), cell
        assert cell["accel"] in ("kvm", "tcg") and cell["accel_reason"]
        assert cell["qemu_version"].startswith("QEMU emulator version")
        assert len(cell["config_sha256"]) == 64 and len(cell["kernel_sha256"]) == 64
        assert cell["boot"] == cell_id.split(".")[-1] and "console=ttyS0" in cell["cmdline"]
        assert cell["durations"]["boot"] > 0 and cell["durations"]["total"] >= cell["durations"]["boot"]
        console = (out / f"console-{cell_id}.log").read_text()
        assert "klab-init: init started" in console and "KTAP version 1" in console
        tests = [t for t in doc["tests"] if t["cell"] == cell_id]
        names = sorted(f"{t['suite']}.{t['name']}" for t in tests)
        expected = everything if cell_id.endswith("default") else planned("bpf_lsm")
        assert names == sorted(expected), cell_id
        assert all(t["status"] in ("PASS", "SKIP", "XFAIL") for t in tests)
        # known-failures.yaml: the canary fails in the nobpf boot, as it must.
        canary = next(t for t in tests if t["name"] == "canary_counts_file_open")
        assert canary["status"] == ("XFAIL" if cell_id.endswith("nobpf") else "PASS"), canary
    x86 = klab("build", "--src", "debian:7.3", "--arch", "x86_64")
    built = record.load(Path(x86.stdout.strip().splitlines()[-1]))
    assert cells["x86_64.7.3.default"]["config_sha256"] == built.config_sha256
    assert cells["x86_64.7.3.default"]["describe"] == built.source.describe
    assert doc["meta"]["known_failures"].endswith("known-failures.yaml")

    junit = JUnitXml.fromfile(str(out / "junit.xml"))
    cases = [(suite.name, case.classname, case.name) for suite in junit for case in suite]
    assert len([c for c in cases if not c[1].endswith(".cell")]) == len(doc["tests"])
    classnames = {c[1] for c in cases}
    assert "x86_64.7.3.default.landlock" in classnames and "x86_64.6.12.nobpf.bpf_lsm" in classnames
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
    wanted = {f"{s}.{n}" for s, n in catalog.planned_tests(("landlock", "seccomp")) if "ruleset" in n or "tsync" in n}
    assert names == wanted and wanted


def test_invalid_matrix_is_exit_2_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "lab.yaml"
    bad.write_text("kernels:\n  - name: x\n    source: debian:6.12\narches: [x86_64]\nsuits: [landlock]\n")
    run = klab("test", "--matrix", str(bad))
    assert run.returncode == 2
    assert f"{bad}:5: unknown key 'suits' in the matrix" in run.stderr
