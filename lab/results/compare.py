"""`klab compare BASE NEW`: what changed between two runs, so a red run says which failures are its own.

A run with 12 failures of which 11 failed last week too needs one line: the
new one. Cells are matched by id (stable across runs), tests by (cell, suite,
name). Runs on different kernels have different cell ids (x86_64.6.12.default,
x86_64.7.3.default): cells left unmatched are paired by arch and boot, and the
output says so, so "what changed from 6.12 to 7.3" is one command. Runs with
no cell in common either way cannot be compared (exit 2). Every change is one
line, grouped, counts first. Only a new failure (a test failing now that did
not fail in BASE, or a kernel event BASE did not have) makes the exit status
1; fixes, skips, signatures and durations are information.

"Failing" is FAIL, ERROR, or MISS where the kernel is to blame: the MISS tests
of a cell the lab could not run (cell.error) say nothing about the kernel, so
they are neither failures nor fixes, and the lab error gets a line of its own.
A duration of 0.0 means unknown (only KTAP came back) and is never compared.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from lab.errors import UserError
from lab.results.model import CellResult, Status, TestResult
from lab.results.signature import of_event
from lab.results.store import Run


class Kind(enum.Enum):
    """A group of the output, in the order printed; the value is its heading."""

    PAIRED = "paired across kernels (same arch and boot)"
    NEW_FAILURE = "new failures"
    NEW_EVENT = "new kernel events"
    FIXED = "fixed"
    SIGNATURE = "signature changed (failing in both)"
    STATUS = "other status changes"
    SKIP_REASON = "skip reason changed"
    APPEARED = "appeared"
    DISAPPEARED = "disappeared"
    LAB_ERROR = "lab errors (no verdict)"
    SLOWER = "slower"
    FASTER = "faster"


REGRESSIONS = (Kind.NEW_FAILURE, Kind.NEW_EVENT)


@dataclass(frozen=True)
class Change:
    kind: Kind
    cell: str
    test: str  # SUITE.TEST, or "" for a change of the whole cell
    detail: str

    def line(self) -> str:
        where = f"{self.cell} {self.test}" if self.test else self.cell
        return f"{where}: {self.detail}"


@dataclass(frozen=True)
class Threshold:
    """A duration change is reported when it passes every bound set (None: that bound is off)."""

    seconds: float | None = 1.0
    percent: float | None = 50.0

    def exceeded(self, base: float, new: float) -> bool:
        if base <= 0 or new <= 0:
            return False  # 0.0: only KTAP came back, the duration is unknown
        delta = abs(new - base)
        return (self.seconds is None or delta >= self.seconds) and (
            self.percent is None or delta * 100 / base >= self.percent
        )


_THRESHOLD = re.compile(r"^(\d+(?:\.\d+)?)\s*(%|s)?$")


def parse_threshold(text: str) -> Threshold:
    """`2` or `2s`: seconds only; `30%`: percent only."""
    match = _THRESHOLD.match(text.strip())
    if not match:
        raise UserError(f"--threshold {text!r}: give seconds (2, 2.5s) or a percentage (30%)")
    value = float(match.group(1))
    return Threshold(percent=value, seconds=None) if match.group(2) == "%" else Threshold(seconds=value, percent=None)


def failing(cell: CellResult, test: TestResult) -> bool:
    """FAIL, ERROR, or MISS where the kernel is to blame (report.html colours by the same rule)."""
    return test.status in (Status.FAIL, Status.ERROR) or (test.status is Status.MISS and not cell.error)


def _unknown(cell: CellResult, test: TestResult) -> bool:
    """A test the lab never ran: its cell's lab error is the news, not the test."""
    return test.status is Status.MISS and bool(cell.error)


def _verdict(test: TestResult) -> str:
    parts = [test.reason, f"[{test.signature}]" if test.signature else ""]
    return " ".join(p for p in parts if p)


def compare_test(cell: str, base: TestResult, new: TestResult, base_fails: bool, new_fails: bool) -> list[Change]:
    """The changes of one test present in both runs (neither side a lab error's MISS)."""
    name, moved = new.full_name, f"{base.status.value} -> {new.status.value}"
    if new_fails and not base_fails:
        return [Change(Kind.NEW_FAILURE, cell, name, f"{moved}: {_verdict(new)}")]
    if base_fails and not new_fails:
        return [Change(Kind.FIXED, cell, name, f"{moved} (was: {_verdict(base)})")]
    if base_fails and new_fails:
        if base.signature != new.signature:
            return [Change(Kind.SIGNATURE, cell, name, f"[{base.signature}] -> [{new.signature}]")]
        return []
    if base.status is not new.status:
        return [Change(Kind.STATUS, cell, name, f"{moved}: {new.reason}" if new.reason else moved)]
    if new.status is Status.SKIP and base.reason != new.reason:
        return [Change(Kind.SKIP_REASON, cell, name, f"{base.reason!r} -> {new.reason!r}")]
    return []


