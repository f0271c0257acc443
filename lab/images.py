"""Guest root filesystems: Debian recipes built with mmdebstrap into ext4 images, cached by content.

An image is keyed by its recipe's bytes, the arch, the guest bootstrap script
and BUILDER_VERSION, so an unchanged recipe is never rebuilt and a changed one
never reused. The ext4 image is made with `mke2fs -d` from a directory: no loop
mounts, so no block devices or extra privileges beyond the chroot mmdebstrap needs.
Package versions are whatever the mirror had at build time; `image.json` records them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab import arches, manifest, proc, yamlfile
from lab.arches import Arch
from lab.errors import LabError, UserError
from lab.paths import IMAGES, REPO_ROOT, cache_dir, exclusive

# Bump when the build steps below change what ends up in an image.
BUILDER_VERSION = "2"
DEFAULT_RECIPE = "debian-bookworm"
BOOTSTRAP = REPO_ROOT / "lab" / "guest" / "bootstrap"
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
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF_DIRS = (Path("/usr/lib/binfmt.d"), Path("/etc/binfmt.d"))
QEMU_USER_DIR = Path("/usr/bin")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
VARIANTS = ("essential", "apt", "minbase", "required", "buildd", "important", "standard")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    suite: str
    variant: str
    packages: tuple[str, ...]
    size_mb: int
    components: tuple[str, ...] = ("main",)
    mirror: str = "http://deb.debian.org/debian"
    # dpkg path-exclude globs: files the guest never needs (docs, man pages, translations).
    exclude: tuple[str, ...] = ()


# key -> (type check, what to write). Required keys are those without a Recipe default.
_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str) and bool(_NAME_RE.match(v)), "a lower-case name like debian-bookworm"),
    "suite": (lambda v: isinstance(v, str) and bool(_NAME_RE.match(v)), "a Debian suite like bookworm"),
    "variant": (lambda v: v in VARIANTS, f"one of: {', '.join(VARIANTS)}"),
    "packages": (
        lambda v: isinstance(v, list) and all(isinstance(p, str) and _PACKAGE_RE.match(p) for p in v),
        "a list of Debian package names",
    ),
    "size_mb": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer (MiB)"),
    "components": (
        lambda v: isinstance(v, list) and bool(v) and all(isinstance(c, str) and _NAME_RE.match(c) for c in v),
        "a list like [main]",
    ),
    "mirror": (lambda v: isinstance(v, str) and v.startswith(("http://", "https://", "file:/")), "an http(s) URL"),
    "exclude": (
        lambda v: isinstance(v, list) and all(isinstance(p, str) and p.startswith("/") for p in v),
        "a list of absolute path globs like /usr/share/doc/*",
    ),
}
_REQUIRED = ("name", "suite", "variant", "packages", "size_mb")
_OPTIONAL = ("components", "mirror", "exclude")


def load_recipe(path: Path) -> Recipe:
    """Parse and validate a recipe; every problem is one UserError naming the file, line and fix."""
    node, doc = yamlfile.load(path, "image recipe")
    if not isinstance(doc, dict) or not isinstance(node, yaml.MappingNode):
        raise UserError(f"{path}: an image recipe must be a mapping of keys ({', '.join(_FIELDS)})")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    _check_fields(path, doc, lines)
    if doc["name"] != path.stem:
        raise UserError(
            f"{path}:{lines['name']}: name {doc['name']!r} differs from the file name; "
            f"rename the file to {doc['name']}.yaml or set name: {path.stem}"
        )
    optional: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in doc.items() if k in _OPTIONAL}
    return Recipe(
        path=path.resolve(),
        name=doc["name"],
        suite=doc["suite"],
        variant=doc["variant"],
        packages=tuple(doc["packages"]),
        size_mb=doc["size_mb"],
        **optional,
    )


def _check_fields(path: Path, doc: dict[Any, Any], lines: dict[str, int]) -> None:
    for key in doc:
        if key not in _FIELDS:
            raise UserError(f"{path}:{lines.get(str(key), '?')}: unknown key {key!r}; known keys: {', '.join(_FIELDS)}")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise UserError(f"{path}: missing key{'s' if len(missing) > 1 else ''}: {', '.join(missing)}; add them")
    for key, value in doc.items():
        ok, what = _FIELDS[key]
        if not ok(value):
            raise UserError(f"{path}:{lines[key]}: {key} is {value!r}; it must be {what}")


def find_recipe(name_or_path: str) -> Path:
    """A recipe by name (images/NAME.yaml) or by path; unknown names list the choices."""
    as_path = Path(name_or_path)
    if as_path.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not as_path.is_file():
            raise UserError(f"image recipe {name_or_path} does not exist")
        return as_path
    candidate = IMAGES / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    choices = ", ".join(sorted(p.stem for p in IMAGES.glob("*.yaml"))) or "(none)"
    raise UserError(f"unknown image recipe {name_or_path!r}; choose one of: {choices}, or give a path to a .yaml file")


def image_key(recipe: Recipe, arch: Arch) -> str:
    """Content hash of everything that decides what the image holds."""
    h = hashlib.sha256()
    for part in (recipe.path.read_bytes(), arch.name.encode(), BOOTSTRAP.read_bytes(), BUILDER_VERSION.encode()):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def image_dir(recipe: Recipe, arch: Arch) -> Path:
    """One directory per image: the ext4 file, image.json and build.log, renamed into place together."""
    return cache_dir("images") / f"{recipe.name}-{arch.name}-{image_key(recipe, arch)}"


def image_path(recipe: Recipe, arch: Arch) -> Path:
    directory = image_dir(recipe, arch)
    return directory / f"{directory.name}.ext4"


# --- host prerequisites -------------------------------------------------------------------------


def image_prereqs(arch: Arch) -> list[str]:
    """What this host lacks to build an image for `arch`, each item naming its fix; empty when ready."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root: mmdebstrap's chroot mode and root-owned image files need it; run as root")
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("mke2fs", "e2fsprogs")):
        if not shutil.which(tool):
            missing.append(f"{tool}: apt-get install {package}")
    if not KEYRING.is_file():
        missing.append(f"{KEYRING}: apt-get install debian-archive-keyring")
    if not arches.is_native(arch):
        missing += _binfmt_prereqs(arch)
    return missing


