"""Triage on a real kernel: --repeat finds a flaky test, known failures (live, passing, expired),
--dump-on-failure keeps a crashed guest's memory, and gdb reads a running guest's kernel.

The test-only suites live in tests/data/suites (flaky_demo, crash_demo): the guest reaches them
through the lab's share, so they run on the lab's x86_64 7.3 kernel like any suite.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import arches
from lab.kernel import kconfig, record, source
from lab.paths import REPO_ROOT
from lab.run import prepare
from lab.vm import qemu

pytestmark = pytest.mark.kernel
SUITE_DIR = "tests/data/suites"


@pytest.fixture(scope="module")
def kernel() -> record.BuildManifest:
    return prepare.build_kernel(source.fetch("7.3"), arches.get("x86_64"), kconfig.DEFAULT_FRAGMENTS)


def klab(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


KNOWN = """\
entries:
  - test: flaky_demo.fails_every_run
    signature: "expected EPERM, got EACCES"
    reason: the demo test fails on purpose
    link: tests/data/suites/flaky_demo
    expires: 2999-12-31
  - test: flaky_demo.always_passes
    reason: an entry for a test that no longer fails
    link: tests/data/suites/flaky_demo
    expires: 2999-12-31
"""
EXPIRED = """\
  - test: landlock.no_such_test
    reason: a known failure nobody looked at again
    link: https://bugs.example/42
    expires: 2020-01-31
"""


def test_an_expired_known_failure_fails_the_run_before_any_boot(kernel: record.BuildManifest, tmp_path: Path) -> None:
    known = tmp_path / "known-failures.yaml"
    known.write_text(KNOWN + EXPIRED)
    out = tmp_path / "results"
    started = time.monotonic()
    run = klab(
        "test", "--arch", "x86_64", "--build", str(kernel.build_dir), "--suite-dir", SUITE_DIR,
        "--suite", "flaky_demo", "--known-failures", str(known), "--results", str(out),
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert "known failure expired on 2020-01-31: " in run.stderr and "(landlock.no_such_test)" in run.stderr, run.stderr
    assert "1 known failure(s) expired; nothing was run" in run.stderr
    assert not out.exists(), "nothing ran, so nothing is written"
    assert time.monotonic() - started < 30, "no guest was booted"


def test_repeat_and_known_failures(kernel: record.BuildManifest, tmp_path: Path) -> None:
    known = tmp_path / "known-failures.yaml"
    known.write_text(KNOWN)
    out = tmp_path / "results"
    run = klab(
        "test", "--arch", "x86_64", "--build", str(kernel.build_dir), "--suite-dir", SUITE_DIR,
        "--suite", "flaky_demo", "--repeat", "4", "--known-failures", str(known), "--results", str(out),
    )  # fmt: skip
    doc = json.loads((out / "results.json").read_text())
    got = {t["name"]: t for t in doc["tests"]}
    flaky = got["fails_every_second_run"]
    assert flaky["status"] == "FLAKY" and flaky["reason"].startswith("passed 2 of 4 runs"), flaky
    assert flaky["runs"] == ["PASS", "FAIL", "PASS", "FAIL"]
    assert got["fails_every_run"]["status"] == "XFAIL"
    assert got["fails_every_run"]["reason"].startswith("known failure: the demo test fails on purpose")
    assert got["always_passes"]["status"] == "XPASS" and "remove" in got["always_passes"]["reason"]
    # A flaky test, a known failure and a stale entry are reported, and none of them fails the run.
    assert run.returncode == 0, run.stdout + run.stderr
    assert doc["exit_status"] == 0 and not doc["meta"]["problems"]
    assert "run verdict: pass (exit 0)" in run.stdout
    first = run.stdout.splitlines()[0]
    assert first.startswith("0 passed, 0 failed, 0 skipped") and "1 flaky" in first and "1 known failures" in first
    junit = (out / "junit.xml").read_text()
    assert 'message="xfail: known failure' in junit and "XPASS: known failure did not happen" in junit


def test_dump_on_failure_keeps_the_crashed_guests_memory(kernel: record.BuildManifest, tmp_path: Path) -> None:
    out = tmp_path / "results"
    run = klab(
        "test", "--arch", "x86_64", "--build", str(kernel.build_dir), "--suite-dir", SUITE_DIR,
        "--suite", "crash_demo", "--mem", "256", "--dump-on-failure", "--results", str(out),
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    (cell,) = json.loads((out / "results.json").read_text())["cells"]
    assert [e["signature"] for e in cell["kernel_events"] if e["fatal"]] == ["kernel panic: sysrq triggered crash"]
    dump = Path(cell["memory_dump"])
    with open(dump, "rb") as f:
        assert f.read(4) == b"\x7fELF", "dump-guest-memory writes an ELF core"
    assert dump.stat().st_size > 128 << 20  # the guest's memory is in it
    assert f"DUMP {cell['id']}: {dump}" in run.stdout


@pytest.mark.skipif(shutil.which("gdb-multiarch") is None, reason="gdb-multiarch not installed (make setup)")
def test_gdb_reads_the_running_kernels_release(kernel: record.BuildManifest, tmp_path: Path) -> None:
    port = qemu.free_port()
    guest = subprocess.Popen(
        [sys.executable, "-m", "lab", "run", "-v", "--arch", "x86_64", "--build", str(kernel.build_dir),
         "--gdb", str(port), "--", "sleep", "120"],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen = []
    try:
        deadline = time.monotonic() + 300
        assert guest.stderr is not None
        for line in guest.stderr:  # -v: the console streams on stderr; wait for the guest's init
            seen.append(line)
            if "klab-init: init started" in line or time.monotonic() > deadline:
                break
        gdb = subprocess.run(
            ["gdb-multiarch", "-batch", "-nx", kernel.artifacts.vmlinux, "-ex", f"target remote 127.0.0.1:{port}",
             "-ex", "print init_uts_ns.name.release", "-ex", "detach"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        guest.kill()
        _, rest = guest.communicate(timeout=60)
        err = "".join(seen) + rest
    assert f'= "{kernel.kernelrelease}"' in gdb.stdout, gdb.stdout + gdb.stderr
    assert f"klab: gdb: gdb-multiarch {kernel.artifacts.vmlinux} -ex 'target remote 127.0.0.1:{port}'" in err


def test_the_same_failure_on_two_real_runs_has_one_signature(kernel: record.BuildManifest, tmp_path: Path) -> None:
    reasons, signatures = [], []
    for n in (1, 2):
        out = tmp_path / f"run{n}"
        run = klab(
            "test", "--arch", "x86_64", "--build", str(kernel.build_dir), "--suite-dir", SUITE_DIR,
            "--suite", "signature_demo", "--results", str(out),
        )  # fmt: skip
        assert run.returncode == 1, run.stdout + run.stderr
        (test,) = json.loads((out / "results.json").read_text())["tests"]
        assert test["status"] == "FAIL"
        reasons.append(test["reason"])
        signatures.append(test["signature"])
    assert reasons[0] != reasons[1], "the runs differ in pid, temp dir, inode, ID, port and time"
    assert signatures[0] == signatures[1], signatures
    assert signatures[0] == (
        "signature_demo.fails_with_run_specific_tokens: domain N of pid N in /tmp/T (inode N) port N at TIME"
    ), signatures[0]
