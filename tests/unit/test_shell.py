"""`klab shell`: the escape key, line ends for a pipe, what the guest is told, the verdict at the end, --gdb-wait."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from lab import arches
from lab.cli import args as common
from lab.cli import guest_cmds
from lab.errors import LabError, UserError
from lab.results import consolelog
from lab.vm import qemu, shell
from lab.vm.accel import Decision

DATA = Path(__file__).parent.parent / "data" / "console"


@pytest.mark.parametrize(
    ("reads", "to_guest", "leave"),
    [
        ([b"ls\r"], b"ls\r", False),
        ([b"\x01x"], b"", True),
        ([b"abc\x01xdef"], b"abc", True),  # what follows the escape is dropped: QEMU is stopped
        ([b"\x01", b"x"], b"", True),  # Ctrl-a and x in two reads
        ([b"\x01\x01"], b"\x01", False),  # Ctrl-a Ctrl-a: one Ctrl-a for the guest (bash: start of line)
        ([b"\x01c"], b"\x01c", False),  # any other key: both go through
        ([b"x\x03"], b"x\x03", False),  # Ctrl-C is the guest's
    ],
)
def test_escape_filter(reads: list[bytes], to_guest: bytes, leave: bool) -> None:
    escape = shell.EscapeFilter()
    sent, left = b"", False
    for data in reads:
        out, left = escape.feed(data)
        sent += out
        if left:
            break
    assert (sent, left) == (to_guest, leave)


@pytest.mark.parametrize(
    ("chunks", "plain", "out"),
    [
        (["6.12.118\r\n", "[ 1.0] x\r\r\n"], True, "6.12.118\n[ 1.0] x\n"),
        (["a\r", "\nb\r\n"], True, "a\nb\n"),  # a \r at a chunk's end waits for its \n
        (["a\r\n"], False, "a\r\n"),  # a terminal gets the console as it is
        (["50%\rdone\r\n"], True, "50%\rdone\n"),  # a lone \r (progress) stays
    ],
)
def test_line_ends(chunks: list[str], plain: bool, out: str) -> None:
    ends = shell.LineEnds(plain)
    assert "".join(ends.feed(c) for c in chunks) == out


@pytest.mark.parametrize(
    ("given", "expected"),
    [("xterm-256color", "xterm-256color"), ("", "linux"), ("x; rm -rf /", "linux"), ("screen.xterm", "screen.xterm")],
)
def test_safe_word(given: str, expected: str) -> None:
    assert shell.safe_word(given, "linux") == expected


def test_the_guest_is_told_term_shell_and_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELL", "/usr/bin/zsh")
    shell.write_terminal(tmp_path, os.terminal_size((132, 43)), "xterm-256color")
    assert (tmp_path / "term").read_text() == "xterm-256color\n"
    assert (tmp_path / "shell").read_text() == "zsh\n"
    assert (tmp_path / "winsize").read_text() == "43 132\n"  # rows first, as `stty rows R cols C`
    assert not (tmp_path / "winsize.tmp").exists()
    monkeypatch.setenv("SHELL", "")
    assert shell.user_shell() == "sh"


def _console(name: str) -> str:
    return consolelog.read(DATA / name)


def test_verdict_panic_is_exit_1_with_its_title(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    v = shell.verdict(_console("x86_64-panic-sysrq.log"), None, shell.Ending.EOF, "", log)
    assert v.exit_status == 1
    assert v.message == f"klab: kernel panic: Kernel panic - not syncing: sysrq triggered crash; console log: {log}"
    # The shell's status does not hide a panic.
    assert shell.verdict(_console("x86_64-panic-sysrq.log"), "0\n", shell.Ending.FATAL, "", log).exit_status == 1


@pytest.mark.parametrize(
    ("status", "ending", "code", "message"),
    [
        ("5\n", shell.Ending.EOF, 5, ""),  # `exit 5`: the shell's own status
        (None, shell.Ending.EOF, 0, ""),  # `poweroff`, `reboot -f`: the guest reset with nothing said
        (None, shell.Ending.HALTED, 0, ""),  # `poweroff -f` where the kernel halts and QEMU stays
        ("0\n", shell.Ending.LEFT, shell.EXIT_LEFT, "klab: left the guest (QEMU stopped)"),
    ],
)
def test_verdict_of_a_clean_console(status: str | None, ending: shell.Ending, code: int, message: str) -> None:
    v = shell.verdict(_console("x86_64-ok.log"), status, ending, "", Path("c.log"))
    assert (v.exit_status, v.message) == (code, message)


def test_verdict_qemu_killed_from_outside_is_a_lab_error() -> None:
    with pytest.raises(LabError, match="QEMU was killed by signal 9 .* during the shell"):
        shell.verdict(_console("x86_64-ok.log"), None, shell.Ending.EOF, "was killed by signal 9 (SIGKILL)", Path("c"))


def test_verdict_init_fatal_is_a_lab_error() -> None:
    text = _console("x86_64-ok.log") + "klab-init: FATAL: cannot mount the results share\n"
    with pytest.raises(LabError, match="klab-init: FATAL: cannot mount the results share"):
        shell.verdict(text, None, shell.Ending.EOF, "", Path("c"))


def _plan(tmp_path: Path, **kw: object) -> qemu.BootPlan:
    return qemu.BootPlan(
        arch=arches.get("x86_64"),
        kernel=tmp_path / "bzImage",
        accel=Decision("tcg", "test"),
        rootfs=qemu.HOST_ROOTFS,
        results_dir=tmp_path / "results",
        workdir=tmp_path,
        **kw,  # type: ignore[arg-type]
    )


def test_gdb_wait_stops_the_cpus_with_the_stub(tmp_path: Path) -> None:
    argv = qemu.qemu_argv(_plan(tmp_path, gdb_port=4321, gdb_wait=True))
    assert argv[argv.index("-gdb") + 1] == "tcp:127.0.0.1:4321" and "-S" in argv
    assert "nokaslr" in argv[argv.index("-append") + 1]
    assert "-S" not in qemu.qemu_argv(_plan(tmp_path, gdb_port=4321))


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    common.add_gdb(p, wait=True)
    return p.parse_args(list(argv))


@pytest.mark.parametrize(
    ("argv", "choice"),
    [
        ((), (None, False)),
        (("--gdb",), (common.GDB_PORT, False)),
        (("--gdb-wait",), (common.GDB_PORT, True)),
        (("--gdb-wait", "4000"), (4000, True)),
        (("--gdb", "4000", "--gdb-wait", "4000"), (4000, True)),
    ],
)
def test_gdb_wait_implies_gdb(argv: tuple[str, ...], choice: tuple[int | None, bool]) -> None:
    assert common.gdb_choice(_parse(*argv)) == choice


def test_gdb_and_gdb_wait_on_two_ports_is_bad_input() -> None:
    with pytest.raises(UserError, match="--gdb 4000 and --gdb-wait 4001 name two ports"):
        common.gdb_choice(_parse("--gdb", "4000", "--gdb-wait", "4001"))


def test_ssh_on_the_host_root_needs_the_hosts_sshd(tmp_path: Path) -> None:
    missing, present = tmp_path / "no-sshd", tmp_path / "sshd"
    present.write_text("")
    args = argparse.Namespace(arch="x86_64", rootfs="auto")
    with pytest.raises(UserError, match=r"needs .*no-sshd, which this host lacks: install openssh-server, or use "):
        guest_cmds.check_host_sshd(args, missing)
    guest_cmds.check_host_sshd(args, present)
    guest_cmds.check_host_sshd(argparse.Namespace(arch="x86_64", rootfs="image"), missing)  # the image has sshd
    guest_cmds.check_host_sshd(argparse.Namespace(arch="arm64", rootfs="auto"), missing)  # not native: the image
