#!/usr/bin/env python3
"""Record the KTAP and JSON fixtures by running a small suite through the real guest harness.

Run from the repository root: `python3 tests/data/ktap/record.py`. The suites
under suites/ were still being written when these were recorded, so the
tests here are made up, but the KTAP and JSON come from suites/_klab.py
exactly as a guest prints and writes them (same records as suites/run.py).
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "suites"))

import _klab  # noqa: E402

fs = _klab.Suite("fsdemo")
ptrace = _klab.Suite("ptracedemo")


@fs.test
def open_allowed() -> None:
    _klab.expect_errno(_klab.syscall("getpid"), 0, "getpid")


@fs.test
def open_denied() -> None:
    _klab.expect_eq(13, 1, "open(/etc/passwd) errno")


@fs.test
def needs_abi_9() -> None:
    raise _klab.Skip("Landlock ABI 9 needed, kernel has 6 # of 9")


@fs.test
def helper_crashes() -> None:
    raise KeyError("missing")


@ptrace.test
def attach_parent() -> None:
    pass


@ptrace.test
def attach_child() -> None:
    pass


@ptrace.test
def traceme() -> None:
    pass


def main() -> None:
    out = io.StringIO()
    records = _klab.run_suites([fs, ptrace], [], out=out)
    doc = {
        "kernel": os.uname().release,
        "machine": os.uname().machine,
        "started": 0.0,
        "duration": 0.0,
        "tests": records,
    }
    (HERE / "guest-mixed.ktap").write_text(out.getvalue())
    (HERE.parent / "results" / "guest-mixed.json").write_text(json.dumps(doc, indent=1) + "\n")
    # A crash during ptracedemo's second test: cut right after its first result.
    text = out.getvalue()
    cut = text.index("    ok 1 attach_parent\n") + len("    ok 1 attach_parent\n")
    (HERE / "guest-truncated.ktap").write_text(text[:cut])


if __name__ == "__main__":
    main()
