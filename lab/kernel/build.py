"""Kernel builds: configure from fragments, prove the config, compile, record build.json.

One build dir per (source identity, arch, fragments): rebuilding in place is
what keeps builds incremental and ccache warm (copying a build dir
dirties every object).
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab import manifest, proc
from lab.arches import Arch, cross_prefix
from lab.errors import BuildError, ConfigMismatch, LabBaseError, UserError
from lab.kernel import explain, kconfig, kept
from lab.kernel.record import CONFIG_STAMP, MANIFEST, Artifacts, BuildManifest, ConfigStamp, FragmentInfo, SourceInfo
from lab.kernel.source import Source, SourceKind, digest, kernelversion
from lab.paths import cache_dir, cache_root, exclusive

BUILD_TIMEOUT = 3 * 3600.0
CONFIG_TIMEOUT = 600.0


@dataclass(frozen=True)
class BuildRequest:
    source: Source
    arch: Arch
    fragments: tuple[kconfig.Fragment, ...]
    llvm: bool = False
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    build_dir: Path | None = None  # default: keyed under the cache
    # Workflows (bisect, try) build trees they or an earlier run built before: reuse the kernel kept
    # for the same git tree content (lab.kernel.kept) instead of rebuilding, and keep what they build.
    # Not for `klab build`, whose user expects the build dir they named, vmlinux included.
    kept: bool = False

    @property
    def key(self) -> str:
        return digest(self.source.identity, self.arch.name, kconfig.fragments_digest(self.fragments), str(self.llvm))

    def directory(self) -> Path:
        if self.build_dir is not None:
            return self.build_dir.resolve()
        slug = self.source.path.name.replace("linux-source-", "linux-")
        return cache_dir("build") / f"{self.arch.name}-{slug}-{self.key}"


def make_argv(req: BuildRequest, bdir: Path, *targets: str) -> list[str]:
    """The kernel make command line for this request (printed, logged and rerunnable)."""
    argv = ["make", "-C", str(req.source.path), f"O={bdir}", f"ARCH={req.arch.kernel_arch}"]
    ccache = shutil.which("ccache")
    if req.llvm:
        argv.append("LLVM=1")
        if ccache:
            argv += ["CC=ccache clang", "HOSTCC=ccache clang"]
    else:
        prefix = cross_prefix(req.arch)
        if prefix:
            argv.append(f"CROSS_COMPILE={prefix}")
        if ccache:
            argv += [f"CC=ccache {prefix}gcc", "HOSTCC=ccache gcc"]
    argv.append(f"-j{req.jobs}")
    return argv + list(targets)


def build_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CCACHE_DIR=str(cache_dir("ccache")),
        CCACHE_MAXSIZE=env.get("CCACHE_MAXSIZE", "8G"),
        CCACHE_COMPILERCHECK="content",
        # Hit across build dirs too (a new fragment set is a new dir); debug info paths may then point elsewhere.
        CCACHE_NOHASHDIR="true",
        # Paths under the cache become relative to the build dir, so two trees laid out alike under the
        # cache (the same relative path from build dir to tree, as for cache/build/X and cache/src/linux-6.12
        # against a bisect's cache/bisect-scenario/build/x86_64 and cache/bisect-scenario/src/linux-6.12)
        # share compiler results.
        CCACHE_BASEDIR=str(cache_root()),
        # Kbuild passes -fmacro-prefix-map=<absolute srctree>/= so that __FILE__ is relative: the option
        # changes nothing in the object, but its absolute path would keep two trees from sharing.
        CCACHE_IGNOREOPTIONS="-fmacro-prefix-map=*",
        # Never depend mode (CCACHE_DEPEND): it skips the preprocessed pass in which ccache spots `.incbin`,
        # so arch/x86/boot/compressed/piggy.o (an .incbin of the compressed vmlinux, and a text that only
        # names its sizes) came back from the cache with another build's kernel inside: a patch that
        # kept the sizes booted the old kernel. The guest's `uname -v` is now checked against the build.
        # Fixed build identity: reproducible images and ccache hits on init/version.c.
        KBUILD_BUILD_USER="klab",
        KBUILD_BUILD_HOST="kernel-lab",
    )
    return env


# Options whose build runs a host tool: (option, tool, the Debian package that has it).
_TOOL_OPTIONS = (
    ("DEBUG_INFO_BTF", "pahole", "dwarves"),
    ("KERNEL_LZ4", "lz4", "lz4"),
    ("KERNEL_XZ", "xz", "xz-utils"),
    ("KERNEL_ZSTD", "zstd", "zstd"),
)


def preflight(req: BuildRequest) -> None:
    """Refuse early, with the fix, when a tool the build needs is missing."""
    tools = {"make": "make", "flex": "flex", "bison": "bison", "bc": "bc", "gcc": "gcc"}
    if req.llvm:
        tools.update({"clang": "clang", "ld.lld": "lld"})
    else:
        prefix = cross_prefix(req.arch)
        if prefix:
            tools[f"{prefix}gcc"] = req.arch.cross_package
    wanted = kconfig.merged_request(req.fragments)
    tools.update({tool: package for option, tool, package in _TOOL_OPTIONS if wanted.get(option) == "y"})
    for tool, package in tools.items():
        if shutil.which(tool) is None:
            raise UserError(f"{tool} not found: install the Debian package {package} (or run `make setup`)")


def request_for(req: BuildRequest) -> kconfig.Request:
    """What the fragments ask of this tree: version conditions applied, optional options looked up in its Kconfig."""
    major, minor, *_ = (int(x) for x in kernelversion(req.source.path).split("."))
    index: list[explain.KconfigIndex] = []

    def defined(option: str) -> bool:
        if not index:
            index.append(explain.KconfigIndex(req.source.path, req.arch.srcarch))
        return index[0].defines(option)

    return kconfig.resolve(req.fragments, (major, minor), defined)


def configure(req: BuildRequest, bdir: Path, log: Path) -> Path:
    """tinyconfig + merge_config.sh + olddefconfig, then prove every option that applies landed.

    merge_config.sh sees each fragment as it applies to this tree (written
    under .klab-fragments/), so an option gone from this kernel is never asked
    for. An unchanged .config keeps its old mtime, so make does not rerun
    syncconfig and a no-change rebuild stays a no-op.
    """
    config = bdir / ".config"
    old = (config.read_bytes(), config.stat().st_mtime_ns) if config.is_file() else None
    request = request_for(req)
    applied = bdir / ".klab-fragments"
    applied.mkdir(exist_ok=True)
    paths = []
    for i, frag in enumerate(req.fragments):
        path = applied / f"{i:02d}-{frag.name.replace('/', '-')}.config"
        path.write_text(kconfig.applicable_text(frag, request))
        paths.append(str(path))
    env = build_env()
    base = make_argv(req, bdir)
    run = _runner(log, env, proc.Deadline.after(CONFIG_TIMEOUT))
    run([*base, "tinyconfig"], None)
    merge = str(req.source.path / "scripts/kconfig/merge_config.sh")
    run([merge, "-m", "-O", str(bdir), str(config), *paths], bdir)
    run([*base, "olddefconfig"], None)
    if old is not None and config.read_bytes() == old[0]:
        os.utime(config, ns=(old[1], old[1]))
    misses = explain.validate(request.wanted, kconfig.read_config(config), req.source.path, req.arch.srcarch)
    if misses:
        detail = "\n".join("  " + m.describe() for m in misses)
        raise ConfigMismatch(f"{len(misses)} requested option(s) did not land in the .config:\n{detail}")
    return config


def configure_dir(req: BuildRequest, bdir: Path, log: Path) -> Path:
    """`configure` in `bdir`, created if needed; a new dir whose config fails is removed, not left half-made.

    Its evidence (.config, the log, the fragments as applied) moves to the
    cache's failed/ dir first, and the error says where: the user can read why.
    """
    fresh = not bdir.exists()
    bdir.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    (bdir / MANIFEST).unlink(missing_ok=True)  # a dir being reconfigured or rebuilt must not look finished
    try:
        return configure(req, bdir, log)
    except (ConfigMismatch, BuildError) as exc:
        where = bdir
        if fresh:
            where = _keep_evidence(bdir, log)
            shutil.rmtree(bdir, ignore_errors=True)
        if isinstance(exc, BuildError):
            raise BuildError(str(exc), where / log.name, exc.tail) from exc
        raise ConfigMismatch(f"{exc}\n  the .config and {log.name} are in {where}") from exc
    except LabBaseError:
        if fresh:
            shutil.rmtree(bdir, ignore_errors=True)
        raise


def _keep_evidence(bdir: Path, log: Path) -> Path:
    """Copy what explains a failed configure out of a build dir that is about to go."""
    kept = cache_dir("failed") / f"{bdir.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    kept.mkdir(parents=True, exist_ok=True)
    for path in (bdir / ".config", log):
        if path.is_file():
            shutil.copyfile(path, kept / path.name)
    if (bdir / ".klab-fragments").is_dir():
        shutil.copytree(bdir / ".klab-fragments", kept / "fragments", dirs_exist_ok=True)
    return kept


def _runner(log: Path, env: dict[str, str], deadline: proc.Deadline) -> Callable[[list[str], Path | None], None]:
    def run(argv: list[str], cwd: Path | None) -> None:
        try:
            proc.run(argv, deadline=deadline, log=log, env=env, cwd=cwd)
        except proc.CommandFailed as exc:
            raise BuildError(f"configuration step failed: {exc}", log, exc.tail) from exc

    return run


@dataclass(frozen=True)
class Fingerprint:
    """What the tree looks like now: every file (is a rebuild needed?) and the Kconfig files (a reconfigure?)."""

    files: str
    kconfig: str


def source_fingerprint(path: Path) -> Fingerprint:
    """Hashes of each file's path, size and mtime, in one walk: detects edits without running make."""
    files, kconf = hashlib.sha256(), hashlib.sha256()
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        for name in sorted(names):
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            line = f"{root}/{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
            files.update(line)
            if name.startswith("Kconfig") or (name == "Makefile" and root == str(path)):
                kconf.update(line)
    return Fingerprint(files.hexdigest(), kconf.hexdigest())


