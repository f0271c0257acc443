"""`klab shell` on the serial console: the user's terminal wired to the guest's, and what the end means.

The host owns the terminal: it passes keys to the guest and the console back,
keeps the console log, and watches it. Three things only the host can do are
done here: an escape key that leaves a hung guest (QEMU's own habit, Ctrl-a x),
the guest's terminal size and TERM kept equal to the host's, and a verdict at
the end (a kernel panic is exit 1 with its title, the shell's own status else).
Piped stdin is not a terminal: it is read to its end and handed to the guest
shell as its script, so `echo 'uname -r' | klab shell` works as in a pipe.
"""

from __future__ import annotations

import enum
import os
import re
import select
import shutil
import signal
import sys
import termios
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pexpect

from lab.errors import LabError
from lab.results import consolelog
from lab.vm.qemu import BootPlan, Machine

ESCAPE_PREFIX = b"\x01"  # Ctrl-a, as QEMU's -serial mon:stdio
ESCAPE_QUIT = b"x"
ESCAPE_HELP = "Ctrl-a x leaves the guest (Ctrl-a Ctrl-a sends Ctrl-a)"
EXIT_LEFT = 130  # the user left with the escape key: interrupted, like Ctrl-C on a klab command
FATAL_SETTLE = 3.0  # after a fatal report starts: how long its rest may take to reach the console
# The kernel's last words when the guest halts or powers off without resetting: QEMU would then
# stay up (x86 without ACPI cannot power off), so these end the session as a poweroff does.
_HALTED = re.compile(r"reboot: (?:Power down|System halted)")
_SAFE_WORD = re.compile(r"[^\w.+-]")


class EscapeFilter:
    """Keys from the user's terminal: everything passes except the Ctrl-a x escape.

    Ctrl-a Ctrl-a sends one Ctrl-a; Ctrl-a and any other key send both (QEMU
    drops them, but a shell user would lose a keystroke for nothing). The state
    carries across reads: a terminal may deliver Ctrl-a and x apart.
    """

    def __init__(self) -> None:
        self._pending = False

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes for the guest, whether the user asked to leave)."""
        out = bytearray()
        for byte in data:
            key = bytes((byte,))
            if self._pending:
                self._pending = False
                if key == ESCAPE_QUIT:
                    return bytes(out), True
                out += ESCAPE_PREFIX if key == ESCAPE_PREFIX else ESCAPE_PREFIX + key
            elif key == ESCAPE_PREFIX:
                self._pending = True
            else:
                out += key
        return bytes(out), False


def safe_word(text: str, default: str) -> str:
    """A TERM or shell name fit for the guest's sh to read back, or `default`."""
    return text if text and not _SAFE_WORD.search(text) else default


def user_shell() -> str:
    """The basename of the user's $SHELL, which the guest starts if its rootfs has it (else sh)."""
    return safe_word(Path(os.environ.get("SHELL", "")).name, "sh")


def host_size() -> os.terminal_size:
    """The size of the terminal the user types in (stdin first: stdout may be a pipe to tee)."""
    for stream in (sys.stdin, sys.stdout):
        try:
            return os.get_terminal_size(stream.fileno())
        except (OSError, ValueError):
            continue
    return shutil.get_terminal_size()


def write_terminal(ctl: Path, size: os.terminal_size, term: str) -> None:
    """The guest init reads these before it starts the shell (lab/guest/init, mode shell)."""
    (ctl / "term").write_text(safe_word(term, "linux") + "\n")
    (ctl / "shell").write_text(user_shell() + "\n")
    write_winsize(ctl, size)


def write_winsize(ctl: Path, size: os.terminal_size) -> None:
    """The terminal's size, "ROWS COLS": the guest follows changes to it within a second."""
    tmp = ctl / "winsize.tmp"
    tmp.write_text(f"{size.lines} {size.columns}\n")
    tmp.replace(ctl / "winsize")


class LineEnds:
    """The console's line ends for `out`: as they come for a terminal, plain \n for a pipe or a file.

    The ptys on the way turn each \n into \r\n (and the kernel's own \r\n into \r\r\n);
    a \r at the end of a chunk waits for the next one, which may start with \n.
    """

    def __init__(self, plain: bool) -> None:
        self.plain = plain
        self._held = ""

    def feed(self, text: str) -> str:
        if not self.plain:
            return text
        text = self._held + text
        self._held = "\r" if text.endswith("\r") else ""
        text = text[:-1] if self._held else text
        return re.sub(r"\r+\n", "\n", text)


class Ending(enum.Enum):
    """How the session ended, as the host saw it."""

    EOF = "eof"  # QEMU exited (the guest reset or powered off, or something killed QEMU)
    HALTED = "halted"  # the kernel halted or powered off and QEMU stayed up: stopped by us
    FATAL = "fatal"  # a fatal kernel report: stopped by us once it had time to print
    LEFT = "left"  # the user pressed the escape key


