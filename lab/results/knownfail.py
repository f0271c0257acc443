"""Known failures (known-failures.yaml): failures a run expects, each with a reason, a link and an expiry.

A failure an entry matches is XFAIL (reported with the entry's reason, not a
failure); a matching test that passes is XPASS (the entry can go), which
fails the run when the entry is `strict` (a canary that must fail). An entry
past its expiry date does not apply any more, and fails the run by name:
known failures are never silenced forever.

Entry fields (file:line in every error):
  test:      glob on SUITE.TEST (`bpf_lsm.canary_*`)          } at least one
  signature: regex searched in the failure's signature         }
  kernels:   version range: ">=6.12, <7.0" (all when absent)
  describe:  glob on the tree's `git describe` (or package version)
  arches:    [x86_64, arm64] (all when absent)
  boots:     [nobpf] boot names of the matrix (all when absent)
  reason:    why it fails (required)
  link:      the tracking link: a bug, a thread, a commit (required)
  expires:   YYYY-MM-DD, or `never` for a strict canary (required)
  strict:    true: passing is a failure (XPASS fails the run)
"""

from __future__ import annotations

import datetime
import fnmatch
import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from lab import yamlfile
from lab.errors import EXIT_FAILED, LabBaseError, UserError
from lab.results.model import BAD, Status, TestResult

_KEYS = {
    "test": False,
    "signature": False,
    "kernels": False,
    "describe": False,
    "arches": False,
    "boots": False,
    "reason": True,
    "link": True,
    "expires": True,
    "strict": False,
}
_BOUND = re.compile(r"^(>=|<=|>|<|==)\s*(\d+(?:\.\d+){0,2})$")


@dataclass(frozen=True)
class Entry:
    where: str  # file:line of the entry
    reason: str
    link: str
    expires: datetime.date | None  # None: never (strict canaries only)
    test: str = ""
    signature: str = ""
    kernels: str = ""
    describe: str = ""
    arches: tuple[str, ...] = ()
    boots: tuple[str, ...] = ()
    strict: bool = False

    def expired(self, today: datetime.date) -> bool:
        return self.expires is not None and today > self.expires

    def name(self) -> str:
        return f"{self.where} ({self.test or self.signature})"


@dataclass(frozen=True)
class Where:
    """What a cell is, as entries select it."""

    arch: str
    boot: str
    kernel_release: str
    describe: str


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


def in_range(release: str, spec: str) -> bool:
    """Whether kernel `release` (7.3.4) is in `spec` (">=6.12, <7.0"); an empty spec is everything."""
    have = _version(release)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        op, version = _BOUND.match(part).groups()  # type: ignore[union-attr]  # checked on load
        want = _version(version)
        have_cut = have[: len(want)]
        ok = {
            ">=": have_cut >= want,
            ">": have_cut > want,
            "<=": have_cut <= want,
            "<": have_cut < want,
            "==": have_cut == want,
        }[op]
        if not ok:
            return False
    return True


def load(path: Path) -> tuple[Entry, ...]:
    """Parse and check a known-failures file; every problem names the file, the line and the fix."""
    root, data = yamlfile.load(path, "known failures")
    if root is None or data is None:
        return ()
    if not isinstance(data, dict) or set(data) - {"entries"}:
        raise UserError(f"{path}: a known-failures file is a mapping with one key, `entries:` (a list)")
    nodes = dict((k.value, v) for k, v in root.value).get("entries")  # type: ignore[union-attr]
    items = data.get("entries") or []
    if not isinstance(items, list) or not isinstance(nodes, (yaml.SequenceNode, type(None))):
        raise UserError(f"{path}: `entries:` must be a list of entries")
    lines = [node.start_mark.line + 1 for node in (nodes.value if nodes else [])]
    return tuple(_entry(item, f"{path}:{line}") for item, line in zip(items, lines, strict=True))


