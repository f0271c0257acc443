"""A live serial console: follow it until a marker, a fatal kernel report, EOF or a deadline.

The table of reports and the guest init's markers are `lab.results.consolelog`'s;
`Watcher` returns as soon as the expected marker or a fatal report shows up,
instead of waiting out its deadline.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

import pexpect

from lab.proc import Deadline
from lab.results.consolelog import INIT_FATAL, KernelEvent, fatal_pattern, read, scan


class WatchEnd(enum.Enum):
    """How a watched console wait ended."""

    MARKER = "marker"  # the awaited line came
    FATAL = "fatal"  # a fatal kernel report started
    LAB = "lab"  # the lab's init gave up setting the guest up
    EOF = "eof"  # QEMU exited
    TIMEOUT = "timeout"  # the deadline passed


@dataclass(frozen=True)
class WatchResult:
    end: WatchEnd
    event: KernelEvent | None = None  # the fatal report, for WatchEnd.FATAL


class Watcher:
    """Follows a live console (a pexpect child) until a marker, a fatal report, EOF or a deadline."""

    def __init__(self, child: pexpect.spawn, log_path: Path, settle: float = 3.0) -> None:
        self.child = child
        self.log_path = log_path
        self.settle = settle  # after a fatal report starts: how long its rest may take to reach the log

    def wait(self, marker: str, deadline: Deadline) -> WatchResult:
        patterns = [
            re.compile(re.escape(marker)),
            re.compile(fatal_pattern()),
            re.compile(re.escape(INIT_FATAL) + r"[^\r\n]*[\r\n]"),
            pexpect.EOF,
            pexpect.TIMEOUT,
        ]
        index = self.child.expect(patterns, timeout=deadline.left())
        if index == 0:
            return WatchResult(WatchEnd.MARKER)
        if index == 1:
            try:
                self.child.expect([pexpect.EOF, pexpect.TIMEOUT], timeout=min(self.settle, deadline.left()))
            except pexpect.ExceptionPexpect:
                pass
            fatal = [e for e in scan(self.text()) if e.fatal]
            return WatchResult(WatchEnd.FATAL, fatal[0] if fatal else None)
        if index == 2:
            return WatchResult(WatchEnd.LAB)
        return WatchResult(WatchEnd.EOF if index == 3 else WatchEnd.TIMEOUT)

    def text(self) -> str:
        return read(self.log_path)
