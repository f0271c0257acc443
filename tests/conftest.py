"""Session checks for the guest tests: each cell boots exactly once, even across xdist workers.

This is the root conftest on purpose: pytest loads it before the session
starts (on the xdist controller too), so the boot log is cleared before any
worker boots a cell and checked after all of them finished. A conftest deeper
in tests/ would be loaded only during collection, too late for both.
"""

from __future__ import annotations

import pytest

from tests.integration import guest_cells


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):
        guest_cells.BOOT_LOG.unlink(missing_ok=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return
    twice = {cell: n for cell, n in guest_cells.boots().items() if n != 1}
    if twice:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"ERROR: cells booted more than once (xdist grouping broken?): {twice}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