def _binfmt_prereqs(arch: Arch) -> list[str]:
    """A foreign-arch chroot runs its binaries through qemu-user, registered with binfmt_misc."""
    missing = []
    if not _qemu_static(arch).is_file():
        missing.append(f"{_qemu_static(arch)}: apt-get install qemu-user-static")
    if not (BINFMT_DIR / "register").exists():
        missing.append(f"binfmt_misc not mounted: mount -t binfmt_misc binfmt_misc {BINFMT_DIR}")
        return missing
    handler = _binfmt_status(arch)
    if handler is None:
        missing.append(
            f"binfmt handler {arch.qemu_user} not registered: run klab as root (it registers it), "
            f"or update-binfmts --enable {arch.qemu_user} (package binfmt-support)"
        )
    elif not handler.startswith("enabled"):
        missing.append(f"binfmt handler {arch.qemu_user} disabled: echo 1 > {BINFMT_DIR / arch.qemu_user}")
    elif not re.search(r"^flags:.*F", handler, re.MULTILINE):
        missing.append(
            f"binfmt handler {arch.qemu_user} lacks the F flag, so a chroot cannot find qemu: "
            f"echo -1 > {BINFMT_DIR / arch.qemu_user} and rerun klab as root to register it again"
        )
    return missing


def _qemu_static(arch: Arch) -> Path:
    return QEMU_USER_DIR / f"{arch.qemu_user}-static"


def _binfmt_status(arch: Arch) -> str | None:
    try:
        return (BINFMT_DIR / arch.qemu_user).read_text()
    except OSError:
        return None


