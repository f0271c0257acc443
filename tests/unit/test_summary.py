"""lab.results.summary: the totals line, the table and its legend, the problems, compared with golden files."""

from __future__ import annotations

from lab.results import model, summary
from lab.results.model import CellResult, Status, TestResult
from lab.results.store import RunMeta
from tests.unit._results_data import cells, golden


def test_summary_table_matches_golden() -> None:
    got = summary.table(cells())
    assert got == golden("summary.golden.txt", got)


def test_summary_markdown_matches_golden() -> None:
    got = summary.markdown(cells())
    assert got == golden("summary.golden.md", got)


def test_problem_lines_are_capped_per_cell() -> None:
    many = cells()[1]
    many.tests = many.tests * 10
    lines = summary.table([many]).splitlines()  # 5 bad tests x 10 + 3 kernel events = 53
    assert lines[-1] == "... arm64.6.12.default: 34 more in results.json"
    assert sum(line.startswith(("FAIL", "ERROR", "MISS", "KERNEL")) for line in lines) == 19


def test_totals_line_is_plain_and_names_only_what_is_there() -> None:
    one = CellResult("c", "x86_64", tests=[TestResult("s", "a", Status.PASS), TestResult("s", "b", Status.SKIP)])
    assert summary.totals_line([one]) == "1 passed, 0 failed, 1 skipped in 1 cell"
    one.tests += [
        TestResult("s", "c", Status.XFAIL),
        TestResult("s", "d", Status.FLAKY),
        TestResult("s", "e", Status.MISS),
    ]
    meta = RunMeta(problems=("expired entry",))
    line = summary.totals_line([one, CellResult("d", "arm64", error="no QEMU")], meta)
    assert line == (
        "1 passed, 0 failed, 1 skipped, 1 missing, 1 known failures (xfail), 1 flaky, 1 lab errors, "
        "1 expired known failures in 2 cells"
    )


def test_table_starts_with_totals_and_keeps_the_legend_by_the_table() -> None:
    text = summary.table(cells())
    lines = text.splitlines()
    assert lines[0] == summary.totals_line(cells())
    assert lines[1] == "run verdict: fail (exit 1)"
    legend = lines.index(summary.LEGEND)
    assert legend == 4 + len(cells()) + 1  # totals, verdict, blank, header, rule, one row per cell: then the legend
    assert "xf: known failures" in summary.LEGEND


def test_known_failures_xpass_and_flaky_are_shown_apart() -> None:
    cell = CellResult("x86_64.7.3.default", "x86_64", tests=[
        TestResult("s", "known", Status.XFAIL, reason="known failure: why (link)"),
        TestResult("s", "fixed", Status.XPASS, reason="known failure did not happen: remove it"),
        TestResult("s", "wobbly", Status.FLAKY, reason="passed 2 of 4 runs; FAIL: x"),
    ])  # fmt: skip
    _, rows = summary.rows([cell])
    assert rows[0][4] == "0/0/0/0 1xf 1xp 1fl"
    text = summary.table([cell])
    assert "XPASS x86_64.7.3.default s.fixed" in text and "FLAKY x86_64.7.3.default s.wobbly" in text
    assert "XFAIL x86_64.7.3.default" not in text  # expected: not a problem to look at
    assert model.exit_status([cell]) == 0
