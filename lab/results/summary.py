"""What a person reads at the end of a run: a totals line, the cell x suite table with its legend, the problems.

The same text goes to the terminal, summary.txt and (as Markdown) summary.md
and CI job summaries. Problems carry each failure's signature, so the same
failure reads the same on every run.
"""

from __future__ import annotations

from lab.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_LAB, EXIT_OK, EXIT_UNTESTABLE
from lab.results.model import BAD, CellResult, Status
from lab.results.store import RunMeta, run_exit_status

NO_META = RunMeta()

LEGEND = (
    "legend: per suite passed/failed/skipped/missing (failed counts errors); then xf: known failures (XFAIL), "
    "xp: passed although known to fail (XPASS), fl: flaky (--repeat); kernel events: kind, ! when fatal"
)
_EXTRA = ((Status.XFAIL, "xf"), (Status.XPASS, "xp"), (Status.FLAKY, "fl"))


def totals(cells: list[CellResult]) -> dict[Status, int]:
    out = {s: 0 for s in Status}
    for cell in cells:
        for status, n in cell.counts().items():
            out[status] += n
    return out


def totals_line(cells: list[CellResult], meta: RunMeta = NO_META) -> str:
    """`N passed, N failed, N skipped`, then whatever else is not zero: the one line a CI log ends with."""
    run_problems = meta.problems
    t = totals(cells)
    parts = [f"{t[Status.PASS]} passed", f"{t[Status.FAIL]} failed", f"{t[Status.SKIP]} skipped"]
    named = (
        (Status.ERROR, "errors"), (Status.MISS, "missing"), (Status.XFAIL, "known failures (xfail)"),
        (Status.XPASS, "unexpected passes (xpass)"), (Status.FLAKY, "flaky"),
    )  # fmt: skip
    parts += [f"{t[status]} {name}" for status, name in named if t[status]]
    events = sum(len(c.kernel_events) for c in cells)
    lab_errors = sum(1 for c in cells if c.error)
    parts += [f"{events} kernel events"] if events else []
    parts += [f"{lab_errors} lab errors"] if lab_errors else []
    parts += [f"{len(run_problems)} expired known failures"] if run_problems else []
    return ", ".join(parts) + f" in {len(cells)} cell{'s' if len(cells) != 1 else ''}"


_RUN_VERDICTS = {
    EXIT_OK: "pass",
    EXIT_FAILED: "fail",
    EXIT_UNTESTABLE: "nothing tested (every selected test skipped)",
    EXIT_LAB: "lab error (no verdict on the kernel)",
    EXIT_INTERRUPTED: "interrupted (only what finished is here)",
}


def verdict_line(cells: list[CellResult], meta: RunMeta = NO_META) -> str:
    """The run's verdict and exit status, said once: a table of passing cells never hides an exit 1."""
    code = run_exit_status(cells, meta)
    return f"run verdict: {_RUN_VERDICTS.get(code, 'unknown')} (exit {code})"


def _suite_cell(cell: CellResult, suite: str) -> str:
    c = cell.counts(suite)
    if not sum(c.values()):
        return "-"
    text = f"{c[Status.PASS]}/{c[Status.FAIL] + c[Status.ERROR]}/{c[Status.SKIP]}/{c[Status.MISS]}"
    return text + "".join(f" {c[status]}{mark}" for status, mark in _EXTRA if c[status])


def rows(cells: list[CellResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the cell x suite table, shared by the text and Markdown forms."""
    suites = list(dict.fromkeys(s for cell in cells for s in cell.suites()))
    header = ["cell", "kernel", "accel", "wall", *suites, "kernel events", "verdict"]
    out = []
    for cell in cells:
        wall = cell.durations.get("total")
        out.append(
            [
                cell.id,
                cell.kernel_release or "?",
                cell.accel or "?",
                f"{wall:.1f}s" if wall else "-",
                *(_suite_cell(cell, suite) for suite in suites),
                ",".join(dict.fromkeys(e.kind + ("!" if e.fatal else "") for e in cell.kernel_events)) or "-",
                cell.verdict().value,
            ]
        )
    return header, out


def problems(cells: list[CellResult], per_cell: int = 20) -> list[str]:
    """What a reader must look at: bad tests (with signatures), XPASS and FLAKY ones, kernel events, lab errors.

    Capped per cell; results.json has all.
    """
    out = []
    for cell in cells:
        # A lab error explains its cell's MISS tests: one line says it.
        bad = [t for t in cell.tests if t.status in BAD and not (cell.error and t.status is Status.MISS)]
        lines = [f"{t.status.value} {cell.id} {t.full_name}: {t.reason} [{t.signature}]" for t in bad]
        lines += [
            f"{t.status.value} {cell.id} {t.full_name}: {t.reason}"
            for t in cell.tests
            if t.status in (Status.XPASS, Status.FLAKY)
        ]
        lines += [f"KERNEL {cell.id} {e.kind}{' (fatal)' if e.fatal else ''}: {e.title}" for e in cell.kernel_events]
        lines += [f"LAB {cell.id}: {cell.error}"] if cell.error else []
        if cell.memory_dump:
            lines.append(f"DUMP {cell.id}: {cell.memory_dump} (open it with: crash VMLINUX {cell.memory_dump})")
        if len(lines) > per_cell:
            lines[per_cell - 1 :] = [f"... {cell.id}: {len(lines) - per_cell + 1} more in results.json"]
        out += lines
    return out


def table(cells: list[CellResult], meta: RunMeta = NO_META) -> str:
    """Totals and the run's verdict, the plain-text table and its legend, then the problems."""
    header, body = rows(cells)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [totals_line(cells, meta), verdict_line(cells, meta), ""]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in [header, *body]]
    lines.insert(4, "  ".join("-" * w for w in widths))
    lines += [LEGEND, "", *run_lines(meta), *problems(cells)]
    return "\n".join(lines).rstrip() + "\n"


def run_lines(meta: RunMeta) -> list[str]:
    """What went wrong with the run itself, no cell's: an interruption, expired known failures."""
    stopped = ["INTERRUPTED: Ctrl-C or SIGTERM stopped the run; the cells below are those that finished"]
    return (stopped if meta.interrupted else []) + list(meta.problems)


def markdown(cells: list[CellResult], meta: RunMeta = NO_META) -> str:
    """The same in Markdown, for a CI job summary."""
    header, body = rows(cells)

    def row(values: list[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    lines = [f"**{totals_line(cells, meta)}**", "", verdict_line(cells, meta), "", row(header)]
    lines += [row(["---"] * len(header)), *(row(r) for r in body), "", f"_{LEGEND}_"]
    found = [*run_lines(meta), *problems(cells)]
    if found:
        lines += ["", "**Problems**", ""] + [f"- {_md_code(p)}" for p in found]
    return "\n".join(lines) + "\n"


def _md_code(text: str) -> str:
    """Inline code that survives backticks in kernel messages."""
    return "`` " + text + " ``" if "`" in text else f"`{text}`"