def ensure_binfmt(arch: Arch) -> None:
    """As root, mount binfmt_misc and register qemu-user for `arch` (idempotent; no systemd needed).

    The registration line comes from qemu-user-static's own binfmt.d file (flag F: the
    interpreter is opened now, so it works inside chroots that lack it).
    """
    if arches.is_native(arch):
        return
    if not _qemu_static(arch).is_file():
        raise UserError(f"{_qemu_static(arch)} is missing: apt-get install qemu-user-static")
    if not (BINFMT_DIR / "register").exists():
        try:
            proc.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], deadline=proc.Deadline.after(30))
        except proc.CommandFailed as exc:
            raise LabError(f"cannot mount binfmt_misc ({exc.tail.strip()}): is this a privileged container?") from exc
    if _binfmt_status(arch) is not None:
        return
    conf = next(
        (d / f"{arch.qemu_user}.conf" for d in BINFMT_CONF_DIRS if (d / f"{arch.qemu_user}.conf").is_file()), None
    )
    if conf is None:
        raise UserError(f"no binfmt.d entry for {arch.qemu_user}: apt-get install qemu-user-static")
    line = next(ln for ln in conf.read_text().splitlines() if ln.startswith(":"))
    try:
        (BINFMT_DIR / "register").write_text(line)
    except OSError as exc:
        if _binfmt_status(arch) is None:  # EEXIST from a concurrent registration is fine
            raise LabError(f"cannot register {arch.qemu_user} with binfmt_misc: {exc.strerror}") from exc


# --- building -----------------------------------------------------------------------------------


def mmdebstrap_argv(recipe: Recipe, arch: Arch, rootfs: Path) -> list[str]:
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
    return argv + [recipe.suite, str(rootfs), recipe.mirror]


def mke2fs_argv(rootfs: Path, image: Path, size_mb: int) -> list[str]:
    """ext4 from a directory: no loop mount. No reserved blocks: nobody else needs them in a test VM."""
    return ["mke2fs", "-q", "-t", "ext4", "-m", "0", "-d", str(rootfs), "-L", LABEL, str(image), f"{size_mb}M"]


def customize(rootfs: Path) -> None:
    """Add what kernel-lab needs: its init, mount points, a hostname, no trace of the host's network."""
    init = _inside(rootfs, INIT_PATH)
    shutil.copyfile(BOOTSTRAP, init)
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


