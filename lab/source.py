"""Kernel source trees: Debian's linux-source packages, or the user's own tree."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab import proc
from lab.errors import LabError, UserError
from lab.paths import cache_dir, exclusive

# The versions Debian 12 (bookworm-security) carries as linux-source-X.
KNOWN_VERSIONS = ("6.12", "6.1")
DEFAULT_VERSION = "6.12"


@dataclass(frozen=True)
class Source:
    """A kernel source tree and what identifies it for caching."""

    path: Path
    identity: str  # stable key: git HEAD + dirty hash, or package version
    describe: str  # human-readable: `git describe` or the Debian package version


def fetch(version: str = DEFAULT_VERSION) -> Path:
    """Download and unpack linux-source-<version> into the cache, once.

    `apt-get download` needs no root. The tree is unpacked into a temporary
    directory beside its final place and renamed, so a crash never leaves a
    half-unpacked tree that later runs would trust.
    """
    if version not in KNOWN_VERSIONS:
        raise UserError(f"unknown source version {version!r}; choose one of: {', '.join(KNOWN_VERSIONS)}")
    final = cache_dir("src") / f"linux-{version}"
    if not _fetched(final):
        with exclusive(final):
            if not _fetched(final):  # a parallel worker may have fetched it while we waited
                _download_and_unpack(version, final)
    return final


def _fetched(tree: Path) -> bool:
    return (tree / "Makefile").is_file() and (tree / ".klab-source.json").is_file()


def _download_and_unpack(version: str, final: Path) -> None:
    root = final.parent
    if shutil.which("apt-get") is None:
        raise LabError("apt-get not found: `klab source fetch` needs a Debian system; pass --src DIR instead")
    package = f"linux-source-{version}"
    with tempfile.TemporaryDirectory(dir=root, prefix=f".fetch-{version}-") as tmp:
        tmpdir = Path(tmp)
        try:
            proc.run(["apt-get", "download", package], cwd=tmpdir, timeout=1200, log=tmpdir / "fetch.log")
        except proc.CommandFailed as exc:
            raise LabError(
                f"apt-get download {package} failed (run `apt-get update`, check bookworm-security): "
                f"{exc.tail.splitlines()[-1] if exc.tail else exc}"
            ) from exc
        deb = next(tmpdir.glob(f"{package}_*.deb"))
        pkg_version = deb.name.split("_")[1]
        proc.run(["dpkg-deb", "-x", str(deb), str(tmpdir / "deb")], timeout=600)
        deb.unlink()
        tarball = next((tmpdir / "deb/usr/src").glob(f"linux-source-{version}.tar.*"))
        with tarfile.open(tarball) as tar:
            tar.extractall(tmpdir / "tree", filter="fully_trusted")
        tree = tmpdir / "tree" / f"linux-source-{version}"
        (tree / ".klab-source.json").write_text(json.dumps({"package": package, "version": pkg_version}) + "\n")
        if final.exists():
            shutil.rmtree(final)  # an unfinished tree from a killed run; nobody else can be using it
        tree.rename(final)


def resolve(path: Path) -> Source:
    """Check that `path` is a kernel tree and work out its identity."""
    path = path.expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"kernel source {path} does not exist; pass --src DIR or run `klab source fetch`")
    if not (path / "Kconfig").is_file() or not (path / "scripts/kconfig/merge_config.sh").is_file():
        raise UserError(f"{path} is not a kernel source tree (no Kconfig or scripts/kconfig/merge_config.sh)")
    if (path / ".config").exists() or (path / "include/config").is_dir():
        raise UserError(f"{path} has an in-tree build (.config); run `make -C {path} mrproper` before an O= build")
    meta = path / ".klab-source.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        return Source(path, f"debian:{info['package']}:{info['version']}", f"{info['package']} {info['version']}")
    if (path / ".git").exists():
        return _git_source(path)
    # A plain tree: identify it by path and kernel version; edits are tracked by make.
    return Source(path, f"tree:{path}", f"{path.name} {kernelversion(path)}")


def _git_source(path: Path) -> Source:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(path), *args], capture_output=True, text=True, timeout=60
        ).stdout.strip()

    head = git("rev-parse", "HEAD")
    describe = git("describe", "--always", "--dirty", "--tags") or head[:12]
    # Identity is the tree's location, not its commit: one build dir per tree so
    # bisect steps and edits rebuild incrementally (NOTES.md: copies are not).
    return Source(path, f"git:{path}", describe)


def kernelversion(path: Path) -> str:
    """VERSION.PATCHLEVEL.SUBLEVEL from the top Makefile, without running make."""
    fields = {}
    for line in (path / "Makefile").read_text(errors="replace").splitlines()[:12]:
        key, _, value = line.partition("=")
        if key.strip() in ("VERSION", "PATCHLEVEL", "SUBLEVEL"):
            fields[key.strip()] = value.strip()
    return ".".join(fields.get(k, "0") for k in ("VERSION", "PATCHLEVEL", "SUBLEVEL"))


def version_tuple(path: Path) -> tuple[int, int]:
    major, minor, *_ = (int(x) for x in kernelversion(path).split("."))
    return major, minor


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]
