"""A run's results dir: every report written from the same cells, each file atomically.

results.json (lab.results.store), junit.xml (lab.results.junit), results.ktap
(below), summary.txt/.md (lab.results.summary) and report.html
(lab.results.html). The run's KTAP is root -> cell -> suite -> test, written
like the guest writes its own ("# FAIL: reason" before "not ok"); a MISS test
is written as "not ok" after "# MISS: never reported...", so the file always
holds every planned test.
"""

from __future__ import annotations

from pathlib import Path

from lab import atomic
from lab.results import html, junit, ktap, store, summary
from lab.results.model import BAD, CellResult, CellVerdict, Status, TestResult


def reports(results_dir: Path, cells: list[CellResult], meta: store.RunMeta) -> None:
    """results.json, junit.xml, results.ktap, summary.txt/.md and report.html, each written atomically."""
    store.write(results_dir / "results.json", cells, meta)
    junit.write_junit(results_dir / "junit.xml", cells)
    write_ktap(results_dir / "results.ktap", cells)
    atomic.write_text(results_dir / "summary.txt", summary.table(cells, meta))
    atomic.write_text(results_dir / "summary.md", summary.markdown(cells, meta))
    html.write(results_dir / "report.html", cells, meta, results_dir)


def to_ktap(cells: list[CellResult]) -> ktap.Test:
    """The cells as one KTAP tree: root -> cell -> suite -> test."""
    root = ktap.Test(planned=len(cells))
    for number, cell in enumerate(cells, 1):
        node = ktap.Test(cell.id, _node_status(cell.verdict() is CellVerdict.PASS), number, planned=len(cell.suites()))
        if cell.verdict() is CellVerdict.SKIPPED:
            node.status, node.directive, node.reason = ktap.Status.SKIP, "SKIP", "every selected test skipped"
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
    atomic.write_text(path, ktap.emit(to_ktap(cells)))
