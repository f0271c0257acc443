"""lab.results.html: the page parsed back with html.parser: grid, outcome colours, escaping, excerpts, rerun lines."""

from __future__ import annotations

import shlex
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lab.results import html, store, summary, write
from lab.results.html import Outcome
from lab.results.model import CellResult, Status
from lab.results.model import TestResult as Result  # not Test*: pytest would try to collect it
from tests.unit._results_data import KTAP, cells

CONSOLES = {"x86_64.6.12.default": "console-splat.log", "arm64.6.12.default": "console-panic.log"}


class Page(HTMLParser):
    """What the tests read: the grid's suites and squares, texts by element class, every tag and attribute."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.suites: list[str] = []
        self.rows: list[tuple[str, dict[str, str]]] = []  # cell id -> {suite: class}
        self.texts: dict[str, list[str]] = {}  # class -> the texts of elements with it
        self.tags: list[tuple[str, dict[str, str]]] = []
        self._open: list[tuple[str, str, list[str]]] = []  # tag, class, text so far
        self._in_grid = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag == "table" and a.get("id") == "grid":
            self._in_grid = True
        if self._in_grid and tag == "tr" and "data-cell" in a:
            self.rows.append((a["data-cell"], {}))
        if self._in_grid and tag == "td" and "data-suite" in a:
            self.rows[-1][1][a["data-suite"]] = a["class"]
        self._open.append((tag, a.get("class", ""), []))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_grid = False
        while self._open:
            name, cls, text = self._open.pop()
            whole = "".join(text)
            if self._open:
                self._open[-1][2].append(whole)
            if cls:
                self.texts.setdefault(cls, []).append(whole)
            if name == "th" and cls == "suite":
                self.suites.append(whole)
            if name == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._open:
            self._open[-1][2].append(data)


def render(cs: list[CellResult] | None = None, consoles: dict[str, str] | None = None) -> str:
    cs = cells() if cs is None else cs
    if consoles is None:
        consoles = {cell_id: (KTAP / name).read_text() for cell_id, name in CONSOLES.items()}
    return html.render(cs, store.RunMeta(argv=("klab", "test")), consoles, "results/run-1")


def test_grid_has_one_row_per_cell_and_one_column_per_suite() -> None:
    page = Page(render())
    assert page.suites == ["fsdemo", "ptracedemo"]
    assert [cell for cell, _ in page.rows] == [c.id for c in cells()]
    assert all(list(squares) == page.suites for _, squares in page.rows)


def test_grid_squares_are_coloured_by_outcome() -> None:
    page = Page(render())
    got = {cell: squares for cell, squares in page.rows}
    assert got["x86_64.6.12.default"] == {"fsdemo": "o-fail", "ptracedemo": "o-fail"}  # ptracedemo: its splat
    assert got["arm64.6.12.default"] == {"fsdemo": "o-fail", "ptracedemo": "o-fail"}
    assert got["x86_64.6.1.default"] == {"fsdemo": "o-lab-error", "ptracedemo": "o-lab-error"}
    style = render().split("<style>")[1].split("</style>")[0]
    for found, colour in html.COLOURS.items():
        assert f".o-{found.value}{{background:{colour}}}" in style


def _cell(*statuses: Status, error: str = "") -> CellResult:
    tests = [Result("s", f"t{i}", status) for i, status in enumerate(statuses)]
    return CellResult("c", "x86_64", tests=tests, error=error)


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        (_cell(Status.PASS, Status.PASS), Outcome.PASS),
        (_cell(Status.PASS, Status.SKIP), Outcome.PASS),
        (_cell(Status.SKIP, Status.SKIP), Outcome.SKIP_ONLY),
        (_cell(Status.PASS, Status.XFAIL), Outcome.XFAIL),
        (_cell(Status.XFAIL, Status.XPASS), Outcome.XPASS),
        (_cell(Status.XPASS, Status.FLAKY, Status.SKIP), Outcome.FLAKY),
        (_cell(Status.FLAKY, Status.FAIL), Outcome.FAIL),
        (_cell(Status.PASS, Status.ERROR), Outcome.FAIL),
        (_cell(Status.PASS, Status.MISS), Outcome.FAIL),  # the kernel died: its fault
        (_cell(Status.PASS, Status.MISS, error="QEMU gone"), Outcome.LAB_ERROR),  # the lab's: no verdict
        (_cell(Status.FAIL, Status.MISS, error="QEMU gone"), Outcome.FAIL),
        (_cell(error="QEMU gone"), Outcome.LAB_ERROR),
        (_cell(), Outcome.NONE),
    ],
)
def test_outcome_of_a_square(cell: CellResult, expected: Outcome) -> None:
    assert html.outcome(cell, "s") is expected
    if cell.tests:
        assert Page(render([cell], {})).rows == [("c", {"s": f"o-{expected.value}"})]


def test_everything_from_the_run_is_escaped_and_nothing_is_loaded() -> None:
    evil = '<script>alert("x")</script> & <b>'
    cell = CellResult(
        "x86_64.<i>", "x86_64", append=evil, kernel="/k/<bzImage>",
        tests=[Result("<suite>", "t&1", Status.FAIL, reason=evil, log=evil, signature=evil)],
    )  # fmt: skip
    text = render([cell], {cell.id: evil})
    page = Page(text)
    assert "<script" not in text and "<b>" not in text and "<i>" not in text
    assert page.suites == ["<suite>"] and page.rows[0][0] == "x86_64.<i>"
    assert evil in page.texts["reason"] and evil in page.texts["signature"]
    for tag, attrs in page.tags:  # self-contained: no script, no stylesheet link, nothing fetched
        assert tag not in ("script", "link", "img", "iframe")
        assert not any(v.startswith(("http:", "https:", "//")) for v in attrs.values())
    assert "url(" not in text and "@import" not in text


def _rerun_lines(page: Page) -> list[list[str]]:
    return [shlex.split(line) for line in page.texts["rerun"]]


def test_rerun_command_of_a_failing_test_names_its_kernel_suite_and_test() -> None:
    good = replace(
        cells()[0], kernel="/cache/build/x 1/bzImage", rootfs="host", append="lsm=landlock,bpf quiet 'q' \"dq\""
    )
    page = Page(render([good]))
    lines = _rerun_lines(page)
    test_line = next(argv for argv in lines if argv[:2] == ["klab", "test"])
    assert test_line == [
        "klab", "test", "--arch", "x86_64", "--kernel", "/cache/build/x 1/bzImage", "--rootfs", "host",
        "--append", good.append, "--suite", "fsdemo", "-k", "fsdemo.open_denied",
    ]  # fmt: skip
    assert ["klab", "reproduce", "results/run-1", "fsdemo.open_denied", "--cell", good.id] in lines


def test_kernel_splats_reruns_the_whole_suite_and_flaky_keeps_its_repeat() -> None:
    cell = replace(cells()[0], kernel="/k", repeat=4)
    cell.tests.append(Result("ptracedemo", "wobbly", Status.FLAKY, reason="passed 2 of 4 runs"))
    tests = [argv for argv in _rerun_lines(Page(render([cell]))) if argv[1] == "test"]
    splats = [argv for argv in tests if argv[-4:] == ["--suite", "ptracedemo", "--repeat", "4"]]
    assert len(splats) == 1  # kernel_splats: no -k selects it
    assert [*splats[0][:-2], "-k", "ptracedemo.wobbly", "--repeat", "4"] in tests


def test_no_klab_test_line_without_a_recorded_kernel() -> None:
    lines = _rerun_lines(Page(render([cells()[0]])))
    assert lines and all(argv[1] == "reproduce" for argv in lines)


def test_console_excerpt_is_the_tests_own_ktap_lines() -> None:
    page = Page(render())
    consoles = page.texts["console"]
    denied = next(text for text in consoles if "open_denied" in text)
    assert denied.splitlines() == [
        "    # FAIL: open(/etc/passwd) errno: expected 1, got 13",
        "    not ok 2 open_denied",
    ]
    panic_tails = [text for text in consoles if "Kernel panic - not syncing" in text]
    assert len(panic_tails) == 1  # the first MISS of the suite carries where the kernel died; the rest would repeat
    assert "ok 1 attach_parent" not in panic_tails[0] and "BUG: kernel NULL pointer dereference" in panic_tails[0]


def test_excerpt_keeps_the_last_lines_when_a_test_talked_a_lot() -> None:
    text = "KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: s\n    1..1\n"
    text += "".join(f"    # line {i}\n" for i in range(100)) + "    not ok 1 t\nnot ok 1 s\n"
    got = html.excerpt(html.index_console(text), Result("s", "t", Status.FAIL), limit=5)
    assert got.splitlines() == [
        "[... 96 earlier lines ...]",
        *(f"    # line {i}" for i in range(96, 100)),
        "    not ok 1 t",
    ]


def test_failures_come_first_and_passing_tests_are_folded() -> None:
    text = render()
    assert text.index("<h2>Failures") < text.index('<section id="c0">')
    page = Page(text)
    assert len(page.texts["failure"]) == 8
    folded = text.split("<details><summary>")[1:]
    assert any(part.startswith("1 pass</summary>") for part in folded)
    assert any(part.startswith("4 not run (lab error)</summary>") for part in folded)


def test_metadata_of_the_run_and_cells() -> None:
    text = render()
    for value in ("v6.12-rc7-12-gabcdef", "ab" * 32, "7.2.11", "tcg (KVM probe: guest never reached init)"):
        assert html.html.escape(value) in text
    assert Page(text).texts["totals"] == [summary.totals_line(cells())]


def test_write_reports_writes_report_html_reading_the_console_beside_it(tmp_path: Path) -> None:
    cs = cells()
    (tmp_path / "console-x86_64.6.12.default.log").write_text((KTAP / "console-splat.log").read_text())
    write.reports(tmp_path, cs, store.RunMeta())
    assert (tmp_path / "report.html").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic: nothing left over
    consoles = Page((tmp_path / "report.html").read_text()).texts["console"]
    assert any("not ok 2 open_denied" in text for text in consoles)  # the recorded path is stale; the copy is used
