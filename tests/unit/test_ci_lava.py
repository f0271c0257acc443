"""lab.cli.ci_cmds (CI matrix, cell merge), lab.lava (job definition, device, readback), without LAVA or QEMU.

The LAVA results tests replay tests/data/lava/lava-run-canary.log, recorded
from a real lava-run of a job `klab lava job` wrote (see its README).
"""

from __future__ import annotations

import argparse
import json
import shlex
import tarfile
from pathlib import Path

import pytest
import yaml

from lab import arches
from lab.cli import ci_cmds
from lab.errors import UserError
from lab.lava import definition, readback
from lab.paths import REPO_ROOT
from lab.results import model, store
from lab.run import matrix

DATA = REPO_ROOT / "tests" / "data" / "lava"
X86 = arches.get("x86_64")


def _request(**extra: object) -> definition.JobRequest:
    base: dict[str, object] = {
        "arch": X86,
        "kernel": Path("/k/bzImage"),
        "image": Path("/i/root.ext4"),
        "suites": ("seccomp",),
        "patterns": ("seccomp.reject_",),
        "kernel_release": "6.12.117",
    }
    base.update(extra)
    return definition.JobRequest(**base)  # type: ignore[arg-type]


def _klab(argv: list[str]) -> int:
    """The ci/lava commands through their own argparse wiring (as lab.cli adds them)."""
    p = argparse.ArgumentParser(prog="klab")
    ci_cmds.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return int(args.func(args))


# --- CI -------------------------------------------------------------------------------------------


def test_ci_cells_are_kernel_by_arch_with_their_boots() -> None:
    cells = ci_cmds.ci_cells(matrix.load(REPO_ROOT / "lab.yaml"))
    assert [c["name"] for c in cells] == ["x86_64.6.12", "arm64.6.12", "x86_64.7.3", "arm64.7.3"]
    assert cells[0] == {
        "name": "x86_64.6.12",
        "kernel": "6.12",
        "source": "debian:6.12",
        "arch": "x86_64",
        "cells": "x86_64.6.12.default x86_64.6.12.nobpf",
    }


