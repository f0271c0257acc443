"""Tests side by side: the guest harness runs a parallel suite's tests at once, and an alone test by itself.

Real forked tests meet at a rendezvous (each waits for the other's start
file), so a scheduler that ran them one after the other fails them; an alone
test checks that nothing else is running, before and after a pause in which a
wrongly started neighbour would show up.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

SUITES = Path(__file__).resolve().parents[2] / "suites"
sys.path.insert(0, str(SUITES))

_klab = pytest.importorskip("_klab", reason="suites/_klab.py needs Linux (it loads libc)")


def _meets(state: Path, me: str, other: str) -> Callable[[], None]:
    """A test that marks itself running and passes only if `other` runs at the same time."""

    def test() -> None:
        (state / f"running-{me}").touch()
        deadline = time.monotonic() + 10
        while not (state / f"running-{other}").exists() and not (state / f"done-{other}").exists():
            _klab.expect(time.monotonic() < deadline, f"{me}: {other} did not run beside it")
            time.sleep(0.01)
        (state / f"done-{me}").touch()
        (state / f"running-{me}").unlink()

    return test


def _busy(state: Path, me: str) -> Callable[[], None]:
    """A test that is seen running for half a second."""

    def test() -> None:
        (state / f"running-{me}").touch()
        time.sleep(0.5)
        (state / f"running-{me}").unlink()

    return test


def _by_itself(state: Path) -> None:
    for _ in range(2):
        others = sorted(p.name for p in state.glob("running-*"))
        _klab.expect(not others, f"ran beside {others}")
        time.sleep(0.2)


def _run(suite: object, jobs: int, repeat: int = 1) -> tuple[list[dict], list[str]]:
    out = io.StringIO()
    records = _klab.run_suites([suite], [], out=out, jobs=jobs, repeat=repeat)
    return records, out.getvalue().splitlines()


def test_parallel_tests_overlap_and_an_alone_test_runs_by_itself(tmp_path: Path) -> None:
    suite = _klab.Suite("side_by_side", parallel=True)
    suite.add("a", _meets(tmp_path, "a", "b"))
    suite.add("b", _meets(tmp_path, "b", "a"))
    suite.add("c_alone", lambda: _by_itself(tmp_path), alone=True)
    suite.add("d", _meets(tmp_path, "d", "e"))
    suite.add("e", _meets(tmp_path, "e", "d"))
    records, lines = _run(suite, jobs=2)
    assert [(r["name"], r["status"]) for r in records] == [(n, "PASS") for n in ("a", "b", "c_alone", "d", "e")], (
        records
    )
    assert [line for line in lines if line.startswith("    ok")] == [
        "    ok 1 a",
        "    ok 2 b",
        "    ok 3 c_alone",
        "    ok 4 d",
        "    ok 5 e",
    ]


def test_a_suite_that_does_not_say_parallel_runs_one_test_at_a_time(tmp_path: Path) -> None:
    suite = _klab.Suite("serial")
    suite.add("busy", _busy(tmp_path, "busy"))
    suite.add("checks", lambda: _by_itself(tmp_path))
    suite.add("busy_again", _busy(tmp_path, "busy_again"))
    records, _ = _run(suite, jobs=2)
    assert [r["status"] for r in records] == ["PASS", "PASS", "PASS"], records


def test_output_keeps_list_order_when_a_later_test_finishes_first(tmp_path: Path) -> None:
    def slow() -> None:
        time.sleep(0.5)
        _klab.expect((tmp_path / "fast").exists(), "the fast test had not finished while the slow one ran")

    suite = _klab.Suite("order", parallel=True)
    suite.add("slow", slow)
    suite.add("fast", lambda: (tmp_path / "fast").touch())
    records, lines = _run(suite, jobs=2)
    assert [(r["name"], r["status"]) for r in records] == [("slow", "PASS"), ("fast", "PASS")], records
    assert lines.index("    ok 1 slow") < lines.index("    ok 2 fast")


def test_repeats_of_one_test_run_in_a_row_and_mixed_outcomes_are_flaky(tmp_path: Path) -> None:
    def second_run_fails() -> None:
        runs = len(list(tmp_path.glob("run-*")))
        (tmp_path / f"run-{runs}").touch()
        _klab.expect(runs != 1, "planted failure on the second run")

    suite = _klab.Suite("repeat", parallel=True)
    suite.add("flaky", second_run_fails)
    suite.add("steady", lambda: None)
    records, lines = _run(suite, jobs=2, repeat=3)
    assert records[0]["status"] == "FLAKY" and records[0]["runs"] == ["PASS", "FAIL", "PASS"], records[0]
    assert "passed 2 of 3 runs" in records[0]["reason"]
    assert records[1]["status"] == "PASS" and records[1]["runs"] == ["PASS"] * 3, records[1]
    assert "    not ok 1 flaky" in lines


def test_a_hung_test_times_out_while_its_neighbour_passes(tmp_path: Path) -> None:
    suite = _klab.Suite("timeout", parallel=True)
    suite.add("hangs", lambda: time.sleep(60))
    suite.add("passes", lambda: None)
    _klab.TEST_TIMEOUT, saved = 1.0, _klab.TEST_TIMEOUT
    try:
        records, _ = _run(suite, jobs=2)
    finally:
        _klab.TEST_TIMEOUT = saved
    assert records[0]["status"] == "FAIL" and records[0]["reason"] == "timed out after 1s", records[0]
    assert records[1]["status"] == "PASS", records[1]


def test_a_test_does_not_hold_the_verdict_pipes_of_the_tests_beside_it(tmp_path: Path) -> None:
    def holds_none() -> None:
        held = []
        for fd in _klab._harness_fds:
            try:
                os.fstat(fd)
                held.append(fd)
            except OSError:
                pass
        _klab.expect(not held, f"holds the harness's pipe fds {held}")

    suite = _klab.Suite("fds", parallel=True)
    suite.add("first", lambda: time.sleep(0.5))
    suite.add("second", holds_none)
    records, _ = _run(suite, jobs=2)
    assert [r["status"] for r in records] == ["PASS", "PASS"], records


def _sets(setting: Path, value: str, then: Callable[[], None] = lambda: None) -> Callable[[], None]:
    def test() -> None:
        setting.write_text(value)
        then()

    return test


def test_a_setting_a_test_changed_is_put_back_however_the_test_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sysctl stand-in: killed at the deadline, passing while leaving it changed, restoring it itself."""
    setting = tmp_path / "ptrace_scope"
    setting.write_text("1\n")
    suite = _klab.Suite("settings", parallel=True)
    suite.add("hangs", _sets(setting, "2\n", lambda: time.sleep(30)), restores=(str(setting),))
    suite.add("sees_it_restored", lambda: _klab.expect_eq(setting.read_text(), "1\n", "the setting"))
    suite.add("leaves_it", _sets(setting, "3\n"), restores=(str(setting),))
    suite.add("tidy", _sets(setting, "0\n", lambda: setting.write_text("1\n")), restores=(str(setting),))
    suite.add("before", _busy(tmp_path, "before"))
    suite.add("alone_by_restores", lambda: _by_itself(tmp_path), restores=(str(setting),))
    suite.add("after", _busy(tmp_path, "after"))
    monkeypatch.setattr(_klab, "TEST_TIMEOUT", 1.0)
    records, _ = _run(suite, jobs=2)
    seen = [f"{r['name']} {r['status']}: {r['reason']}" for r in records]
    assert seen[:4] == [
        "hangs FAIL: timed out after 1s; " + f"{setting} left at '2' (was '1'): restored",
        "sees_it_restored PASS: ",
        "leaves_it ERROR: " + f"{setting} left at '3' (was '1'): restored",
        "tidy PASS: ",
    ], seen
    assert [r["status"] for r in records[4:]] == ["PASS"] * 3, seen
    assert setting.read_text() == "1\n"
