"""build.json: what a finished kernel build is, as later stages (boot, test, bisect, reports) read it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lab.arches import Arch
from lab.errors import UserError
from lab.manifest import ManifestError, Record

MANIFEST = "build.json"
CONFIG_STAMP = "config.json"  # what the .config was made from; outlives a failed compile


@dataclass(frozen=True)
class SourceInfo(Record):
    path: str
    identity: str  # the cache key part: tree location for git/plain trees, package version for Debian's
    describe: str  # `git describe`, or the Debian package and version
    fingerprint: str  # every file's path, size and mtime: a rebuild is needed when it changes
    kconfig_fingerprint: str  # the Kconfig files only: a reconfigure is needed when it changes


@dataclass(frozen=True)
class FragmentInfo(Record):
    name: str
    path: str
    sha256: str


@dataclass(frozen=True)
class Artifacts(Record):
    image: str  # bzImage / Image
    vmlinux: str
    config: str
    system_map: str
    log: str


@dataclass(frozen=True)
class BuildManifest(Record):
    """One finished build of one build dir."""

    SCHEMA = 2

    key: str  # source identity x arch x fragments x toolchain choice
    arch: str
    source: SourceInfo
    kernelrelease: str  # `make kernelrelease`, e.g. 7.3.4
    fragments: tuple[FragmentInfo, ...]
    not_applicable: dict[str, str]  # option -> why the fragments' request did not apply to this tree
    config_sha256: str
    toolchain: dict[str, str]  # tool -> first line of its --version
    durations: dict[str, float]  # "config", "build" in seconds
    artifacts: Artifacts
    reproducer: str  # the make command line, shell-quoted
    finished: float  # time.time()

    @property
    def image(self) -> Path:
        return Path(self.artifacts.image)

    @property
    def build_dir(self) -> Path:
        return Path(self.artifacts.config).parent

    def uts_version(self) -> str:
        """The build's `uname -v` ("#17 SMP Mon Nov 30 23:38:46 UTC 2026"); "" when the header is gone."""
        try:
            header = (self.build_dir / "include/generated/utsversion.h").read_text()
        except OSError:
            return ""
        found = re.search(r'^#define UTS_VERSION "(.*)"$', header, re.MULTILINE)
        return found.group(1) if found else ""

    @property
    def short_release(self) -> str:
        """major.minor ("7.3"): the kernel label in cell ids."""
        return ".".join(self.kernelrelease.split(".")[:2])


@dataclass(frozen=True)
class ConfigStamp(Record):
    """What the build dir's .config was made from: reused while no Kconfig file changes."""

    key: str
    kconfig_fingerprint: str
    config_sha256: str


def load(build_dir: Path, arch: Arch | None = None) -> BuildManifest:
    """The manifest of a build dir a user named (--build DIR), checked against the arch they asked for."""
    path = build_dir / MANIFEST
    if not build_dir.exists():
        raise UserError(f"--build {build_dir} does not exist; give the dir `klab build` printed (or --kernel IMAGE)")
    if not build_dir.is_dir():
        raise UserError(f"--build {build_dir} is a file, not a build dir; for a kernel image use --kernel {build_dir}")
    if not path.is_file():
        raise UserError(f"{build_dir} has no {MANIFEST}: not a finished klab build dir (run `klab build` first)")
    try:
        doc = BuildManifest.read(path)
    except ManifestError as exc:
        raise UserError(f"{exc}; rebuild it with `klab build`") from exc
    if arch is not None and doc.arch != arch.name:
        raise UserError(f"{build_dir} is an {doc.arch} build, not {arch.name}; pass --arch {doc.arch}")
    return doc
