"""Reports over `lab.results` cells: JUnit XML, KTAP, and text/Markdown summaries.

JUnit: one <testsuite> per (cell, suite), named like its classname
"<cell id>.<suite>" (e.g. "x86_64.6.12.default.landlock") so the same suite
on two cells never merges in a CI viewer. MISS becomes <error> (the reason
starts "never reported"), ERROR <error>, FAIL <failure>, SKIP <skipped>; the
log is the element's text. Each cell also gets a "<cell id>.cell" suite with
one "kernel" testcase: <error> for a fatal kernel event or a lab error,
<failure> for other kernel events, so a boot-time WARNING is visible even
though no test was running.

KTAP: root -> cell -> suite -> test, written like the guest writes its own
("# FAIL: reason" before "not ok"); a MISS test is written as "not ok" after
"# MISS: never reported...", so the file always holds every planned test.
"""

from __future__ import annotations

import os
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

from lab import ktap
from lab.results import BAD, CellResult, CellVerdict, Status, TestResult

_PROPERTIES = (
    "arch",
    "accel",
    "accel_reason",
    "kernel_release",
    "describe",
    "qemu_version",
    "config_sha256",
    "image",
    "append",
)


def write_junit(path: Path, cells: list[CellResult]) -> None:
    """JUnit XML for CI viewers, written to a temporary file and renamed."""
    xml = JUnitXml()
    for cell in cells:
        for suite in cell.suites():
            xml.add_testsuite(_junit_suite(cell, f"{cell.id}.{suite}", [t for t in cell.tests if t.suite == suite]))
        xml.add_testsuite(_junit_suite(cell, f"{cell.id}.cell", [], _kernel_case(cell)))
    tmp = path.with_name(f".{path.name}.tmp")
    xml.write(str(tmp), pretty=True)
    os.replace(tmp, path)


def _junit_suite(cell: CellResult, classname: str, tests: list[TestResult], *extra: TestCase) -> TestSuite:
    suite = TestSuite(classname)
    for key in _PROPERTIES:
        suite.add_property(key, str(getattr(cell, key)))
    for test in tests:
        suite.add_testcase(_junit_case(classname, test))
    for case in extra:
        suite.add_testcase(case)
    return suite


def _junit_case(classname: str, test: TestResult) -> TestCase:
    case = TestCase(test.name, classname, test.duration)
    if test.status is Status.PASS:
        if test.log:
            case.system_out = test.log
        return case
    element: Error | Failure | Skipped
    if test.status is Status.FAIL:
        element = Failure(test.reason, "FAIL")
    elif test.status is Status.SKIP:
        element = Skipped(test.reason)
    else:
        element = Error(test.reason, test.status.value)
    if test.log:
        element.text = test.log
    case.result = [element]
    return case


def _kernel_case(cell: CellResult) -> TestCase:
    """The cell's own health: kernel events anywhere in the run, or the lab error that stopped it."""
    case = TestCase("kernel", f"{cell.id}.cell", cell.durations.get("total", 0.0))
    fatal = [e for e in cell.kernel_events if e.fatal]
    element: Error | Failure
    if fatal:
        element = Error(f"kernel {fatal[0].kind}: {fatal[0].title}", fatal[0].kind)
    elif cell.error:
        element = Error(f"lab error: {cell.error}", "lab")
    elif cell.kernel_events:
        kinds = ", ".join(dict.fromkeys(e.kind for e in cell.kernel_events))
        element = Failure(f"{len(cell.kernel_events)} kernel event(s): {kinds}", cell.kernel_events[0].kind)
    else:
        return case
    element.text = "\n\n".join(e.excerpt for e in cell.kernel_events) or cell.error
    case.result = [element]
    return case


def to_ktap(cells: list[CellResult]) -> ktap.Test:
    """The cells as one KTAP tree: root -> cell -> suite -> test."""
    root = ktap.Test(planned=len(cells))
    for number, cell in enumerate(cells, 1):
        node = ktap.Test(cell.id, _node_status(cell.verdict() is CellVerdict.PASS), number, planned=len(cell.suites()))
        for i, suite in enumerate(cell.suites(), 1):
            tests = [t for t in cell.tests if t.suite == suite]
            passed = not any(t.status in BAD for t in tests)
            child = ktap.Test(suite, _node_status(passed), i, planned=len(tests))
            child.subtests = [_ktap_leaf(t, j) for j, t in enumerate(tests, 1)]
            node.subtests.append(child)
        node.log = [f"kernel {e.kind}: {e.title}" for e in cell.kernel_events]
        node.log += [f"lab error: {cell.error}"] if cell.error else []
        root.subtests.append(node)
    return root


