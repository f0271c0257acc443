"""report.html: a run as one page a person opens in a browser, to see what failed and rerun it.

summary.txt stops being readable at 8 cells x ~400 tests, and a CI artifact
is opened in a browser anyway. The page is self-contained (inline CSS, no
JavaScript, nothing fetched), so it works from an artifact, a mail or a
file:// URL for as long as it is kept. It reads top to bottom as a person
acts: the totals line, the cells x suites grid coloured by outcome, every
failure with its console excerpt and the commands that rerun it, then each
cell's metadata and its tests, the passing ones folded per suite.

Console excerpts come from the cell's console log while it is on disk (the
console-<cell>.log beside results.json, else the path results.json records):
the test's own KTAP lines as the guest echoed them, with the kernel messages
printed among them. `render` is pure over the cells and those texts; `write`
reads the logs and writes the page atomically. Every text from a run is escaped.
"""

from __future__ import annotations

import datetime
import enum
import html
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lab import atomic
from lab.results import consolelog, ktap, signature, summary
from lab.results.compare import failing
from lab.results.model import SPLATS, CellResult, CellVerdict, Status, TestResult
from lab.results.store import RunMeta


class Outcome(enum.Enum):
    """What one grid square (a cell's suite) or one test row says, worst first; the value is its CSS class."""

    FAIL = "fail"
    LAB_ERROR = "lab-error"  # the lab could not run it: never a verdict on the kernel (a failure still is one)
    FLAKY = "flaky"
    XPASS = "xpass"  # passed although a known-failures entry says it fails: the entry can go
    XFAIL = "xfail"
    PASS = "pass"
    SKIP_ONLY = "skip-only"
    NONE = "none"  # the cell ran no test of this suite


COLOURS = {
    Outcome.FAIL: "#ef8f8f",
    Outcome.LAB_ERROR: "#c9a7e8",
    Outcome.FLAKY: "#f7ec7e",
    Outcome.XPASS: "#9fd3f0",
    Outcome.XFAIL: "#f5c98a",
    Outcome.PASS: "#b7e1b0",
    Outcome.SKIP_ONLY: "#dcdcdc",
    Outcome.NONE: "#ffffff",
}
_BY_STATUS = {
    Status.PASS: Outcome.PASS, Status.SKIP: Outcome.SKIP_ONLY, Status.XFAIL: Outcome.XFAIL,
    Status.XPASS: Outcome.XPASS, Status.FLAKY: Outcome.FLAKY,
}  # fmt: skip
EXCERPT_LINES = 60  # console lines kept per failure: the last ones, which end at its result line
_RESULT = re.compile(r"^    (?:not )?ok \d+(?: -)? (.*)$")  # a suite's test result: one level in
_PLAN = re.compile(r"^    1\.\.\d+\s*$")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def verdict_class(cell: CellResult) -> str:
    """The colour of a cell's verdict: its outcome's, a cell that tested nothing shaded as skipped."""
    verdict = cell.verdict()
    return Outcome.SKIP_ONLY.value if verdict is CellVerdict.SKIPPED else verdict.value


def test_outcome(cell: CellResult, test: TestResult) -> Outcome:
    if failing(cell, test):
        return Outcome.FAIL
    return Outcome.LAB_ERROR if test.status is Status.MISS else _BY_STATUS[test.status]


def outcome(cell: CellResult, suite: str) -> Outcome:
    """The grid square: the worst outcome among the suite's tests, all-skipped apart from passed."""
    found = {test_outcome(cell, t) for t in cell.tests if t.suite == suite}
    if not found:
        return Outcome.LAB_ERROR if cell.error else Outcome.NONE
    if found == {Outcome.SKIP_ONLY}:
        return Outcome.SKIP_ONLY
    return min(found - {Outcome.SKIP_ONLY}, key=list(Outcome).index)


def needs_attention(cell: CellResult, test: TestResult) -> bool:
    """Shown unfolded: failures, and the statuses that ask for an edit (XPASS) or a second look (FLAKY, XFAIL)."""
    return failing(cell, test) or test.status in (Status.FLAKY, Status.XPASS, Status.XFAIL)


# --- console excerpts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleIndex:
    """A cell's console cut per test: each test's lines since the previous result, each suite's tail."""

    tests: Mapping[tuple[str, str], tuple[str, ...]]
    tails: Mapping[str, tuple[str, ...]]  # after a suite's last result line: where a dying kernel stopped


