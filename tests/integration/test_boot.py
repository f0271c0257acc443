"""Real boots under QEMU of the kernels the build tests make: both arches, image and host rootfs.

Checks exit status propagation, the session API (many commands, stdout and
stderr apart, deadlines, file copy both ways), SSH, crash reporting, bad
input, and that no QEMU outlives a run.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import arches, manifest
from lab.errors import KernelFailure
from lab.image import build, recipes
from lab.kernel import kconfig, source
from lab.paths import REPO_ROOT
from lab.proc import Deadline
from lab.run import prepare
from lab.vm import accel, command, qemu, session
from tests.integration import leftovers

pytestmark = pytest.mark.kernel


def _kernel(arch: str) -> Path:
    return prepare.build_kernel(source.fetch("6.12"), arches.get(arch), kconfig.DEFAULT_FRAGMENTS).image


def _image(arch: str) -> str:
    return build.build_image(arches.get(arch), recipes.find_recipe(recipes.DEFAULT_RECIPE)).image


def klab(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """klab, and no QEMU of its left once it has exited."""
    tag, env = leftovers.tagged_env()
    run = subprocess.run(
        [sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env=env
    )
    leftovers.assert_no_qemu_left(tag)
    return run


def klab_io(*args: str, stdin: bytes = b"", cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[bytes]:
    """klab as a pipeline stage: bytes in, bytes out, from any directory; no QEMU of its left after."""
    tag, env = leftovers.tagged_env(PYTHONPATH=str(REPO_ROOT))
    run = subprocess.run(
        [sys.executable, "-m", "lab", *args],
        input=stdin,
        capture_output=True,
        timeout=900,
        cwd=cwd,
        env=env,
    )
    leftovers.assert_no_qemu_left(tag)
    return run


def _no_qemu_left(marker: str) -> None:
    out = subprocess.run(["pgrep", "-af", "qemu-system"], capture_output=True, text=True).stdout
    assert marker not in out, out


@pytest.mark.parametrize(
    ("arch", "rootfs"),
    [("x86_64", "host"), ("x86_64", "image"), ("arm64", "image")],
)
def test_run_propagates_exit_status_and_output(arch: str, rootfs: str) -> None:
    kernel = _kernel(arch)
    if rootfs == "image":
        _image(arch)
    script = "uname -m; nproc; cat /sys/kernel/security/lsm; echo; test -e /sys/kernel/btf/vmlinux && echo btf; exit 7"
    run = klab("run", "-v", "--arch", arch, "--kernel", str(kernel), "--rootfs", rootfs, "--", "sh", "-c", script)
    assert run.returncode == 7, run.stderr[-3000:]
    want = f"{arches.get(arch).machine}\n{arches.get(arch).cpus}\ncapability,landlock,yama,bpf\nbtf\n"
    assert run.stdout == want, "the arch's CPUs all online (x86_64 finds them through ACPI)"
    assert "klab: exit 7" in run.stderr
    assert "klab-init: init started" in run.stderr, "--verbose: the kernel's console on stderr"


def test_run_gives_the_command_its_own_stdout_and_stderr() -> None:
    run = klab_io("run", "--arch", "x86_64", "--kernel", str(_kernel("x86_64")), "--", "sh", "-c",
                  "echo out; echo err >&2; exit 3")  # fmt: skip
    assert run.returncode == 3, run.stderr[-3000:]
    assert run.stdout == b"out\n", "only the command's bytes: no kernel line, no init line, no CR"
    assert b"err\n" in run.stderr
    assert b"klab-init" not in run.stderr and b"klab: exit" not in run.stderr, "the console and timings: -v only"


def test_run_passes_stdin_through() -> None:
    kernel = str(_kernel("x86_64"))
    assert klab_io("run", "--arch", "x86_64", "--kernel", kernel, "--", "cat", stdin=b"abc").stdout == b"abc"
    blob = os.urandom(1 << 20) + bytes(range(256)) + b"\r\n\0\x1e"  # random, every byte value, the mark's first
    run = klab_io("run", "--arch", "x86_64", "--kernel", kernel, "--", "cat", stdin=blob)
    assert run.returncode == 0, run.stderr[-3000:]
    assert hashlib.sha256(run.stdout).hexdigest() == hashlib.sha256(blob).hexdigest(), len(run.stdout)


def test_run_runs_in_the_callers_directory(tmp_path: Path) -> None:
    """Under /tmp, which the guest's init covers with a tmpfs: the caller's directory is bound back."""
    (tmp_path / "here.txt").write_text("host file\n")
    run = klab_io("run", "--arch", "x86_64", "--kernel", str(_kernel("x86_64")), "--", "sh", "-c",
                  "pwd; cat here.txt; touch /tmp/scratch", cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.decode() == f"{tmp_path}\nhost file\n"
    assert not (tmp_path.parent / "scratch").exists()


def test_a_reader_going_away_ends_the_command_with_sigpipe_as_a_pipe_does() -> None:
    """`klab run -- yes | head -1`: the command's process group gets SIGPIPE (141), not a run to --timeout."""
    tag, env = leftovers.tagged_env(PYTHONPATH=str(REPO_ROOT))
    argv = ["run", "--arch", "x86_64", "--kernel", str(_kernel("x86_64")), "--timeout", "240", "--"]
    guest = subprocess.Popen(
        [sys.executable, "-m", "lab", *argv, "sh", "-c", "yes; echo never >&2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=REPO_ROOT,
    )  # fmt: skip
    assert guest.stdout is not None and guest.stderr is not None
    first = guest.stdout.readline()
    guest.stdout.close()  # what `head -1` does after its line
    status = guest.wait(timeout=200)
    said = guest.stderr.read().decode(errors="replace")
    assert first == b"y\n"
    assert status == 141, said[-2000:]  # 124 would be --timeout: the command ran on
    assert "never" not in said, "the whole group got SIGPIPE: the shell around yes too"
    leftovers.assert_no_qemu_left(tag)


def test_session_api_runs_many_commands_and_copies_files(tmp_path: Path) -> None:
    arch = arches.get("x86_64")
    plan = command.make_plan(arch, _kernel("x86_64"), accel.decide(arch), agent=True, workdir=tmp_path / "vm")
    src = tmp_path / "in.bin"
    src.write_bytes(bytes(range(256)) * 64)
    with session.AgentSession(plan) as sess:
        first = sess.run(["sh", "-c", "echo out; echo err >&2; exit 4"])
        assert (first.exit_status, first.stdout, first.stderr) == (4, "out\n", "err\n")
        assert sess.run("cat /proc/sys/kernel/yama/ptrace_scope").stdout.strip() in ("0", "1")
        slow = sess.run(["sleep", "60"], Deadline.after(2))
        assert slow.exit_status == 124  # timeout(1) killed it in the guest
        sess.put(src, "/tmp/copied.bin")
        assert sess.run(["sha256sum", "/tmp/copied.bin"]).stdout.split()[0] == manifest.sha256(src)
        sess.get("/tmp/copied.bin", tmp_path / "back.bin")
        assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
        for i in range(5):
            assert sess.run(["echo", str(i)]).stdout == f"{i}\n"
    _no_qemu_left(str(plan.workdir))


def test_ssh_session_on_the_image(tmp_path: Path) -> None:
    arch = arches.get("x86_64")
    plan = command.make_plan(
        arch,
        _kernel("x86_64"),
        accel.decide(arch),
        rootfs=_image("x86_64"),
        ssh_port=qemu.free_port(),
        workdir=tmp_path / "vm",
    )
    with session.SSHSession(plan) as sess:
        result = sess.run("id -u; echo to-stderr >&2; exit 5")
        assert (result.exit_status, result.stdout, result.stderr) == (5, "0\n", "to-stderr\n")
        src = tmp_path / "f.txt"
        src.write_text("over sftp\n")
        sess.put(src, "/tmp/f.txt")
        assert sess.run("cat /tmp/f.txt").stdout == "over sftp\n"
        sess.get("/tmp/f.txt", tmp_path / "g.txt")
        assert (tmp_path / "g.txt").read_text() == "over sftp\n"
    _no_qemu_left(str(plan.workdir))


def test_forced_panic_is_a_kernel_failure_with_the_panic_text() -> None:
    run = klab(
        "run", "--arch", "x86_64", "--kernel", str(_kernel("x86_64")), "--", "sh", "-c", "echo c > /proc/sysrq-trigger"
    )
    assert run.returncode == 1
    assert "kernel failure (panic)" in run.stderr
    assert "Kernel panic - not syncing: sysrq triggered crash" in run.stderr
    assert "klab: console log: " in run.stderr


def test_forced_panic_through_the_api(tmp_path: Path) -> None:
    arm = arches.get("arm64")
    plan = command.make_plan(arm, _kernel("arm64"), accel.decide(arm), rootfs=_image("arm64"), workdir=tmp_path)
    with pytest.raises(KernelFailure) as info:
        command.run_command(plan, "echo c > /proc/sysrq-trigger")
    assert info.value.kind == "panic"
    assert "sysrq triggered crash" in info.value.excerpt


def test_wrong_arch_kernel_is_refused() -> None:
    run = klab("run", "--arch", "arm64", "--kernel", str(_kernel("x86_64")), "--", "true")
    assert run.returncode == 2
    assert "is not a kernel image for arm64" in run.stderr and run.stderr.count("\n") == 1


def test_missing_kernel_is_refused(tmp_path: Path) -> None:
    run = klab("run", "--arch", "x86_64", "--kernel", str(tmp_path / "nope"), "--", "true")
    assert run.returncode == 2 and "does not exist" in run.stderr


def test_kvm_probe_decides_and_kvm_demand_is_checked() -> None:
    arch = arches.get("x86_64")
    works, why = accel.probe_kvm(arch)
    assert why
    probe = klab("probe")
    assert probe.returncode == 0 and "x86_64 accelerator" in probe.stdout
    assert "BTF for linux-6.12" in probe.stdout and "pahole (BTF)" in probe.stdout
    forced = klab("run", "--arch", "x86_64", "--kernel", str(_kernel("x86_64")), "--accel", "kvm", "--", "true")
    if works:
        assert forced.returncode == 0
    else:
        assert forced.returncode == 2 and "--accel kvm, but KVM does not work here" in forced.stderr


def test_interactive_shell_on_the_console() -> None:
    import pexpect

    argv = ["-m", "lab", "shell", "--arch", "x86_64", "--kernel", str(_kernel("x86_64"))]
    child = pexpect.spawn(sys.executable, argv, cwd=str(REPO_ROOT), encoding="utf-8", timeout=180)
    try:
        child.expect("init started")
        child.expect("# ")
        child.sendline("echo $((6*7)); tty")
        child.expect("42")
        child.expect("/dev/ttyS0")
        child.sendline("exit")
        child.expect(pexpect.EOF, timeout=60)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