@dataclass(frozen=True)
class BuildResult:
    """A build dir's manifest, and whether this call found it already up to date (no make run)."""

    manifest: BuildManifest
    up_to_date: bool
    reused: bool = False  # a kept kernel of the same tree content (lab.kernel.kept), not this build dir's


def _previous(req: BuildRequest, bdir: Path) -> BuildManifest | None:
    """The last finished build of this dir for this request, or None."""
    previous = BuildManifest.read_if_valid(bdir / MANIFEST)
    return previous if previous is not None and previous.key == req.key else None


def _config_is_current(req: BuildRequest, bdir: Path, fingerprint: Fingerprint) -> Path | None:
    """The .config of the last configure when no Kconfig file changed since: no need to configure again.

    Fragments are part of the build dir's key, so only the tree's Kconfig files
    (and its top Makefile, which sets the version) can change the outcome. The
    stamp is separate from build.json so that a commit that fails to compile
    (a bisect step) does not cost the next one a reconfigure.
    """
    config = bdir / ".config"
    stamp = ConfigStamp.read_if_valid(bdir / CONFIG_STAMP)
    if stamp is None or stamp.key != req.key or stamp.kconfig_fingerprint != fingerprint.kconfig:
        return None
    return config if config.is_file() and manifest.sha256(config) == stamp.config_sha256 else None


