"""Known failures: which entries apply to which failures, XFAIL/XPASS, strict canaries, expiry, file errors."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from lab.errors import UserError
from lab.paths import REPO_ROOT
from lab.results import knownfail
from lab.results.model import Status, TestResult

TODAY = datetime.date(2026, 11, 30)
WHERE = knownfail.Where(arch="x86_64", boot="default", kernel_release="7.3.4", describe="linux-source-7.3 7.3.4-1")


def _entries(tmp_path: Path, text: str) -> tuple[knownfail.Entry, ...]:
    path = tmp_path / "known.yaml"
    path.write_text(text)
    return knownfail.load(path)


ENTRY = """\
entries:
  - test: landlock.udp_*
    kernels: ">=7.2, <7.4"
    arches: [x86_64]
    reason: connected sockets skip the check
    link: https://bugs.example/1
    expires: 2027-03-31
"""


def _fail(name: str = "udp_sendto", reason: str = "sendto: expected EACCES (13), got success") -> TestResult:
    return TestResult("landlock", name, Status.FAIL, reason=reason, signature=f"landlock.{name}: sendto: x")


def test_a_matching_failure_is_xfail_with_its_reason_and_link(tmp_path: Path) -> None:
    (got,) = knownfail.apply([_fail()], _entries(tmp_path, ENTRY), WHERE, TODAY)
    assert got.status is Status.XFAIL
    assert got.reason.startswith("known failure: connected sockets skip the check (https://bugs.example/1); was:")


@pytest.mark.parametrize(
    ("where", "applies"),
    [
        (WHERE, True),
        (knownfail.Where("arm64", "default", "7.3.4", ""), False),  # another arch
        (knownfail.Where("x86_64", "default", "7.4.1", ""), False),  # past the range
        (knownfail.Where("x86_64", "default", "7.1.9", ""), False),  # before it
        (knownfail.Where("x86_64", "nobpf", "7.2.0", ""), True),  # any boot
    ],
)
def test_entries_select_kernels_and_arches(tmp_path: Path, where: knownfail.Where, applies: bool) -> None:
    (got,) = knownfail.apply([_fail()], _entries(tmp_path, ENTRY), where, TODAY)
    assert (got.status is Status.XFAIL) == applies


def test_a_pass_of_a_known_failure_is_xpass_and_names_the_entry(tmp_path: Path) -> None:
    passed = TestResult("landlock", "udp_sendto", Status.PASS)
    (got,) = knownfail.apply([passed], _entries(tmp_path, ENTRY), WHERE, TODAY)
    assert got.status is Status.XPASS and "remove" in got.reason and "known.yaml:2" in got.reason


def test_a_signature_entry_matches_only_that_failure(tmp_path: Path) -> None:
    entries = _entries(
        tmp_path,
        "entries:\n  - signature: 'sendto: x$'\n    reason: r\n    link: l\n    expires: 2027-01-01\n",
    )
    other = TestResult("landlock", "udp_bind", Status.FAIL, reason="bind", signature="landlock.udp_bind: bind")
    got = knownfail.apply([_fail(), other], entries, WHERE, TODAY)
    assert [t.status for t in got] == [Status.XFAIL, Status.FAIL]


def test_the_shipped_canary_entry_is_strict(tmp_path: Path) -> None:
    """lab.yaml's nobpf boot: the canary must fail there, and passing fails the run."""
    entries = knownfail.load(REPO_ROOT / "known-failures.yaml")
    nobpf = knownfail.Where("x86_64", "nobpf", "6.12.117", "")
    failing = TestResult(
        "bpf_lsm", "canary_counts_file_open", Status.FAIL, reason="bpf is not in the active LSM list",
        signature="bpf_lsm.canary_counts_file_open: bpf is not in the active LSM list",
    )  # fmt: skip
    assert knownfail.apply([failing], entries, nobpf, TODAY)[0].status is Status.XFAIL
    passing = TestResult("bpf_lsm", "canary_counts_file_open", Status.PASS)
    (got,) = knownfail.apply([passing], entries, nobpf, TODAY)
    assert got.status is Status.FAIL and got.reason.startswith("expected to fail")
    assert (
        knownfail.apply([passing], entries, knownfail.Where("x86_64", "default", "6.12.117", ""), TODAY)[0] == passing
    )


def test_an_expired_entry_stops_applying_and_is_named(tmp_path: Path) -> None:
    entries = _entries(tmp_path, ENTRY)
    later = datetime.date(2027, 4, 1)
    assert knownfail.apply([_fail()], entries, WHERE, later)[0].status is Status.FAIL
    (line,) = knownfail.expired(entries, later)
    assert "expired on 2027-03-31" in line and "known.yaml:2" in line and "renew" in line
    assert knownfail.expired(entries, TODAY) == []


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("entries:\n  - test: a\n    reason: r\n    link: l\n", r"known.yaml:2: the entry lacks expires"),
        ("entries:\n  - reason: r\n    link: l\n    expires: 2027-01-01\n", r"known.yaml:2: give `test:`"),
        ("entries:\n  - test: a\n    reason: r\n    link: l\n    expires: soon\n", r"known.yaml:2: expires 'soon'"),
        ("entries:\n  - test: a\n    reason: r\n    link: l\n    expires: never\n", r"only for strict canaries"),
        ("entries:\n  - test: a\n    kernels: 7.3\n    reason: r\n    link: l\n    expires: 2027-01-01\n",
         r"known.yaml:2: kernels '7.3': each bound is like >=6.12"),
        ("entries:\n  - test: a\n    signature: '('\n    reason: r\n    link: l\n    expires: 2027-01-01\n",
         r"signature is not a valid regex"),
        ("entries:\n  - test: a\n    owner: me\n    reason: r\n    link: l\n    expires: 2027-01-01\n",
         r"known.yaml:2: unknown key 'owner'"),
        ("- a\n", r"a mapping with one key, `entries:`"),
    ],
)  # fmt: skip
def test_file_errors_name_the_line_and_the_fix(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(UserError, match=error):
        _entries(tmp_path, text)


def test_version_ranges() -> None:
    assert knownfail.in_range("6.12.117", ">=6.12, <7.0")
    assert not knownfail.in_range("7.0.1", ">=6.12, <7.0")
    assert knownfail.in_range("7.3.4", "==7.3") and not knownfail.in_range("7.30.1", "==7.3")
    assert knownfail.in_range("6.1.192", "")
