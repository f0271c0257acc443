"""What a run shows while it runs: each cell building, booting, running (tests done of planned), done.

The guest's KTAP reaches the console as it happens, so `ConsoleTap` (a
console stream) counts results live. `Progress` keeps the state; two views
draw it: a rich live table on a terminal, and plain lines (one per cell
event, and a heartbeat every few seconds while tests run) anywhere else,
such as CI logs.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from lab.results.consolelog import strip_prefix

HEARTBEAT = 5.0  # seconds between plain progress lines while tests run
BUILD_HEARTBEAT = 30.0  # ... while a kernel or an image builds (minutes long: fewer lines)


def kbuild_step(line: str) -> bool:
    """A kernel build's step line: `  CC      kernel/fork.o`."""
    return line.startswith("  ") and len(line) > 4


def mmdebstrap_step(line: str) -> bool:
    """mmdebstrap's stage lines (`I: ...`), and its warnings and errors."""
    return line.startswith(("I: ", "W: ", "E: "))


_RESULT = re.compile(r"^ {4}(ok|not ok) \d+ \S+(?:\s+#\s*(\w+))?")
_SUBTEST = re.compile(r"^ {4}# Subtest: (\S+)")


@dataclass
class CellState:
    cell: str
    planned: int = 0
    phase: str = "waiting"  # waiting, building, booting, running, done
    suite: str = ""
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)
    verdict: str = ""

    @property
    def done(self) -> int:
        return self.passed + self.failed + self.skipped

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        what = self.phase + (f" {self.suite}" if self.phase in ("running", "building") and self.suite else "")
        count = f" {self.done}/{self.planned} tests, {self.failed} failed" if self.planned else ""
        verdict = f": {self.verdict}" if self.verdict else ""
        return f"{self.cell}: {what}{count}, {elapsed:.0f}s{verdict}"


class Progress:
    """The state of every cell of a run, drawn live on a terminal and as plain lines elsewhere."""

    def __init__(self, out: IO[str] | None = None, live: bool | None = None) -> None:
        self.out = out or sys.stderr
        self.live = self.out.isatty() if live is None else live
        self.cells: dict[str, CellState] = {}
        self.lock = threading.Lock()
        self._last_line = 0.0
        self._display: Live | None = None

    def __enter__(self) -> Progress:
        if self.live:
            self._display = Live(self._table(), console=Console(file=self.out), refresh_per_second=2, transient=False)
            self._display.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._display is not None:
            self._display.update(self._table())
            self._display.__exit__(None, None, None)
            self._display = None

    def state(self, cell: str) -> CellState:
        with self.lock:
            return self.cells.setdefault(cell, CellState(cell))

    def phase(self, cell: str, phase: str, planned: int = 0, verdict: str = "") -> None:
        state = self.state(cell)
        with self.lock:
            state.phase = phase
            state.planned = planned or state.planned
            state.verdict = verdict
            if phase in ("booting", "building"):
                state.started = time.monotonic()
        self._show(state, always=True)

    def make_steps(self, cell: str, is_step: Callable[[str], bool] = kbuild_step) -> Callable[[str], None]:
        """A build's output lines as progress: the step it is at, and a heartbeat in plain mode."""

        def step(line: str) -> None:
            if is_step(line):
                state = self.state(cell)
                with self.lock:
                    state.suite = " ".join(line.split()[:2]) if is_step is kbuild_step else line.strip()[:60]
                self._show(state, always=False, every=BUILD_HEARTBEAT)

        return step

    def suite(self, cell: str, suite: str) -> None:
        state = self.state(cell)
        with self.lock:
            state.phase, state.suite = "running", suite
        self._show(state, always=True)

    def result(self, cell: str, outcome: str) -> None:
        """One test finished: outcome is pass, fail or skip."""
        state = self.state(cell)
        counter = {"pass": "passed", "fail": "failed", "skip": "skipped"}[outcome]
        with self.lock:
            setattr(state, counter, getattr(state, counter) + 1)
        self._show(state, always=False)

    def _show(self, state: CellState, always: bool, every: float = HEARTBEAT) -> None:
        if self._display is not None:
            self._display.update(self._table())
            return
        now = time.monotonic()
        if always or now - self._last_line >= every:
            self._last_line = now
            self.out.write(f"klab: {state.line()}\n")
            self.out.flush()

    def _table(self) -> Table:
        table = Table(title="kernel-lab", expand=False)
        for column in ("cell", "phase", "tests", "failed", "time"):
            table.add_column(column)
        for state in list(self.cells.values()):
            phase = state.phase + (f" {state.suite}" if state.phase in ("running", "building") else "")
            phase += f": {state.verdict}" if state.verdict else ""
            tests = f"{state.done}/{state.planned}" if state.planned else "-"
            failed = f"[red]{state.failed}[/red]" if state.failed else "0"
            table.add_row(state.cell, phase, tests, failed, f"{time.monotonic() - state.started:.0f}s")
        return table


class ConsoleTap:
    """A console stream (a pexpect logfile) that counts the guest's KTAP results as they go by."""

    def __init__(self, progress: Progress, cell: str) -> None:
        self.progress = progress
        self.cell = cell
        self.pending = ""

    def write(self, data: str) -> None:
        self.pending += data.replace("\r", "")
        *lines, self.pending = self.pending.split("\n")
        for raw in lines:
            line = strip_prefix(raw)
            subtest = _SUBTEST.match(line)
            if subtest:
                self.progress.suite(self.cell, subtest.group(1))
                continue
            result = _RESULT.match(line)
            if result:
                skipped = (result.group(2) or "").upper() == "SKIP"
                outcome = "skip" if skipped else ("pass" if result.group(1) == "ok" else "fail")
                self.progress.result(self.cell, outcome)

    def flush(self) -> None:
        pass
