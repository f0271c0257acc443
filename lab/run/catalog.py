"""The host's view of suites/: which suites and tests exist, and the command that runs them.

The guest-side runner (suites/run.py) holds the one list of suites and tests:
the host asks it (`--list-suites`, `--list`) instead of keeping a copy, and
never imports guest code (it runs with the guest's python3, stdlib only).
"""

from __future__ import annotations

import functools
import shlex
import sys
from pathlib import Path

from lab import proc
from lab.errors import LabError, UserError
from lab.paths import SUITES

RUNNER = SUITES / "run.py"
LIST_TIMEOUT = 60.0


def _ask(*args: str) -> list[str]:
    try:
        out = proc.run([sys.executable, str(RUNNER), *args], deadline=proc.Deadline.after(LIST_TIMEOUT))
    except proc.CommandFailed as exc:
        raise LabError(f"listing the suites failed: {exc.tail.strip() or exc}") from exc
    return [line.strip() for line in out.output.splitlines() if line.strip()]


@functools.cache
def all_suites() -> tuple[str, ...]:
    """Every suite, in run order."""
    return tuple(_ask("--list-suites"))


def extra_suites(suite_dirs: tuple[Path, ...]) -> tuple[str, ...]:
    """The suites of extra suite dirs (test-only suites such as tests/data/suites/)."""
    return tuple(_ask("--list-suites", *_dir_args(suite_dirs))[len(all_suites()) :]) if suite_dirs else ()


def check(name: str, where: Path | str = "--suite", suite_dirs: tuple[Path, ...] = ()) -> None:
    """An unknown suite name is a usage error that lists the real ones."""
    known = (*all_suites(), *extra_suites(suite_dirs))
    if name not in known:
        raise UserError(f"{where}: unknown suite {name!r}; choose from: {', '.join(known)}")


def _dir_args(suite_dirs: tuple[Path, ...] | tuple[str, ...]) -> list[str]:
    return [arg for d in suite_dirs for arg in ("--suite-dir", str(d))]


def planned_tests(
    suites: tuple[str, ...], patterns: tuple[str, ...] = (), suite_dirs: tuple[Path, ...] = ()
) -> list[tuple[str, str]]:
    """(suite, test) of every test a run of these suites selects (no suites: all of them)."""
    args = [arg for suite in suites for arg in ("--suite", suite)]
    names = _ask("--list", *_dir_args(suite_dirs), *args)
    chosen = [n for n in names if not patterns or any(p in n for p in patterns)]
    return [(n.split(".", 1)[0], n.split(".", 1)[1]) for n in chosen]


def run_line(
    suites_dir: str,
    suites: tuple[str, ...],
    patterns: tuple[str, ...],
    json_path: str,
    repeat: int = 1,
    suite_dirs: tuple[str, ...] = (),
) -> str:
    """The guest's command line for suites/run.py, with the suites tree mounted at `suites_dir`.

    One shell-quoted line: guest shells and LAVA steps take lines.
    """
    argv = ["python3", "-u", f"{suites_dir}/run.py", "--json", json_path, *_dir_args(suite_dirs)]
    if repeat > 1:
        argv += ["--repeat", str(repeat)]
    for suite in suites:
        argv += ["--suite", suite]
    for pattern in patterns:
        argv += ["-k", pattern]
    return shlex.join(argv)
