"""Kernel source trees: Debian's linux-source packages, or the user's own tree.

Debian's packages come through a private apt configuration (`lab.debian`), so
any `linux-source-X.Y` the archive carries can be fetched without touching the
host's apt setup. A fetched tree is identified by a marker file *beside* it
(`linux-7.3.klab-source.json`), never inside, so a git repository made from
the tree does not carry it.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab import atomic, debian, proc
from lab.errors import LabError, UserError
from lab.git import git
from lab.paths import cache_dir, exclusive, require_free_space

DEFAULT_VERSION = "6.12"
_VERSION = re.compile(r"^\d+\.\d+$")
UNPACK_TIMEOUT = 600.0


class SourceKind(enum.Enum):
    """Where a tree comes from, which decides what identifies it (the values start its identity)."""

    GIT = "git"  # a git work tree, keyed by its location: every checkout in it rebuilds one build dir
    DEBIAN = "debian"  # a fetched linux-source package, keyed by the package and its version
    TREE = "tree"  # any other tree, keyed by its location; edits are tracked by make


@dataclass(frozen=True)
class Source:
    """A kernel source tree and what identifies it for caching."""

    path: Path
    kind: SourceKind
    key: str  # the location (git, tree), or "package:version" (debian)
    describe: str  # human-readable: `git describe` or the Debian package version

    @property
    def identity(self) -> str:
        """The cache key part recorded in build.json: `git:/path`, `debian:linux-source-7.3:7.3.4-1`, `tree:/path`."""
        return f"{self.kind.value}:{self.key}"


def check_version(version: str) -> str:
    """`7.3`-style versions only: anything else is a usage error before any download."""
    if not _VERSION.match(version):
        raise UserError(f"bad kernel version {version!r}: give MAJOR.MINOR such as 6.12 or 7.3")
    return version


def marker(tree: Path) -> Path:
    """The file beside a fetched tree that says which package it came from."""
    return tree.with_name(tree.name + ".klab-source.json")


def fetch(version: str = DEFAULT_VERSION) -> Path:
    """Download and unpack linux-source-<version> into the cache, once.

    The tree is unpacked into a temporary directory beside its final place and
    renamed, so a crash never leaves a half-unpacked tree that later runs would
    trust; parallel workers wait for the first one instead of unpacking twice.
    """
    final = cache_dir("src") / f"linux-{check_version(version)}"
    if not _fetched(final):
        archive = debian.Archive()
        offer = archive.find(f"linux-source-{version}")  # first: a version the archive lacks leaves nothing behind
        require_free_space(final.parent, FETCH_NEEDS_BYTES)
        with exclusive(final):
            if not _fetched(final):  # a parallel worker may have fetched it while we waited
                _download_and_unpack(archive, offer, version, final)
    return final


def _fetched(tree: Path) -> bool:
    return (tree / "Makefile").is_file() and marker(tree).is_file()


# The .deb (~150 MB), the tarball it holds and the unpacked tree (~1.5 GB) at their peak.
FETCH_NEEDS_BYTES = 2 << 30


def _download_and_unpack(archive: debian.Archive, offer: debian.Offer, version: str, final: Path) -> None:
    package = offer.package
    root = final.parent
    with tempfile.TemporaryDirectory(dir=root, prefix=f".fetch-{version}-") as tmp:
        tmpdir = Path(tmp)
        deb = archive.download(offer, tmpdir)
        deadline = proc.Deadline.after(UNPACK_TIMEOUT)
        proc.run(["dpkg-deb", "-x", str(deb), str(tmpdir / "deb")], deadline=deadline)
        deb.unlink()
        tarball = next((tmpdir / "deb/usr/src").glob(f"linux-source-{version}.tar.*"), None)
        if tarball is None:
            raise LabError(
                f"{package} {offer.version} holds no linux-source-{version}.tar.*: not a kernel source package"
            )
        with tarfile.open(tarball) as tar:
            tar.extractall(tmpdir / "tree", filter="fully_trusted")
        tree = tmpdir / "tree" / f"linux-source-{version}"
        if final.exists():
            shutil.rmtree(final)  # an unfinished tree from a killed run; nobody else can be using it
        tree.rename(final)
        doc = {"package": package, "version": offer.version, "suite": offer.suite}
        atomic.write_text(marker(final), json.dumps(doc) + "\n")  # last: the tree counts as fetched once whole


def resolve(path: Path) -> Source:
    """Check that `path` is a kernel tree and work out its identity."""
    path = path.expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise UserError(f"kernel source {path} is a file, not a directory; pass the top of a kernel tree to --src")
    if not path.is_dir():
        raise UserError(f"kernel source {path} does not exist; pass --src DIR or run `klab source fetch`")
    if not (path / "Kconfig").is_file() or not (path / "scripts/kconfig/merge_config.sh").is_file():
        raise UserError(f"{path} is not a kernel source tree (no Kconfig or scripts/kconfig/merge_config.sh)")
    if (path / ".config").exists() or (path / "include/config").is_dir():
        raise UserError(f"{path} has an in-tree build (.config); run `make -C {path} mrproper` before an O= build")
    # A git repository wins over a package marker: it may have been made from a fetched tree and moved on.
    if (path / ".git").exists():
        return _git_source(path)
    if marker(path).is_file():
        info = json.loads(marker(path).read_text())
        package = f"{info['package']}:{info['version']}"
        return Source(path, SourceKind.DEBIAN, package, f"{info['package']} {info['version']}")
    return Source(path, SourceKind.TREE, str(path), f"{path.name} {kernelversion(path)}")


def _git_source(path: Path) -> Source:
    head = git(path, "rev-parse", "--verify", "--quiet", "HEAD", check=False)
    if head.returncode != 0:
        raise UserError(f"{path} is a git repository without a commit: commit the tree, or pass a plain tree")
    described = git(path, "describe", "--always", "--dirty", "--tags", check=False)
    describe = described.output.strip() if described.returncode == 0 else head.output.strip()[:12]
    # Keyed by the tree's location, not its commit: one build dir per tree, so bisect
    # steps and edits rebuild incrementally (a copied build dir dirties every object).
    return Source(path, SourceKind.GIT, str(path), describe)


def kernelversion(path: Path) -> str:
    """VERSION.PATCHLEVEL.SUBLEVEL from the top Makefile, without running make."""
    fields = {}
    for line in (path / "Makefile").read_text(errors="replace").splitlines()[:12]:
        key, _, value = line.partition("=")
        if key.strip() in ("VERSION", "PATCHLEVEL", "SUBLEVEL"):
            fields[key.strip()] = value.strip()
    return ".".join(fields.get(k, "0") for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL"))


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
