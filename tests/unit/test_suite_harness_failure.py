"""A planted wrong expectation must be reported as a failure, with both errnos named.

If the harness ever turned a wrong kernel answer into `ok`, every suite would
silently pass; this fixture pins the three verdict shapes of the KTAP output.
"""

from __future__ import annotations

import errno
import io
import sys
from pathlib import Path

import pytest

SUITES = Path(__file__).resolve().parents[2] / "suites"
sys.path.insert(0, str(SUITES))

_klab = pytest.importorskip("_klab", reason="suites/_klab.py needs Linux (it loads libc)")


def _wrong_expectation() -> None:
    """landlock_create_ruleset(attr, size 0) is EINVAL (size < 8); planted: expect E2BIG."""
    attr = (_klab.ctypes.c_uint64 * 3)(1, 0, 0)
    result = _klab.syscall("landlock_create_ruleset", _klab.ctypes.addressof(attr), 0, 0)
    if result[1] in (errno.ENOSYS, errno.EOPNOTSUPP):
        raise _klab.Skip("Landlock unavailable")
    _klab.expect_errno(result, errno.E2BIG, "create_ruleset size 0")


def _passing() -> None:
    _klab.expect_eq(1 + 1, 2, "arithmetic")


def _skipping() -> None:
    raise _klab.Skip("needs Landlock ABI 99, kernel has 1")


def _run_fixture() -> tuple[list[dict], list[str]]:
    suite = _klab.Suite("fixture")
    suite.add("planted_wrong_errno", _wrong_expectation)
    suite.add("plain_pass", _passing)
    suite.add("plain_skip", _skipping)
    out = io.StringIO()
    records = _klab.run_suites([suite], [], out=out)
    return records, out.getvalue().splitlines()


@pytest.fixture(scope="module")
def fixture_run() -> tuple[list[dict], list[str]]:
    return _run_fixture()


def test_wrong_expectation_is_not_ok(fixture_run: tuple[list[dict], list[str]]) -> None:
    records, lines = fixture_run
    rec = records[0]
    if rec["status"] == "SKIP":
        pytest.skip(f"Landlock unavailable here: {rec['reason']}")
    assert rec["status"] == "FAIL", rec
    assert "    not ok 1 planted_wrong_errno" in lines
    reason = next(line for line in lines if line.startswith("    # FAIL:"))
    assert "EINVAL" in reason and "(22)" in reason, f"reason must name the errno got: {reason}"
    assert "E2BIG" in reason and "(7)" in reason, f"reason must name the errno expected: {reason}"
    assert reason.index("E2BIG") < reason.index("EINVAL"), f"expected first, then got: {reason}"
    assert "not ok 1 fixture" in lines, "a suite with a failure must itself be not ok"


def test_pass_and_skip_lines(fixture_run: tuple[list[dict], list[str]]) -> None:
    records, lines = fixture_run
    assert [r["status"] for r in records[1:]] == ["PASS", "SKIP"]
    assert "    ok 2 plain_pass" in lines
    assert "    ok 3 plain_skip # SKIP needs Landlock ABI 99, kernel has 1" in lines
    assert records[2]["reason"] == "needs Landlock ABI 99, kernel has 1"
    assert any(line.startswith("    # fixture: pass:1 fail:") for line in lines)


def test_summary_counts(fixture_run: tuple[list[dict], list[str]]) -> None:
    records, lines = fixture_run
    if records[0]["status"] == "SKIP":
        pytest.skip("Landlock unavailable here")
    assert "    # fixture: pass:1 fail:1 skip:1 error:0" in lines
    assert lines[:2] == ["KTAP version 1", "1..1"]
