"""`klab`: the command line. The only place that turns errors into exit codes.

Exit codes (README, "Exit codes"): 0 passed; 1 tests failed or the kernel
is bad; 2 bad input (a path the user named that cannot be used included),
nothing run or written; 124 `klab run`'s command timed out; 125 nothing
tested; 128 a lab fault or an unexpected error (one line, and the log with
the traceback); 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import re
import sys
import time
import traceback
from importlib import metadata
from typing import Any, NoReturn

from lab.cli import bisect_cmd, build_cmds, ci_cmds, guest_cmds, report_cmds, reproduce_cmd, test_cmds, try_cmd
from lab.errors import EXIT_LAB, EXIT_USAGE, LabBaseError, did_you_mean
from lab.paths import cache_dir, cache_root, check_cache_root
from lab.proc import interrupts_raise


def version() -> str:
    try:
        return metadata.version("kernel-lab")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)")


class Parser(argparse.ArgumentParser):
    """argparse with the habits people expect: "did you mean", no abbreviations, examples kept as written.

    Abbreviations are off so that a prefix never matches a hidden option
    (`--suit` would be "ambiguous: --suite, --suite-dir"); epilogs are printed
    as written so the examples copy and paste.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def options(self) -> list[str]:
        """The option strings a user may type (hidden ones left out)."""
        return [o for a in self._actions if a.help != argparse.SUPPRESS for o in a.option_strings]

    def error(self, message: str) -> NoReturn:
        choice = _INVALID_CHOICE.search(message)
        if choice:
            hint = did_you_mean([choice.group(1)], (c.strip().strip("'") for c in choice.group(2).split(",")), n=3)
            if hint:
                message += f"; {hint}"
        super().error(message)

    def reject_unknown(self, extra: list[str]) -> NoReturn:
        """An unknown argument, said by the subcommand it was given to, with the option it is closest to."""
        options = [a for a in extra if a.startswith("-")]
        hint = did_you_mean((a.split("=")[0] for a in options), self.options())
        self.error(f"unrecognized arguments: {' '.join(extra)}{'; ' + hint if hint else ''}")


def _chosen_subparser(p: argparse.ArgumentParser, args: argparse.Namespace) -> Parser:
    """The innermost subcommand's parser that `args` went through (`klab source fetch` -> fetch's)."""
    current = p
    while True:
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name is None:
            assert isinstance(current, Parser)
            return current
        current = subs[0].choices[name]


def parser() -> argparse.ArgumentParser:
    p = Parser(
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
    try:
        path = cache_dir("logs") / time.strftime("crash-%Y%m%d-%H%M%S.log")
        path.write_text(traceback.format_exc())
    except OSError as exc:  # the cache itself is the trouble: the traceback goes to the terminal instead
        return f"not saved ({exc.strerror}): {traceback.format_exc(limit=-3)!r}"
    return str(path)


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args, extra = p.parse_known_args(argv)
    if extra:
        _chosen_subparser(p, args).reject_unknown(extra)
    try:
        check_cache_root()
        with interrupts_raise():  # SIGTERM (a CI runner's cancel, timeout(1)) unwinds like Ctrl-C: children die
            return int(args.func(args))
    except LabBaseError as exc:
        print("\n".join(exc.report()), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("klab: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            where = f" holding {exc.filename}" if exc.filename else ""
            print(
                f"klab: error: no space left on the device{where}; free some (the cache: {cache_root()})",
                file=sys.stderr,
            )
            return EXIT_LAB
        if exc.errno not in _USER_PATH_ERRORS or not exc.filename:
            return _unexpected(exc)
        # A path the user named that cannot be read or written: bad input, not a lab fault.
        print(f"klab: error: {exc.filename}: {exc.strerror}; choose a path this user can use", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - never a verdict on the kernel: a lab fault with its traceback kept
        return _unexpected(exc)


_USER_PATH_ERRORS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR)


def _unexpected(exc: BaseException) -> int:
    print(f"klab: unexpected error: {type(exc).__name__}: {exc} (traceback: {_crash_log()})", file=sys.stderr)
    return EXIT_LAB
