"""Guest root filesystems: Debian recipes built with mmdebstrap into ext4 images, cached by content.

An image is keyed by its recipe's bytes, the arch, the guest bootstrap script
and the builder's version, so an unchanged recipe is never rebuilt and a changed one
never reused. The ext4 image is made with `mke2fs -d` from a directory: no loop
mounts, so no block devices or extra privileges beyond the chroot mmdebstrap needs.
Package versions are whatever the mirror had at build time; `image.json` records them.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab import manifest, proc
from lab.arches import Arch
from lab.errors import LabError, UserError
from lab.image import hostprep
from lab.image.recipes import DEFAULT_RECIPE, Recipe, find_recipe, load_recipe
from lab.manifest import Record
from lab.paths import HOME, cache_dir, exclusive


@dataclass(frozen=True)
class Builder:
    """What decides an image besides its recipe and arch: the steps' version, and the init copied in."""

    version: str = "2"  # bump when the build steps below change what ends up in an image
    bootstrap: Path = HOME / "lab" / "guest" / "bootstrap"


BUILDER = Builder()
INIT_PATH = "sbin/klab-init"
MOUNT_POINTS = ("klab", "results")
HOSTNAME = "klab"
# mmdebstrap copies the host's resolv.conf and hostname in; a guest gets QEMU user networking's DNS instead.
ETC_FILES = {
    "etc/hostname": f"{HOSTNAME}\n",
    "etc/hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n::1\tlocalhost\n",
    "etc/resolv.conf": "nameserver 10.0.2.3\n",
}
LABEL = "klab-root"
MANIFEST = "image.json"
BOOTSTRAP_TIMEOUT = 3600.0  # arm64 under qemu-user on 2 cores takes minutes, not an hour
TOOL_TIMEOUT = 600.0


@dataclass(frozen=True)
class ImageManifest(Record):
    """image.json: one finished guest image, what made it and what it holds."""

    SCHEMA = 2

    recipe: str
    recipe_path: str
    arch: str
    debian_arch: str
    key: str  # recipe bytes x arch x the Builder (bootstrap script, version)
    builder_version: str
    image: str  # the ext4 file
    sha256: str
    size_bytes: int
    allocated_bytes: int
    label: str
    init: str
    packages: tuple[str, ...]  # what the recipe asked for
    installed: dict[str, str]  # what dpkg installed: name -> version
    mmdebstrap: str
    mirror: str
    reproducer: str  # the mmdebstrap command, shell-quoted
    durations: dict[str, float]
    duration: float
    log: str
    finished: float


def image_key(recipe: Recipe, arch: Arch, builder: Builder = BUILDER) -> str:
    """Content hash of everything that decides what the image holds."""
    h = hashlib.sha256()
    for part in (
        recipe.path.read_bytes(),
        arch.name.encode(),
        builder.bootstrap.read_bytes(),
        builder.version.encode(),
    ):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def image_dir(recipe: Recipe, arch: Arch) -> Path:
    """One directory per image: the ext4 file, image.json and build.log, renamed into place together."""
    return cache_dir("images") / f"{recipe.name}-{arch.name}-{image_key(recipe, arch)}"


def image_path(recipe: Recipe, arch: Arch) -> Path:
    directory = image_dir(recipe, arch)
    return directory / f"{directory.name}.ext4"


def mmdebstrap_argv(recipe: Recipe, arch: Arch, rootfs: Path, mirror: str) -> list[str]:
    """The bootstrap command (printed, logged, rerunnable). mmdebstrap skips Recommends and cleans apt lists itself."""
    argv = [
        "mmdebstrap",
        "--mode=root",
        f"--variant={recipe.variant}",
        f"--architectures={arch.debian_arch}",
        f"--components={','.join(recipe.components)}",
        '--aptopt=Acquire::Languages "none"',
    ]
    if recipe.packages:
        argv.append(f"--include={','.join(recipe.packages)}")
    argv += [f"--dpkgopt=path-exclude={glob}" for glob in recipe.exclude]
    return argv + [recipe.suite, str(rootfs), mirror]


