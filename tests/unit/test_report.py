"""lab.results.junit: JUnit (golden, and read back with junitparser), the run's KTAP, and the summaries."""

from __future__ import annotations

from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from lab.results import junit, ktap, write
from tests.unit._results_data import PLANNED, cells, golden, normalise_xml


def written_junit(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "junit.xml"
    junit.write_junit(path, cells())
    return path, path.read_text()


def test_junit_matches_golden(tmp_path: Path) -> None:
    path, xml = written_junit(tmp_path)
    got = normalise_xml(xml)
    assert got == golden("junit.golden.xml", got)
    assert [p.name for p in tmp_path.iterdir()] == ["junit.xml"]  # written atomically, nothing left over


def read_back(tmp_path: Path) -> dict[str, dict[str, tuple[str, str, str]]]:
    """suite name -> case name -> (result element, message, text), as junitparser reads the file."""
    path, _ = written_junit(tmp_path)
    out: dict[str, dict[str, tuple[str, str, str]]] = {}
    for suite in JUnitXml.fromfile(str(path)):
        cases = out.setdefault(suite.name, {})
        for case in suite:
            assert case.classname == suite.name
            element = case.result[0] if case.result else None
            cases[case.name] = (
                type(element).__name__ if element else "pass",
                (element.message or "") if element else "",
                (element.text or "") if element else "",
            )
    return out


@pytest.mark.parametrize(
    ("suite", "case", "element", "message"),
    [
        ("x86_64.6.12.default.fsdemo", "open_allowed", "pass", ""),
        ("x86_64.6.12.default.fsdemo", "open_denied", "Failure", "open(/etc/passwd) errno: expected 1, got 13"),
        ("x86_64.6.12.default.fsdemo", "needs_abi_9", "Skipped", "Landlock ABI 9 needed, kernel has 6 # of 9"),
        ("x86_64.6.12.default.fsdemo", "helper_crashes", "Error", "KeyError: 'missing'"),
        ("x86_64.6.12.default.ptracedemo", "kernel_splats", "Failure", "warning: WARNING: CPU: 0 PID: 123 at "),
        ("x86_64.6.12.default.cell", "kernel", "Failure", "1 kernel event(s): warning"),
        ("arm64.6.12.default.ptracedemo", "attach_parent", "pass", ""),
        ("arm64.6.12.default.ptracedemo", "attach_child", "Error", "never reported: kernel panic"),
        ("arm64.6.12.default.ptracedemo", "kernel_splats", "Failure", "bug: BUG: kernel NULL pointer dereference"),
        ("arm64.6.12.default.cell", "kernel", "Error", "kernel panic: Kernel panic - not syncing: Fatal exception"),
        ("x86_64.6.1.default.fsdemo", "open_allowed", "Error", "never reported"),
        ("x86_64.6.1.default.cell", "kernel", "Error", "lab error: QEMU exited with status 1"),
    ],
)
def test_junit_reads_back(tmp_path: Path, suite: str, case: str, element: str, message: str) -> None:
    got = read_back(tmp_path)[suite][case]
    assert got[0] == element
    assert got[1].startswith(message)


def test_junit_structure_and_bodies(tmp_path: Path) -> None:
    suites = read_back(tmp_path)
    per_cell = ["fsdemo", "ptracedemo", "cell"]
    assert list(suites) == [
        f"{c}.{s}" for c in ("x86_64.6.12.default", "arm64.6.12.default", "x86_64.6.1.default") for s in per_cell
    ]
    assert suites["x86_64.6.12.default.fsdemo"]["helper_crashes"][2].startswith("Traceback (most recent call last):")
    assert "Call Trace:" in suites["x86_64.6.12.default.ptracedemo"]["kernel_splats"][2]
    assert "Kernel panic" in suites["arm64.6.12.default.cell"]["kernel"][2]


def test_junit_counts_and_properties(tmp_path: Path) -> None:
    path, _ = written_junit(tmp_path)
    suites = {s.name: s for s in JUnitXml.fromfile(str(path))}
    fs = suites["x86_64.6.12.default.fsdemo"]
    assert (fs.tests, fs.failures, fs.errors, fs.skipped) == (4, 1, 1, 1)
    lab = suites["x86_64.6.1.default.fsdemo"]
    assert (lab.tests, lab.errors) == (4, 4)
    props = {p.name: p.value for p in suites["arm64.6.12.default.ptracedemo"].properties()}
    assert props["arch"] == "arm64" and props["accel"] == "tcg" and props["kernel_release"] == "6.12.0-klab"
    assert props["qemu_version"] == "7.2.11"
    kinds = {type(r) for s in suites.values() for c in s for r in c.result}
    assert kinds == {Failure, Error, Skipped}


def test_run_ktap_holds_every_planned_test(tmp_path: Path) -> None:
    path = tmp_path / "run.ktap"
    write.write_ktap(path, cells())
    text = path.read_text()
    assert text == golden("run.golden.ktap", text)
    tree = ktap.parse(text)
    assert tree.problems == [] and [c.name for c in tree.subtests] == [c.id for c in cells()]
    for cell in tree.subtests:
        names = [(s.name, t.name) for s in cell.subtests for t in s.subtests if t.name != "kernel_splats"]
        assert names == PLANNED
        assert all(t.status is not ktap.Status.MISSING for t in cell.leaves())
    miss = tree.subtests[1].subtests[1].subtests[1]
    assert (miss.status, miss.log[-1]) == (ktap.Status.NOT_OK, "MISS: never reported: kernel panic")
    assert tree.subtests[1].log[-1] == "kernel panic: Kernel panic - not syncing: Fatal exception"
