"""lab.results.ktap: recorded guest and KUnit streams, console noise, truncation, round trips, suite spans."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.results import ktap
from lab.results.ktap import Status

DATA = Path(__file__).resolve().parents[1] / "data" / "ktap"
FIXTURES = ("guest-mixed.ktap", "guest-truncated.ktap", "kunit-console.log", "console-splat.log", "console-panic.log")

Row = tuple[str, Status, str]  # "suite/test" path, status, directive reason


def flatten(test: ktap.Test, prefix: str = "") -> list[Row]:
    rows = []
    for sub in test.subtests:
        path = f"{prefix}{sub.name or '#' + str(sub.number)}"
        rows.append((path, sub.status, sub.reason))
        rows += flatten(sub, path + "/")
    return rows


GUEST_MIXED: list[Row] = [
    ("fsdemo", Status.NOT_OK, ""),
    ("fsdemo/open_allowed", Status.OK, ""),
    ("fsdemo/open_denied", Status.NOT_OK, ""),
    ("fsdemo/needs_abi_9", Status.SKIP, "Landlock ABI 9 needed, kernel has 6 # of 9"),
    ("fsdemo/helper_crashes", Status.NOT_OK, ""),
    ("ptracedemo", Status.OK, ""),
    ("ptracedemo/attach_parent", Status.OK, ""),
    ("ptracedemo/attach_child", Status.OK, ""),
    ("ptracedemo/traceme", Status.OK, ""),
]
GUEST_TRUNCATED: list[Row] = GUEST_MIXED[:5] + [
    ("ptracedemo", Status.CRASHED, ""),
    ("ptracedemo/attach_parent", Status.OK, ""),
    ("ptracedemo/#2", Status.MISSING, ""),
    ("ptracedemo/#3", Status.MISSING, ""),
]
KUNIT: list[Row] = [
    ("landlock_fs", Status.NOT_OK, ""),
    ("landlock_fs/test_no_more_access", Status.OK, ""),
    ("landlock_fs/test_scope_to_request_with_exec_none", Status.NOT_OK, ""),
    ("landlock_fs/test_is_eacces_with_none", Status.SKIP, "needs ABI 9"),
    ("landlock_param", Status.OK, ""),
    ("landlock_param/test_layers", Status.OK, ""),
    ("landlock_param/test_layers/layer-1", Status.OK, ""),
    ("landlock_param/test_layers/layer-16", Status.OK, ""),
    ("landlock_task", Status.CRASHED, ""),
    ("landlock_task/test_domain_scope", Status.OK, ""),
    ("landlock_task/#2", Status.MISSING, ""),
    ("landlock_task/#3", Status.MISSING, ""),
    ("landlock_task/#4", Status.MISSING, ""),
]


@pytest.mark.parametrize(
    ("fixture", "want"),
    [
        ("guest-mixed.ktap", GUEST_MIXED),
        ("guest-truncated.ktap", GUEST_TRUNCATED),
        ("kunit-console.log", KUNIT),
        ("console-splat.log", GUEST_MIXED),  # the guest's KTAP echoed between kernel messages and a splat
        ("console-panic.log", GUEST_TRUNCATED),
    ],
)
def test_recorded_streams(fixture: str, want: list[Row]) -> None:
    tree = ktap.parse((DATA / fixture).read_text())
    assert flatten(tree) == want
    assert tree.problems == []
    assert tree.status is (Status.OK if all(s in (Status.OK, Status.SKIP) for _, s, _ in want) else Status.NOT_OK)


def test_logs_belong_to_the_right_test() -> None:
    tree = ktap.parse((DATA / "guest-mixed.ktap").read_text())
    fsdemo = tree.subtests[0]
    assert fsdemo.planned == 4
    assert fsdemo.log == ["fsdemo: pass:1 fail:1 skip:1 error:1"]
    assert fsdemo.subtests[1].log == ["FAIL: open(/etc/passwd) errno: expected 1, got 13"]
    assert fsdemo.subtests[3].log[0] == "Traceback (most recent call last):"
    assert fsdemo.subtests[3].log[-1] == "ERROR: KeyError: 'missing'"
    kunit = ktap.parse((DATA / "kunit-console.log").read_text()).subtests[0]
    assert kunit.subtests[1].log == [
        "test_scope_to_request_with_exec_none: EXPECTATION FAILED at security/landlock/fs.c:1650",
        "Expected 0 == access_request, but",
        "    access_request == 4 (0x4)",
    ]
    assert "module: landlock" in kunit.log


@pytest.mark.parametrize(
    ("text", "want", "problem"),
    [
        # printk timestamps with a caller id, CRLF line ends (a serial console), noise before the header
        (
            "boot noise\r\n[    1.000000][    T1] KTAP version 1\r\n[    1.000001][    T1] 1..1\r\n"
            "[    1.000002][    T1] ok 1 alone\r\n",
            [("alone", Status.OK, "")],
            "",
        ),
        ("KTAP version 1\n1..1\nnot ok 1 flaky # TODO known bug\n", [("flaky", Status.NOT_OK, "known bug")], ""),
        ("KTAP version 1\n1..1\nnot ok 1 gone # SKIP no BTF\n", [("gone", Status.SKIP, "no BTF")], ""),
        ("KTAP version 1\n1..1\nok 1 - dashed\n", [("dashed", Status.OK, "")], ""),
        ("TAP version 14\n1..1\nok 1 tap14\n", [("tap14", Status.OK, "")], ""),
        ("KTAP version 1\n1..2\nok 1 a\nok 1 b\n", [("a", Status.OK, ""), ("b", Status.OK, "")], "numbered 1"),
        ("KTAP version 1\n1..1\n1..2\nok 1 a\n", [("a", Status.OK, "")], "second plan"),
        (
            "KTAP version 1\n1..1\n    # Subtest: x\n    1..1\n    ok 1 t\nok 1 y\n",
            [("x", Status.OK, ""), ("x/t", Status.OK, "")],
            "names 'y'",
        ),
        ("no ktap here\nok 1 stray\n", [], "no KTAP version line"),
    ],
)
def test_tolerated_input(text: str, want: list[Row], problem: str) -> None:
    tree = ktap.parse(text)
    assert flatten(tree) == want
    if problem:
        assert any(problem in p for t in [tree, *tree.subtests] for p in t.problems), tree.problems
    else:
        assert tree.problems == []


def test_a_second_document_ends_the_first() -> None:
    tree = ktap.parse("KTAP version 1\n1..1\nok 1 first\nKTAP version 1\n1..1\nnot ok 1 second\n")
    assert flatten(tree) == [("first", Status.OK, "")]


def test_a_subtest_without_a_result_line_is_crashed_when_a_sibling_starts() -> None:
    text = "KTAP version 1\n1..2\n    KTAP version 1\n    # Subtest: a\n    1..1\n    ok 1 t\n"
    text += "    KTAP version 1\n    # Subtest: b\n    1..1\n    ok 1 u\nok 2 b\n"
    assert [(p, s) for p, s, _ in flatten(ktap.parse(text))] == [
        ("a", Status.CRASHED),
        ("a/t", Status.OK),
        ("b", Status.OK),
        ("b/u", Status.OK),
    ]


def prefixes(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    return ["".join(lines[:n]) for n in range(len(lines) + 1)]


@pytest.mark.parametrize("fixture", ["guest-mixed.ktap", "kunit-console.log"])
def test_every_truncation_parses_and_keeps_planned_tests_visible(fixture: str) -> None:
    for text in prefixes((DATA / fixture).read_text()):
        tree = ktap.parse(text)
        for node in [tree, *tree.subtests]:
            if node.planned is not None:
                assert len(node.subtests) == node.planned, text
        if not tree.problems:  # before the header there is nothing to write back
            assert ktap.parse(ktap.emit(tree)) == tree, text


@pytest.mark.parametrize("fixture", FIXTURES)
def test_emit_round_trips(fixture: str) -> None:
    tree = ktap.parse((DATA / fixture).read_text())
    assert ktap.parse(ktap.emit(tree)) == tree


@pytest.mark.parametrize("fixture", ["guest-mixed.ktap", "guest-truncated.ktap"])
def test_emit_writes_the_guest_format_back_unchanged(fixture: str) -> None:
    text = (DATA / fixture).read_text()
    assert ktap.emit(ktap.parse(text)) == text


def test_counts_and_leaves() -> None:
    tree = ktap.parse((DATA / "guest-truncated.ktap").read_text())
    counts = tree.counts()
    assert (counts[Status.OK], counts[Status.NOT_OK], counts[Status.SKIP], counts[Status.MISSING]) == (2, 2, 1, 2)
    assert not tree.ok()


@pytest.mark.parametrize(
    ("fixture", "want", "marker", "inside"),
    [
        ("console-splat.log", [("fsdemo", True), ("ptracedemo", True)], "WARNING: CPU", "ptracedemo"),
        ("console-boot-warning.log", [("fsdemo", True), ("ptracedemo", True)], "WARNING: CPU", ""),
        ("console-panic.log", [("fsdemo", True), ("ptracedemo", False)], "Kernel panic", "ptracedemo"),
        (
            "kunit-console.log",
            [("landlock_fs", True), ("landlock_param", True), ("landlock_task", False)],
            "Oops",
            "landlock_task",
        ),
    ],
)
def test_suite_spans(fixture: str, want: list[tuple[str, bool]], marker: str, inside: str) -> None:
    """Spans: which suite ran where in a console, ended by its result line (or running till the end)."""
    text = (DATA / fixture).read_text()
    spans = ktap.suite_spans(text)
    assert [(s.name, s.end < len(text)) for s in spans] == want
    for span in spans:
        assert "# Subtest: " + span.name in text[span.start : span.end].splitlines()[0]
    offset = text.index(marker)
    assert [s.name for s in spans if s.start <= offset < s.end] == ([inside] if inside else [])


def test_a_todo_failure_is_a_known_failure_not_a_failure() -> None:
    """TAP's TODO: `not ok N name # TODO why` is expected to fail (kernel-lab's XFAIL) and keeps the tree ok."""
    text = "KTAP version 1\n1..1\n    KTAP version 1\n    1..2\n    ok 1 a\n    not ok 2 b # TODO XFAIL known\nok 1 s\n"
    tree = ktap.parse(text)
    leaf = tree.subtests[0].subtests[1]
    assert (leaf.status, leaf.directive, leaf.reason) == (ktap.Status.NOT_OK, "TODO", "XFAIL known")
    assert tree.subtests[0].ok()
    plain = ktap.parse(text.replace(" # TODO XFAIL known", ""))
    assert not plain.subtests[0].ok()