def _stamp_config(req: BuildRequest, config: Path, fingerprint: Fingerprint) -> None:
    ConfigStamp(req.key, fingerprint.kconfig, manifest.sha256(config)).write(config.parent / CONFIG_STAMP)


def build(req: BuildRequest, progress: Callable[[str], None] | None = None) -> BuildResult:
    """Configure and compile; return the build manifest. A no-change rebuild returns at once.

    One build at a time per build dir: parallel test workers asking for the same
    kernel wait for the first one instead of corrupting its tree.
    """
    preflight(req)
    bdir = req.directory()
    with exclusive(bdir):
        return _build_locked(req, bdir, progress)


def _build_locked(req: BuildRequest, bdir: Path, progress: Callable[[str], None] | None) -> BuildResult:
    fingerprint = source_fingerprint(req.source.path)
    previous = _previous(req, bdir)
    if previous and previous.source.fingerprint == fingerprint.files and previous.image.is_file():
        return BuildResult(previous, up_to_date=True)
    key = _content_key(req) if req.kept else None
    found = kept.find(key) if key else None
    if found is not None:
        return BuildResult(found, up_to_date=True, reused=True)
    log = bdir / "build.log"
    t0 = time.monotonic()
    config = _config_is_current(req, bdir, fingerprint)
    if config is None:
        config = configure_dir(req, bdir, log)
        _stamp_config(req, config, fingerprint)
    else:
        log.write_text(f"# .config kept: no Kconfig file changed since the last configure ({config})\n")
        (bdir / MANIFEST).unlink(missing_ok=True)  # a rebuild in progress must not look finished
    t1 = time.monotonic()
    argv = make_argv(req, bdir, req.arch.image_target)
    try:
        proc.run(argv, deadline=proc.Deadline.after(BUILD_TIMEOUT), log=log, env=build_env(), on_line=progress)
    except proc.CommandFailed as exc:
        raise BuildError(f"kernel build failed: {exc}", log, exc.tail) from exc
    t2 = time.monotonic()
    doc = BuildManifest(
        key=req.key,
        arch=req.arch.name,
        source=SourceInfo(
            str(req.source.path), req.source.identity, req.source.describe, fingerprint.files, fingerprint.kconfig
        ),
        kernelrelease=(bdir / "include/config/kernel.release").read_text().strip(),
        fragments=tuple(FragmentInfo(f.name, str(f.path), f.sha256) for f in req.fragments),
        not_applicable=request_for(req).not_applicable,
        config_sha256=manifest.sha256(config),
        toolchain=toolchain_versions(req),
        durations={"config": round(t1 - t0, 2), "build": round(t2 - t1, 2)},
        artifacts=Artifacts(
            image=str(bdir / req.arch.image_path),
            vmlinux=str(bdir / "vmlinux"),
            config=str(config),
            system_map=str(bdir / "System.map"),
            log=str(log),
        ),
        reproducer=shlex.join(argv),
        finished=time.time(),
    )
    doc.write(bdir / MANIFEST)
    if key:
        kept.keep(key, doc)
    return BuildResult(doc, up_to_date=False)


def _content_key(req: BuildRequest) -> str | None:
    """Git trees only: their content has a name (the tree hash); a plain tree's would cost a full read."""
    if req.source.kind is not SourceKind.GIT:
        return None
    toolchain = sorted(toolchain_versions(req).items())
    parts = (req.arch.name, kconfig.fragments_digest(req.fragments), str(req.llvm), repr(toolchain))
    return kept.content_key(req.source.path, *parts)


def toolchain_versions(req: BuildRequest) -> dict[str, str]:
    prefix = "" if req.llvm else cross_prefix(req.arch)
    tools = {"cc": ["clang" if req.llvm else f"{prefix}gcc", "--version"], "make": ["make", "--version"]}
    if shutil.which("pahole"):
        tools["pahole"] = ["pahole", "--version"]
    if shutil.which("ccache"):
        tools["ccache"] = ["ccache", "--version"]
    versions = {}
    for name, argv in tools.items():
        try:
            versions[name] = proc.run(argv, deadline=proc.Deadline.after(30)).output.splitlines()[0].strip()
        except (proc.CommandFailed, IndexError):
            versions[name] = "unknown"
    return versions