def _durations(cell: str, base: TestResult, new: TestResult, threshold: Threshold) -> list[Change]:
    if not threshold.exceeded(base.duration, new.duration):
        return []
    kind = Kind.SLOWER if new.duration > base.duration else Kind.FASTER
    ratio = new.duration / base.duration
    return [Change(kind, cell, new.full_name, f"{base.duration:.2f} s -> {new.duration:.2f} s (x{ratio:.2f})")]


def compare_cell(base: CellResult, new: CellResult, threshold: Threshold) -> list[Change]:
    old = {(t.suite, t.name): t for t in base.tests}
    out: list[Change] = []
    if new.error:
        out.append(Change(Kind.LAB_ERROR, new.id, "", new.error))
    for test in new.tests:
        was = old.pop((test.suite, test.name), None)
        if _unknown(new, test) or (was is not None and _unknown(base, was)):
            continue
        if was is None:
            kind = Kind.NEW_FAILURE if failing(new, test) else Kind.APPEARED
            now = f"not in base, now {test.status.value} {_verdict(test)}".rstrip()
            out.append(Change(kind, new.id, test.full_name, now))
            continue
        out += compare_test(new.id, was, test, failing(base, was), failing(new, test))
        out += _durations(new.id, was, test, threshold)
    gone = [t for t in old.values() if not _unknown(base, t)]
    if not new.error:  # a lab error explains what is missing: no test of it "disappeared"
        out += [Change(Kind.DISAPPEARED, new.id, t.full_name, f"was {t.status.value}") for t in gone]
    seen = {of_event(e) for e in base.kernel_events}
    out += [
        Change(Kind.NEW_EVENT, new.id, "", f"{e.kind}{' (fatal)' if e.fatal else ''}: {sig}")
        for e, sig in ((e, of_event(e)) for e in new.kernel_events)
        if sig not in seen
    ]
    return out


def pair_cells(base: Run, new: Run) -> tuple[dict[str, CellResult], list[Change]]:
    """BASE's cell for each NEW cell id that has one: the same id, else the one cell of the same arch and boot."""
    old = {cell.id: cell for cell in base.cells}
    paired = {cell.id: old[cell.id] for cell in new.cells if cell.id in old}
    left = [cell for cell in base.cells if cell.id not in paired]
    unpaired = [cell for cell in new.cells if cell.id not in paired]
    notes = []
    for cell in unpaired:
        same = [b for b in left if _arch_boot(b) == _arch_boot(cell)]
        if len(same) == 1 and sum(_arch_boot(c) == _arch_boot(cell) for c in unpaired) == 1:
            paired[cell.id] = same[0]
            left.remove(same[0])
            kernels = f"{same[0].kernel_release or '?'} -> {cell.kernel_release or '?'}"
            notes.append(Change(Kind.PAIRED, cell.id, "", f"compared with {same[0].id} ({kernels})"))
    if base.cells and new.cells and not paired:
        raise UserError(
            f"no cell in common: BASE has {', '.join(c.id for c in base.cells)}, NEW has "
            f"{', '.join(c.id for c in new.cells)}; compare runs of the same arch and boot"
        )
    return paired, notes


def _arch_boot(cell: CellResult) -> tuple[str, str]:
    return cell.arch, cell.boot or "default"


def compare(base: Run, new: Run, threshold: Threshold | None = None) -> list[Change]:
    """Every change from BASE to NEW, cell by cell in NEW's order, then the cells NEW no longer has."""
    threshold = threshold or Threshold()
    paired, out = pair_cells(base, new)
    for cell in new.cells:
        before = paired.get(cell.id)
        if before is None:
            out.append(Change(Kind.APPEARED, cell.id, "", f"new cell, {len(cell.tests)} tests"))
            before = CellResult(cell.id, cell.arch)  # its failures are new failures, its passes need no line each
            out += [c for c in compare_cell(before, cell, threshold) if c.kind is not Kind.APPEARED]
        else:
            out += compare_cell(before, cell, threshold)
    used = {id(cell) for cell in paired.values()}
    gone = [cell for cell in base.cells if id(cell) not in used]
    out += [Change(Kind.DISAPPEARED, cell.id, "", f"cell gone, had {len(cell.tests)} tests") for cell in gone]
    return out


def exit_status(changes: list[Change]) -> int:
    """1 when NEW has a failure BASE did not (a regression), else 0."""
    return 1 if any(c.kind in REGRESSIONS for c in changes) else 0


def render(changes: list[Change], base: str, new: str) -> str:
    """Counts first (one line; new failures always, the rest when any), then each group: a heading, one line each."""
    by_kind = {kind: [c for c in changes if c.kind is kind] for kind in Kind}
    shown = [kind for kind, found in by_kind.items() if found or kind is Kind.NEW_FAILURE]
    counts = ", ".join(f"{len(by_kind[kind])} {kind.value}" for kind in shown)
    lines = [f"compare {base} -> {new}: {counts}"]
    for kind, found in by_kind.items():
        if found:
            lines += ["", f"{kind.value} ({len(found)}):", *(f"  {c.line()}" for c in found)]
    return "\n".join(lines) + "\n"
