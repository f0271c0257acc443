"""Debian's archive through a private apt configuration: any linux-source-X.Y, the host's apt untouched.

A Debian 12 host's own suites carry linux-source-6.1 and 6.12; the newest
kernels are in later suites of the same archive (NEWER_SUITES). kernel-lab
keeps its own sources list, package lists and apt cache under its cache dir,
made from the host's own apt sources: the same archive URI (a user's mirror
is respected) and the same keyring, plus the newer suites. The host's apt
configuration, lists and preferences are never read for packages nor written.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from lab import atomic, manifest, proc
from lab.errors import LabError, UserError
from lab.paths import cache_dir, exclusive, require_free_space

# Suites of the host's Debian archive that carry newer linux-source-X.Y packages than a Debian 12 release.
NEWER_SUITES = ("trixie-backports", "sid")
LISTS_MAX_AGE = 24 * 3600.0  # refresh the private package lists once a day
UPDATE_TIMEOUT = 300.0
LISTS_NEED_BYTES = 256 << 20  # three suites' package lists (~45 MB) and their compressed downloads
DOWNLOAD_TIMEOUT = 1200.0
QUERY_TIMEOUT = 120.0
_SOURCE_PACKAGE = re.compile(r"^linux-source-(\d+\.\d+)$")


@dataclass(frozen=True)
class Entry:
    """One apt source of the host: where, which suites and components, with which key."""

    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str = ""


@dataclass(frozen=True)
class Offer:
    """A package version the archive offers, and the suite it comes from."""

    package: str
    version: str
    suite: str


def parse_one_line(text: str) -> list[Entry]:
    """`deb [opts] URI SUITE COMPONENT...` lines (sources.list format); deb-src and comments are skipped."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        options = ""
        rest = line[4:].strip()
        if rest.startswith("["):
            options, _, rest = rest[1:].partition("]")
        fields = rest.split()
        if len(fields) < 2:
            continue
        signed = re.search(r"signed-by=(\S+)", options)
        out.append(Entry((fields[0],), (fields[1],), tuple(fields[2:]), signed.group(1) if signed else ""))
    return out


def parse_deb822(text: str) -> list[Entry]:
    """Stanzas of a `.sources` file (deb822 format); only enabled `Types: deb` stanzas count."""
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1] in (" ", "\t") and key:
                fields[key] += " " + raw.strip()
                continue
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        out.append(
            Entry(
                tuple(fields.get("uris", "").split()),
                tuple(fields.get("suites", "").split()),
                tuple(fields.get("components", "").split()),
                fields.get("signed-by", "").split()[0] if fields.get("signed-by") else "",
            )
        )
    return out


def host_entries(etc: Path = Path("/etc/apt")) -> list[Entry]:
    """Every enabled `deb` source of the host, in both formats."""
    out: list[Entry] = []
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for path in files:
        if path.is_file():
            out += parse_one_line(path.read_text(errors="replace"))
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        out += parse_deb822(path.read_text(errors="replace"))
    return out


def host_codename(os_release: Path = Path("/etc/os-release")) -> str:
    for line in os_release.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value.strip('"'):
            return value.strip('"')
    raise LabError(f"{os_release} names no VERSION_CODENAME: `klab source fetch` needs a Debian host; pass --src DIR")


def _own(entries: list[Entry], codename: str) -> list[Entry]:
    return [e for e in entries if any(s == codename or s.startswith(codename + "-") for s in e.suites)]


def _archive(entries: list[Entry], codename: str) -> Entry:
    """The host's main Debian archive: the entry that carries the release's own suite."""
    archive = next((e for e in _own(entries, codename) if codename in e.suites and e.uris), None)
    if archive is None:
        raise LabError(
            f"the host's apt sources have no Debian archive for {codename!r} (checked /etc/apt/sources.list and "
            "sources.list.d): add one, or pass --src DIR with a kernel tree"
        )
    return archive


def archive_uri(etc: Path = Path("/etc/apt")) -> str:
    """The host's Debian archive URI (its mirror): what guest images are bootstrapped from."""
    return _archive(host_entries(etc), host_codename()).uris[0]


def private_sources(entries: list[Entry], codename: str) -> str:
    """The private sources.list: the host's own Debian suites, then the newer suites on the same archive."""
    own = _own(entries, codename)
    archive = _archive(entries, codename)
    lines = []
    for entry in own:
        for uri in entry.uris:
            for suite in entry.suites:
                if suite == codename or suite.startswith(codename + "-"):
                    lines.append(_line(uri, suite, entry.components, entry.signed_by))
    for suite in NEWER_SUITES:
        lines.append(_line(archive.uris[0], suite, ("main",), archive.signed_by))
    return "\n".join(lines) + "\n"


def _line(uri: str, suite: str, components: tuple[str, ...], signed_by: str) -> str:
    options = f"[signed-by={signed_by}] " if signed_by else ""
    return f"deb {options}{uri} {suite} {' '.join(components or ('main',))}"


