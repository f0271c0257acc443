"""`klab try SERIES --src TREE`: build and test a patch series against its base, and say what it changes.

The flow (the lab's checkout of the tree, git am, steps, comparison) is
lab.series'; here are the checks made before anything is checked out or
built, the real judge (one incremental build in the run's build dir, one boot
of the selected suites) and the report. Exit 1 when the series (or, with
--each, any patch on the way) breaks a test or the build, 0 otherwise, 2 on
bad input (a series that does not apply included).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import arches, atomic, manifest
from lab.cli import args as common
from lab.errors import UserError
from lab.git import top_level
from lab.kernel import build, kconfig
from lab.kernel.source import Source, SourceKind, digest
from lab.paths import cache_dir, exclusive
from lab.results import compare, model, store, write
from lab.results.store import RunMeta
from lab.run import catalog, checkout
from lab.series import FAILING, BuildKind, Change, Judge, Outcome, Series, Step, Tested, parse_series, run_series


@dataclass(frozen=True)
class Settings:
    """Everything `klab try` checked before starting."""

    repo: Path
    series: Series
    arch: arches.Arch
    fragments: tuple[str, ...]
    suites: tuple[str, ...]
    patterns: tuple[str, ...]
    rootfs: str
    append: str
    accel: str
    area: Path  # the cache dir of this tree's try runs: the checkout and (by default) the build dir
    build_dir: Path

    @property
    def worktree(self) -> Path:
        """Under the cache at the depth of Debian's trees (cache/src/NAME), so ccache serves the lab's objects."""
        return self.area / "src" / self.repo.name


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Check every input before anything is checked out or built: a typo must not cost a build."""
    repo = Path(args.src).expanduser().resolve()
    if not repo.is_dir():
        raise UserError(f"--src {args.src}: no such directory")
    top = top_level(repo)
    if top is None:
        raise UserError(f"--src {repo} is not a git tree: klab try applies the series on a clone of it")
    if top != repo:
        raise UserError(f"--src {repo} is inside a git tree but not its top: pass the top of the kernel tree")
    if not (repo / "Kconfig").is_file() or not (repo / "scripts/kconfig/merge_config.sh").is_file():
        raise UserError(f"--src {repo} is not a kernel tree (no Kconfig or scripts/kconfig/merge_config.sh)")
    arch = arches.get(args.arch)
    names = tuple(common.fragment_names(args))
    fragments = kconfig.load_fragments(list(names), f"arch/{arch.name}")
    build.preflight(build.BuildRequest(Source(repo, SourceKind.GIT, str(repo), ""), arch, tuple(fragments)))
    for name in args.suite:
        catalog.check(name)
    chosen = tuple(args.suite) or catalog.all_suites()
    if not catalog.planned_tests(chosen, tuple(args.patterns)):
        raise UserError(f"no test of {', '.join(chosen)} matches -k {' -k '.join(args.patterns)}")
    series = parse_series(args.series, repo, args.base)
    area = cache_dir("try", digest(str(repo)))
    bdir = args.build_dir.resolve() if args.build_dir else area / "build" / f"{arch.name}-{_fragments_key(fragments)}"
    return Settings(
        repo, series, arch, names, chosen, tuple(args.patterns), args.rootfs, args.append, args.accel, area, bdir
    )


def _fragments_key(fragments: list[kconfig.Fragment]) -> str:
    return kconfig.fragments_digest(fragments)[:12]


