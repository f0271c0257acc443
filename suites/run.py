#!/usr/bin/env python3
"""Run kernel-lab's in-guest suites: KTAP on stdout, JSON to --json.

Usage: run.py [--suite NAME ...] [-k SUBSTRING ...] [--json PATH] [--list] [--repeat N] [--jobs N] [--suite-dir DIR ...]

Works the same inside a lab guest and directly on a Linux host. Exit status:
0 when nothing failed, 1 when a test failed or errored, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _klab  # noqa: E402

# Suite name -> module in this directory. Order is the run order.
SUITES = ("landlock", "landlock_ptrace", "bpf_lsm", "seccomp")


def extra_suites(dirs: list[str]) -> list[str]:
    """Suite packages found in extra dirs (test-only suites); they run only when named."""
    found = []
    for directory in dirs:
        sys.path.append(os.path.abspath(directory))
        for entry in sorted(os.listdir(directory)):
            if os.path.isfile(os.path.join(directory, entry, "__init__.py")) and entry not in SUITES:
                found.append(entry)
    return found


def load(names: list[str], extra: list[str]) -> list[_klab.Suite]:
    suites = []
    for name in names:
        if name not in SUITES and name not in extra:
            raise SystemExit(f"run.py: unknown suite {name!r}; choose from: {', '.join([*SUITES, *extra])}")
        suites.append(importlib.import_module(name).suite)
    return suites


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", action="append", default=[], help="suite to run (default: all)")
    parser.add_argument(
        "-k", dest="patterns", action="append", default=[], help="run tests whose SUITE.TEST contains this"
    )
    parser.add_argument("--json", help="write the results as JSON here (atomically)")
    parser.add_argument("--list", action="store_true", help="print SUITE.TEST names and exit")
    parser.add_argument("--list-suites", action="store_true", help="print the suite names, in run order, and exit")
    parser.add_argument("--repeat", type=int, default=1, help="run each test N times; mixed outcomes are FLAKY")
    parser.add_argument(
        "--jobs",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="tests to run at once, in suites that allow it (default: one per CPU)",
    )
    parser.add_argument("--suite-dir", action="append", default=[], help="another dir of suite packages")
    args = parser.parse_args(argv)
    extra = extra_suites(args.suite_dir)
    if args.list_suites:
        print("\n".join([*SUITES, *extra]))
        return 0
    if args.repeat < 1:
        raise SystemExit("run.py: --repeat must be 1 or more")
    if args.jobs < 1:
        raise SystemExit("run.py: --jobs must be 1 or more")
    suites = load(args.suite or list(SUITES), extra)
    if args.list:
        for suite in suites:
            for name, _ in suite.tests:
                print(f"{suite.name}.{name}")
        return 0
    start = time.time()
    records = _klab.run_suites(suites, args.patterns, repeat=args.repeat, jobs=args.jobs)
    if args.json:
        doc = {
            "kernel": os.uname().release,
            "kernel_version": os.uname().version,  # "#17 SMP ... 2026": the host checks it is the kernel it built
            "machine": os.uname().machine,
            "started": start,
            "duration": time.time() - start,
            "tests": records,
        }
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, args.json)
    return 1 if any(r["status"] in ("FAIL", "ERROR") for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