def parse_madison(text: str) -> list[Offer]:
    """`apt-cache madison` lines: `pkg | version | URI suite/component arch Packages`, newest first."""
    out = []
    for line in text.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) != 3 or not cols[2].endswith("Packages"):
            continue
        where = cols[2].split()
        suite = where[1].split("/")[0] if len(where) > 1 else ""
        out.append(Offer(cols[0], cols[1], suite))
    return out


def choose(offers: list[Offer], codename: str) -> Offer | None:
    """The host release's own newest version when it has the package (security-supported), else the newest."""
    own = [o for o in offers if o.suite == codename or o.suite.startswith(codename + "-")]
    candidates = own or offers
    return candidates[0] if candidates else None


class Archive:
    """apt-get and apt-cache, pointed at kernel-lab's private configuration under the cache."""

    def __init__(self, root: Path | None = None, etc: Path = Path("/etc/apt")) -> None:
        self.root = root or cache_dir("apt")
        self.etc = etc
        self.codename = host_codename()

    def options(self) -> list[str]:
        settings = {
            "Dir::Etc::SourceList": self.root / "sources.list",
            "Dir::Etc::SourceParts": "/dev/null",
            "Dir::Etc::Preferences": "/dev/null",
            "Dir::Etc::PreferencesParts": "/dev/null",
            "Dir::State::Lists": self.root / "lists",
            "Dir::Cache": self.root / "cache",
            "Acquire::Languages": "none",
            # A mirror that stalls fails a transfer in a minute, not at the caller's deadline.
            "Acquire::http::Timeout": "60",
            "Acquire::https::Timeout": "60",
            "Acquire::Retries": "2",
        }
        return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]

    def _apt(self, tool: str, *args: str, timeout: float, cwd: Path | None = None) -> str:
        if shutil.which(tool) is None:
            raise LabError(f"{tool} not found: `klab source fetch` needs a Debian host; pass --src DIR instead")
        log = self.root / "apt.log"
        try:
            return proc.run(
                [tool, *self.options(), *args], deadline=proc.Deadline.after(timeout), log=log, cwd=cwd
            ).output
        except proc.CommandFailed as exc:
            last = exc.tail.strip().splitlines()[-1] if exc.tail.strip() else "no output"
            raise LabError(f"{tool} {' '.join(args[:2])} failed: {last} (log: {log})") from exc

    def refresh(self) -> None:
        """Write the private sources list and update its package lists when they are missing or a day old."""
        sources = private_sources(host_entries(self.etc), self.codename)
        stamp = self.root / "lists" / ".klab-updated"
        with exclusive(self.root / "lists"):
            current = self.root / "sources.list"
            fresh = stamp.is_file() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE
            if fresh and current.is_file() and current.read_text() == sources:
                return
            require_free_space(self.root, LISTS_NEED_BYTES)
            (self.root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
            (self.root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
            atomic.write_text(current, sources)
            self._apt("apt-get", "update", "-q", timeout=UPDATE_TIMEOUT)
            stamp.touch()

    def offers(self, package: str) -> list[Offer]:
        self.refresh()
        return parse_madison(self._apt("apt-cache", "madison", package, timeout=QUERY_TIMEOUT))

    def find(self, package: str) -> Offer:
        """The version of `package` to fetch; absent from the archive is the user's mistake, with the fix."""
        offer = choose(self.offers(package), self.codename)
        if offer is None:
            raise UserError(f"{package} is not in the archive; `klab source fetch --list` shows the versions it has")
        return offer

    def kernel_sources(self) -> tuple[list[Offer], float]:
        """Every linux-source-X.Y the archive offers, newest kernel first, with the version that would be fetched;
        and the answer's age in seconds. The answer is kept until the package lists are next refreshed (daily):
        asking apt takes seconds per version."""
        self.refresh()
        stamp = (self.root / "lists" / ".klab-updated").stat().st_mtime
        kept = self.root / "kernel-sources.json"
        doc = manifest.read_json(kept)
        if doc and doc.get("lists") == stamp:
            return [Offer(**o) for o in doc["offers"]], time.time() - float(doc["asked"])
        names = self._apt(
            "apt-cache", "search", "--names-only", r"^linux-source-[0-9]+\.[0-9]+$", timeout=QUERY_TIMEOUT
        )
        versions = sorted(
            (m.group(1) for line in names.splitlines() if (m := _SOURCE_PACKAGE.match(line.split(" - ")[0].strip()))),
            key=lambda v: tuple(int(x) for x in v.split(".")),
            reverse=True,
        )
        out = []
        for version in versions:
            offer = choose(self.offers(f"linux-source-{version}"), self.codename)
            if offer is not None:
                out.append(offer)
        manifest.write_json(kept, {"lists": stamp, "asked": time.time(), "offers": [asdict(o) for o in out]})
        return out, 0.0

    def download(self, offer: Offer, dest: Path) -> Path:
        """`apt-get download package=version` into `dest`; returns the .deb."""
        self._apt("apt-get", "download", f"{offer.package}={offer.version}", timeout=DOWNLOAD_TIMEOUT, cwd=dest)
        deb = next(dest.glob(f"{offer.package}_*.deb"), None)
        if deb is None:
            raise LabError(f"apt-get download {offer.package}={offer.version} left no .deb in {dest}")
        return deb