def test_github_matrix_is_one_line_of_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert _klab(["ci", "matrix", "--matrix", str(REPO_ROOT / "lab.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert [c["arch"] for c in json.loads(out)["include"]] == ["x86_64", "arm64", "x86_64", "arm64"]


def test_gitlab_child_extends_the_templates_and_merges_every_cell() -> None:
    doc = yaml.safe_load(ci_cmds.gitlab_child(matrix.load(REPO_ROOT / "lab.yaml")))
    assert doc["include"] == [{"local": "ci/gitlab-ci.yml"}]
    assert doc["stages"] == list(ci_cmds.GITLAB_STAGES)
    cells = [name for name in doc if name.startswith("cell ")]
    assert cells == ["cell x86_64.6.12", "cell arm64.6.12", "cell x86_64.7.3", "cell arm64.7.3"]
    assert doc["cell arm64.6.12"]["variables"] == {
        "KLAB_CELL": "arm64.6.12",
        "KLAB_KERNEL": "6.12",
        "KLAB_ARCH": "arm64",
    }
    assert [n["job"] for n in doc["merge"]["needs"]] == cells


def _results_file(path: Path, *cells: model.CellResult) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    store.write(path, list(cells), store.RunMeta())
    return path


def test_merge_joins_cells_and_reports_missing_ones_as_lab_errors(tmp_path: Path) -> None:
    ok = model.CellResult("x86_64.6.12.default", "x86_64", tests=[model.TestResult("seccomp", "a", model.Status.PASS)])
    bad = model.CellResult("arm64.6.12.default", "arm64", tests=[model.TestResult("seccomp", "a", model.Status.FAIL)])
    files = [_results_file(tmp_path / "a" / "results.json", ok), _results_file(tmp_path / "b" / "results.json", bad)]
    cells = ci_cmds.merge_results(
        files, tmp_path / "merged", [("x86_64.6.12.default", "x86_64"), ("x86_64.6.12.nobpf", "x86_64")]
    )
    assert [c.id for c in cells] == ["x86_64.6.12.default", "arm64.6.12.default", "x86_64.6.12.nobpf"]
    assert cells[2].verdict() is model.CellVerdict.LAB_ERROR
    assert model.exit_status(cells) == 1
    for name in ("results.json", "junit.xml", "summary.md", "summary.txt"):
        assert (tmp_path / "merged" / name).is_file()
    assert len(store.load_cells(tmp_path / "merged" / "results.json")) == 3


def test_merge_of_nothing_with_a_matrix_is_all_lab_errors(tmp_path: Path) -> None:
    status = _klab(["ci", "merge", "--matrix", str(REPO_ROOT / "lab.yaml"), "--out", str(tmp_path)])
    assert status == 128
    assert {c.error for c in store.load_cells(tmp_path / "results.json")} == {
        "no results.json came back from its CI job"
    }


def test_ci_run_rejects_an_unknown_kernel() -> None:
    with pytest.raises(UserError, match="no kernel named '5.4'; choose one of: 6.12, 7.3"):
        _klab(["ci", "run", "--kernel", "5.4", "--arch", "x86_64", "--results", "/nonexistent"])


def test_a_ci_cell_applies_the_matrixs_known_failures(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A CI cell judges as `klab test-kernel` does: without lab.yaml's known failures the nobpf canary fails CI."""
    seen: dict[str, object] = {}

    def specs(mtx: object, **kw: object) -> list[object]:
        seen["known"] = kw["known"]
        return []

    def run(specs: list[object], results_dir: Path, jobs: int, progress: object, known_file: Path | None) -> int:
        seen["file"] = known_file
        return 0

    monkeypatch.setattr("lab.cli.ci_cmds.prepare.matrix_specs", specs)
    monkeypatch.setattr("lab.cli.ci_cmds.run_and_report", run)
    assert _klab(["ci", "run", "--kernel", "6.12", "--arch", "x86_64", "--results", str(tmp_path)]) == 0
    assert seen["file"] == REPO_ROOT / "known-failures.yaml"
    assert any(e.test == "bpf_lsm.canary_counts_file_open" for e in seen["known"])  # type: ignore[attr-defined]


# --- LAVA job and device --------------------------------------------------------------------------


def test_job_deploys_kernel_rootfs_and_payload_with_lavas_overlay() -> None:
    urls = {"kernel": "file:///a/bzImage", "rootfs": "file:///a/rootfs.ext4", "payload": "file:///a/payload.tar"}
    job = definition.job_definition(_request(append="lsm=bpf"), urls, "x86_64.6.12.lava")
    assert job["device_type"] == "qemu" and job["context"] == {"arch": "x86_64"}
    deploy, boot, test = (a[k] for a, k in zip(job["actions"], ("deploy", "boot", "test"), strict=True))
    assert deploy["to"] == "tmpfs"
    images = deploy["images"]
    assert list(images) == ["kernel", "rootfs", "payload"]  # PCI order: the rootfs is /dev/vda
    append = images["kernel"]["image_arg"].split('"')[1].split()
    assert append[0] == "console=ttyS0" and "root=/dev/vda" in append and append[-1] == "lsm=bpf"
    assert "panic=-1" in append and "init=/sbin/klab-lava-init" in append
    assert f"init={definition.INIT_IN_IMAGE}" in images["kernel"]["image_arg"]
    assert images["payload"]["format"] == "tar" and images["payload"]["overlays"] == {"lava": True}
    assert f"serial={definition.PAYLOAD_SERIAL}" in images["payload"]["image_arg"]
    assert boot == {"method": "qemu", "media": "tmpfs", "timeout": {"minutes": 5}, "prompts": [definition.PROMPT]}
    steps = test["definitions"][0]["repository"]["run"]["steps"]
    assert steps[0].startswith(
        "python3 -u /klab/suites/run.py --json /tmp/klab.json --suite seccomp -k seccomp.reject_"
    )
    assert steps[1] == "python3 /klab/lava-cases /tmp/klab.json"
    assert job["metadata"]["klab.cell"] == "x86_64.6.12.lava"


def test_guest_steps_quote_what_the_shell_would_split() -> None:
    steps = definition.guest_steps(_request(patterns=("a b", "it's")))
    assert shlex.split(steps[0].removesuffix(" || true"))[-4:] == ["-k", "a b", "-k", "it's"]


def test_device_dict_offers_only_this_arch_and_its_qemu() -> None:
    device = definition.device_dict(arches.get("arm64"))
    assert device["available_architectures"] == ["arm64"]
    qemu = device["actions"]["boot"]["methods"]["qemu"]["parameters"]
    assert qemu["command"] == "qemu-system-aarch64"
    assert "virt,gic-version=3,accel=tcg" in qemu["options"]
    assert device["constants"]["failure_retry"] == 1
    assert (
        "-enable-kvm" not in qemu["options"]
        and "q35,accel=kvm"
        in definition.device_dict(X86, kvm=True)["actions"]["boot"]["methods"]["qemu"]["parameters"]["options"]
    )


def test_payload_holds_the_suites_and_the_reporter_root_owned(tmp_path: Path) -> None:
    definition.write_payload(tmp_path / "payload.tar")
    with tarfile.open(tmp_path / "payload.tar") as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert "klab/suites/run.py" in members and "klab/lava-cases" in members
    assert not [n for n in members if "__pycache__" in n or n.endswith(".pyc")]
    assert {(m.uid, m.gid) for m in members.values()} == {(0, 0)}
    assert (tmp_path / "payload.tar").stat().st_size % 512 == 0  # readable from a block device


# --- LAVA results back ----------------------------------------------------------------------------


def test_recorded_lava_run_gives_per_test_statuses_and_reasons() -> None:
    run = readback.read_lava_results(DATA / "lava-run-canary.log")
    cell = readback.to_cell(run, "x86_64.6.12.lava", "x86_64", [])
    got = {t.full_name: (t.status, t.duration) for t in cell.tests}
    assert got == {
        "seccomp.reject_empty": (model.Status.PASS, 0.04),
        "seccomp.reject_byte_load": (model.Status.PASS, 0.028),
        "bpf_lsm.canary_counts_file_open": (model.Status.FAIL, 0.012),
    }
    canary = cell.tests[2]
    assert canary.reason.startswith("bpf is not in the active LSM list")  # from the guest's KTAP on the console
    assert cell.kernel_release == "6.12.117" and cell.accel == "tcg" and not cell.error and not cell.kernel_events
    assert cell.verdict() is model.CellVerdict.FAIL


def test_planned_tests_that_never_reported_are_missing() -> None:
    run = readback.read_lava_results(DATA / "lava-run-canary.log")
    planned = [("seccomp", "reject_empty"), ("seccomp", "never_ran")]
    cell = readback.to_cell(run, "c", "x86_64", planned)
    missing = [t for t in cell.tests if t.status is model.Status.MISS]
    assert [(t.name, t.reason) for t in missing] == [("never_ran", "never reported")]


def test_a_failed_lava_job_is_a_lab_error(tmp_path: Path) -> None:
    log = tmp_path / "lava.log"
    log.write_text(
        '{"dt": "2026-11-26T01:36:36.97", "lvl": "results", "msg": {"case": "auto-login-action", '
        '"definition": "lava", "result": "fail"}}\n'
        '{"dt": "2026-11-26T01:36:38.27", "lvl": "results", "msg": {"case": "job", "definition": "lava", '
        '"error_msg": "auto-login-action timed out after 300 seconds", "error_type": "Job", "result": "fail"}}\n'
    )
    cell = readback.to_cell(readback.read_lava_results(tmp_path), "c", "x86_64", [("seccomp", "reject_empty")])
    assert cell.error == "LAVA job failed (Job error): auto-login-action timed out after 300 seconds"
    assert cell.verdict() is model.CellVerdict.LAB_ERROR
    assert [t.status for t in cell.tests] == [model.Status.MISS]


def test_a_server_results_export_is_read_too(tmp_path: Path) -> None:
    export_file = tmp_path / "results.yaml"
    export_file.write_text(
        yaml.safe_dump(
            [
                {
                    "suite": "0_klab",
                    "name": "landlock.abi_version",
                    "result": "pass",
                    "measurement": "0.5",
                    "unit": "seconds",
                },
                {"suite": "0_klab", "name": "landlock.scoped_signal", "result": "skip"},
                {"suite": "0_klab", "name": "landlock.broken", "result": "unknown"},
                {"suite": "lava", "name": "job", "result": "pass"},
            ]
        )
    )
    cell = readback.to_cell(readback.read_lava_results(export_file), "c", "x86_64", [])
    assert [(t.name, t.status) for t in cell.tests] == [
        ("abi_version", model.Status.PASS),
        ("scoped_signal", model.Status.SKIP),
        ("broken", model.Status.ERROR),
    ]
    assert cell.tests[1].reason == "LAVA: skip"


def test_lava_results_command_uses_the_jobs_metadata(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / readback.LOG_NAME).write_text((DATA / "lava-run-canary.log").read_text())
    (run_dir / "job.yaml").write_text((DATA / "job-canary.yaml").read_text())
    assert _klab(["lava", "results", "--lava-results", str(run_dir), "--out", str(tmp_path / "out")]) == 1
    (cell,) = store.load_cells(tmp_path / "out" / "results.json")
    assert cell.id == "x86_64.6.12.lava" and cell.arch == "x86_64"
    assert len(cell.tests) == 3  # the job's -k patterns planned exactly these three
    assert (tmp_path / "out" / "junit.xml").is_file() and (tmp_path / "out" / "console-x86_64.6.12.lava.log").is_file()


def test_unreadable_lava_results_are_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "x.log").write_text("not a log\n")
    with pytest.raises(UserError, match="no LAVA log records"):
        readback.read_lava_results(tmp_path / "x.log")
    with pytest.raises(UserError, match="cannot read LAVA results"):
        readback.read_lava_results(tmp_path / "missing.log")
