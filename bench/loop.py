#!/usr/bin/env python3
"""The warm loops a kernel developer lives in, measured: `make test`, and edit-build-test.

- make-test: runs `make test`'s own commands (read from `make -n test`, so the two never
  drift apart), one phase at a time, each pytest phase with a JUnit file: wall time per
  phase, per test file (summed test time), and the slowest tests. Run it warm (after a
  `make test`), so it measures what a developer waits for, not the first build.
- dev: the loop after editing one file in security/landlock/: append a real (compiled, not a
  comment) line to the file, `klab build` incrementally in a build dir of its own, then
  `klab test --build DIR` for every suite; the file is restored afterwards. The median over
  --rounds, split into build, boot to the first test, and tests. The first round also
  pays for making the bench's build dir (ccache warm) and is reported, not counted.

Usage: bench/loop.py make-test
       bench/loop.py dev [--version 6.12] [--arch x86_64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab.kernel import source  # noqa: E402
from lab.paths import cache_dir  # noqa: E402

EDITED = "security/landlock/syscalls.c"


def make_test_phases() -> list[list[str]]:
    """`make test`'s commands, as make would run them."""
    out = subprocess.run(["make", "-s", "-n", "test"], cwd=REPO, capture_output=True, text=True, check=True)
    return [shlex.split(line) for line in out.stdout.splitlines() if line.strip()]


def junit_tests(path: Path) -> list[tuple[str, float, str, str]]:
    """(test id, seconds, outcome, message) for each test case in a JUnit file."""
    rows = []
    for case in ET.parse(path).iter("testcase"):
        verdict = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        outcome = "passed" if verdict is None else verdict.tag
        message = "" if verdict is None else verdict.get("message", "")
        rows.append((f"{case.get('classname')}::{case.get('name')}", float(case.get("time") or 0), outcome, message))
    return rows


def bench_make_test() -> int:
    scratch = Path(tempfile.mkdtemp(prefix="klab-bench-loop-"))
    phases: list[tuple[str, float, int]] = []
    tests: list[tuple[str, float, str, str]] = []
    try:
        for n, argv in enumerate(make_test_phases()):
            if Path(argv[0]).name == "pytest":
                junit = scratch / f"phase-{n}.xml"
                argv = [*argv, f"--junitxml={junit}"]
            start = time.monotonic()
            done = subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            phases.append((shlex.join(argv[:6]), time.monotonic() - start, done.returncode))
            if Path(argv[0]).name == "pytest" and junit.is_file():
                tests += junit_tests(junit)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    total = sum(wall for _, wall, _ in phases)
    print(f"warm `make test`, {os.cpu_count()} CPUs: {total:.0f} s in all")
    print(f"{'wall s':>8} {'exit':>5}  phase")
    for what, wall, rc in phases:
        print(f"{wall:>8.1f} {rc:>5}  {what}")
    per_file: dict[str, float] = defaultdict(float)
    for test_id, seconds, _, _ in tests:
        per_file[".".join(test_id.split("::")[0].split(".")[:3])] += seconds  # tests.integration.test_x
    print(f"\n{'test s':>8}  test module (summed over its tests; -n 2 runs two at once)")
    for module, seconds in sorted(per_file.items(), key=lambda kv: -kv[1])[:15]:
        print(f"{seconds:>8.1f}  {module}")
    print(f"\n{'test s':>8}  slowest tests")
    for test_id, seconds, outcome, _ in sorted(tests, key=lambda t: -t[1])[:25]:
        print(f"{seconds:>8.1f}  {test_id} [{outcome}]")
    failed = [(test_id, message) for test_id, _, outcome, message in tests if outcome in ("failure", "error")]
    if failed:
        print("\nfailed (a warm `make test` must pass: these figures are not the loop's until it does)")
        for test_id, message in failed:
            print(f"  {test_id}: {message[:400]}")
    return max((rc for _, _, rc in phases), default=0)


def klab(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lab", *argv], cwd=REPO, capture_output=True, text=True)


def one_loop(tree: Path, arch: str, bdir: Path, results: Path, round_: int) -> dict[str, float]:
    """Edit, build, test; the file is restored, bytes and mtime, whatever happens."""
    edited = tree / EDITED
    original, stat = edited.read_bytes(), edited.stat()
    try:
        edited.write_bytes(original + f"\nstatic int klab_bench_edit_{round_} __maybe_unused = {round_};\n".encode())
        start = time.monotonic()
        built = klab("build", "--arch", arch, "--src", str(tree), "--build-dir", str(bdir))
        build_s = time.monotonic() - start
        if built.returncode != 0:
            raise SystemExit(f"klab build failed ({built.returncode}): {built.stderr.strip()[-400:]}")
        start = time.monotonic()
        tested = klab("test", "--arch", arch, "--build", str(bdir), "--results", str(results))
        test_wall = time.monotonic() - start
        if tested.returncode != 0:
            raise SystemExit(f"klab test failed ({tested.returncode}): {tested.stderr.strip()[-400:]}")
    finally:
        edited.write_bytes(original)
        os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    doc = json.loads((results / "results.json").read_text())
    cell = doc["cells"][0]
    boot = float(cell["durations"]["boot"])
    count = len(doc["tests"])
    shutil.rmtree(results)
    return {"build": build_s, "boot": boot, "tests": test_wall - boot, "total": build_s + test_wall, "count": count}


def bench_dev(version: str, arch: str, rounds: int) -> int:
    tree = source.fetch(version)
    bdir = cache_dir("bench") / f"loop-{arch}-linux-{version}"
    scratch = Path(tempfile.mkdtemp(prefix="klab-bench-loop-"))
    try:
        runs = [one_loop(tree, arch, bdir, scratch / f"results-{n}", n) for n in range(rounds + 1)]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    first, counted = runs[0], runs[1:]
    print(f"developer loop: edit {EDITED}, klab build, klab test (all suites), {arch}, linux-{version}")
    print(
        f"{os.cpu_count()} CPUs, median of {len(counted)} rounds (first round, making the build dir: "
        f"{first['total']:.0f} s, not counted)"
    )
    for phase in ("build", "boot", "tests", "total"):
        values = [run[phase] for run in counted]
        print(f"{phase:<8} {statistics.median(values):>7.1f} s   (all: {', '.join(f'{v:.1f}' for v in values)})")
    print(f"tests per round: {int(counted[0]['count'])}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("make-test", help="where a warm `make test` spends its time")
    dev = sub.add_parser("dev", help="edit one landlock file, build, test all suites")
    dev.add_argument("--version", default="6.12", help="Debian linux-source version (default: 6.12)")
    dev.add_argument("--arch", default="x86_64")
    dev.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.mode == "make-test":
        return bench_make_test()
    return bench_dev(args.version, args.arch, args.rounds)


if __name__ == "__main__":
    sys.exit(main())
