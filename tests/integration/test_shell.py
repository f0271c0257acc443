"""`klab shell` as a person uses it, on the real x86_64 6.12 kernel: a pty drives it (pexpect).

The terminal's size, TERM and shell reach the guest, job control works, `exit N`
is klab's status, `poweroff` is 0, a panic is 1 with its title, Ctrl-a x leaves
a guest that does not answer; piped stdin is a script; --ssh says before booting
when the host root has no sshd; --gdb-wait holds the CPUs until gdb lets go.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pexpect
import pytest

from lab import arches
from lab.image import build, recipes
from lab.kernel import kconfig, record, source
from lab.paths import REPO_ROOT
from lab.run import prepare
from lab.vm import qemu
from tests.integration import leftovers

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def kernel() -> record.BuildManifest:
    return prepare.build_kernel(source.fetch("6.12"), arches.get("x86_64"), kconfig.DEFAULT_FRAGMENTS)


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, TERM="xterm-256color", SHELL="/bin/bash", **extra)


def _shell(
    kernel: record.BuildManifest, *extra: str, rows: int = 33, cols: int = 111, env: dict[str, str] | None = None
) -> pexpect.spawn:
    argv = ["-m", "lab", "shell", "--arch", "x86_64", "--kernel", str(kernel.image), *extra]
    return pexpect.spawn(
        sys.executable, argv, cwd=str(REPO_ROOT), env=env or _env(), encoding="utf-8", timeout=180,
        dimensions=(rows, cols),
    )  # fmt: skip


def _prompt(child: pexpect.spawn) -> None:
    child.expect_exact("Ctrl-a x leaves the guest")
    child.expect("init started")
    child.expect(r"root@klab-guest:~# ")


def _end(child: pexpect.spawn, timeout: float = 60) -> tuple[int | None, str]:
    child.expect(pexpect.EOF, timeout=timeout)
    said = str(child.before)
    child.close()
    return child.exitstatus, said


def test_the_guest_terminal_follows_the_hosts_and_exit_is_klabs_status(kernel: record.BuildManifest) -> None:
    tag, env = leftovers.tagged_env(_env())
    child = _shell(kernel, env=env)
    try:
        _prompt(child)
        child.sendline("stty size; echo T=$TERM S=$0; sleep 30 & jobs")
        child.expect_exact("33 111")
        child.expect_exact("T=xterm-256color S=/usr/bin/bash")  # the host's $SHELL, which the host root has
        child.expect(r"\[1\]\+\s+Running\s+sleep 30 &")  # job control: a job table, so a terminal of its own
        child.setwinsize(40, 120)  # SIGWINCH on the host: the guest follows within a second or so
        deadline = time.monotonic() + 30
        while True:
            child.sendline('echo "SZ=$(stty size)"')
            if child.expect_exact(["SZ=40 120", "SZ=33 111"], timeout=30) == 0:
                break
            assert time.monotonic() < deadline, "the guest's size never followed the host's"
            time.sleep(1)
        child.sendline("exit 3")
        status, said = _end(child)
    finally:
        child.close(force=True)
    assert status == 3, said
    leftovers.assert_no_qemu_left(tag)


def test_poweroff_in_the_shell_is_a_clean_end(kernel: record.BuildManifest) -> None:
    child = _shell(kernel)
    try:
        _prompt(child)
        child.sendline("poweroff")  # systemctl without systemd as PID 1: it falls back to /run/initctl
        status, said = _end(child)
    finally:
        child.close(force=True)
    assert status == 0, said
    assert "klab-init: power-off asked" in said


def test_a_panic_ends_the_shell_with_1_and_its_title(kernel: record.BuildManifest) -> None:
    child = _shell(kernel)
    try:
        _prompt(child)
        child.sendline("echo c > /proc/sysrq-trigger")
        status, said = _end(child)
    finally:
        child.close(force=True)
    assert status == 1, said
    line = [s for s in said.splitlines() if s.startswith("klab: kernel panic:")]
    assert line and line[0].startswith("klab: kernel panic: Kernel panic - not syncing: sysrq triggered crash; "), said
    log = Path(line[0].split("console log: ")[1].strip())
    assert "sysrq triggered crash" in log.read_text()


def test_ctrl_a_x_leaves_a_guest_that_does_not_answer(kernel: record.BuildManifest) -> None:
    tag, env = leftovers.tagged_env(_env())
    child = _shell(kernel, env=env)
    try:
        _prompt(child)
        child.sendline("trap '' INT; sleep 1000")  # Ctrl-C no longer helps: only the escape does
        time.sleep(2)
        child.send("\x03")
        child.send("\x01x")
        status, said = _end(child, timeout=30)
    finally:
        child.close(force=True)
    assert status == 130, said
    assert "klab: left the guest (QEMU stopped)" in said
    leftovers.assert_no_qemu_left(tag)


def test_piped_stdin_is_the_guest_shells_script(kernel: record.BuildManifest) -> None:
    script = 'uname -r\necho "$0"\necho err >&2\nexit 4\n'
    run = subprocess.run(
        [sys.executable, "-m", "lab", "shell", "--arch", "x86_64", "--kernel", str(kernel.image)],
        input=script, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=_env(),
    )  # fmt: skip
    assert run.returncode == 4, run.stderr[-2000:]
    assert f"\n{kernel.kernelrelease}\n/usr/bin/bash\nerr\n" in run.stdout  # a pipe's line ends, no \r
    assert "\r" not in run.stdout
    assert "Ctrl-a x" not in run.stderr  # no terminal, no escape key


@pytest.mark.skipif(Path("/usr/sbin/sshd").exists(), reason="this host has sshd: --ssh on its root would boot")
def test_ssh_on_a_host_root_without_sshd_says_so_before_booting(kernel: record.BuildManifest) -> None:
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "lab", "shell", "--ssh", "--arch", "x86_64", "--kernel", str(kernel.image)],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines()[-1] == (
        "klab: error: --ssh on the host's root needs /usr/sbin/sshd, which this host lacks: install "
        "openssh-server, or use --rootfs image (the lab's image has it), or drop --ssh for the serial console"
    )
    assert time.monotonic() - start < 30  # no guest was booted


def test_ssh_shell_on_the_image_runs_piped_stdin(kernel: record.BuildManifest) -> None:
    build.build_image(arches.get("x86_64"), recipes.find_recipe(recipes.DEFAULT_RECIPE))
    run = subprocess.run(
        [sys.executable, "-m", "lab", "shell", "--ssh", "--rootfs", "image", "--arch", "x86_64",
         "--kernel", str(kernel.image)],
        input="uname -r; echo err >&2; exit 6\n", capture_output=True, text=True, timeout=300, cwd=REPO_ROOT,
    )  # fmt: skip
    assert run.returncode == 6, run.stderr[-2000:]
    assert run.stdout == f"{kernel.kernelrelease}\n"  # stdout and stderr apart over SSH
    assert "err\n" in run.stderr


@pytest.mark.skipif(shutil.which("gdb-multiarch") is None, reason="gdb-multiarch not installed (make setup)")
def test_gdb_wait_holds_the_guest_until_gdb_lets_it_go(kernel: record.BuildManifest) -> None:
    port = qemu.free_port()
    argv = ["-m", "lab", "run", "-v", "--arch", "x86_64", "--kernel", str(kernel.image), "--gdb-wait", str(port), "--"]
    child = pexpect.spawn(sys.executable, [*argv, "uname", "-r"], cwd=str(REPO_ROOT), encoding="utf-8", timeout=180)
    try:
        child.expect_exact("klab: the guest waits for gdb's `continue`")
        assert f"-gdb tcp:127.0.0.1:{port} -S" in str(child.before)
        # Held: nothing from the guest for a while, longer than a boot to init takes here.
        assert child.expect(["klab-init", "Linux", pexpect.TIMEOUT], timeout=20) == 2, child.before
        gdb = subprocess.run(
            ["gdb-multiarch", "-batch", "-nx", kernel.artifacts.vmlinux, "-ex", f"target remote 127.0.0.1:{port}",
             "-ex", "info registers rip", "-ex", "detach"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "rip            0xfff0" in gdb.stdout, gdb.stdout + gdb.stderr  # the reset vector: nothing ran
        child.expect("init started")  # gdb let go (detach continues the CPUs): the guest boots
        child.expect_exact(kernel.kernelrelease)
        status, said = _end(child)
    finally:
        child.close(force=True)
    assert status == 0, said
