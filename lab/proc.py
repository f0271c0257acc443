"""The one subprocess helper: argv lists, absolute deadlines, logs on disk.

Every external command kernel-lab runs goes through `run`, so each has an
explicit argument list (never a shell), a deadline, and its output kept in a
log whose tail is shown when it fails.
"""

from __future__ import annotations

import os
import selectors
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    output: str
    duration: float


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
    timeout: float,
    log: Path | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    on_line: Callable[[str], None] | None = None,
    stdin: int | None = subprocess.DEVNULL,
) -> Result:
    """Run argv to completion within `timeout` seconds.

    Output (stdout and stderr merged) is appended to `log` when given and
    returned; `on_line` sees each line as it arrives (progress display). On
    timeout the whole process group is killed, so no grandchild survives.
    """
    start = time.monotonic()
    full_env = dict(os.environ if env is None else env)
    logf = open(log, "a", encoding="utf-8", errors="replace") if log else None  # noqa: SIM115
    if logf:
        logf.write(f"$ {shlex.join(argv)}\n")
        logf.flush()
    chunks: list[str] = []
    timed_out = False
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=full_env,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        if logf:
            logf.close()
        raise CommandFailed(argv, 127, str(exc), log, False) from exc
    try:
        assert proc.stdout is not None
        deadline = start + timeout
        os.set_blocking(proc.stdout.fileno(), True)
        for line in _lines_until(proc, deadline):
            chunks.append(line)
            if logf:
                logf.write(line)
            if on_line:
                on_line(line.rstrip("\n"))
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
    finally:
        if proc.poll() is None:
            _kill_group(proc)
        proc.wait()
        if logf:
            logf.close()
    output = "".join(chunks)
    result = Result(tuple(argv), proc.returncode, output, time.monotonic() - start)
    if check and (timed_out or proc.returncode != 0):
        raise CommandFailed(argv, proc.returncode, tail_lines(output), log, timed_out)
    return result


def _lines_until(proc: subprocess.Popen[str], deadline: float):  # type: ignore[no-untyped-def]
    """Yield output lines until EOF or the deadline, whichever comes first."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if not sel.select(timeout=min(left, 1.0)):
                continue
            line = proc.stdout.readline()
            if not line:
                return
            yield line
    finally:
        sel.close()


def _kill_group(proc: subprocess.Popen[str]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue
