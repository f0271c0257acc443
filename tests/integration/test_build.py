"""Real kernel builds: Debian's linux-source fetched by klab, configured, validated and built.

Builds are cached under ~/.cache/kernel-lab: a warm run only checks that
nothing changed. The 6.1 tree holds the validation example (BPF_LSM without
MODULES on 6.1 silently loses BPF_JIT and BPF_LSM); 7.3 is where an option of
the default fragments (PROC_SYSCTL) no longer exists. No timing is asserted
here (bench/build.py measures): behaviour is, such as nothing recompiled.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import arches
from lab.kernel import kconfig, record, source
from lab.paths import REPO_ROOT, cache_root
from lab.vm import bootfiles

pytestmark = pytest.mark.kernel


def klab(*args: str, timeout: float = 3 * 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


@pytest.mark.parametrize("version", ["6.12", "7.3"])
def test_source_fetch_is_idempotent(version: str) -> None:
    first = klab("source", "fetch", "--version", version)
    assert first.returncode == 0, first.stderr
    tree = Path(first.stdout.strip())
    before = (tree.stat().st_ino, source.marker(tree).stat().st_mtime_ns)
    second = klab("source", "fetch", "--version", version)
    assert second.stdout == first.stdout
    assert (tree.stat().st_ino, source.marker(tree).stat().st_mtime_ns) == before, "fetched twice"
    assert (tree / "security/landlock/ruleset.c").is_file()
    assert source.resolve(tree).identity.startswith(f"debian:linux-source-{version}:")


def test_source_list_shows_what_the_archive_offers() -> None:
    run = klab("source", "fetch", "--list")
    assert run.returncode == 0, run.stderr
    versions = [line.split()[0] for line in run.stdout.splitlines()]
    assert {"6.1", "6.12", "7.3"} <= set(versions), run.stdout
    again = klab("source", "fetch", "--list")  # the archive's answer is kept until its lists refresh
    assert again.stdout == run.stdout and "the archive's answer from" in again.stderr, again.stderr


def test_a_version_the_archive_lacks_is_exit_2_and_leaves_nothing() -> None:
    run = klab("source", "fetch", "--version", "9.9")
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [
        "klab: error: linux-source-9.9 is not in the archive; `klab source fetch --list` shows the versions it has"
    ]
    assert not list((cache_root() / "src").glob("*9.9*")), "no lock, no temporary dir"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 32 MB filesystem (tmpfs) to fill: what a cache on a full disk sees."""
    where = tmp_path / "disk"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(where)]).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def test_a_full_disk_is_one_line_and_exit_128_before_apt_runs(small_disk: Path) -> None:
    env = dict(os.environ, KLAB_CACHE=str(small_disk / "cache"))
    run = subprocess.run(
        [sys.executable, "-m", "lab", "source", "fetch", "--version", "6.12"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    assert run.returncode == 128, run.stderr
    (line,) = run.stderr.splitlines()
    assert line.startswith(f"klab: error: no space left on the device holding {small_disk}/cache/apt (need about"), line
    assert not (small_disk / "cache" / "apt" / "apt.log").exists(), "apt never started"
    assert not list((small_disk / "cache").glob("src/linux-*")), "nothing half-made"


BPF_LSM_WITHOUT_MODULES = """\
# BPF LSM requested without CONFIG_MODULES: on 6.1, BPF_JIT depends on MODULES.
CONFIG_BPF_SYSCALL=y
CONFIG_BPF_JIT=y
CONFIG_PERF_EVENTS=y
CONFIG_KPROBES=y
CONFIG_KPROBE_EVENTS=y
CONFIG_SECURITY=y
CONFIG_BPF_LSM=y
"""


def test_config_catches_options_that_did_not_land_on_6_1(tmp_path: Path) -> None:
    frag = tmp_path / "bpf-no-modules.config"
    frag.write_text(BPF_LSM_WITHOUT_MODULES)
    bdir = tmp_path / "build"
    args = [
        "--src",
        "debian:6.1",
        "--arch",
        "x86_64",
        "--bare",
        "-f",
        "base",
        "-f",
        str(frag),
        "--build-dir",
        str(bdir),
    ]
    run = klab("config", *args)
    assert run.returncode == 1, run.stdout + run.stderr
    err = run.stderr
    jit = err.split("CONFIG_BPF_JIT=y did not land (now: not set): ")[1].splitlines()[0]
    assert jit.startswith("depends on MODULES (now n)"), jit
    lsm = err.split("CONFIG_BPF_LSM=y did not land (now: not set): ")[1].splitlines()[0]
    assert "BPF_JIT (now n)" in lsm and "=n=" not in lsm, lsm
    assert not bdir.exists(), "a failed config must not leave a half-written build dir"
    kept = Path(err.split("the .config and config.log are in ")[1].split()[0])
    assert (kept / ".config").is_file() and (kept / "config.log").is_file(), "the evidence must survive"


def test_extra_fragments_add_to_the_defaults(tmp_path: Path) -> None:
    """`-f my.config` is the common case: the defaults stay, the extra option lands too."""
    extra = tmp_path / "extra.config"
    extra.write_text("# an extra option a developer wants\nCONFIG_IKCONFIG=y\n")
    run = klab("config", "--arch", "x86_64", "-f", str(extra), "--build-dir", str(tmp_path / "build"))
    assert run.returncode == 0, run.stderr[-2000:]
    config = kconfig.read_config(tmp_path / "build/.config")
    assert config.get("IKCONFIG") == "y" and config.get("BPF_LSM") == "y" and config.get("SECURITY_LANDLOCK") == "y"


@pytest.mark.parametrize(("version", "arch_name"), [("6.12", "x86_64"), ("6.12", "arm64"), ("7.3", "x86_64")])
def test_build_default_fragments(version: str, arch_name: str) -> None:
    run = klab("build", "--src", f"debian:{version}", "--arch", arch_name)
    assert run.returncode == 0, run.stderr[-3000:]
    bdir = Path(run.stdout.strip().splitlines()[-1])
    doc = record.load(bdir)
    arch = arches.get(arch_name)
    offset, magic = arch.image_magic
    assert doc.image.read_bytes()[offset : offset + len(magic)] == magic
    bootfiles.check_kernel_image(arch, doc.image)  # the header size checks hold for a real kernel
    assert doc.arch == arch_name and doc.kernelrelease.startswith(f"{version}.")
    assert [f.name for f in doc.fragments] == [*kconfig.DEFAULT_FRAGMENTS, f"arch/{arch_name}"]
    config = kconfig.read_config(bdir / ".config")
    for option in ("BPF_LSM", "SECURITY_LANDLOCK", "SECURITY_YAMA", "DEBUG_INFO_BTF", "SECCOMP_FILTER", "BUG", "AUDIT"):
        assert config.get(option) == "y", option
    assert config["LSM"] == '"landlock,lockdown,yama,bpf"'
    # 7.3 folded PROC_SYSCTL into SYSCTL: the optional option is reported, never silently dropped.
    gone = version == "7.3"
    assert ("PROC_SYSCTL" in doc.not_applicable) == gone
    assert ("CONFIG_PROC_SYSCTL not requested: not in this kernel" in run.stderr) == gone
    assert config.get("SYSCTL") == "y"
    # Nothing changed: no make at all, and build.json is not rewritten.
    stamp = (bdir / "build.json").stat().st_mtime_ns
    again = klab("build", "--src", f"debian:{version}", "--arch", arch_name)
    assert again.returncode == 0 and "up to date" in again.stderr
    assert (bdir / "build.json").stat().st_mtime_ns == stamp


def test_touching_one_file_rebuilds_incrementally() -> None:
    tree = source.fetch("6.12")
    run = klab("build", "--arch", "x86_64")
    assert run.returncode == 0, run.stderr[-2000:]
    bdir = Path(run.stdout.strip().splitlines()[-1])
    os.utime(tree / "security/landlock/task.c")
    again = klab("build", "--arch", "x86_64")
    assert again.returncode == 0, again.stderr[-2000:]
    log = (bdir / "build.log").read_text()
    assert log.startswith("# .config kept"), "an edit to a .c file must not reconfigure"
    compiled = [ln for ln in log.splitlines() if ln.strip().startswith("CC ") and ln.strip().endswith(".o")]
    assert any("security/landlock/task.o" in ln for ln in compiled)
    assert len(compiled) < 20, compiled


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--src", "/nonexistent", "--arch", "x86_64"], "does not exist"),
        (["--src", "debian:seven", "--arch", "x86_64"], "give MAJOR.MINOR such as 6.12 or 7.3"),
        (["--arch", "sparc"], "unknown arch 'sparc'"),
        (["--arch", "x86_64", "-f", "no-such-fragment"], "unknown fragment 'no-such-fragment'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    run = klab("build", *args)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and message in run.stderr


def test_malformed_fragment_exit_2(tmp_path: Path) -> None:
    frag = tmp_path / "bad.config"
    frag.write_text("CONFIG_OK=y\nCONFIG_BROKEN = yes\n")
    run = klab("config", "--arch", "x86_64", "-f", str(frag))
    assert run.returncode == 2 and "bad.config:2: malformed fragment line" in run.stderr


def test_missing_cross_compiler_exit_2(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("make", "flex", "bison", "bc", "gcc", "pahole", "apt-get", "apt-cache", "dpkg-deb"):
        real = subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip()
        if real:
            (bindir / tool).symlink_to(real)
    env = dict(os.environ, PATH=f"{bindir}:{Path(sys.executable).parent}")
    run = subprocess.run(
        [sys.executable, "-m", "lab", "build", "--arch", "arm64"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    assert run.returncode == 2
    assert "aarch64-linux-gnu-gcc not found: install the Debian package gcc-aarch64-linux-gnu" in run.stderr
