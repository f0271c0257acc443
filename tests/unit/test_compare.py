"""lab.results.compare: one table of (base, new) -> changes, the threshold, the exit status and the text."""

from __future__ import annotations

import pytest

from lab.errors import UserError
from lab.results import compare
from lab.results.compare import Change, Kind, Threshold
from lab.results.consolelog import KernelEvent
from lab.results.model import CellResult, Status
from lab.results.model import TestResult as Result  # not Test*: pytest would try to collect it
from lab.results.store import Run, RunMeta
from tests.unit._results_data import cells

P, F, S, E, M = Status.PASS, Status.FAIL, Status.SKIP, Status.ERROR, Status.MISS
WARN = KernelEvent("warning", 0, "WARNING: CPU: 0 PID: 1 at fs/x.c:1 hook_file_open+0x1/0x2", False)


def t(name: str, status: Status, reason: str = "", sig: str = "", duration: float = 0.0) -> Result:
    return Result("s", name, status, duration=duration, reason=reason, signature=sig)


def run(*tests: Result, error: str = "", events: tuple[KernelEvent, ...] = (), cell: str = "c") -> Run:
    return Run(RunMeta(), [CellResult(cell, "x86_64", tests=list(tests), error=error, kernel_events=list(events))])


NO_CELLS = Run(RunMeta(), [])
CASES = [
    ("same", run(t("a", P)), run(t("a", P)), []),
    ("pass to fail", run(t("a", P)), run(t("a", F, "boom", "s.a: boom")), [(Kind.NEW_FAILURE, "s.a")]),
    ("pass to error", run(t("a", P)), run(t("a", E, "KeyError")), [(Kind.NEW_FAILURE, "s.a")]),
    ("kernel died", run(t("a", P)), run(t("a", M, "never reported: kernel panic")), [(Kind.NEW_FAILURE, "s.a")]),
    ("fixed", run(t("a", F, "boom")), run(t("a", P)), [(Kind.FIXED, "s.a")]),
    ("fail to skip is no longer failing", run(t("a", F)), run(t("a", S, "no ABI")), [(Kind.FIXED, "s.a")]),
    ("same failure", run(t("a", F, "x", "sig")), run(t("a", F, "x 2", "sig")), []),
    ("failure changed", run(t("a", F, "x", "s1")), run(t("a", E, "y", "s2")), [(Kind.SIGNATURE, "s.a")]),
    ("appeared passing", run(), run(t("a", P)), [(Kind.APPEARED, "s.a")]),
    ("appeared failing", run(), run(t("a", F)), [(Kind.NEW_FAILURE, "s.a")]),
    ("disappeared", run(t("a", F)), run(), [(Kind.DISAPPEARED, "s.a")]),
    ("skip reason", run(t("a", S, "ABI 6")), run(t("a", S, "ABI 7")), [(Kind.SKIP_REASON, "s.a")]),
    ("pass to skip", run(t("a", P)), run(t("a", S, "no ABI")), [(Kind.STATUS, "s.a")]),
    ("known failure", run(t("a", F)), run(t("a", Status.XFAIL, "known")), [(Kind.FIXED, "s.a")]),
    ("turned flaky", run(t("a", P)), run(t("a", Status.FLAKY)), [(Kind.STATUS, "s.a")]),
    # A lab error is no verdict: its MISS tests neither fail nor disappear; the error has its line.
    ("lab error", run(t("a", P), t("b", P)), run(t("a", P), t("b", M), error="QEMU died"), [(Kind.LAB_ERROR, "")]),
    ("lab error lost tests", run(t("a", P)), run(error="no QEMU"), [(Kind.LAB_ERROR, "")]),
    ("back from a lab error", run(t("a", M), error="no QEMU"), run(t("a", P)), []),
    ("new kernel event", run(t("a", P)), run(t("a", P), events=(WARN,)), [(Kind.NEW_EVENT, "")]),
    ("same kernel event", run(events=(WARN,)), run(events=(WARN,)), []),
    ("slower", run(t("a", P, duration=1.0)), run(t("a", P, duration=2.5)), [(Kind.SLOWER, "s.a")]),
    ("faster", run(t("a", P, duration=3.0)), run(t("a", P, duration=1.0)), [(Kind.FASTER, "s.a")]),
    ("fast test, big ratio", run(t("a", P, duration=0.1)), run(t("a", P, duration=0.9)), []),
    ("slow test, small ratio", run(t("a", P, duration=10.0)), run(t("a", P, duration=12.0)), []),
    ("unknown duration", run(t("a", P, duration=0.0)), run(t("a", P, duration=9.0)), []),
    ("new cell", NO_CELLS, run(t("a", F), t("b", P)), [(Kind.NEW_FAILURE, "s.a"), (Kind.APPEARED, "")]),
    ("cell gone", run(t("a", P)), NO_CELLS, [(Kind.DISAPPEARED, "")]),
]


