"""What a finished (or stuck) bisect found, and how it got there: bisect.json and the text a user reads."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lab import manifest
from lab.bisect.record import Settings, StepRecord, step_records
from lab.bisect.tree import LOG
from lab.bisect.verdict import StepVerdict
from lab.git import commit_info, git_out


@dataclass(frozen=True)
class Report:
    work: Path
    commits: int  # commits in good..bad
    culprit: dict[str, str] | None
    candidates: list[str]  # when only skipped commits are left
    steps: list[StepRecord]  # one per commit judged, endpoints first
    wall_seconds: float
    hunted: str = ""  # the failure bisected: its signature, the --splat pattern, or "any failure"

    @property
    def max_steps(self) -> int:
        return math.ceil(math.log2(max(self.commits, 1))) + 2

    def bisect_steps(self) -> list[StepRecord]:
        return [s for s in self.steps if s.phase == "bisect"]


def build_report(settings: Settings, work: Path, wall: float) -> Report:
    """Read the bisect log and the step records back into a Report, and write bisect.json."""
    repo = Path(settings.src)
    log = (work / LOG).read_text() if (work / LOG).is_file() else ""
    first = log_hashes(log, "# first bad commit: [")
    records = {(r.commit, r.phase): r for r in step_records(work)}
    steps = [records[(rev, p)] for rev, p in ((settings.good, "good"), (settings.bad, "bad")) if (rev, p) in records]
    for verdict, sha in log_steps(log):
        exit_code = StepVerdict(verdict).exit_code
        fallback = StepRecord(phase="bisect", verdict=verdict, exit=exit_code, reason="", commit=sha)
        steps.append(records.get((sha, "bisect"), fallback))
    culprit = commit_info(repo, first[0]) if first else None
    report = Report(
        work=work,
        commits=int(git_out(repo, "rev-list", "--count", f"{settings.good}..{settings.bad}")),
        culprit=vars(culprit) if culprit else None,
        candidates=log_hashes(log, "# possible first bad commit: ["),
        steps=steps,
        wall_seconds=round(wall, 1),
        hunted=_hunted(settings),
    )
    manifest.write_json(
        work / "bisect.json",
        {
            "commits": report.commits,
            "culprit": report.culprit,
            "candidates": report.candidates,
            "steps": [s.to_json() for s in steps],
            "wall_seconds": report.wall_seconds,
            "hunted": report.hunted,
            "settings": settings.to_json(),
            "max_steps": report.max_steps,
        },
    )
    return report


def _hunted(settings: Settings) -> str:
    if settings.splat:
        return f"kernel report matching {settings.splat!r}"
    if settings.any_failure or not settings.signature:
        return "any failure of " + ", ".join(settings.tests)
    return settings.signature


def log_hashes(log: str, prefix: str) -> list[str]:
    return [line[len(prefix) :].split("]")[0] for line in log.splitlines() if line.startswith(prefix)]


def log_steps(log: str) -> list[tuple[str, str]]:
    """(verdict, hash) for each commit judged after `git bisect start`, in order."""
    out: list[tuple[str, str]] = []
    started = False
    for line in log.splitlines():
        started = started or line.startswith("git bisect start")
        verdict, _, rest = line.partition(": [")
        if started and verdict in ("# good", "# bad", "# skip") and rest:
            out.append((verdict[2:], rest.split("]")[0]))
    return out


def render(report: Report) -> str:
    """The culprit, then every step with its times and where its console and results are."""
    lines = []
    if report.culprit:
        c = report.culprit
        lines += [f"first bad commit: {c['commit']}", f"  subject: {c['subject']}", f"  author:  {c['author']}"]
    else:
        lines.append("no single first bad commit: only skipped commits are left; it is one of:")
        lines += [f"  {sha}" for sha in report.candidates]
    lines.append(f"bisected: {report.hunted}")
    different = [s for s in report.steps if s.reason.startswith("different failure")]
    n = len(report.bisect_steps())
    lines.append(f"steps: {n} bisect step(s) for {report.commits} commits (bound {report.max_steps}), plus endpoints")
    for s in report.steps:
        d = s.durations
        times = f"build {d.get('build', 0):6.1f}s test {d.get('test', 0):5.1f}s total {d.get('total', 0):6.1f}s"
        mark = " FLAKY" if s.flaky else ""
        lines.append(f"  {s.phase:6} {s.commit[:12]} {s.verdict:5}{mark} {times}  {s.reason}")
        lines += [f"      console: {path}" for path in s.consoles]
        if s.results:
            lines.append(f"      results: {s.results}")
        elif s.build_log:
            lines.append(f"      build log: {s.build_log}")
    lines += [f"skipped, {s.reason}" for s in different]
    flaky = [s.commit[:12] for s in report.steps if s.flaky]
    if flaky:
        lines.append(f"flaky commits (failed, then passed on retry): {', '.join(flaky)}")
    lines.append(f"wall time: {report.wall_seconds:.0f}s; bisect log: {report.work / LOG}; work dir: {report.work}")
    return "\n".join(lines)