def mke2fs_argv(rootfs: Path, image: Path, size_mb: int) -> list[str]:
    """ext4 from a directory: no loop mount. No reserved blocks: nobody else needs them in a test VM."""
    return ["mke2fs", "-q", "-t", "ext4", "-m", "0", "-d", str(rootfs), "-L", LABEL, str(image), f"{size_mb}M"]


def customize(rootfs: Path) -> None:
    """Add what kernel-lab needs: its init, mount points, a hostname, no trace of the host's network."""
    init = _inside(rootfs, INIT_PATH)
    shutil.copyfile(BUILDER.bootstrap, init)
    init.chmod(0o755)
    for name in MOUNT_POINTS:
        _inside(rootfs, name).mkdir(mode=0o755, exist_ok=True)
    for relpath, text in ETC_FILES.items():
        path = _inside(rootfs, relpath)
        path.unlink(missing_ok=True)  # it may be a symlink to the host's resolver state
        path.write_text(text)
        path.chmod(0o644)


def _inside(rootfs: Path, relpath: str) -> Path:
    """`relpath` in the rootfs with its directory resolved (merged /usr: sbin -> usr/sbin), never outside it."""
    parent = (rootfs / relpath).parent.resolve()
    if not parent.is_relative_to(rootfs.resolve()):
        raise LabError(f"{rootfs}: {relpath} resolves outside the root filesystem")
    return parent / Path(relpath).name


def check_python(rootfs: Path, log: Path, kept_log: Path, host: hostprep.Host) -> None:
    """The suites need the guest's python3: run it in the chroot (through qemu-user when foreign)."""
    try:
        host.run(
            ["chroot", str(rootfs), "/usr/bin/python3", "-c", "import json, ctypes, socket"],
            deadline=proc.Deadline.after(120),
            log=log,
        )
    except proc.CommandFailed as exc:
        raise LabError(f"python3 does not run in the new image: {exc}; log: {kept_log}") from exc


def installed_packages(rootfs: Path) -> dict[str, str]:
    """name -> version from dpkg's status file (read on the host: no chroot, any arch)."""
    packages = {}
    for stanza in (rootfs / "var/lib/dpkg/status").read_text().split("\n\n"):
        fields = dict(ln.split(": ", 1) for ln in stanza.splitlines() if ": " in ln and not ln.startswith(" "))
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(packages.items()))


def _mmdebstrap_version() -> str:
    try:
        return proc.run(["mmdebstrap", "--version"], deadline=proc.Deadline.after(30)).output.strip()
    except proc.CommandFailed:
        return "unknown"


def cached_image(recipe: Recipe, arch: Arch) -> ImageManifest | None:
    """The manifest of a finished image for this recipe and arch, or None."""
    doc = ImageManifest.read_if_valid(image_dir(recipe, arch) / MANIFEST)
    if doc and doc.key == image_key(recipe, arch) and Path(doc.image).is_file():
        return doc
    return None


def build_image(
    arch: Arch,
    recipe_path: Path,
    progress: Callable[[str], None] | None = None,
    host: hostprep.Host | None = None,
) -> ImageManifest:
    """Build (or reuse) the image; return its manifest. Built in a temp dir under the cache, renamed at the end."""
    recipe = load_recipe(recipe_path)
    cached = cached_image(recipe, arch)
    if cached:
        return cached
    host = host or hostprep.Host.this()
    if host.euid == 0:
        hostprep.ensure_binfmt(arch, host)
    missing = hostprep.image_prereqs(arch, host)
    if missing:
        raise UserError(f"cannot build {recipe.name} for {arch.name}; missing: " + "; ".join(missing))
    with exclusive(image_dir(recipe, arch)):
        # A parallel worker may have built it while we waited.
        return cached_image(recipe, arch) or _build_image(recipe, arch, progress, host)