def index_console(text: str) -> ConsoleIndex:
    """One pass over the console (ktap.suite_spans finds the suites): cheap enough for 400 tests a cell."""
    tests: dict[tuple[str, str], tuple[str, ...]] = {}
    tails: dict[str, tuple[str, ...]] = {}
    for span in ktap.suite_spans(text):
        lines = text[span.start : span.end].splitlines()
        start = 0
        for i, raw in enumerate(lines):
            bare = consolelog.strip_prefix(raw).rstrip()
            result = _RESULT.match(bare)
            if result:
                name = result.group(1).split(" # ")[0].strip()
                tests.setdefault((span.name, name), tuple(lines[start : i + 1]))
            if result or _PLAN.match(bare):
                start = i + 1
        tails.setdefault(span.name, tuple(lines[start:]))
    return ConsoleIndex(tests, tails)


def excerpt(index: ConsoleIndex, test: TestResult, limit: int = EXCERPT_LINES) -> str:
    """The test's console lines; for a test that never reported, what the console showed after the last one."""
    lines = index.tests.get((test.suite, test.name))
    if lines is None and test.status is Status.MISS:
        lines = index.tails.get(test.suite)
    if not lines:
        return ""
    cut = len(lines) - limit
    return "\n".join(([f"[... {cut} earlier lines ...]"] if cut > 0 else []) + list(lines[-limit:]))


# --- rerun commands -------------------------------------------------------------------------------


def rerun_commands(cell: CellResult, test: TestResult, results_dir: str) -> list[str]:
    """`klab test` on the cell's kernel for this one test, and `klab reproduce` (which also finds the kernel by hash).

    kernel_splats and an unnamed MISS ("#3") are no test -k can select: their rerun is the whole suite.
    """
    out = []
    if cell.kernel:
        argv = ["klab", "test", "--arch", cell.arch, "--kernel", cell.kernel]
        argv += ["--rootfs", cell.rootfs] if cell.rootfs else []
        argv += ["--append", cell.append] if cell.append else []
        argv += ["--suite", test.suite]
        argv += ["-k", test.full_name] if test.name != SPLATS and not test.name.startswith("#") else []
        argv += ["--repeat", str(cell.repeat)] if cell.repeat > 1 else []
        out.append(shlex.join(argv))
    out.append(shlex.join(["klab", "reproduce", results_dir, test.full_name, "--cell", cell.id]))
    return out