@pytest.mark.parametrize(("base", "new", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_changes(base: Run, new: Run, expected: list[tuple[Kind, str]]) -> None:
    got = compare.compare(base, new)
    assert sorted((c.kind.value, c.test) for c in got) == sorted((k.value, name) for k, name in expected)
    regression = any(kind in compare.REGRESSIONS for kind, _ in expected)
    assert compare.exit_status(got) == (1 if regression else 0)


def test_a_new_failure_line_carries_both_statuses_the_reason_and_the_signature() -> None:
    (change,) = compare.compare(run(t("a", P)), run(t("a", F, "expected EPERM, got success", "s.a: errno")))
    assert change.line() == "c s.a: PASS -> FAIL: expected EPERM, got success [s.a: errno]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", Threshold(seconds=2.0, percent=None)),
        ("2.5s", Threshold(seconds=2.5, percent=None)),
        ("30%", Threshold(seconds=None, percent=30.0)),
        (" 10 % ", Threshold(seconds=None, percent=10.0)),
    ],
)
def test_parse_threshold(text: str, expected: Threshold) -> None:
    assert compare.parse_threshold(text) == expected


@pytest.mark.parametrize("text", ["", "fast", "-1", "2m", "%"])
def test_parse_threshold_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(UserError, match="give seconds"):
        compare.parse_threshold(text)


@pytest.mark.parametrize(
    ("threshold", "base", "new", "reported"),
    [
        (Threshold(), 1.0, 2.0, True),  # +1 s and +100%: both bounds passed
        (Threshold(), 1.0, 1.9, False),  # +0.9 s
        (Threshold(seconds=0.5, percent=None), 10.0, 10.6, True),
        (Threshold(seconds=None, percent=5.0), 0.01, 0.02, True),
        (Threshold(seconds=None, percent=5.0), 0.0, 0.02, False),  # 0.0: unknown
    ],
)
def test_threshold_bounds(threshold: Threshold, base: float, new: float, reported: bool) -> None:
    assert threshold.exceeded(base, new) is reported


def test_golden_run_against_itself_only_names_the_cell_it_could_not_judge() -> None:
    got = compare.compare(Run(RunMeta(), cells()), Run(RunMeta(), cells()))
    assert [(c.kind, c.cell) for c in got] == [(Kind.LAB_ERROR, "x86_64.6.1.default")]
    assert compare.exit_status(got) == 0


def test_golden_run_against_a_clean_one_is_all_fixes() -> None:
    clean = cells()
    for cell in clean:
        cell.kernel_events, cell.error = [], ""
        for test in cell.tests:
            test.status = P if test.status in (F, E, M) else test.status
    got = compare.compare(Run(RunMeta(), cells()), Run(RunMeta(), clean))
    kinds = {c.kind for c in got}
    assert kinds == {Kind.FIXED}
    assert compare.exit_status(got) == 0


