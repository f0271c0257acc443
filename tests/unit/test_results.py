"""lab.results.model: where results come from, MISS and kernel_splats, verdicts, results.json round trips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from lab.errors import LabError, UserError
from lab.results import consolelog, ktap, model, store, summary
from lab.results.consolelog import KernelEvent
from lab.results.model import SPLATS, CellResult, CellVerdict, Status
from tests.unit._results_data import (
    PLANNED,
    RESULTS,
    cells,
    event,
    golden,
    guest_json,
    normalise_json,
    panic_events,
    splat_events,
    text,
)

Brief = tuple[str, str, Status, str]  # suite, name, status, reason

FROM_GUEST: list[Brief] = [
    ("fsdemo", "open_allowed", Status.PASS, ""),
    ("fsdemo", "open_denied", Status.FAIL, "open(/etc/passwd) errno: expected 1, got 13"),
    ("fsdemo", "needs_abi_9", Status.SKIP, "Landlock ABI 9 needed, kernel has 6 # of 9"),
    ("fsdemo", "helper_crashes", Status.ERROR, "KeyError: 'missing'"),
    ("ptracedemo", "attach_parent", Status.PASS, ""),
    ("ptracedemo", "attach_child", Status.PASS, ""),
    ("ptracedemo", "traceme", Status.PASS, ""),
]
WARNING = "warning: WARNING: CPU: 0 PID: 123 at security/landlock/fs.c:100 hook_file_open+0x12/0x30"
PANIC_MISS = "never reported: kernel panic"
BUG = "bug: BUG: kernel NULL pointer dereference, address: 0000000000000008 (+1 more)"


def brief(tests: list[model.TestResult]) -> list[Brief]:
    return [(t.suite, t.name, t.status, t.reason) for t in tests]


def case_json_clean() -> tuple[list[model.TestResult], list[Brief]]:
    return model.collect(PLANNED, guest_json(), None, text("console-splat.log"), []), FROM_GUEST


def case_json_splat() -> tuple[list[model.TestResult], list[Brief]]:
    console_text = text("console-splat.log")
    got = model.collect(PLANNED, guest_json(), None, console_text, splat_events(console_text))
    return got, [*FROM_GUEST, ("ptracedemo", SPLATS, Status.FAIL, WARNING)]


def case_boot_warning() -> tuple[list[model.TestResult], list[Brief]]:
    console_text = text("console-boot-warning.log")
    got = model.collect(PLANNED, guest_json(), None, console_text, [event(console_text, "WARNING: CPU", "warning")])
    return got, FROM_GUEST  # before any suite: the cell's business, no kernel_splats


def case_ktap_only() -> tuple[list[model.TestResult], list[Brief]]:
    return model.collect(PLANNED, None, text("guest-mixed.ktap"), "", []), FROM_GUEST


def case_ktap_panic() -> tuple[list[model.TestResult], list[Brief]]:
    console_text = text("console-panic.log")
    got = model.collect(PLANNED, None, text("guest-truncated.ktap"), console_text, panic_events(console_text))
    want = FROM_GUEST[:5] + [
        ("ptracedemo", "attach_child", Status.MISS, PANIC_MISS),
        ("ptracedemo", "traceme", Status.MISS, PANIC_MISS),
        ("ptracedemo", SPLATS, Status.FAIL, BUG),
    ]
    return got, want


def case_nothing_came_back() -> tuple[list[model.TestResult], list[Brief]]:
    timeout = KernelEvent("boot_timeout", 0, "", True)
    got = model.collect(PLANNED, None, None, "", [timeout])
    return got, [(s, n, Status.MISS, "never reported: kernel boot timeout") for s, n in PLANNED]


def case_unplanned_gaps() -> tuple[list[model.TestResult], list[Brief]]:
    got = model.collect([], None, text("guest-truncated.ktap"), "", [])
    gaps = [("ptracedemo", "#2", Status.MISS, "never reported"), ("ptracedemo", "#3", Status.MISS, "never reported")]
    return got, FROM_GUEST[:5] + gaps


def case_unplanned_extra() -> tuple[list[model.TestResult], list[Brief]]:
    planned = [("ptracedemo", "traceme"), ("seccomp", "strict")]
    got = model.collect(planned, guest_json(), None, "", [])
    want = [FROM_GUEST[6], ("seccomp", "strict", Status.MISS, "never reported"), *FROM_GUEST[:6]]
    return got, want


@pytest.mark.parametrize(
    "case",
    [
        case_json_clean,
        case_json_splat,
        case_boot_warning,
        case_ktap_only,
        case_ktap_panic,
        case_nothing_came_back,
        case_unplanned_gaps,
        case_unplanned_extra,
    ],
)
def test_collect(case: Any) -> None:
    got, want = case()
    assert brief(got) == want


def test_collect_keeps_guest_durations_and_logs() -> None:
    got = model.collect(PLANNED, guest_json(), None, "", [])
    assert all(t.duration > 0 for t in got)
    assert got[3].log.startswith("Traceback (most recent call last):")


def test_ktap_logs_lose_only_the_verdict_line() -> None:
    got = model.from_ktap(ktap.parse(text("guest-mixed.ktap")))
    assert got[3].log.splitlines()[-1] == "KeyError: 'missing'"
    assert got[1].log == ""


def test_splat_result_carries_every_excerpt() -> None:
    console_text = text("console-panic.log")
    splat = model.collect(PLANNED, None, text("guest-truncated.ktap"), console_text, panic_events(console_text))[-1]
    assert splat.name == SPLATS
    assert "BUG: kernel NULL pointer dereference" in splat.log and "Oops: 0000 [#1]" in splat.log
    assert "Kernel panic" not in splat.log.split("Oops: 0000")[0]


@pytest.mark.parametrize(
    ("fixture", "ktap_name", "json_doc", "splat_reason", "miss_reason"),
    [
        ("console-splat.log", None, True, "warning: WARNING: CPU: 0 PID: 123 at security/landlock/fs.c:100", None),
        ("console-panic.log", "guest-truncated.ktap", False, "bug: BUG: kernel NULL pointer dereference", PANIC_MISS),
        ("console-boot-warning.log", None, True, None, None),
    ],
)
def test_collect_with_the_real_console_scan(
    fixture: str, ktap_name: str | None, json_doc: bool, splat_reason: str | None, miss_reason: str | None
) -> None:
    """lab.results.consolelog.scan over the recordings, straight into collect: the two modules agree on offsets."""
    console_text = text(fixture)
    events = consolelog.scan(console_text)
    assert events
    got = model.collect(
        PLANNED, guest_json() if json_doc else None, text(ktap_name) if ktap_name else None, console_text, events
    )
    splats = [t for t in got if t.name == SPLATS]
    if splat_reason is None:
        assert splats == []
    else:
        assert [t.suite for t in splats] == ["ptracedemo"] and splats[0].reason.startswith(splat_reason)
    misses = {t.reason for t in got if t.status is Status.MISS}
    assert misses == ({miss_reason} if miss_reason else set())


def test_events_by_suite() -> None:
    console_text = text("console-boot-warning.log")
    boot = event(console_text, "WARNING: CPU", "warning")
    late = event(console_text, "reboot: Power down", "warning")
    assert model.events_by_suite(console_text, [boot, late]) == {"": [boot, late]}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "no 'tests' list"),
        ({"tests": [{"suite": "s", "name": "n", "status": "WEIRD"}]}, "status: 'WEIRD' is not one of PASS, FAIL"),
        ({"tests": [{"suite": "s", "status": "PASS"}]}, "TestResult lacks the field 'name'"),
        (
            {"tests": [{"suite": "s", "name": "n", "status": "PASS", "duration": "1s"}]},
            "duration: expected float, got '1s'",
        ),
        ({"tests": ["not an object"]}, "test 0: expected a JSON object"),
    ],
)
def test_malformed_guest_json_is_a_lab_error(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(LabError, match=message):
        model.collect(PLANNED, doc, None, "", [])


@pytest.mark.parametrize(
    ("statuses", "events", "error", "verdict"),
    [
        ([Status.PASS, Status.SKIP], [], "", CellVerdict.PASS),
        ([Status.PASS, Status.FAIL], [], "", CellVerdict.FAIL),
        ([Status.ERROR], [], "", CellVerdict.FAIL),
        ([Status.MISS], [], "", CellVerdict.FAIL),
        ([Status.PASS], [KernelEvent("warning", 10, "WARNING: CPU: 0 PID: 1", False)], "", CellVerdict.FAIL),
        ([Status.MISS], [], "QEMU died", CellVerdict.LAB_ERROR),
        ([Status.MISS], [KernelEvent("panic", 10, "Kernel panic", True)], "console hung up", CellVerdict.FAIL),
        ([Status.FAIL, Status.MISS], [], "QEMU died", CellVerdict.FAIL),
    ],
)
def test_verdict(statuses: list[Status], events: list[KernelEvent], error: str, verdict: CellVerdict) -> None:
    cell = CellResult("c", "x86_64", kernel_events=events, error=error)
    cell.tests = [model.TestResult("s", f"t{i}", s) for i, s in enumerate(statuses)]
    assert cell.verdict() is verdict


@pytest.mark.parametrize(
    ("verdicts", "code"),
    [
        ([], 125),  # nothing ran: nothing was tested
        ([CellVerdict.PASS], 0),
        ([CellVerdict.SKIPPED], 125),  # every selected test skipped: no pass of anything
        ([CellVerdict.SKIPPED, CellVerdict.PASS], 0),
        ([CellVerdict.PASS, CellVerdict.FAIL], 1),
        ([CellVerdict.LAB_ERROR, CellVerdict.PASS], 128),
        ([CellVerdict.LAB_ERROR, CellVerdict.SKIPPED], 128),
        ([CellVerdict.LAB_ERROR, CellVerdict.FAIL], 1),
    ],
)
def test_exit_status(verdicts: list[CellVerdict], code: int) -> None:
    made = {
        CellVerdict.PASS: CellResult("p", "x86_64", tests=[model.TestResult("s", "t", Status.PASS)]),
        CellVerdict.SKIPPED: CellResult("s", "x86_64", tests=[model.TestResult("s", "t", Status.SKIP, reason="ABI")]),
        CellVerdict.FAIL: CellResult("f", "x86_64", tests=[model.TestResult("s", "t", Status.FAIL)]),
        CellVerdict.LAB_ERROR: CellResult(
            "l", "x86_64", error="no QEMU", tests=[model.TestResult("s", "t", Status.MISS)]
        ),
    }
    chosen = [made[v] for v in verdicts]
    assert [c.verdict() for c in chosen] == verdicts
    assert model.exit_status(chosen) == code


@pytest.mark.parametrize(
    ("meta", "code"),
    [
        (store.RunMeta(), 0),
        (store.RunMeta(problems=("known failure expired on 2026-01-01: ...",)), 1),
        (store.RunMeta(interrupted=True), 130),
    ],
)
def test_run_exit_status_overrules_passing_cells(meta: store.RunMeta, code: int) -> None:
    """The summary's verdict line and results.json's exit_status read it: a table of passes never hides a 1."""
    passed = CellResult("p", "x86_64", tests=[model.TestResult("s", "t", Status.PASS)])
    assert store.run_exit_status([passed], meta) == code
    assert f"(exit {code})" in summary.verdict_line([passed], meta)


def test_exit_status_of_the_fixture_cells() -> None:
    assert [c.verdict() for c in cells()] == [CellVerdict.FAIL, CellVerdict.FAIL, CellVerdict.LAB_ERROR]
    assert model.exit_status(cells()) == 1


META = store.RunMeta(argv=("klab", "test-kernel", "--arches", "x86_64", "arm64"), started=1764500000.0)


def test_results_json_matches_golden(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    store.write(path, cells(), META)
    got = json.dumps(normalise_json(json.loads(path.read_text())), indent=2, sort_keys=True) + "\n"
    assert got == golden("results.golden.json", got)
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind


def test_results_json_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    store.write(path, cells(), META)
    assert store.load_cells(path) == cells()


def test_every_cell_field_round_trips(tmp_path: Path) -> None:
    """A field added to CellResult but forgotten by the writer or the reader fails here."""
    text = {f.name: f"value of {f.name}" for f in dataclasses.fields(CellResult) if f.type == "str"}
    full = CellResult(**text, durations={"boot": 1.5}, patterns=("a*",), repeat=3)  # type: ignore[arg-type]
    path = tmp_path / "results.json"
    store.write(path, [full], META)
    assert store.load_cells(path) == [full]


def test_merge(tmp_path: Path) -> None:
    first, second = cells()[:2], cells()[2:]
    store.write(tmp_path / "a.json", first, META)
    store.write(tmp_path / "b.json", second, META)
    assert store.merge([tmp_path / "a.json", tmp_path / "b.json"]) == cells()
    with pytest.raises(UserError, match="'x86_64.6.1.default' is in both"):
        store.merge([tmp_path / "b.json", tmp_path / "b.json"])


def golden_doc() -> dict[str, Any]:
    doc = json.loads((RESULTS / "results.golden.json").read_text())
    assert isinstance(doc, dict)
    return doc


def _broken(change: Any) -> dict[str, Any]:
    doc = golden_doc()
    change(doc)
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (None, "cannot read results"),
        ("[]", "not a kernel-lab results file"),
        (_broken(lambda d: d.update(format="other/1")), r"not a kernel-lab results file \(no format"),
        (
            _broken(lambda d: d.update(format="kernel-lab/results/2")),
            r"written by another klab \(format 'kernel-lab/results/2'; this klab reads 'kernel-lab/results/1'\)",
        ),
        ('{"format": ', "not a kernel-lab results file: it is not JSON"),
        (_broken(lambda d: d["tests"][0].update(cell="nowhere")), r"tests\[0\]: unknown cell 'nowhere'"),
        (_broken(lambda d: d["tests"][2].update(status="passed")), r"tests\[2\]: status: 'passed' is not one of"),
        (_broken(lambda d: d["cells"][1].update(durations={"boot": "slow"})), r"cells\[1\]: durations"),
        (
            _broken(lambda d: d["cells"][0]["kernel_events"][0].pop("fatal")),
            r"cells\[0\]: KernelEvent lacks the field 'fatal'",
        ),
        (_broken(lambda d: d["cells"][0].pop("id")), r"cells\[0\]: CellResult lacks the field 'id'"),
    ],
)
def test_load_json_rejects_bad_files(tmp_path: Path, doc: Any, message: str) -> None:
    path = tmp_path / "results.json"
    if doc is not None:
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(UserError, match=message):
        store.load_cells(path)


def test_a_results_dir_is_claimed_only_when_new_empty_or_overwritten(tmp_path: Path) -> None:
    store.claim(tmp_path / "new", overwrite=False)
    store.claim(tmp_path, overwrite=False)  # empty
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(UserError, match=r"holds an earlier run; pass --overwrite to replace it"):
        store.claim(tmp_path, overwrite=False)
    assert (tmp_path / "results.json").is_file(), "a refusal leaves the earlier run alone"
    store.claim(tmp_path, overwrite=True)
    assert not tmp_path.exists(), "--overwrite removes the earlier run before the new one starts"
    stranger = tmp_path.parent / "stranger"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match=r"is not empty and holds no klab results"):
        store.claim(stranger, overwrite=True)
    with pytest.raises(UserError, match=r"is a file; give a new or empty directory"):
        store.claim(stranger / "thesis.tex", overwrite=False)
