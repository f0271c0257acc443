#!/usr/bin/env python3
"""Matrix benchmark: wall time of `klab test-kernel` (what `make test-kernel` runs), warm and cold, -n 1 and -n 2.

- warm: builds, images and ccache already in ~/.cache/kernel-lab: only boots and tests;
- cold (--cold): a fresh, empty KLAB_CACHE (source fetch, both kernel builds,
  both images, then the boots); expect 30-40 minutes on 2 cores.
Also counts the guest boots (one per cell) from the run's results.json.

Usage: bench/matrix.py [--cold] [--jobs "1 2"]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(jobs: int, env: dict[str, str], results: Path) -> tuple[float, int, int]:
    """(wall seconds, exit status, boots) of one test-kernel run."""
    argv = [sys.executable, "-m", "lab", "test-kernel", "-n", str(jobs), "--results", str(results)]
    start = time.monotonic()
    done = subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - start
    doc = json.loads((results / "results.json").read_text())
    return wall, done.returncode, len(doc["cells"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="also measure from an empty cache (slow)")
    parser.add_argument("--jobs", default="1 2")
    args = parser.parse_args()
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="klab-bench-matrix-"))
    try:
        for jobs in (int(j) for j in args.jobs.split()):
            if args.cold:
                env = dict(os.environ, KLAB_CACHE=str(scratch / f"cache-{jobs}"))
                rows.append(("cold", jobs, *run(jobs, env, scratch / f"cold-{jobs}")))
                shutil.rmtree(scratch / f"cache-{jobs}", ignore_errors=True)
            rows.append(("warm", jobs, *run(jobs, dict(os.environ), scratch / f"warm-{jobs}")))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"klab test-kernel (lab.yaml matrix), {os.cpu_count()} CPUs")
    print(f"{'cache':<6} {'-n':>3} {'wall s':>8} {'exit':>5} {'boots':>6}")
    for cache, jobs, wall, rc, boots in rows:
        print(f"{cache:<6} {jobs:>3} {wall:>8.1f} {rc:>5} {boots:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
