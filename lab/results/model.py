"""Test results: the typed model every report reads, how a run's raw outputs become it, and results.json.

Where results come from (`collect`):
- the guest's JSON (suites/run.py --json) when it came back: it has durations and full logs;
- otherwise the guest's KTAP, which may stop mid-suite when the kernel died;
- every planned test that never reported becomes MISS, with the reason
  "never reported" or, when the console shows a fatal event, "never reported:
  kernel panic" (the first fatal event's kind). `planned` names the tests; the
  KTAP plan alone only numbers them, so a suite absent from `planned` keeps
  its unnamed gaps as MISS tests named "#N".

Kernel events (lab.results.consolelog.KernelEvent) all stay on the CellResult and all count
against it: a cell with any event is not a pass (`CellResult.verdict`). A non-fatal
event (WARNING, BUG, KASAN, UBSAN, lockdep, RCU stall, hung task...) seen while
a suite was running also fails that suite, even when each of its tests passed:
it gets one synthetic result, appended after its tests and named
`kernel_splats` (a stable name, so CI history tracks it like any test), FAIL,
reason "<kind>: <first line of the report>" (plus "(+N more)"), log the
excerpts. Which suite was running is read from the guest's KTAP as echoed on
the console ("# Subtest: NAME" up to that suite's result line; see
`ktap.suite_spans`). Events before the first suite (boot) or after the last
(shutdown) only mark the cell. A fatal event gives no kernel_splats result: the
tests it cut short are MISS, and the cell fails.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field, replace
from typing import Any

from lab.errors import EXIT_FAILED, EXIT_LAB, EXIT_OK, EXIT_UNTESTABLE, LabError
from lab.manifest import ManifestError, Record
from lab.results import ktap, signature
from lab.results.consolelog import KernelEvent

SPLATS = "kernel_splats"
_KTAP_VERDICT = re.compile(r"^(FAIL|ERROR|MISS|FLAKY): ?(.*)$")


class Status(enum.Enum):
    """A test's verdict; the values are what the guest JSON and results.json spell."""

    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"
    ERROR = "ERROR"  # the test itself broke (an exception, a dead helper), not the kernel's answer
    MISS = "MISS"  # planned, never reported (crash, hang, lab fault)
    XFAIL = "XFAIL"  # failed as a known-failures entry says it does (lab.results.knownfail)
    XPASS = "XPASS"  # passed although a known-failures entry says it fails: the entry can go
    FLAKY = "FLAKY"  # run several times (--repeat) with mixed outcomes; the reason gives the pass ratio


BAD = (Status.FAIL, Status.ERROR, Status.MISS)


class CellVerdict(enum.Enum):
    """A cell's outcome, as bisect and CI need it: a lab fault is neither a pass nor a fail."""

    PASS = "pass"
    FAIL = "fail"  # a test failed, errored or went missing, or the kernel reported an event
    LAB_ERROR = "lab-error"  # the lab could not run it, and the kernel did nothing wrong meanwhile
    SKIPPED = "skipped"  # no selected test ran (each skipped: the kernel lacks what it tests): a pass of nothing


@dataclass
class TestResult(Record):
    """One test in one cell (a record of results.json's flat test list, and of the guest's JSON)."""

    __test__ = False  # a result, not a pytest test class, despite the name

    suite: str
    name: str
    status: Status
    duration: float = 0.0  # seconds; 0.0 when only KTAP came back
    reason: str = ""
    log: str = ""
    signature: str = ""  # how it failed, stable across runs (lab.results.signature); empty when it did not
    runs: tuple[str, ...] = ()  # each run's status, when the test ran more than once (--repeat)

    @property
    def full_name(self) -> str:
        return f"{self.suite}.{self.name}"


