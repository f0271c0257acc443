"""A small KTAP version 1 parser and writer (our own; the kernel's kunit_parser.py is GPL).

`parse(text)` turns a KTAP stream into a `Test` tree once, so results, JUnit and
the summaries read typed fields. It reads what a serial console really carries:

- lines before the first ``KTAP version``/``TAP version`` header are ignored,
  as are unindented lines that are not KTAP (kernel messages between results);
  an indented non-KTAP line inside an open subtest is kept in the log (KUnit
  prints "Expected ..." lines that way);
- a printk timestamp (``[   12.345678] ``) and caller id (``[    T1] ``) in
  front of a line are dropped; nesting is the indentation after them, four
  spaces per level;
- a truncated stream (the kernel died mid-suite) still parses: a subtest whose
  block started but whose own result line never came is CRASHED, and every
  test the plan (``1..N``) promised but nobody reported is a MISSING
  placeholder, so what never ran stays visible.

Diagnostic lines (``# ...``) before a level's plan belong to that level's test;
after the plan they belong to the next result line at the same level (our guest
and KUnit both print a test's messages before its ``not ok``); any left when a
level closes belong to that level's test (e.g. ``# suite: pass:3 fail:0``).

`emit(test)` writes a tree back. MISSING placeholders are not written (the plan
still promises them, so a re-parse finds them missing again) and a CRASHED
test is written without its result line, for the same reason.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from lab.results.consolelog import strip_prefix

INDENT = "    "

# printk timestamp, then optional caller id (CONFIG_PRINTK_CALLER, 5.1+); the kernel puts one space after "]".
_HEADER = re.compile(r"^(?:KTAP|TAP) version (\d+)\s*$")
_PLAN = re.compile(r"^1\.\.(\d+)\s*$")
_RESULT = re.compile(r"^(ok|not ok) (\d+)(?: -)?(?: (.*?))?\s*$")
_SUBTEST = re.compile(r"^# Subtest: (.*?)\s*$")
_DIAG = re.compile(r"^#(?: (.*?))?\s*$")
_DIRECTIVE = re.compile(r"^(SKIP|TODO)\b\s*(.*)$", re.IGNORECASE)


class Status(enum.Enum):
    """What KTAP says about a test, plus what a truncated stream leaves behind."""

    OK = "ok"
    NOT_OK = "not ok"
    SKIP = "skip"  # "ok N name # SKIP reason" (or "not ok ... # SKIP")
    CRASHED = "crashed"  # its block started (header, plan or results) but its result line never came
    MISSING = "missing"  # promised by a plan, never seen at all


@dataclass
class Test:
    """One KTAP test; the root is the whole document (number 0, no result line of its own)."""

    name: str = ""
    status: Status = Status.CRASHED
    number: int = 0
    directive: str = ""  # "SKIP" or "TODO" when the result line carried one
    reason: str = ""  # the directive's text
    log: list[str] = field(default_factory=list)  # diagnostic lines, without "# "
    subtests: list[Test] = field(default_factory=list)
    planned: int | None = None  # N from "1..N"
    problems: list[str] = field(default_factory=list)  # what did not follow KTAP (kept, never fatal)

    def counts(self) -> dict[Status, int]:
        """Leaf tests under this one by status (a test with no subtests counts itself)."""
        out = {s: 0 for s in Status}
        for leaf in self.leaves():
            out[leaf.status] += 1
        return out

    def leaves(self) -> list[Test]:
        if not self.subtests:
            return [self]
        return [leaf for sub in self.subtests for leaf in sub.leaves()]

    def ok(self) -> bool:
        """True when this test and everything under it passed, was skipped, or failed as a TODO (known failure)."""
        fine = self.status in (Status.OK, Status.SKIP) or self.directive == "TODO"
        return fine and all(s.ok() for s in self.subtests)


@dataclass
class _Level:
    """A test whose block is open: its lines (plan, diagnostics, children's results) are being read."""

    test: Test
    pending: list[str] = field(default_factory=list)  # diagnostics waiting for the next result line
    awaiting: Test | None = None  # a child whose block closed and whose result line should come next

    def fresh(self) -> bool:
        return self.test.planned is None and not self.test.subtests


@dataclass(frozen=True)
class _Line:
    depth: int
    text: str


def _strip(raw: str) -> _Line:
    line = strip_prefix(raw.rstrip("\r\n")).rstrip()
    body = line.lstrip(" ")
    return _Line((len(line) - len(body)) // len(INDENT), body)


def parse(text: str) -> Test:
    """Parse the first KTAP document in `text` (console noise allowed) into a `Test` tree."""
    parser = _Parser()
    for raw in text.splitlines():
        if not parser.feed(_strip(raw)):
            break
    return parser.finish()


class _Parser:
    def __init__(self) -> None:
        self.root = Test(name="", number=0)
        self.stack: list[_Level] = []  # stack[d] is the open test at depth d; empty until the header

    def feed(self, line: _Line) -> bool:
        """Consume one line; False when a second top-level document starts (stop there)."""
        if not self.stack:
            if line.depth == 0 and _HEADER.match(line.text):
                self.stack.append(_Level(self.root))
            return True
        kind = _kind(line.text)
        if kind is None:
            self._free_text(line)
            return True
        if line.depth == 0 and kind == "header" and not self.stack[0].fresh():
            return False
        self._move_to(line.depth, kind)
        level = self.stack[-1]
        if kind == "plan":
            self._plan(level, line.text)
        elif kind == "result":
            self._result(level, line.text)
        elif kind == "subtest" and line.depth > 0 and not level.test.name:
            level.test.name = _SUBTEST.match(line.text).group(1)  # type: ignore[union-attr]
        elif kind in ("diag", "subtest"):
            diag = line.text[2:] if line.text.startswith("# ") else line.text[1:]
            (level.test.log if level.test.planned is None else level.pending).append(diag)
        return True

    def _free_text(self, line: _Line) -> None:
        """Keep an indented non-KTAP line inside an open subtest (KUnit's "Expected ..." lines); drop the rest."""
        top = len(self.stack) - 1
        if line.depth == 0 or line.depth < top:
            return  # a kernel message or other console noise
        level = self.stack[-1]
        text = INDENT * (line.depth - top) + line.text
        (level.test.log if level.test.planned is None else level.pending).append(text)

    def _move_to(self, depth: int, kind: str) -> None:
        """Close levels deeper than `depth`, open new ones down to it; a new header or name starts a sibling."""
        while len(self.stack) - 1 > depth:
            self._close()
        if len(self.stack) - 1 == depth and depth > 0 and kind in ("header", "subtest"):
            top = self.stack[-1]
            if not top.fresh() or (kind == "header" and top.test.name):
                self._close()
        while len(self.stack) - 1 < depth:
            parent = self.stack[-1]
            parent.awaiting = None  # a new block began: an unclaimed earlier child stays CRASHED
            child = Test(status=Status.CRASHED, number=len(parent.test.subtests) + 1)
            parent.test.subtests.append(child)
            self.stack.append(_Level(child))

    def _close(self) -> None:
        level = self.stack.pop()
        level.test.log.extend(level.pending)
        self.stack[-1].awaiting = level.test

    def _plan(self, level: _Level, text: str) -> None:
        count = int(_PLAN.match(text).group(1))  # type: ignore[union-attr]
        if level.test.planned is not None:
            level.test.problems.append(f"second plan 1..{count} ignored (first: 1..{level.test.planned})")
            return
        level.test.planned = count

    def _result(self, level: _Level, text: str) -> None:
        match = _RESULT.match(text)
        assert match is not None
        word, number, rest = match.group(1), int(match.group(2)), match.group(3) or ""
        name, directive, reason = _split_directive(rest)
        if level.awaiting is not None:
            test = level.awaiting
            if test.name and name and test.name != name:
                level.test.problems.append(f"result {number} names {name!r} but the subtest was {test.name!r}")
            test.name = test.name or name
            test.log.extend(level.pending)
        else:
            test = Test(name=name, log=list(level.pending))
            level.test.subtests.append(test)
        level.pending, level.awaiting = [], None
        expected = len(level.test.subtests)
        if number != expected:
            level.test.problems.append(f"test {name!r} is numbered {number}, expected {expected}")
        test.number, test.directive, test.reason = number, directive, reason
        skipped = directive == "SKIP"
        test.status = Status.SKIP if skipped else Status.OK if word == "ok" else Status.NOT_OK

    def finish(self) -> Test:
        if not self.stack:
            self.root.problems.append("no KTAP version line: no KTAP output at all")
        while len(self.stack) > 1:
            self._close()
        if self.stack:
            self.root.log.extend(self.stack[0].pending)
        _add_missing(self.root)
        complete = self.root.planned is not None and all(s.ok() for s in self.root.subtests)
        self.root.status = Status.OK if complete else Status.NOT_OK
        return self.root


def _kind(text: str) -> str | None:
    if _HEADER.match(text):
        return "header"
    if _PLAN.match(text):
        return "plan"
    if _RESULT.match(text):
        return "result"
    if _SUBTEST.match(text):
        return "subtest"
    if _DIAG.match(text):
        return "diag"
    return None


def _split_directive(rest: str) -> tuple[str, str, str]:
    """Split "name # SKIP reason" at the first unescaped " # "; only SKIP and TODO are directives."""
    parts = re.split(r"(?<!\\) # ", rest, maxsplit=1)
    name = parts[0].strip()
    if len(parts) == 2:
        match = _DIRECTIVE.match(parts[1].strip())
        if match:
            return name, match.group(1).upper(), match.group(2).replace("\\#", "#")
        name = rest.strip()
    return name, "", ""


def _add_missing(test: Test) -> None:
    """Give every number the plan promised and nobody reported a MISSING placeholder, in order."""
    for sub in test.subtests:
        _add_missing(sub)
    if test.planned is None or len(test.subtests) >= test.planned:
        return
    for number in range(len(test.subtests) + 1, test.planned + 1):
        test.subtests.append(Test(status=Status.MISSING, number=number))


def emit(test: Test) -> str:
    """Write a tree (as `parse` returns it) back as KTAP version 1 text."""
    return "\n".join(_emit(test, 0, root=True)) + "\n"


def _emit(test: Test, depth: int, root: bool = False) -> list[str]:
    pad = INDENT * depth
    inner = pad if root else INDENT * (depth + 1)
    lines: list[str] = []
    if root or test.subtests or test.planned is not None or test.status is Status.CRASHED:
        lines.append(f"{inner}KTAP version 1")
        if not root and test.name:
            lines.append(f"{inner}# Subtest: {test.name}")
        if test.planned is not None:
            lines.append(f"{inner}1..{test.planned}")
        for sub in test.subtests:
            if sub.status is not Status.MISSING:
                lines += _emit(sub, depth if root else depth + 1)
        lines += [f"{inner}# {entry}".rstrip() for entry in test.log]
    else:
        lines += [f"{pad}# {entry}".rstrip() for entry in test.log]
    if root or test.status is Status.CRASHED:
        return lines
    word = "not ok" if test.status is Status.NOT_OK else "ok"
    directive = f" # {test.directive or 'SKIP'} {test.reason.replace('#', chr(92) + '#')}".rstrip()
    tail = directive if test.directive or test.status is Status.SKIP else ""
    lines.append(f"{pad}{word} {test.number} {test.name}{tail}".rstrip())
    return lines


@dataclass(frozen=True)
class Span:
    """Where a top-level subtest (a suite) ran in a console log, as character offsets."""

    name: str
    start: int  # its "# Subtest: NAME" line
    end: int  # just after its own result line; len(text) when that never came (the kernel died in it)


def suite_spans(text: str) -> list[Span]:
    """Find each suite's stretch of a console log from its KTAP lines, to tell who was running when."""
    spans: list[Span] = []
    open_name, open_start, offset = "", -1, 0
    for raw in text.splitlines(keepends=True):
        line = _strip(raw)
        offset += len(raw)
        subtest = _SUBTEST.match(line.text) if line.depth == 1 else None
        if subtest is not None:
            if open_start >= 0:
                spans.append(Span(open_name, open_start, offset - len(raw)))
            open_name, open_start = subtest.group(1), offset - len(raw)
        elif open_start >= 0 and line.depth == 0 and _RESULT.match(line.text):
            spans.append(Span(open_name, open_start, offset))
            open_start = -1
    if open_start >= 0:
        spans.append(Span(open_name, open_start, len(text)))
    return spans