def _entry(doc: object, where: str) -> Entry:
    if not isinstance(doc, dict):
        raise UserError(f"{where}: an entry must be a mapping with reason, link, expires and test or signature")
    for key in doc:
        if key not in _KEYS:
            raise UserError(f"{where}: unknown key {key!r}; expected one of: {', '.join(_KEYS)}")
    missing = [k for k, required in _KEYS.items() if required and k not in doc]
    if missing:
        lacks = ", ".join(missing)
        raise UserError(f"{where}: the entry lacks {lacks}; a known failure says why, where and until when")
    if not doc.get("test") and not doc.get("signature"):
        raise UserError(f"{where}: give `test:` (a SUITE.TEST glob) or `signature:` (a regex), or both")
    strict = bool(doc.get("strict", False))
    expires = doc["expires"]
    if expires == "never":
        if not strict:
            raise UserError(f"{where}: `expires: never` is only for strict canaries; give a date (YYYY-MM-DD)")
        date = None
    elif isinstance(expires, datetime.date):
        date = expires
    else:
        raise UserError(f"{where}: expires {expires!r} is not a date; write it as YYYY-MM-DD")
    if doc.get("signature"):
        try:
            re.compile(str(doc["signature"]))
        except re.error as exc:
            raise UserError(f"{where}: signature is not a valid regex ({exc})") from exc
    kernels = str(doc.get("kernels") or "")
    for part in filter(None, (p.strip() for p in kernels.split(","))):
        if not _BOUND.match(part):
            raise UserError(f"{where}: kernels {kernels!r}: each bound is like >=6.12 or <7.0, separated by commas")
    return Entry(
        where=where,
        reason=str(doc["reason"]),
        link=str(doc["link"]),
        expires=date,
        test=str(doc.get("test") or ""),
        signature=str(doc.get("signature") or ""),
        kernels=kernels,
        describe=str(doc.get("describe") or ""),
        arches=tuple(doc.get("arches") or ()),
        boots=tuple(doc.get("boots") or ()),
        strict=strict,
    )


def _applies(entry: Entry, where: Where) -> bool:
    return (
        (not entry.arches or where.arch in entry.arches)
        and (not entry.boots or where.boot in entry.boots)
        and (not entry.kernels or in_range(where.kernel_release, entry.kernels))
        and (not entry.describe or fnmatch.fnmatchcase(where.describe, entry.describe))
    )


def _matches(entry: Entry, test: TestResult) -> bool:
    """A failure matches by name and signature; a pass can only match by name (it has no signature)."""
    if entry.test and not fnmatch.fnmatchcase(test.full_name, entry.test):
        return False
    if test.status is Status.PASS:
        return bool(entry.test)
    return not entry.signature or re.search(entry.signature, test.signature) is not None


def apply(tests: list[TestResult], entries: tuple[Entry, ...], where: Where, today: datetime.date) -> list[TestResult]:
    """XFAIL and XPASS for the tests that live entries match; expired entries apply to nothing."""
    live = [e for e in entries if not e.expired(today) and _applies(e, where)]
    out = []
    for test in tests:
        entry = next((e for e in live if _matches(e, test)), None)
        if entry is None or test.status not in (*BAD, Status.PASS):
            out.append(test)
        elif test.status is not Status.PASS:
            why = f"known failure: {entry.reason} ({entry.link}); was: {test.reason}"
            out.append(replace(test, status=Status.XFAIL, reason=why))
        elif entry.strict:
            why = f"expected to fail ({entry.reason}; {entry.where}), but passed"
            out.append(replace(test, status=Status.FAIL, reason=why))
        else:
            why = f"known failure did not happen: remove {entry.name()}"
            out.append(replace(test, status=Status.XPASS, reason=why))
    return out


class ExpiredEntries(LabBaseError):
    """Known failures past their expiry: the run fails by their names before anything builds or boots."""

    exit_code = EXIT_FAILED

    def __init__(self, lines: list[str]) -> None:
        super().__init__(f"{len(lines)} known failure(s) expired; nothing was run")
        self.lines = lines

    def report(self) -> list[str]:
        return [*super().report(), *(f"klab: {line}" for line in self.lines)]


def check_live(entries: tuple[Entry, ...], today: datetime.date) -> tuple[Entry, ...]:
    """The entries, once none has expired: an expired one must be fixed or renewed before a run means anything."""
    lines = expired(entries, today)
    if lines:
        raise ExpiredEntries(lines)
    return entries


def expired(entries: tuple[Entry, ...], today: datetime.date) -> list[str]:
    """One line per expired entry: the run fails with them, so they get fixed or renewed."""
    return [
        f"known failure expired on {e.expires}: {e.name()}: {e.reason} ({e.link}); fix it or renew the entry"
        for e in entries
        if e.expired(today)
    ]