def _node_status(passed: bool) -> ktap.Status:
    return ktap.Status.OK if passed else ktap.Status.NOT_OK


def _ktap_leaf(test: TestResult, number: int) -> ktap.Test:
    leaf = ktap.Test(test.name, ktap.Status.OK, number, log=test.log.splitlines())
    if test.status is Status.SKIP:
        leaf.status, leaf.directive, leaf.reason = ktap.Status.SKIP, "SKIP", test.reason
    elif test.status in BAD:
        leaf.status = ktap.Status.NOT_OK
        leaf.log.append(f"{test.status.value}: {' '.join(test.reason.split())}")
    return leaf


def write_ktap(path: Path, cells: list[CellResult]) -> None:
    """The run as KTAP (for tools that read kunit output), written to a temporary file and renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(ktap.emit(to_ktap(cells)))
    os.replace(tmp, path)


# --- summaries ------------------------------------------------------------------------------------

_LEGEND = "per suite: passed/failed/skipped/missing (failed counts errors too); kernel events: kind, ! when fatal"


def _rows(cells: list[CellResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the cell x suite table, shared by the text and Markdown forms."""
    suites = list(dict.fromkeys(s for cell in cells for s in cell.suites()))
    header = ["cell", "kernel", "accel", "wall", *suites, "kernel events", "verdict"]
    rows = []
    for cell in cells:
        counts = []
        for suite in suites:
            c = cell.counts(suite)
            total = sum(c.values())
            fails = c[Status.FAIL] + c[Status.ERROR]
            counts.append(f"{c[Status.PASS]}/{fails}/{c[Status.SKIP]}/{c[Status.MISS]}" if total else "-")
        wall = cell.durations.get("total")
        rows.append(
            [
                cell.id,
                cell.kernel_release or "?",
                cell.accel or "?",
                f"{wall:.1f}s" if wall else "-",
                *counts,
                _event_kinds(cell),
                cell.verdict().value,
            ]
        )
    return header, rows


def _event_kinds(cell: CellResult) -> str:
    kinds = [e.kind + ("!" if e.fatal else "") for e in cell.kernel_events]
    return ",".join(dict.fromkeys(kinds)) or "-"


def _problems(cells: list[CellResult], per_cell: int = 20) -> list[str]:
    """What a reader must look at: bad tests, kernel events, lab errors; capped per cell (results.json has all)."""
    out = []
    for cell in cells:
        # A lab error explains its cell's MISS tests: one line says it.
        bad = [t for t in cell.tests if t.status in BAD and not (cell.error and t.status is Status.MISS)]
        lines = [f"{t.status.value} {cell.id} {t.full_name}: {t.reason}" for t in bad]
        lines += [f"KERNEL {cell.id} {e.kind}{' (fatal)' if e.fatal else ''}: {e.title}" for e in cell.kernel_events]
        lines += [f"LAB {cell.id}: {cell.error}"] if cell.error else []
        if len(lines) > per_cell:
            lines[per_cell - 1 :] = [f"... {cell.id}: {len(lines) - per_cell + 1} more in results.json"]
        out += lines
    return out


def summary_table(cells: list[CellResult]) -> str:
    """A plain-text table (cell x suite) plus the problems, for terminals and CI logs alike."""
    header, rows = _rows(cells)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += ["", _LEGEND, *_problems(cells)]
    return "\n".join(lines) + "\n"


def summary_markdown(cells: list[CellResult]) -> str:
    """The same table in Markdown, for a CI job summary."""
    header, rows = _rows(cells)

    def row(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    lines = [row(header), row(["---"] * len(header)), *(row(r) for r in rows), "", f"_{_LEGEND}_"]
    problems = _problems(cells)
    if problems:
        lines += ["", "**Problems**", ""] + [f"- {_md_code(p)}" for p in problems]
    return "\n".join(lines) + "\n"


def _md_code(text: str) -> str:
    """Inline code that survives backticks in kernel messages."""
    return "`` " + text + " ``" if "`" in text else f"`{text}`"
