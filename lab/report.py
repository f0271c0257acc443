"""Reports over `lab.results` cells for tools: JUnit XML and KTAP (people read lab.summary and lab.htmlreport).

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

from lab import ktap, signature
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
    """pytest's conventions: XFAIL is skipped ("xfail: reason"), XPASS a pass that says so in its output.

    A failure's `type` is its signature (lab.signature): CI viewers group by it.
    """
    case = TestCase(test.name, classname, test.duration)
    if test.status in (Status.PASS, Status.XPASS):
        out = f"XPASS: {test.reason}\n{test.log}" if test.status is Status.XPASS else test.log
        if out.strip():
            case.system_out = out
        return case
    element: Error | Failure | Skipped
    if test.status in (Status.FAIL, Status.FLAKY):
        prefix = "FLAKY: " if test.status is Status.FLAKY else ""
        element = Failure(prefix + test.reason, test.signature or test.status.value)
    elif test.status is Status.SKIP:
        element = Skipped(test.reason)
    elif test.status is Status.XFAIL:
        element = Skipped(f"xfail: {test.reason}", "xfail")
    else:
        element = Error(test.reason, test.signature or test.status.value)
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
        element = Error(f"kernel {fatal[0].kind}: {fatal[0].title}", signature.of_event(fatal[0]))
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
    """TAP's TODO directive marks known failures: XFAIL is `not ok # TODO`, XPASS `ok # TODO`."""
    leaf = ktap.Test(test.name, ktap.Status.OK, number, log=test.log.splitlines())
    if test.status is Status.SKIP:
        leaf.status, leaf.directive, leaf.reason = ktap.Status.SKIP, "SKIP", test.reason
    elif test.status in (Status.XFAIL, Status.XPASS):
        leaf.status = ktap.Status.NOT_OK if test.status is Status.XFAIL else ktap.Status.OK
        leaf.directive, leaf.reason = "TODO", f"{test.status.value} {test.reason}"
    elif test.status in BAD or test.status is Status.FLAKY:
        leaf.status = ktap.Status.NOT_OK
        leaf.log.append(f"{test.status.value}: {' '.join(test.reason.split())}")
    return leaf


def write_ktap(path: Path, cells: list[CellResult]) -> None:
    """The run as KTAP (for tools that read kunit output), written to a temporary file and renamed."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(ktap.emit(to_ktap(cells)))
    os.replace(tmp, path)