def check_python(rootfs: Path, log: Path, kept_log: Path) -> None:
    """The suites need the guest's python3: run it in the chroot (through qemu-user when foreign)."""
    try:
        proc.run(
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


def cached_image(recipe: Recipe, arch: Arch) -> dict[str, Any] | None:
    """The manifest of a finished image for this recipe and arch, or None."""
    doc = manifest.read(image_dir(recipe, arch) / MANIFEST)
    if doc and doc.get("key") == image_key(recipe, arch) and Path(doc.get("image", "")).is_file():
        return doc
    return None


def build_image(arch: Arch, recipe_path: Path, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build (or reuse) the image; return its manifest. Built in a temp dir under the cache, renamed at the end."""
    recipe = load_recipe(recipe_path)
    cached = cached_image(recipe, arch)
    if cached:
        return cached
    if os.geteuid() == 0:
        ensure_binfmt(arch)
    missing = image_prereqs(arch)
    if missing:
        raise UserError(f"cannot build {recipe.name} for {arch.name}; missing: " + "; ".join(missing))
    with exclusive(image_dir(recipe, arch)):
        # A parallel worker may have built it while we waited.
        return cached_image(recipe, arch) or _build_image(recipe, arch, progress)


def _build_image(recipe: Recipe, arch: Arch, progress: Callable[[str], None] | None) -> dict[str, Any]:
    final = image_dir(recipe, arch)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        doc = _build_in(tmp, final, recipe, arch, progress)
        _commit(tmp, final)
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
    return Path(build_image(arch, find_recipe(DEFAULT_RECIPE))["image"])


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
    tmp: Path, final: Path, recipe: Recipe, arch: Arch, progress: Callable[[str], None] | None
) -> dict[str, Any]:
    rootfs, log = tmp / "rootfs", tmp / "build.log"
    image = tmp / f"{final.name}.ext4"
    argv = mmdebstrap_argv(recipe, arch, rootfs)
    t0 = time.monotonic()
    try:
        proc.run(argv, deadline=proc.Deadline.after(BOOTSTRAP_TIMEOUT), log=log, on_line=progress)
    except proc.CommandFailed as exc:
        raise LabError(f"mmdebstrap failed: {exc}; log: {_failed_log(final)}") from exc
    t1 = time.monotonic()
    customize(rootfs)
    check_python(rootfs, log, _failed_log(final))
    packages = installed_packages(rootfs)
    mke2fs = mke2fs_argv(rootfs, image, recipe.size_mb)
    try:
        proc.run(mke2fs, deadline=proc.Deadline.after(TOOL_TIMEOUT), log=log)
    except proc.CommandFailed as exc:
        raise UserError(
            f"{recipe.path}: mke2fs failed ({(exc.tail.strip().splitlines() or ['?'])[-1]}); "
            f"if the files do not fit, raise size_mb (now {recipe.size_mb}); log: {_failed_log(final)}"
        ) from exc
    t2 = time.monotonic()
    shutil.rmtree(rootfs)
    doc = {
        "recipe": recipe.name,
        "recipe_path": str(recipe.path),
        "arch": arch.name,
        "debian_arch": arch.debian_arch,
        "key": image_key(recipe, arch),
        "builder_version": BUILDER_VERSION,
        "image": str(final / image.name),
        "sha256": manifest.sha256(image),
        "size_bytes": image.stat().st_size,
        "allocated_bytes": image.stat().st_blocks * 512,
        "label": LABEL,
        "init": "/" + INIT_PATH,
        "packages": list(recipe.packages),
        "installed": packages,
        "mmdebstrap": _mmdebstrap_version(),
        "reproducer": " ".join(argv),
        "durations": {"bootstrap": round(t1 - t0, 2), "mke2fs": round(t2 - t1, 2)},
        "duration": round(time.monotonic() - t0, 2),
        "log": str(final / log.name),
        "finished": time.time(),
    }
    manifest.write(tmp / MANIFEST, doc)
    return doc


def _commit(tmp: Path, final: Path) -> None:
    """Rename the finished image dir into place; if another build got there first, keep theirs."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / MANIFEST).is_file():
            shutil.rmtree(final, ignore_errors=True)  # a leftover without a manifest is unfinished
            os.rename(tmp, final)


# --- command line -------------------------------------------------------------------------------


def cmd_image_build(args: argparse.Namespace) -> int:
    arch = arches.get(args.arch)
    recipe_path = find_recipe(args.recipe)
    recipe = load_recipe(recipe_path)
    hit = cached_image(recipe, arch) is not None
    if not hit:
        rootfs = image_dir(recipe, arch).with_name("<tmp>") / "rootfs"
        print(f"$ {' '.join(mmdebstrap_argv(recipe, arch, rootfs))}", file=sys.stderr)
    doc = build_image(arch, recipe_path, progress=_progress_printer(arch.name))
    state = "up to date" if hit else f"built in {doc['duration']:.0f}s"
    print(f"{recipe.name} {arch.name}: {state}, {doc['allocated_bytes'] >> 20} MiB used", file=sys.stderr)
    print(doc["image"])
    return 0


def _progress_printer(arch: str) -> Callable[[str], None]:
    """mmdebstrap's own `I:` stage lines, which are few: one per stage."""

    def show(line: str) -> None:
        if line.startswith(("I: ", "W: ", "E: ")):
            sys.stderr.write(f"[image {arch}] {line}\n")

    return show


def register_cli(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `klab image build`; lab.cli calls this."""
    image = subparsers.add_parser("image", help="guest root filesystem images")
    sub = image.add_subparsers(dest="image_command", required=True)
    build = sub.add_parser("build", help="build (or reuse) an ext4 guest image; print its path")
    build.add_argument("--arch", required=True, help="x86_64 or arm64")
    build.add_argument("--recipe", default=DEFAULT_RECIPE, help="recipe name from images/ or a path to a .yaml")
    build.set_defaults(func=cmd_image_build)