@dataclass
class CellResult(Record):
    """One (arch, kernel, variant) run: what ran, on what, how long, what the kernel said, and the tests."""

    id: str  # e.g. "x86_64.6.12.default": unique within a run, stable across runs
    arch: str
    kernel_release: str = ""  # uname -r in the guest
    describe: str = ""  # git describe of the tree, or the package version
    config_sha256: str = ""
    qemu_version: str = ""
    accel: str = ""  # "kvm" or "tcg"
    accel_reason: str = ""  # why that one (e.g. "KVM probe: guest never reached init")
    image: str = ""  # what booted as the rootfs, for people: "host", or the image path and its hash
    append: str = ""  # extra kernel command line
    durations: dict[str, float] = field(default_factory=dict)  # "boot", "tests", "total" in seconds
    console_log: str = ""  # path of the console log the event offsets point into
    kernel_events: list[KernelEvent] = field(default_factory=list)
    tests: list[TestResult] = field(default_factory=list)
    error: str = ""  # a lab error that stopped this cell, one line
    # What `klab reproduce` needs to boot the same guest again:
    boot: str = ""  # the matrix's boot name ("default", "nobpf")
    kernel: str = ""  # the kernel image booted
    kernel_sha256: str = ""  # its content: reproduce finds the same kernel by it
    rootfs: str = ""  # "host" or the image path
    image_sha256: str = ""  # the lab-built image's content (reproduce finds the image by it); "" for host or a user's
    cmdline: str = ""  # the whole kernel command line
    patterns: tuple[str, ...] = ()  # the -k selection
    repeat: int = 1  # runs of each test (--repeat)
    memory_dump: str = ""  # the guest's memory (ELF) saved when the kernel failed (--dump-on-failure)

    def suites(self) -> list[str]:
        """Suite names in the order they ran."""
        return list(dict.fromkeys(t.suite for t in self.tests))

    def counts(self, suite: str | None = None) -> dict[Status, int]:
        out = {s: 0 for s in Status}
        for test in self.tests:
            if suite is None or test.suite == suite:
                out[test.status] += 1
        return out

    def verdict(self) -> CellVerdict:
        bad_tests = any(t.status in (Status.FAIL, Status.ERROR) for t in self.tests)
        if bad_tests or self.kernel_events:
            return CellVerdict.FAIL
        if self.error:
            return CellVerdict.LAB_ERROR
        if any(t.status is Status.MISS for t in self.tests):
            return CellVerdict.FAIL
        return CellVerdict.PASS if any(t.status is not Status.SKIP for t in self.tests) else CellVerdict.SKIPPED


def exit_status(cells: list[CellResult]) -> int:
    """0 passed; 1 a test failed or a kernel is bad; 128 only the lab failed; 125 nothing was tested.

    Bisect reads 1 as "bad", so a cell the lab could not run must never give 1
    on its own: with no kernel or test failure anywhere, a lab error gives 128.
    A run in which every selected test skipped tested nothing: 125, never 0.
    """
    verdicts = {cell.verdict() for cell in cells}
    if CellVerdict.FAIL in verdicts:
        return EXIT_FAILED
    if CellVerdict.LAB_ERROR in verdicts:
        return EXIT_LAB
    return EXIT_UNTESTABLE if not cells or verdicts == {CellVerdict.SKIPPED} else EXIT_OK


# --- collecting -----------------------------------------------------------------------------------


def collect(
    planned: list[tuple[str, str]],
    guest_json: dict[str, Any] | None,
    ktap_text: str | None,
    console_text: str,
    events: list[KernelEvent],
) -> list[TestResult]:
    """One cell's results: reported tests, then MISS for the planned rest, then kernel_splats per suite."""
    if guest_json is not None:
        reported = from_guest_json(guest_json)
    elif ktap_text:
        reported = from_ktap(ktap.parse(ktap_text))
    else:
        reported = []
    fatal = next((e for e in events if e.fatal), None)
    reason = f"never reported: kernel {fatal.kind.replace('_', ' ')}" if fatal else "never reported"
    results = _with_missing(planned, reported, reason)
    by_suite = events_by_suite(console_text, events)
    for suite, found in by_suite.items():
        if suite and any(not e.fatal for e in found):
            _insert_after_suite(results, _splat_result(suite, [e for e in found if not e.fatal]))
    for test in results:
        if test.status in BAD and not test.signature:
            test.signature = signature.of_test(test.suite, test.name, test.status.value, test.reason)
    return results