def _build_image(
    recipe: Recipe, arch: Arch, progress: Callable[[str], None] | None, host: hostprep.Host
) -> ImageManifest:
    final = image_dir(recipe, arch)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        doc = _build_in(tmp, final, recipe, arch, progress, host)
        _publish(tmp, final)
    except BaseException:
        if (tmp / "build.log").is_file():
            shutil.copyfile(tmp / "build.log", _failed_log(final))
        raise
    finally:
        _remove_tree(tmp)
    _failed_log(final).unlink(missing_ok=True)
    return cached_image(recipe, arch) or doc


def default_image(arch: Arch) -> Path:
    """The lab's standard guest image for `arch`, built on first use."""
    return Path(build_image(arch, find_recipe(DEFAULT_RECIPE)).image)


def _failed_log(final: Path) -> Path:
    """Where the log of a failed build survives the temp dir: beside where the image would have been."""
    return final.with_name(f"{final.name}.failed.log")


def _remove_tree(path: Path) -> None:
    """rmtree, but first unmount what a killed mmdebstrap may have left mounted in the chroot (/proc, /sys, /dev)."""
    if not path.exists():
        return
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    for mountpoint in sorted(mounts, key=len, reverse=True):
        proc.run(["umount", "--lazy", mountpoint], deadline=proc.Deadline.after(60), check=False)
    with open("/proc/self/mounts") as f:
        if any(line.split()[1].startswith(prefix) for line in f):
            raise LabError(f"{path} still has mounts under it; unmount them, then remove it")
    shutil.rmtree(path, ignore_errors=True)


def _build_in(
    tmp: Path, final: Path, recipe: Recipe, arch: Arch, progress: Callable[[str], None] | None, host: hostprep.Host
) -> ImageManifest:
    rootfs, log = tmp / "rootfs", tmp / "build.log"
    image = tmp / f"{final.name}.ext4"
    mirror = recipe.mirror or host.mirror()
    argv = mmdebstrap_argv(recipe, arch, rootfs, mirror)
    t0 = time.monotonic()
    try:
        host.run(argv, deadline=proc.Deadline.after(BOOTSTRAP_TIMEOUT), log=log, on_line=progress)
    except proc.CommandFailed as exc:
        raise LabError(f"mmdebstrap failed: {exc}; log: {_failed_log(final)}") from exc
    t1 = time.monotonic()
    customize(rootfs)
    check_python(rootfs, log, _failed_log(final), host)
    packages = installed_packages(rootfs)
    mke2fs = mke2fs_argv(rootfs, image, recipe.size_mb)
    try:
        host.run(mke2fs, deadline=proc.Deadline.after(TOOL_TIMEOUT), log=log)
    except proc.CommandFailed as exc:
        raise UserError(
            f"{recipe.path}: mke2fs failed ({(exc.tail.strip().splitlines() or ['?'])[-1]}); "
            f"if the files do not fit, raise size_mb (now {recipe.size_mb}); log: {_failed_log(final)}"
        ) from exc
    t2 = time.monotonic()
    shutil.rmtree(rootfs)
    doc = ImageManifest(
        recipe=recipe.name,
        recipe_path=str(recipe.path),
        arch=arch.name,
        debian_arch=arch.debian_arch,
        key=image_key(recipe, arch),
        builder_version=BUILDER.version,
        image=str(final / image.name),
        sha256=manifest.sha256(image),
        size_bytes=image.stat().st_size,
        allocated_bytes=image.stat().st_blocks * 512,
        label=LABEL,
        init="/" + INIT_PATH,
        packages=recipe.packages,
        installed=packages,
        mmdebstrap=_mmdebstrap_version(),
        mirror=mirror,
        reproducer=shlex.join(argv),
        durations={"bootstrap": round(t1 - t0, 2), "mke2fs": round(t2 - t1, 2)},
        duration=round(time.monotonic() - t0, 2),
        log=str(final / log.name),
        finished=time.time(),
    )
    doc.write(tmp / MANIFEST)
    return doc


def _publish(tmp: Path, final: Path) -> None:
    """Rename the finished image dir into place; if another build got there first, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / MANIFEST).is_file():
            shutil.rmtree(final, ignore_errors=True)  # a leftover without a manifest is unfinished
            os.rename(tmp, final)
