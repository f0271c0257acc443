#!/usr/bin/env python3
"""Run kernel-lab's in-guest suites: KTAP on stdout, JSON to --json.

Usage: run.py [--suite NAME ...] [-k SUBSTRING ...] [--json PATH] [--list]

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


def load(names: list[str]) -> list[_klab.Suite]:
    suites = []
    for name in names:
        if name not in SUITES:
            raise SystemExit(f"run.py: unknown suite {name!r}; choose from: {', '.join(SUITES)}")
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
    args = parser.parse_args(argv)
    if args.list_suites:
        print("\n".join(SUITES))
        return 0
    suites = load(args.suite or list(SUITES))
    if args.list:
        for suite in suites:
            for name, _ in suite.tests:
                print(f"{suite.name}.{name}")
        return 0
    start = time.time()
    records = _klab.run_suites(suites, args.patterns)
    if args.json:
        doc = {
            "kernel": os.uname().release,
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
