"""`klab`: the command line. The only place that turns errors into exit codes.

Exit codes (README): 0 passed; 1 tests failed or the kernel is bad; 2 bad
input, nothing run or written; 125 untestable (build failure); 128 a lab
fault or an unexpected error (one line, and the log with the traceback).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from importlib import metadata

from lab.cli import bisect_cmd, build_cmds, ci_cmds, guest_cmds, report_cmds, reproduce_cmd, test_cmds, try_cmd
from lab.errors import EXIT_LAB, LabBaseError
from lab.paths import cache_dir


def version() -> str:
    try:
        return metadata.version("kernel-lab")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="klab",
        description="Build, boot and test Linux kernels for the BPF LSM, Landlock and seccomp, under QEMU.",
        epilog="example: klab test-kernel --arches x86_64    (each command has its own --help)",
    )
    p.add_argument("--version", action="version", version=f"klab {version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (build_cmds, guest_cmds, test_cmds, report_cmds, bisect_cmd, ci_cmds):
        module.register(sub)
    reproduce_cmd.register(sub)
    try_cmd.register(sub)
    return p


def _crash_log() -> str:
    """Keep the traceback of an unexpected error where the user can find it; the terminal gets one line."""
    path = cache_dir("logs") / time.strftime("crash-%Y%m%d-%H%M%S.log")
    path.write_text(traceback.format_exc())
    return str(path)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LabBaseError as exc:
        print("\n".join(exc.report()), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("klab: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - never a verdict on the kernel: a lab fault with its traceback kept
        print(f"klab: unexpected error: {type(exc).__name__}: {exc} (traceback: {_crash_log()})", file=sys.stderr)
        return EXIT_LAB
