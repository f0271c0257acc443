"""The one subprocess helper: argv lists, absolute deadlines, logs on disk.

Every external command kernel-lab runs goes through `run`, so each has an
explicit argument list (never a shell), a deadline, and its output kept in a
log whose tail is shown when it fails.

Deadlines are absolute (`Deadline`, a monotonic instant), never relative
timeouts handed down: a stage that runs three commands gives each the same
`Deadline`, or a sooner one (`deadline.within(seconds)`), so the whole stage
can never take longer than it was given.
"""

from __future__ import annotations

import codecs
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Deadline:
    """A monotonic instant by which some work must be done."""

    at: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def left(self) -> float:
        """Seconds until the deadline; 0 once it has passed."""
        return max(0.0, self.at - time.monotonic())

    def within(self, seconds: float) -> Deadline:
        """A child's deadline: `seconds` from now, but never later than this one."""
        return Deadline(min(self.at, time.monotonic() + seconds))

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self.at


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    output: str
    duration: float
    timed_out: bool = False


class CommandFailed(Exception):
    """A command exited non-zero or ran past its deadline; carries its log tail."""

    def __init__(self, argv: Sequence[str], returncode: int, tail: str, log: Path | None, timed_out: bool) -> None:
        what = "timed out" if timed_out else f"exited {returncode}"
        super().__init__(f"{shlex.join(argv)} {what}")
        self.argv = tuple(argv)
        self.returncode = returncode
        self.tail = tail
        self.log = log
        self.timed_out = timed_out


def tail_lines(text: str, count: int = 25) -> str:
    return "\n".join(text.splitlines()[-count:])


def run(
    argv: Sequence[str],
    *,
    deadline: Deadline,
    log: Path | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    on_line: Callable[[str], None] | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> Result:
    """Run argv to completion by `deadline`.

    Output (stdout and stderr merged) is appended to `log` when given and
    returned; `on_line` sees each line as it arrives (progress display). On
    the deadline the whole process group is killed, so no grandchild survives,
    even one that printed half a line and hung.
    """
    start = time.monotonic()
    full_env = dict(os.environ if env is None else env)
    logf = open(log, "a", encoding="utf-8", errors="replace") if log else None  # noqa: SIM115
    if logf:
        logf.write(f"$ {shlex.join(argv)}\n")
        logf.flush()
    chunks: list[str] = []
    timed_out = False
    if "/" not in argv[0] and shutil.which(argv[0], path=full_env.get("PATH")) is None:  # a path: setpriv says 127
        if logf:
            logf.close()
        raise CommandFailed(argv, 127, f"{argv[0]}: command not found", log, False)
    try:
        child = subprocess.Popen(
            dies_with_us(argv),
            cwd=cwd,
            env=full_env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except (FileNotFoundError, PermissionError) as exc:
        if logf:
            logf.close()
        raise CommandFailed(argv, 127, str(exc), log, False) from exc
    try:
        for line in _lines_until(child, deadline):
            chunks.append(line)
            if logf:
                logf.write(line)
            if on_line:
                on_line(line.rstrip("\n"))
        try:
            child.wait(timeout=deadline.left())
        except subprocess.TimeoutExpired:
            timed_out = True
        if child.returncode is None:
            timed_out = True
    finally:
        if child.poll() is None:
            _kill_group(child)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
        if logf:
            logf.close()
    output = "".join(chunks)
    result = Result(tuple(argv), child.returncode, output, time.monotonic() - start, timed_out)
    if check and (timed_out or child.returncode != 0):
        raise CommandFailed(argv, child.returncode, tail_lines(output), log, timed_out)
    return result


def dies_with_us(argv: Sequence[str]) -> list[str]:
    """argv run so that the kernel kills it when klab dies, even by SIGKILL (a `finally` cannot run then):
    a child in its own session would otherwise live on, orphaned (apt-get holding the disk, QEMU a CPU)."""
    return ["setpriv", "--pdeathsig", "KILL", "--", *argv] if shutil.which("setpriv") else list(argv)


def _lines_until(child: subprocess.Popen[bytes], deadline: Deadline) -> Iterator[str]:
    """Yield output lines until EOF or the deadline, whichever comes first.

    Reads whatever bytes are ready (never a blocking readline), so a child
    that writes half a line and hangs cannot hold us past the deadline.
    """
    assert child.stdout is not None
    fd = child.stdout.fileno()
    os.set_blocking(fd, False)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    try:
        while not deadline.expired:
            if not sel.select(timeout=min(deadline.left(), 1.0)):
                continue
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                break
            pending += decoder.decode(data)
            *complete, pending = pending.split("\n")
            for line in complete:
                yield line + "\n"
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending
    finally:
        sel.close()


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            return
        try:
            child.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so `finally` blocks kill children and restore what they changed."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
