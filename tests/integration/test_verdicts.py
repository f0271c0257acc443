"""Exit codes CI and `git bisect run` can act on, on a real 6.12 kernel: a user's mistake is exit 2 before
any boot, a QEMU killed from outside is a lab fault (128, no test verdicts), Ctrl-C reports what finished (130).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import arches
from lab.kernel import kconfig, record, source
from lab.paths import REPO_ROOT
from lab.run import prepare
from tests.integration import leftovers

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def kernel() -> record.BuildManifest:
    return prepare.build_kernel(source.fetch("6.12"), arches.get("x86_64"), kconfig.DEFAULT_FRAGMENTS)


def klab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=600, cwd=REPO_ROOT
    )


def _truncated(kernel: record.BuildManifest, tmp_path: Path) -> str:
    """The real bzImage cut to 1 MiB: its magic is intact, its payload is not."""
    path = tmp_path / "bzImage"
    path.write_bytes(kernel.image.read_bytes()[: 1 << 20])
    return str(path)


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        (["--rootfs", "/etc/passwd"], "--rootfs /etc/passwd is not an ext4 image (no superblock magic 0xEF53"),
        (["--kernel", "TRUNCATED"], "bzImage: its header promises"),
        (["--kernel", "/etc/passwd"], "/etc/passwd is not a kernel image for x86_64 (no kernel header found in it)"),
        (["--suite", "landlock", "-k", "zzzz"], "no test matches -k zzzz in suites landlock, seccomp (see them all"),
    ],
)
def test_bad_input_is_exit_2_before_any_boot(
    kernel: record.BuildManifest, tmp_path: Path, extra: list[str], error: str
) -> None:
    out = tmp_path / "results"
    choice = ["--build", str(kernel.build_dir)] if "--kernel" not in extra else []
    extra = [_truncated(kernel, tmp_path) if a == "TRUNCATED" else a for a in extra]
    started = time.monotonic()
    run = klab("test", "--arch", "x86_64", *choice, *extra, "--suite", "seccomp", "--results", str(out))
    assert run.returncode == 2, run.stdout + run.stderr
    (line,) = run.stderr.splitlines()
    assert line.startswith("klab: error: ") and error in line, line
    assert not out.exists() and time.monotonic() - started < 60, "nothing booted, nothing written"


@pytest.mark.parametrize(
    ("earlier", "error"),
    [
        ("results.json", "holds an earlier run; pass --overwrite to replace it, or another --results"),
        ("notes.txt", "is not empty and holds no klab results; give a new or empty directory"),
    ],
)
def test_a_results_dir_in_use_is_refused_before_any_boot(
    kernel: record.BuildManifest, tmp_path: Path, earlier: str, error: str
) -> None:
    out = tmp_path / "results"
    out.mkdir()
    (out / earlier).write_text("an earlier run's\n")
    started = time.monotonic()
    run = klab(
        "test", "--arch", "x86_64", "--build", str(kernel.build_dir), "--suite", "seccomp", "--results", str(out)
    )
    assert run.returncode == 2, run.stdout + run.stderr
    (line,) = run.stderr.splitlines()
    assert line == f"klab: error: --results {out} {error}", line
    assert [p.name for p in out.iterdir()] == [earlier] and (out / earlier).read_text() == "an earlier run's\n"
    assert time.monotonic() - started < 60, "nothing booted"


def test_a_negative_guest_timeout_is_exit_2(kernel: record.BuildManifest) -> None:
    run = klab("run", "--arch", "x86_64", "--build", str(kernel.build_dir), "--timeout", "-5", "--", "true")
    assert run.returncode == 2
    assert "argument --timeout: '-5' is not a number of seconds above 0" in run.stderr.splitlines()[-1]


def _children(pid: int) -> list[int]:
    """Every descendant of `pid`, from /proc (QEMU runs under klab's pexpect child)."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = [(task / "children").read_text() for task in Path(f"/proc/{parent}/task").iterdir()]
        except FileNotFoundError:  # reaped meanwhile: it has no children any more
            continue
        for child in " ".join(tasks).split():
            found.append(int(child))
            todo.append(int(child))
    return found


def _ctrl_c_reaches_it() -> None:
    """A command started in the background (`make test &`, a CI step) inherits SIGINT ignored; klab keeps that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(kernel: record.BuildManifest, out: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    """`klab test` of the landlock suite, once its guest's suites run: (klab, QEMU's pid)."""
    klab_run = subprocess.Popen(
        [sys.executable, "-m", "lab", "test", "--arch", "x86_64", "--build", str(kernel.build_dir),
         "--suite", "landlock", "--results", str(out)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=_ctrl_c_reaches_it,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        consoles = list(out.rglob("console.log")) if out.exists() else []
        if consoles and "ok 5 " in consoles[0].read_text(errors="replace"):
            break
        time.sleep(1)
    else:
        klab_run.kill()
        pytest.fail("the landlock suite never got to its fifth test")
    qemu = [p for p in _children(klab_run.pid) if "qemu-system" in Path(f"/proc/{p}/cmdline").read_text()]
    assert len(qemu) == 1, qemu
    return klab_run, qemu[0]


def test_a_qemu_killed_from_outside_is_a_lab_fault_not_a_kernel_failure(
    kernel: record.BuildManifest, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    _, env = leftovers.tagged_env()
    klab_run, qemu = _start(kernel, out, env)
    os.kill(qemu, signal.SIGKILL)  # what the OOM killer or a cancelling CI runner does
    stdout, stderr = klab_run.communicate(timeout=300)
    assert klab_run.returncode == 128, stdout + stderr
    (cell,) = json.loads((out / "results.json").read_text())["cells"]
    assert cell["verdict"] == "lab-error" and "was killed by signal 9 (SIGKILL)" in cell["error"], cell
    assert not cell["kernel_events"], "QEMU's death is not a kernel event"
    doc = json.loads((out / "results.json").read_text())
    assert doc["exit_status"] == 128 and "run verdict: lab error (no verdict on the kernel) (exit 128)" in stdout
    assert not [t for t in doc["tests"] if t["status"] in ("FAIL", "ERROR")], "no test verdicts from a lab fault"


def test_ctrl_c_reports_what_finished_and_exits_130(kernel: record.BuildManifest, tmp_path: Path) -> None:
    out = tmp_path / "results"
    tag, env = leftovers.tagged_env()
    klab_run, _ = _start(kernel, out, env)
    klab_run.send_signal(signal.SIGINT)
    stdout, stderr = klab_run.communicate(timeout=300)
    assert klab_run.returncode == 130, stdout + stderr
    doc = json.loads((out / "results.json").read_text())
    assert doc["meta"]["interrupted"] is True and doc["exit_status"] == 130, doc["meta"]
    passed = [t for t in doc["tests"] if t["status"] == "PASS"]
    assert len(passed) >= 5, f"the tests that finished before Ctrl-C are reported: {doc['tests']}"
    assert "klab: interrupted:" in stderr, stderr
    assert "run verdict: interrupted (only what finished is here) (exit 130)" in stdout, stdout
    leftovers.assert_no_qemu_left(tag)


def test_a_guest_command_past_its_timeout_is_124_not_a_kernel_failure(kernel: record.BuildManifest) -> None:
    run = klab("run", "--arch", "x86_64", "--build", str(kernel.build_dir), "--timeout", "5", "--", "sleep", "600")
    assert run.returncode == 124, run.stdout + run.stderr
    (line,) = [x for x in run.stderr.splitlines() if x.startswith("klab: error: ")]
    assert "the command did not finish within 5 s" in line and "the kernel reported nothing" in line, line


def test_a_short_timeout_is_the_commands_not_the_boots(kernel: record.BuildManifest) -> None:
    """--timeout 1 is 4 s under TCG, less than the boot takes here: the boot has a deadline of its own."""
    run = klab("run", "--arch", "x86_64", "--build", str(kernel.build_dir), "--timeout", "1", "--", "echo", "ran")
    assert run.returncode == 0 and run.stdout.splitlines()[-1:] == ["ran"], run.stdout + run.stderr
