"""A test-only suite for `--repeat` and known failures: a deliberately flaky test, a steady one, a broken one.

Not one of the lab's suites (suites/run.py lists it only with --suite-dir
tests/data/suites). The flaky test fails on every second run within a boot,
counted in a file under /tmp, so its outcome is mixed exactly when it runs
more than once: `klab test --repeat 4` must report it FLAKY, passed 2 of 4.
"""

from __future__ import annotations

import os

import _klab

suite = _klab.Suite("flaky_demo")
COUNTER = "/tmp/klab-flaky-demo-runs"


@suite.test
def fails_every_second_run() -> None:
    """Passes on odd runs, fails on even ones (the count survives the forked test process in /tmp)."""
    runs = 0
    if os.path.exists(COUNTER):
        with open(COUNTER) as f:
            runs = int(f.read())
    with open(COUNTER, "w") as f:
        f.write(str(runs + 1))
    _klab.expect(runs % 2 == 0, f"run {runs + 1} of this boot: every second run fails on purpose")


@suite.test
def always_passes() -> None:
    """The steady neighbour: with --repeat it stays PASS, never FLAKY."""
    _klab.expect_eq(1 + 1, 2, "arithmetic")


@suite.test
def fails_every_run() -> None:
    """Always fails the same way: a known failure's entry turns it into XFAIL."""
    _klab.expect_errno((-1, 13), 1, "a denial that should be EPERM")
