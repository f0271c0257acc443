"""What a bisect keeps in its work dir: its settings (state.json) and one record per judged commit (steps.jsonl)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from lab.bisect.verdict import Target
from lab.errors import LabError
from lab.manifest import ManifestError, Record

STATE = "state.json"
STEPS = "steps.jsonl"


@dataclass(frozen=True)
class Settings(Record):
    """What the driver decided and every step reads."""

    SCHEMA = 2

    src: str
    good: str  # full hashes
    bad: str
    arch: str
    tests: tuple[str, ...]  # the user's --test names (substrings of SUITE.TEST, like -k)
    suites: tuple[str, ...]
    fragments: tuple[str, ...]
    retries: int = 0
    boot_failure: str = "skip"
    rootfs: str = "auto"
    accel: str = "auto"
    endpoints: dict[str, str] = field(default_factory=dict)  # hash -> verdict, proven before the bisect
    build_dir: str = ""  # default: the lab's cache, keyed by tree and fragments
    any_failure: bool = False  # every failure of the tests is bad (signature-blind, --any-failure)
    splat: str = ""  # bisect a kernel report matching this regex (--splat) instead of a test failure
    signature: str = ""  # the failure at the bad commit: only it is bad (recorded when --bad is proven)

    def target(self) -> Target:
        return Target(self.tests, self.boot_failure, "" if self.any_failure else self.signature, self.splat)

    def same_bisect(self, other: Settings) -> bool:
        keys = (
            "src", "good", "bad", "arch", "tests", "fragments", "retries", "boot_failure", "rootfs", "build_dir",
            "any_failure", "splat",
        )  # fmt: skip
        return all(getattr(self, k) == getattr(other, k) for k in keys)


@dataclass(frozen=True)
class AttemptRecord(Record):
    verdict: str
    reason: str


@dataclass(frozen=True)
class StepRecord(Record):
    """One judged commit: what it is, what was done to it, how long each part took, the verdict and why."""

    SCHEMA = 1

    phase: str  # "good", "bad" (the endpoints, proven first) or "bisect"
    verdict: str  # a StepVerdict value
    exit: int  # what `git bisect run` was answered
    reason: str
    step: int = 0
    commit: str = ""
    subject: str = ""
    author: str = ""
    dir: str = ""  # the step's own dir: build log, console, results
    started: float = 0.0
    durations: dict[str, float] = field(default_factory=dict)  # "build", "test", "total"
    flaky: bool = False
    build_dir: str = ""
    build_log: str = ""
    results: str = ""
    consoles: tuple[str, ...] = ()
    attempts: tuple[AttemptRecord, ...] = ()
    signature: str = ""  # how it failed, when it failed


def load_settings(path: Path) -> Settings:
    try:
        return Settings.read(path)
    except ManifestError as exc:
        raise LabError(f"{exc}: not a usable klab bisect work dir") from exc


def step_records(work: Path) -> list[StepRecord]:
    try:
        lines = (work / STEPS).read_text().splitlines()
    except OSError:
        return []
    where = str(work / STEPS)
    return [StepRecord.from_json(json.loads(line), f"{where}:{i}") for i, line in enumerate(lines, 1) if line.strip()]


def append_record(work: Path, record: StepRecord) -> None:
    """Append one line and sync it: a step killed right after must not lose its verdict."""
    with open(work / STEPS, "a") as f:
        f.write(json.dumps(record.to_json(), sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