@dataclass(frozen=True)
class Verdict:
    exit_status: int
    message: str  # one line for stderr, "" when there is nothing to say


def verdict(text: str, status: str | None, ending: Ending, outside: str, log: Path) -> Verdict:
    """What klab shell exits with, from the console text, the init's status file and the ending.

    A fatal kernel report wins (exit 1, whatever the shell did); the user
    leaving is EXIT_LEFT; the shell's status is klab's; a guest that powered off
    or reset with nothing said is a normal end (exit 0: `poweroff`, `reboot -f`).
    """
    if ending is Ending.LEFT:
        return Verdict(EXIT_LEFT, "klab: left the guest (QEMU stopped)")
    fatal = [e for e in consolelog.scan(text) if e.fatal]
    if fatal:
        return Verdict(1, f"klab: kernel {fatal[0].kind}: {fatal[0].title}; console log: {log}")
    said = consolelog.init_fatal(text)
    if said:
        raise LabError(f"the guest could not be set up: {said} (console: {log})")
    if status is not None and status.strip().isdigit():
        return Verdict(int(status), "")
    if outside:
        raise LabError(f"QEMU {outside} during the shell; console: {log}")
    return Verdict(0, "")


def console_shell(plan: BootPlan, script: bytes | None) -> Verdict:
    """Boot, hand the console to the user (or run `script`, piped stdin), and judge the end.

    Interactive when `script` is None: stdin must then be a terminal.
    """
    ctl = plan.results_dir / ".klab"
    interactive = script is None
    write_terminal(ctl, host_size(), os.environ.get("TERM", "linux"))
    if script is not None:
        (ctl / "stdin").write_bytes(script)
    with Machine(plan) as vm:
        assert vm.child is not None
        if interactive:
            print(f"klab: serial console shell; {ESCAPE_HELP}", file=sys.stderr)
            with raw_terminal(sys.stdin.fileno()), _follow_winsize(ctl):
                ending = _pump(vm.child, sys.stdout.buffer, sys.stdin.fileno())
            sys.stdout.write("\r\n")  # the console's last line (a prompt) may be unfinished
        else:
            ending = _pump(vm.child, sys.stdout.buffer, None)
        if ending is not Ending.EOF:
            vm.child.terminate(force=True)
        vm.child.close()  # reaps QEMU, so its exit status is known
        outside = "" if ending is not Ending.EOF else vm.ended_from_outside(consolelog.read(plan.console_log))
    status_file = ctl / "exit-status"
    status = status_file.read_text() if status_file.is_file() else None
    return verdict(consolelog.read(plan.console_log), status, ending, outside, plan.console_log)


def _pump(child: pexpect.spawn, out: BinaryIO, keys: int | None) -> Ending:
    """Console to `out` (and the log, through the child's logfile), keys to the guest, until an end."""
    escape = EscapeFilter()
    lines = LineEnds(plain=keys is None)
    fatal_re = re.compile(consolelog.fatal_pattern(), re.MULTILINE)
    seen = ""  # the console's recent text, where a report's first line is looked for
    stop_at: float | None = None
    while True:
        fds = [child.child_fd] + ([keys] if keys is not None else [])
        wait = 0.5 if stop_at is None else max(0.0, stop_at - time.monotonic())
        ready, _, _ = select.select(fds, [], [], wait)
        if child.child_fd in ready:
            try:
                text = child.read_nonblocking(65536, timeout=0)
            except pexpect.EOF:
                return Ending.EOF
            except pexpect.TIMEOUT:
                text = ""
            out.write(lines.feed(text).encode(errors="replace"))
            out.flush()
            seen = (seen + text)[-8192:]
            if stop_at is None and (fatal_re.search(seen) or _HALTED.search(seen)):
                stop_at = time.monotonic() + FATAL_SETTLE
        if keys is not None and keys in ready:
            data, leave = escape.feed(os.read(keys, 1024))
            if data:
                os.write(child.child_fd, data)
            if leave:
                return Ending.LEFT
        if stop_at is not None and time.monotonic() >= stop_at:
            return Ending.FATAL if fatal_re.search(seen) else Ending.HALTED


@contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The user's terminal in raw mode (Ctrl-C, Ctrl-Z go to the guest), always restored."""
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextmanager
def _follow_winsize(ctl: Path) -> Iterator[None]:
    """On SIGWINCH, tell the guest the new size (its init polls the file and runs stty)."""

    def resized(signum: int, frame: object) -> None:
        write_winsize(ctl, host_size())

    previous = signal.signal(signal.SIGWINCH, resized)
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)
