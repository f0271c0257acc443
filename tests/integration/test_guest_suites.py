"""Every in-guest test of every lab.yaml cell, as its own pytest item.

Items are collected statically from suites/run.py --list; each cell (a class
here, so `--dist loadscope` keeps it on one xdist worker) boots its guest once
in a class-scoped fixture, and each item looks its own result up. So `-k`,
`--junitxml` and `-n` work as pytest users expect, and one boot serves all the
tests of a cell. conftest.py checks at the end that no cell booted twice.
"""

from __future__ import annotations

import re
import sys

import pytest

from lab.paths import SUITES
from lab.results import model
from tests.integration import guest_cells

sys.path.insert(0, str(SUITES))
import _landlock  # noqa: E402 - the guest's own reader of suites/landlock_abi.json: one table for both sides

pytestmark = pytest.mark.kernel

_CELLS = {cell.id: cell for cell in guest_cells.make_test_cells()}
_NEEDS_ABI = re.compile(r"needs Landlock ABI (\d+), kernel has (\d+)")
_LANDED_IN = re.compile(r"landed in v(\d+)\.(\d+)")
_NOT_IN_BTF = re.compile(r"bpf_lsm_\w+ is not in vmlinux BTF \(hook absent or CONFIG_BPF_LSM off\)")
_NEWEST = (6, 12)  # from this release on, every hook the suites use is in the kernel
_RUNS: dict[str, model.CellResult] = {}


def _outcome(cell_id: str, full_name: str) -> None:
    run = _RUNS[cell_id]
    found = [t for t in run.tests if t.full_name == full_name]
    if not found:
        pytest.fail(f"{full_name} has no result in cell {cell_id} (lab error: {run.error or 'none'})")
    test = found[0]
    if test.status is model.Status.SKIP:
        pytest.skip(test.reason)
    if test.status is model.Status.XFAIL:
        pytest.xfail(test.reason)
    if test.status is not model.Status.PASS:
        pytest.fail(f"{test.status.value}: {test.reason}\n{test.log}", pytrace=False)


def _release(run: model.CellResult) -> tuple[int, int]:
    major, minor = run.kernel_release.split(".")[:2]
    return int(major), int(minor)


def _older_than_its_feature(reason: str, release: tuple[int, int]) -> bool:
    """A BPF LSM skip that a kernel older than the feature explains: the feature landed in a later
    version, or (before the lab's newest kernel) the hook is not in this kernel at all."""
    landed = _LANDED_IN.search(reason)
    if landed:
        return (int(landed.group(1)), int(landed.group(2))) > release
    return bool(_NOT_IN_BTF.fullmatch(reason)) and release < _NEWEST


def _lacks_abi(reason: str, release: tuple[int, int]) -> bool:
    """A Landlock skip is right only where landlock_abi.json says this release lacks the ABI, and the
    kernel reported exactly what the table gives it: a kernel under-reporting its ABI fails the run."""
    match = _NEEDS_ABI.fullmatch(reason)
    if not match:
        return False
    needed, reported = int(match.group(1)), int(match.group(2))
    low, high = _landlock.expected_abi(release)
    return high is not None and high < needed and low <= reported <= high


def _make_class(cell_id: str) -> type:
    cell = _CELLS[cell_id]
    names = guest_cells.suite_tests(cell.suites)

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def booted(cls) -> None:  # type: ignore[no-untyped-def]
        if cell_id not in _RUNS:
            _RUNS[cell_id] = guest_cells.run_cell(cell)

    @pytest.mark.parametrize("name", names)
    def test_in_guest(self, name: str) -> None:  # type: ignore[no-untyped-def]
        _outcome(cell_id, name)

    def test_cell_clean(self) -> None:  # type: ignore[no-untyped-def]
        """No kernel report (WARNING, BUG, panic...) and no lab error anywhere in the boot."""
        run = _RUNS[cell_id]
        assert not run.error, run.error
        assert not run.kernel_events, [f"{e.kind}: {e.excerpt.splitlines()[0]}" for e in run.kernel_events]
        assert run.accel in ("kvm", "tcg") and run.accel_reason

    def test_skips_are_explained(self) -> None:  # type: ignore[no-untyped-def]
        """Every skip has a reason the kernel explains: a Landlock ABI above the guest's, bpf missing from
        lsm=, or a BPF LSM feature newer than the guest's kernel."""
        for test in _RUNS[cell_id].tests:
            if test.status is not model.Status.SKIP:
                continue
            if test.suite.startswith("landlock"):
                assert _lacks_abi(test.reason, _release(_RUNS[cell_id])), (test.full_name, test.reason)
            elif test.suite == "bpf_lsm":
                bpf_off = "lsm=" in cell.boot.append and test.reason.startswith("bpf is not an active LSM")
                too_old = _older_than_its_feature(test.reason, _release(_RUNS[cell_id]))
                assert bpf_off or too_old, (test.full_name, test.reason)
            elif test.suite == "seccomp":
                landed = _LANDED_IN.search(test.reason)
                too_old = landed is not None and (int(landed.group(1)), int(landed.group(2))) > _release(_RUNS[cell_id])
                assert too_old, (test.full_name, test.reason)
            else:
                raise AssertionError(f"unexpected skip {test.full_name}: {test.reason}")

    def test_canary_catches_missing_bpf(self) -> None:  # type: ignore[no-untyped-def]
        """With bpf missing from lsm=, programs attach but never run: the canary must have failed, loudly."""
        canary = next(t for t in _RUNS[cell_id].tests if t.full_name == "bpf_lsm.canary_counts_file_open")
        if "lsm=" in cell.boot.append:
            # known-failures.yaml's strict entry: the canary failed, as it must, with the reason bpf is missing.
            assert canary.status is model.Status.XFAIL, (canary.status, canary.reason)
            assert "was: bpf is not in the active LSM list" in canary.reason, canary.reason
        else:
            assert canary.status is model.Status.PASS and not canary.reason

    members = {"booted": booted, "test_in_guest": test_in_guest, "test_cell_clean": test_cell_clean}
    members["test_skips_are_explained"] = test_skips_are_explained
    if "bpf_lsm" in cell.suites:
        members["test_canary_catches_missing_bpf"] = test_canary_catches_missing_bpf
    return type(f"TestCell_{cell_id.replace('.', '_').replace('-', '_')}", (), members)


for _cell_id in _CELLS:
    _cls = _make_class(_cell_id)
    globals()[_cls.__name__] = _cls