def from_guest_json(doc: dict[str, Any]) -> list[TestResult]:
    """Results from the guest's JSON document; a malformed one is a lab fault (our own harness wrote it)."""
    tests = doc.get("tests")
    if not isinstance(tests, list):
        raise LabError("guest results JSON has no 'tests' list")
    try:
        return [TestResult.from_fields(rec, f"guest results JSON, test {i}") for i, rec in enumerate(tests)]
    except ManifestError as exc:
        raise LabError(str(exc)) from exc


def from_ktap(tree: ktap.Test) -> list[TestResult]:
    """Results from a parsed guest KTAP tree (suites, then tests); the reason sits in "# FAIL: ..." lines."""
    out = []
    for suite in tree.subtests:
        for test in suite.subtests:
            if test.status is ktap.Status.MISSING:
                out.append(TestResult(suite.name, f"#{test.number}", Status.MISS, reason="never reported"))
            else:
                out.append(_from_ktap_test(suite.name, test))
    return out


def _from_ktap_test(suite: str, test: ktap.Test) -> TestResult:
    if test.status is ktap.Status.OK:
        return TestResult(suite, test.name, Status.PASS, log="\n".join(test.log))
    if test.status is ktap.Status.SKIP:
        return TestResult(suite, test.name, Status.SKIP, reason=test.reason, log="\n".join(test.log))
    if test.status is ktap.Status.CRASHED:
        return TestResult(suite, test.name, Status.ERROR, reason="its KTAP result line never came")
    log = list(test.log)
    status, reason = Status.FAIL, "not ok"
    for i in range(len(log) - 1, -1, -1):
        match = _KTAP_VERDICT.match(log[i])
        if match:
            status, reason = Status(match.group(1)), match.group(2)
            del log[i]
            break
    return TestResult(suite, test.name, status, reason=reason, log="\n".join(log))


def _with_missing(planned: list[tuple[str, str]], reported: list[TestResult], reason: str) -> list[TestResult]:
    """Planned order first (MISS where nothing came), then anything reported that was not planned."""
    planned_suites = {suite for suite, _ in planned}
    by_key = {(t.suite, t.name): t for t in reported}
    out = [by_key.pop(key) if key in by_key else TestResult(*key, Status.MISS, reason=reason) for key in planned]
    for test in reported:
        if (test.suite, test.name) not in by_key:
            continue  # placed above, in planned order
        del by_key[(test.suite, test.name)]
        gap = test.status is Status.MISS and test.name.startswith("#")
        if gap and test.suite in planned_suites:
            continue  # `planned` names this suite's tests; the unnamed gap is one of its MISS entries
        out.append(replace(test, reason=reason) if gap else test)
    return out


def events_by_suite(console_text: str, events: list[KernelEvent]) -> dict[str, list[KernelEvent]]:
    """Group events by the suite running at their console offset; "" holds boot and shutdown events."""
    spans = ktap.suite_spans(console_text)
    out: dict[str, list[KernelEvent]] = {}
    for event in events:
        span = next((s for s in spans if s.start <= event.offset < s.end), None)
        out.setdefault(span.name if span else "", []).append(event)
    return out


def _splat_result(suite: str, events: list[KernelEvent]) -> TestResult:
    reason = f"{events[0].kind}: {events[0].title}"
    if len(events) > 1:
        reason += f" (+{len(events) - 1} more)"
    log = "\n\n".join(e.excerpt for e in events)
    return TestResult(suite, SPLATS, Status.FAIL, reason=reason, log=log, signature=signature.of_event(events[0]))


def _insert_after_suite(results: list[TestResult], extra: TestResult) -> None:
    last = max((i for i, t in enumerate(results) if t.suite == extra.suite), default=len(results) - 1)
    results.insert(last + 1, extra)