def make_judge(s: Settings, out: Path) -> Judge:
    """Build the checkout as it stands (incremental: one build dir for every step), boot once, run the suites."""
    step_checkout = checkout.Checkout(
        tree=s.worktree, arch=s.arch, fragments=s.fragments, suites=s.suites, patterns=s.patterns,
        build_dir=s.build_dir, rootfs=s.rootfs, append=s.append, accel=s.accel,
    )  # fmt: skip

    def judge(wt: Path, step: Step) -> Tested:
        step_dir = out / f"{step.index:02d}-{step.slug}-{step.commit[:12]}"
        what = f" {step.subject[:60]!r}" if step.subject else ""
        print(f"klab try: {step.label} {step.commit[:12]}{what}: building in {s.build_dir}", file=sys.stderr)
        built = checkout.build(dataclasses.replace(step_checkout, tree=wt), step_dir)
        if built.build is None:
            return Tested(step, None, built.error, {"build": built.seconds}, str(step_dir))
        started, t1 = time.time(), time.monotonic()
        cell = checkout.test(step_checkout, built.build, f"{s.arch.name}.try.{step.slug}", step_dir)
        meta = RunMeta(argv=tuple(sys.argv), started=started, wall_seconds=_since(t1), commit=step.commit)
        write.reports(step_dir, [cell], meta)
        return Tested(step, cell, "", {"build": built.seconds, "test": _since(t1)}, str(step_dir))

    return judge


def _since(t: float) -> float:
    return round(time.monotonic() - t, 1)


# --- the report ---------------------------------------------------------------------------------------


def _tally(done: Tested) -> str:
    if done.cell is None:
        return f"does not build: {done.build_error}"
    counts = done.cell.counts()
    parts = [
        f"{counts[model.Status.PASS]} passed",
        f"{sum(counts[st] for st in model.BAD)} failed",
        f"{counts[model.Status.SKIP]} skipped",
        f"{len(done.cell.kernel_events)} kernel report(s)",
    ]
    return ", ".join(p for i, p in enumerate(parts) if i == 0 or not p.startswith("0 "))


_ORDER = {kind: i for i, kind in enumerate([*BuildKind, *compare.Kind])}


def _change_lines(changes: tuple[Change, ...], indent: str = "  ") -> list[str]:
    """One line per change, grouped as `klab compare` groups them (new failures first), the build before them."""
    return [f"{indent}{c.kind.value}: {c.what}: {c.detail}" for c in sorted(changes, key=lambda c: _ORDER[c.kind])]


def render(outcome: Outcome, s: Settings) -> str:
    """What the series changed, step by step when --each, and the verdict."""
    steps = [t.step for t in outcome.tested]
    total = steps[-1].total
    lines = [
        f"klab try: {total} patch(es) of {outcome.series.spec} on {outcome.series.base[:12]} in {s.repo} "
        f"({s.arch.name}; {' '.join(s.suites)}{' -k ' + ' -k '.join(s.patterns) if s.patterns else ''})",
        f"{'step':<7} {'commit':<12} {'build':>6} {'test':>6}  result",
    ]
    one_by_one = len(steps) - 1 == total  # --each, or a single patch: each row is one more patch
    for done in outcome.tested:
        d = done.durations
        subject = f"  {done.step.subject[:50]!r}" if done.step.subject else ""
        if done.step.index and not one_by_one:
            subject = f"  (the whole series: {total} patches)"
        lines.append(
            f"{done.step.label:<7} {done.step.commit[:12]:<12} {d.get('build', 0):>5.0f}s {d.get('test', 0):>5.0f}s  "
            f"{_tally(done)}{subject}"
        )
    lines.append(f"what the series changes ({steps[0].label} -> {steps[-1].label}):")
    lines += _change_lines(outcome.net) or ["  nothing: every selected test ends as it began"]
    if len(outcome.per_step) > 1:
        lines.append("patch by patch:")
        for step, changes in outcome.per_step:
            lines.append(f"  {step.label} {step.commit[:12]} {step.subject!r}{':' if changes else ': no change'}")
            lines += _change_lines(changes, "      ")
    broke = outcome.breaking
    if broke and len(outcome.per_step) > 1:
        first = broke[0]
        lines.append(f"first breaking patch: {first.label} {first.commit[:12]} {first.subject!r}")
    failing = sum(c.kind in FAILING for c in outcome.net)
    if outcome.exit_status:
        what = f"breaks {failing} test(s)" if failing else "breaks a test on the way and fixes it later"
        lines.append(f"klab try: the series {what}: exit 1")
    else:
        lines.append("klab try: no new failure: exit 0")
    return "\n".join(lines) + "\n"


