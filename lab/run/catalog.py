"""The host's view of suites/: which suites and tests exist, and the command that runs them.

The guest-side runner (suites/run.py) holds the one list of suites and tests:
the host asks it (`--list-suites`, `--list`) instead of keeping a copy, and
never imports guest code (it runs with the guest's python3, stdlib only).
"""

from __future__ import annotations

import difflib
import functools
import shlex
import sys
from pathlib import Path

from lab import proc
from lab.errors import LabError, UserError, did_you_mean
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
        hint = did_you_mean([name], known)
        raise UserError(f"{where}: unknown suite {name!r}; {hint + ' ' if hint else ''}choose from: {', '.join(known)}")


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


def check_selection(
    suites: tuple[str, ...], patterns: tuple[str, ...] = (), suite_dirs: tuple[Path, ...] = ()
) -> list[tuple[str, str]]:
    """The tests a selection picks; picking none is bad input, said before any build or boot.

    A run of nothing would pass (and a bisect of nothing would blame a commit),
    so the error says where -k does match, or which names are close.
    """
    chosen = planned_tests(suites, patterns, suite_dirs)
    if chosen:
        return chosen
    scope = f"suite{'s' if len(suites) > 1 else ''} {', '.join(suites)}" if suites else "any suite"
    wanted = " ".join(f"-k {p}" for p in patterns) or "(no -k)"
    everything = [f"{s}.{n}" for s, n in planned_tests((), (), suite_dirs)]
    elsewhere = [n for n in everything if any(p in n for p in patterns)]
    if elsewhere:
        where = ", ".join(dict.fromkeys(n.split(".", 1)[0] for n in elsewhere))
        hint = f"; it matches {len(elsewhere)} test(s) of {where} (e.g. {elsewhere[0]}), which --suite leaves out"
    else:
        near = _near(patterns, everything)
        hint = f"; did you mean: {', '.join(near)}" if near else ""
    raise UserError(f"no test matches {wanted} in {scope}{hint} (see them all: klab test --list)")


def _near(patterns: tuple[str, ...], names: list[str], most: int = 3) -> list[str]:
    """Names holding most of a pattern (a typo in a -k substring): longest common run over the pattern's length."""
    scored = []
    for name in names:
        for pattern in patterns:
            found = difflib.SequenceMatcher(None, pattern, name).find_longest_match()
            scored.append((found.size / max(len(pattern), 1), name))
    good = sorted((s for s in scored if s[0] >= 0.6), key=lambda s: (-s[0], s[1]))
    return list(dict.fromkeys(name for _, name in good))[:most]


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
