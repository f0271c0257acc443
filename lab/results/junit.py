"""JUnit XML of a run's cells, for CI viewers (people read lab.results.summary and lab.results.html).

JUnit: one <testsuite> per (cell, suite), named like its classname
"<cell id>.<suite>" (e.g. "x86_64.6.12.default.landlock") so the same suite
on two cells never merges in a CI viewer. MISS becomes <error> (the reason
starts "never reported"), ERROR <error>, FAIL <failure>, SKIP <skipped>; the
log is the element's text. Each cell also gets a "<cell id>.cell" suite with
one "kernel" testcase: <error> for a fatal kernel event or a lab error,
<failure> for other kernel events, so a boot-time WARNING is visible even
though no test was running.
"""

from __future__ import annotations

from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

from lab import atomic
from lab.results import signature
from lab.results.model import CellResult, Status, TestResult

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
    with atomic.replacing(path) as tmp:
        xml.write(str(tmp), pretty=True)


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

    A failure's `type` is its signature (lab.results.signature): CI viewers group by it.
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