def to_json(outcome: Outcome) -> dict[str, Any]:
    def changes(items: tuple[Change, ...]) -> list[dict[str, str]]:
        return [{"kind": c.kind.value, "what": c.what, "detail": c.detail} for c in items]

    return {
        "series": outcome.series.spec,
        "kind": outcome.series.kind.value,
        "base": outcome.series.base,
        "steps": [
            {
                "label": t.step.label,
                "commit": t.step.commit,
                "subject": t.step.subject,
                "durations": t.durations,
                "build_error": t.build_error,
                "results": t.results_dir,
                "verdict": t.cell.verdict().value if t.cell else "build-failed",
            }
            for t in outcome.tested
        ],  # fmt: skip
        "changes": changes(outcome.net),
        "per_step": [{"step": st.label, "commit": st.commit, "changes": changes(ch)} for st, ch in outcome.per_step],
        "breaking": [st.commit for st in outcome.breaking],
        "exit_status": outcome.exit_status,
    }


def _drop_unused(area: Path) -> None:
    """A series refused before anything was built leaves nothing in the cache (a built area is kept: ccache)."""
    if not (area / "build").exists():
        shutil.rmtree(area, ignore_errors=True)
        area.with_name(area.name + ".lock").unlink(missing_ok=True)


def cmd_try(args: argparse.Namespace, judge_for: Callable[[Settings, Path], Judge] | None = None) -> int:
    """`judge_for` makes the judge of each step (tests give a fake one; default: build and boot)."""
    s = settings_from_args(args)
    out = (Path(args.results) if args.results else Path("results") / time.strftime("try-%Y%m%d-%H%M%S")).resolve()
    store.claim(out, overwrite=args.overwrite, marker="try.json")
    start = time.monotonic()

    def applied(plan: list[Step]) -> None:
        labels = ", ".join(p.label for p in plan)
        print(f"klab try: {plan[-1].total} patch(es) applied; testing {labels}", file=sys.stderr)

    print(f"klab try: checkout {s.worktree} at {s.series.base[:12]}; results in {out}", file=sys.stderr)
    try:
        with exclusive(s.area):  # one try per tree at a time: they would share the checkout
            outcome = run_series(s.repo, s.series, s.worktree, (judge_for or make_judge)(s, out), args.each, applied)
    except UserError:
        _drop_unused(s.area)
        raise
    report = render(outcome, s)
    doc = to_json(outcome) | {"wall_seconds": round(time.monotonic() - start, 1), "src": str(s.repo)}
    out.mkdir(parents=True, exist_ok=True)
    manifest.write_json(out / "try.json", doc)
    atomic.write_text(out / "try.txt", report)
    print(report, end="")
    return outcome.exit_status


def register(sub: Any) -> None:
    p = sub.add_parser(
        "try",
        help="test a patch series (mbox, format-patch dir or A..B) against its base: what it breaks, fixes, adds",
        epilog="examples: klab try series.mbox --src ~/linux --arch x86_64 --suite landlock\n"
        "          klab try v6.12..my-branch --src ~/linux --arch x86_64 --each",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("series", metavar="SERIES", help="an mbox, a directory of git format-patch files, or A..B")
    p.add_argument("--src", required=True, help="the kernel git tree (never modified: klab works in a clone of it)")
    p.add_argument("--base", help="the commit the patches apply on (default: the tree's HEAD; a range has its own)")
    common.add_arch(p)
    common.add_selection(p)
    common.add_fragments(p)
    p.add_argument(
        "--each", action="store_true", help="test every patch in turn (base, p1, p1+p2, ...): name the one that breaks"
    )
    p.add_argument("--rootfs", default="auto", help="host, image, or an ext4 image path (default: auto)")
    p.add_argument("--append", default="", help="extra kernel command line")
    p.add_argument("--accel", default="auto", choices=common.ACCELS)
    p.add_argument("--build-dir", type=Path, help="build every step here (default: beside the checkout, in the cache)")
    p.add_argument("--results", help="results directory (default: results/try-DATE)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier try in --results (else refused)")
    p.set_defaults(func=cmd_try)
