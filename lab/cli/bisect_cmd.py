"""`klab bisect`: arguments and the report printed at the end (the work is lab.bisect's)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from lab.bisect.drive import drive, settings_from_args, work_dir
from lab.bisect.record import STATE, load_settings
from lab.bisect.report import render
from lab.bisect.verdict import BOOT_FAILURE_CHOICES
from lab.cli import args as common
from lab.kernel import kconfig


def cmd_bisect(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    work = work_dir(settings, args.results, args.fresh)
    if (work / STATE).is_file():
        before = load_settings(work / STATE)
        settings = dataclasses.replace(settings, endpoints=before.endpoints, signature=before.signature)
        print(f"klab bisect: resuming {work}", file=sys.stderr)
    print(f"klab bisect: {settings.good[:12]}..{settings.bad[:12]} in {settings.src}; work dir {work}", file=sys.stderr)
    report = drive(settings, work)
    print(render(report))
    return 0 if report.culprit else 125


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bisect",
        help="find the commit that broke a suite test (git bisect run: build, boot, test)",
        epilog="example: klab bisect --src ~/linux --good v7.2 --bad HEAD --arch x86_64 "
        "--test landlock_ptrace.attach_child_to_parent__child_domain",
    )
    p.add_argument("--src", required=True, help="the kernel git tree (clean; left as it was found)")
    p.add_argument("--good", required=True, help="a commit where the test passes")
    p.add_argument("--bad", required=True, help="a later commit where it fails")
    p.add_argument("--arch", required=True, help=common.ARCH_HELP)
    p.add_argument("--test", action="append", default=[], help="SUITE.TEST (or a substring, like -k); repeatable")
    p.add_argument(
        "--splat",
        help="bisect a kernel report instead of a test: a regex on its title (e.g. 'KASAN: .* in landlock_')",
    )
    p.add_argument("--suite", action="append", default=[], help="with --splat: the suites to run (default: all)")
    p.add_argument(
        "--any-failure",
        action="store_true",
        help="any failure of the tests is bad (default: only the failure seen at --bad; another one is skipped)",
    )
    p.add_argument(
        "-f", "--fragment", "--fragments", dest="fragments", action="extend", nargs="+",
        help=f"kconfig fragments (default: {' '.join(kconfig.DEFAULT_FRAGMENTS)})",
    )  # fmt: skip
    p.add_argument("--retries", type=int, default=0, help="rerun a failing test up to N times; bad only if all fail")
    p.add_argument(
        "--boot-failure", choices=BOOT_FAILURE_CHOICES, default="skip",
        help="a kernel that dies before the test starts: skip the commit (default) or call it bad",
    )  # fmt: skip
    p.add_argument("--rootfs", default="auto", help="host, image, or an ext4 image path (default: auto)")
    p.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    p.add_argument("--build-dir", type=Path, help="build every commit here (default: the lab's cache)")
    p.add_argument("--results", help="work dir (default: resume a matching results/bisect-*, else a new one)")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming a matching unfinished bisect")
    p.set_defaults(func=cmd_bisect)
