"""Every in-guest test of every lab.yaml cell, as its own pytest item.

Items are collected statically from suites/run.py --list; each cell (a class
here, so `--dist loadscope` keeps it on one xdist worker) boots its guest once
in a class-scoped fixture, and each item looks its own result up. So `-k`,
`--junitxml` and `-n` work as pytest users expect, and one boot serves all the
tests of a cell. conftest.py checks at the end that no cell booted twice.
"""

from __future__ import annotations

import pytest

from lab import results
from tests.integration import guest_cells

pytestmark = pytest.mark.kernel

_CELLS = {cell.id: cell for cell in guest_cells.lab_matrix().cells()}
_RUNS: dict[str, results.Cell] = {}


def _outcome(cell_id: str, full_name: str) -> None:
    run = _RUNS[cell_id]
    found = [t for t in run.tests if t.full_name == full_name]
    if not found:
        pytest.fail(f"{full_name} has no result in cell {cell_id} (lab error: {run.error or 'none'})")
    test = found[0]
    if test.status is results.Status.SKIP:
        pytest.skip(test.reason)
    if test.status is not results.Status.PASS:
        pytest.fail(f"{test.status.value}: {test.reason}\n{test.log}", pytrace=False)


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

    return type(
        f"TestCell_{cell_id.replace('.', '_').replace('-', '_')}",
        (),
        {
            "booted": booted,
            "test_in_guest": test_in_guest,
            "test_cell_clean": test_cell_clean,
        },
    )


for _cell_id in _CELLS:
    _cls = _make_class(_cell_id)
    globals()[_cls.__name__] = _cls
