"""`klab report` and `klab compare`: act on runs already made, from their results.json alone.

`report` re-renders a run (a CI artifact, last week's results dir) as the
summary text, Markdown or report.html, with whatever lab version reads it now.
`compare` says what changed between two runs (lab.results.compare); it exits 1 only
on a new failure, so CI can fail on regressions against the last green run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from lab.errors import UserError
from lab.results import compare, html, store, summary
from lab.results.store import Run


def results_file(given: str, what: str) -> Path:
    """RESULTS may be a results dir or its results.json; either must exist."""
    path = Path(given)
    found = path / "results.json" if path.is_dir() else path
    if not found.is_file():
        where = f"{path} has no results.json" if path.is_dir() else f"{path} does not exist"
        raise UserError(f"{what}: {where}; give a results dir written by klab test, ci run or ci merge")
    return found


def load(given: str, what: str) -> tuple[Path, Run]:
    path = results_file(given, what)
    return path, store.load(path)


def cmd_report(args: argparse.Namespace) -> int:
    """0 once rendered: the run's own verdict is its exit status, given when it ran."""
    path, run = load(args.results_dir, "RESULTS_DIR")
    if args.html:
        out = Path(args.html)
        out = out / "report.html" if out.is_dir() else out
        if not out.parent.is_dir():
            raise UserError(f"--html {args.html}: directory {out.parent} does not exist; create it or choose another")
        html.write(out, run.cells, run.meta, path.parent)
        print(f"klab: wrote {out}", file=sys.stderr)
    fmt = args.format or ("text" if not args.html else None)
    if fmt == "markdown":
        print(summary.markdown(run.cells, run.meta), end="")
    elif fmt == "text":
        print(summary.table(run.cells, run.meta), end="")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    threshold = compare.parse_threshold(args.threshold) if args.threshold else compare.Threshold()
    base_path, base = load(args.base, "BASE_RESULTS")
    new_path, new = load(args.new, "NEW_RESULTS")
    changes = compare.compare(base, new, threshold)
    print(compare.render(changes, str(base_path.parent), str(new_path.parent)), end="")
    return compare.exit_status(changes)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="re-render a past run from its results.json: summary text, Markdown, or report.html",
        epilog="examples: klab report results/run-20261201-101500\n"
        '          klab report results/run-20261201-101500 --format markdown >> "$GITHUB_STEP_SUMMARY"\n'
        "          klab report merged --html /tmp/report.html",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results_dir", metavar="RESULTS_DIR", help="a results dir (or its results.json) written by klab")
    p.add_argument("--html", metavar="OUT", help="write the HTML report to OUT (a file, or a dir for OUT/report.html)")
    p.add_argument(
        "--format",
        choices=("text", "markdown"),
        help="the summary printed to stdout (default: text, none when only --html is given)",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "compare",
        help="what changed between two runs: new failures, fixes, skips, signatures, durations; 1 on a new failure",
        epilog="examples: klab compare results/run-20261130-090000 results/run-20261201-101500\n"
        "          klab compare last-green/results.json results/x86_64.7.3 --threshold 30%",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("base", metavar="BASE_RESULTS", help="the run to compare against (dir or results.json)")
    p.add_argument("new", metavar="NEW_RESULTS", help="the run to judge (dir or results.json)")
    p.add_argument(
        "--threshold",
        metavar="SECONDS_OR_PERCENT",
        help="report a test's duration change beyond this: 2 (seconds) or 30%% (default: beyond both 1 s and 50%%)",
    )
    p.set_defaults(func=cmd_compare)