def test_render_counts_first_then_one_line_per_change_grouped() -> None:
    changes = [
        Change(Kind.FIXED, "c", "s.b", "FAIL -> PASS"),
        Change(Kind.NEW_FAILURE, "c", "s.a", "PASS -> FAIL: x [s.a: x]"),
        Change(Kind.NEW_FAILURE, "d", "s.a", "PASS -> FAIL: y [s.a: y]"),
    ]
    assert compare.render(changes, "base", "new").splitlines() == [
        "compare base -> new: 2 new failures, 1 fixed",
        "",
        "new failures (2):",
        "  c s.a: PASS -> FAIL: x [s.a: x]",
        "  d s.a: PASS -> FAIL: y [s.a: y]",
        "",
        "fixed (1):",
        "  c s.b: FAIL -> PASS",
    ]
    assert compare.render([], "a", "b") == "compare a -> b: 0 new failures\n"


def _cell(cell_id: str, arch: str, release: str, *tests: Result, boot: str = "default") -> CellResult:
    return CellResult(cell_id, arch, kernel_release=release, boot=boot, tests=list(tests))


def test_runs_on_two_kernels_pair_their_cells_by_arch_and_boot_and_say_so() -> None:
    base = Run(RunMeta(), [_cell("x86_64.6.12.default", "x86_64", "6.12.118", t("a", P), t("b", P)),
                           _cell("x86_64.6.12.nobpf", "x86_64", "6.12.118", t("c", P), boot="nobpf")])  # fmt: skip
    new = Run(RunMeta(), [_cell("x86_64.7.3.default", "x86_64", "7.3.4", t("a", P), t("b", F, "boom", "s.b: boom")),
                          _cell("x86_64.7.3.nobpf", "x86_64", "7.3.4", t("c", P), boot="nobpf")])  # fmt: skip
    changes = compare.compare(base, new)
    assert [(c.kind, c.cell, c.test) for c in changes] == [
        (Kind.PAIRED, "x86_64.7.3.default", ""),
        (Kind.PAIRED, "x86_64.7.3.nobpf", ""),
        (Kind.NEW_FAILURE, "x86_64.7.3.default", "s.b"),
    ]
    assert changes[0].line() == "x86_64.7.3.default: compared with x86_64.6.12.default (6.12.118 -> 7.3.4)"
    assert compare.exit_status(changes) == 1
    assert compare.render(changes, "A", "B").startswith("compare A -> B: 2 paired across kernels (same arch and boot)")


def test_cells_of_the_same_id_pair_first_and_the_rest_by_arch_and_boot() -> None:
    base = Run(
        RunMeta(), [_cell("x86_64.6.12.default", "x86_64", "6.12"), _cell("arm64.6.12.default", "arm64", "6.12")]
    )
    new = Run(RunMeta(), [_cell("x86_64.6.12.default", "x86_64", "6.12"), _cell("arm64.7.3.default", "arm64", "7.3")])
    assert [(c.kind, c.cell) for c in compare.compare(base, new)] == [(Kind.PAIRED, "arm64.7.3.default")]


def test_two_cells_of_one_arch_and_boot_are_not_guessed_between() -> None:
    arm = _cell("arm64.6.12.default", "arm64", "6.12")
    base = Run(
        RunMeta(), [_cell("x86_64.6.1.default", "x86_64", "6.1"), _cell("x86_64.6.12.default", "x86_64", "6.12"), arm]
    )
    new = Run(RunMeta(), [_cell("x86_64.7.3.default", "x86_64", "7.3"), arm])
    kinds = [(c.kind, c.cell) for c in compare.compare(base, new)]
    assert kinds == [
        (Kind.APPEARED, "x86_64.7.3.default"),
        (Kind.DISAPPEARED, "x86_64.6.1.default"),
        (Kind.DISAPPEARED, "x86_64.6.12.default"),
    ]


def test_runs_with_no_cell_in_common_cannot_be_compared() -> None:
    base = Run(RunMeta(), [_cell("x86_64.6.12.default", "x86_64", "6.12")])
    new = Run(RunMeta(), [_cell("arm64.7.3.default", "arm64", "7.3")])
    with pytest.raises(UserError, match=r"no cell in common: BASE has x86_64.6.12.default, NEW has arm64.7.3.default"):
        compare.compare(base, new)
