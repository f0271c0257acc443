#!/usr/bin/env python3
"""Bisect benchmark: the signature-aware bisect against a signature-blind one (--any-failure) on one scenario.

The scenario (tests/integration/test_bisect.py) has an unrelated failure of the
bisected test in commits 5..7 and the real regression at commit 10. Prints,
for each bisect, the culprit, the steps and the wall time; the blind one is
expected to blame commit 5, the aware one commit 10. Runs on the warm build
dir, so the times are those of incremental steps (about 20-30 s each).

Usage: bench/bisection.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integration import test_bisect as scenario_of  # noqa: E402


def main() -> int:
    scenario = scenario_of.ensure_scenario()
    rows = []
    with tempfile.TemporaryDirectory(prefix="klab-bench-bisect-") as tmp:
        for label, extra in (("signature-aware", ()), ("signature-blind (--any-failure)", ("--any-failure",))):
            _, doc, wall = scenario_of.run_bisect(scenario, Path(tmp) / label.split()[0], *extra)
            culprit = scenario.commits.index(doc["culprit"]["commit"]) if doc["culprit"] else None
            steps = [s for s in doc["steps"] if s["phase"] == "bisect"]
            skipped = sum(s["verdict"] == "skip" for s in steps)
            rows.append((label, culprit, len(steps), skipped, wall))
    print(f"bisect of {len(scenario.commits) - 1} commits; regression at {scenario_of.REGRESSION}, "
          f"unrelated failure at {scenario_of.UNRELATED}..{scenario_of.UNRELATED_FIXED - 1}")  # fmt: skip
    print(f"{'bisect':<34} {'culprit':>8} {'steps':>6} {'skipped':>8} {'wall s':>7}")
    for label, culprit, steps, skipped, wall in rows:
        print(f"{label:<34} {culprit!s:>8} {steps:>6} {skipped:>8} {wall:>7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