# --- the page -------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:2em}h3{font-size:1.05em}
table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 7px;text-align:left;vertical-align:top}
table.grid td{text-align:center;min-width:7em}table.grid a{color:inherit;text-decoration:none}
table.meta th{background:#f3f3f3;font-weight:normal;white-space:nowrap}
pre{background:#f6f6f6;border:1px solid #ddd;padding:6px;overflow-x:auto;white-space:pre-wrap;margin:4px 0}
pre.rerun{background:#eef4ff}.failure{border-left:6px solid FAIL;padding:2px 10px;margin:1em 0}
.failure p,.failure h3{margin:4px 0}details{margin:4px 0}summary{cursor:pointer;color:#555}
.totals{font-weight:bold;font-size:1.1em}.legend span{display:inline-block;padding:1px 8px;margin-right:4px}
code{background:#f3f3f3}
"""


def _style() -> str:
    rules = "".join(f".o-{o.value}{{background:{c}}}" for o, c in COLOURS.items())
    return _CSS.replace("FAIL", COLOURS[Outcome.FAIL]) + rules


def _meta_table(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows if v)
    return f'<table class="meta">{body}</table>'


def run_rows(meta: RunMeta) -> list[tuple[str, str]]:
    started = datetime.datetime.fromtimestamp(meta.started, datetime.UTC) if meta.started else None
    return [
        ("command", shlex.join(meta.argv)),
        ("started", started.strftime("%Y-%m-%d %H:%M:%S UTC") if started else ""),
        ("wall", f"{meta.wall_seconds:.1f} s" if meta.wall_seconds else ""),
        ("guests at once", str(meta.jobs) if meta.jobs > 1 else ""),
        ("known failures", meta.known_failures),
        ("merged from", " ".join(meta.merged_from)),
        ("LAVA results", meta.lava_results),
        ("commit", meta.commit),
        ("tests", " ".join(meta.tests)),
    ]


def cell_rows(cell: CellResult) -> list[tuple[str, str]]:
    """What ran, on what: everything a person needs to tell two cells (or two runs of one) apart."""
    accel = f"{cell.accel} ({cell.accel_reason})" if cell.accel_reason else cell.accel
    durations = ", ".join(f"{k} {v:.1f} s" for k, v in cell.durations.items())
    return [
        ("arch", cell.arch), ("kernel release", cell.kernel_release), ("describe", cell.describe),
        ("kernel", cell.kernel), ("kernel sha256", cell.kernel_sha256), ("config sha256", cell.config_sha256),
        ("image", cell.image), ("rootfs", cell.rootfs), ("QEMU", cell.qemu_version), ("accelerator", accel),
        ("boot", cell.boot), ("append", cell.append), ("command line", cell.cmdline),
        ("selection", " ".join(f"-k {p}" for p in cell.patterns)),
        ("repeat", str(cell.repeat) if cell.repeat > 1 else ""), ("durations", durations),
        ("console log", cell.console_log), ("memory dump", cell.memory_dump), ("lab error", cell.error),
    ]  # fmt: skip


def _grid(cells: list[CellResult], suites: list[str]) -> str:
    head = "".join(f'<th class="suite">{_e(s)}</th>' for s in suites)
    rows = []
    for i, cell in enumerate(cells):
        squares = []
        for j, suite in enumerate(suites):
            found = outcome(cell, suite)
            counts = cell.counts(suite)
            text = " · ".join(f"{n} {s.value.lower()}" for s, n in counts.items() if n) or "-"
            squares.append(
                f'<td class="o-{found.value}" data-suite="{_e(suite)}" title="{found.value}">'
                f'<a href="#c{i}-s{j}">{_e(text)}</a></td>'
            )
        events = ", ".join(dict.fromkeys(e.kind + ("!" if e.fatal else "") for e in cell.kernel_events)) or "-"
        verdict = cell.verdict().value
        shade = verdict_class(cell)
        rows.append(
            f'<tr data-cell="{_e(cell.id)}"><th scope="row"><a href="#c{i}">{_e(cell.id)}</a></th>'
            f'{"".join(squares)}<td class="events">{_e(events)}</td>'
            f'<td class="verdict o-{shade}">{_e(verdict)}</td></tr>'
        )
    return (
        f'<table class="grid" id="grid"><thead><tr><th>cell</th>{head}<th>kernel events</th><th>verdict</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _legend() -> str:
    swatches = "".join(f'<span class="o-{o.value}">{o.value}</span>' for o in Outcome if o is not Outcome.NONE)
    return f'<p class="legend">{swatches}</p>'


def _failure(cell: CellResult, i: int, k: int, index: ConsoleIndex, results_dir: str) -> str:
    test = cell.tests[k]
    shown = excerpt(index, test)
    facts = [f'signature: <code class="signature">{_e(test.signature)}</code>'] if test.signature else []
    facts += [f"duration: {test.duration:.2f} s"] if test.duration else []
    parts = [
        f'<div class="failure" id="c{i}-t{k}">',
        f'<h3><span class="o-{test_outcome(cell, test).value}">{_e(test.status.value)}</span> '
        f'<a href="#c{i}">{_e(cell.id)}</a> <code>{_e(test.full_name)}</code></h3>',
        f'<p class="reason">{_e(test.reason)}</p>' if test.reason else "",
        f"<p>{' · '.join(facts)}</p>" if facts else "",
        "<p>rerun it:</p>",
        *(f'<pre class="rerun">{_e(c)}</pre>' for c in rerun_commands(cell, test, results_dir)),
        f'<p>console:</p><pre class="console">{_e(shown)}</pre>' if shown else "",
    ]
    if test.log:
        log = f'<pre class="log">{_e(test.log)}</pre>'
        parts.append(f"<details><summary>recorded log</summary>{log}</details>" if shown else f"<p>log:</p>{log}")
    if cell.kernel_events:
        links = ", ".join(
            f'<a href="#c{i}-e{n}">{_e(e.kind)}: {_e(e.title)}</a>' for n, e in enumerate(cell.kernel_events)
        )
        parts.append(f'<p class="events">kernel events in this cell: {links}</p>')
    return "".join(parts) + "</div>"


def _unfolded(cell: CellResult, test: TestResult) -> bool:
    """A failure block of its own: what needs acting on (XFAIL is expected: its row is enough)."""
    return needs_attention(cell, test) and test.status is not Status.XFAIL


def _failures(cell: CellResult, i: int, console_text: str, results_dir: str) -> list[str]:
    """The cell's failure blocks; only the first MISS of a suite carries the console tail (all died there)."""
    index, blank = index_console(console_text), ConsoleIndex({}, {})
    out, missed = [], set()
    for k, test in enumerate(cell.tests):
        if not _unfolded(cell, test):
            continue
        repeat = test.status is Status.MISS and test.suite in missed
        if test.status is Status.MISS:
            missed.add(test.suite)
        out.append(_failure(cell, i, k, blank if repeat else index, results_dir))
    return out


def _test_rows(cell: CellResult, i: int, rows: list[int]) -> str:
    out = ["<tr><th>test</th><th>status</th><th>duration</th><th>reason</th><th>signature</th></tr>"]
    for k in rows:
        t = cell.tests[k]
        name = f'<a href="#c{i}-t{k}">{_e(t.name)}</a>' if _unfolded(cell, t) else _e(t.name)
        out.append(
            f'<tr><td>{name}</td><td class="o-{test_outcome(cell, t).value}">{_e(t.status.value)}</td>'
            f"<td>{t.duration:.2f} s</td><td>{_e(t.reason)}</td><td><code>{_e(t.signature)}</code></td></tr>"
        )
    return f'<table class="tests">{"".join(out)}</table>'


def _folded_counts(cell: CellResult, rows: list[int]) -> str:
    counts: dict[str, int] = {}
    for k in rows:
        word = "not run (lab error)" if cell.tests[k].status is Status.MISS else cell.tests[k].status.value.lower()
        counts[word] = counts.get(word, 0) + 1
    return ", ".join(f"{n} {word}" for word, n in counts.items())


def _cell_section(cell: CellResult, i: int, suites: list[str]) -> str:
    verdict = cell.verdict().value
    parts = [f'<section id="c{i}"><h2>{_e(cell.id)} <span class="o-{verdict_class(cell)}">{_e(verdict)}</span></h2>']
    parts.append(_meta_table(cell_rows(cell)))
    for n, event in enumerate(cell.kernel_events):
        fatal = " (fatal)" if event.fatal else ""
        parts.append(
            f'<div id="c{i}-e{n}"><h3>kernel {_e(event.kind)}{fatal}: {_e(event.title)}</h3>'
            f"<p>signature: <code>{_e(signature.of_event(event))}</code></p><pre>{_e(event.excerpt)}</pre></div>"
        )
    for j, suite in enumerate(suites):
        mine = [k for k, t in enumerate(cell.tests) if t.suite == suite]
        if not mine:
            continue
        parts.append(f'<h3 id="c{i}-s{j}" class="o-{outcome(cell, suite).value}">{_e(suite)}</h3>')
        shown = [k for k in mine if needs_attention(cell, cell.tests[k])]
        folded = [k for k in mine if not needs_attention(cell, cell.tests[k])]
        if shown:
            parts.append(_test_rows(cell, i, shown))
        if folded:
            summary_text = _e(_folded_counts(cell, folded))
            parts.append(f"<details><summary>{summary_text}</summary>{_test_rows(cell, i, folded)}</details>")
    return "".join(parts) + "</section>"


def render(cells: list[CellResult], meta: RunMeta, consoles: Mapping[str, str], results_dir: str) -> str:
    """The page. `consoles` maps a cell id to its console text (absent: no excerpts); `results_dir` is written
    into the `klab reproduce` lines as given."""
    suites = list(dict.fromkeys(s for cell in cells for s in cell.suites()))
    failures = [f for i, c in enumerate(cells) for f in _failures(c, i, consoles.get(c.id, ""), results_dir)]
    totals = _e(summary.totals_line(cells, meta))
    verdict = _e(summary.verdict_line(cells, meta))
    problems = "".join(f"<li>{_e(p)}</li>" for p in summary.run_lines(meta))
    lab_errors = "".join(
        f'<li><a href="#c{i}">{_e(c.id)}</a>: {_e(c.error)}</li>' for i, c in enumerate(cells) if c.error
    )
    body = [
        f'<h1>kernel-lab run</h1><p class="totals">{totals}</p><p class="run-verdict">{verdict}</p>',
        _meta_table(run_rows(meta)),
        f'<h2>The run itself</h2><ul class="run-problems">{problems}</ul>' if problems else "",
        "<h2>Cells × suites</h2>",
        _grid(cells, suites),
        _legend(),
        f'<h2>Lab errors</h2><ul class="lab-errors">{lab_errors}</ul>' if lab_errors else "",
        f"<h2>Failures ({len(failures)})</h2>",
        "".join(failures) or "<p>none</p>",
        *(_cell_section(cell, i, suites) for i, cell in enumerate(cells)),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>kernel-lab: {totals}</title><style>{_style()}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def console_text(cell: CellResult, results_dir: Path) -> str:
    """The cell's console log: the copy beside results.json first (a run moved or downloaded keeps it)."""
    recorded = Path(cell.console_log) if cell.console_log else None
    candidates = [results_dir / f"console-{cell.id}.log"]
    candidates += [results_dir / recorded.name, recorded] if recorded else []
    return next((consolelog.read(p) for p in candidates if p.is_file()), "")


def write(path: Path, cells: list[CellResult], meta: RunMeta, results_dir: Path) -> None:
    """report.html for a results dir, written atomically."""
    consoles = {cell.id: console_text(cell, results_dir) for cell in cells}
    atomic.write_text(path, render(cells, meta, consoles, str(results_dir)))
