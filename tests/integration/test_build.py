"""Real kernel builds: Debian's linux-source fetched by klab, configured, validated and built for both arches.

Builds are cached under ~/.cache/kernel-lab: a warm run only checks that
nothing changed. The 6.1 tree is used for the validation example that the
issue names (BPF_LSM without MODULES on 6.1 silently loses BPF_JIT and BPF_LSM).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import arches, kconfig, manifest, source
from lab.paths import REPO_ROOT

pytestmark = pytest.mark.kernel


def klab(*args: str, timeout: float = 3 * 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT
    )


def test_source_fetch_is_idempotent() -> None:
    first = klab("source", "fetch", "--version", "6.12")
    assert first.returncode == 0, first.stderr
    start = time.monotonic()
    second = klab("source", "fetch", "--version", "6.12")
    assert second.stdout == first.stdout and time.monotonic() - start < 10
    tree = Path(first.stdout.strip())
    assert (tree / "security/landlock/ruleset.c").is_file()
    assert source.resolve(tree).identity.startswith("debian:linux-source-6.12:")


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
    tree = source.fetch("6.1")
    frag = tmp_path / "bpf-no-modules.config"
    frag.write_text(BPF_LSM_WITHOUT_MODULES)
    bdir = tmp_path / "build"
    run = klab("config", "--src", str(tree), "--arch", "x86_64", "-f", str(frag), "--build-dir", str(bdir))
    assert run.returncode == 1, run.stdout + run.stderr
    err = run.stderr
    assert "CONFIG_BPF_JIT=y did not land (now: not set): depends on" in err
    assert "MODULES=n" in err.split("CONFIG_BPF_JIT=y did not land")[1].splitlines()[0]
    assert "CONFIG_BPF_LSM=y did not land (now: not set)" in err
    assert "BPF_JIT=n" in err.split("CONFIG_BPF_LSM=y did not land")[1].splitlines()[0]
    assert not bdir.exists(), "a failed config must not leave a half-written build dir"


@pytest.mark.parametrize("arch_name", ["x86_64", "arm64"])
def test_build_default_fragments(arch_name: str) -> None:
    run = klab("build", "--arch", arch_name)
    assert run.returncode == 0, run.stderr[-3000:]
    bdir = Path(run.stdout.strip().splitlines()[-1])
    doc = manifest.read(bdir / "build.json")
    assert doc is not None
    arch = arches.get(arch_name)
    image = Path(doc["artifacts"]["image"])
    offset, magic = arch.image_magic
    assert image.read_bytes()[offset : offset + len(magic)] == magic
    assert doc["arch"] == arch_name and doc["kernelrelease"].startswith("6.12.")
    assert [f["name"] for f in doc["fragments"]] == [*kconfig.DEFAULT_FRAGMENTS, f"arch/{arch_name}"]
    config = kconfig.read_config(bdir / ".config")
    for option in ("BPF_LSM", "SECURITY_LANDLOCK", "SECURITY_YAMA", "DEBUG_INFO_BTF", "SECCOMP_FILTER", "BUG"):
        assert config.get(option) == "y", option
    assert config["LSM"] == '"landlock,lockdown,yama,bpf"'
    # Nothing changed: a no-op in seconds.
    start = time.monotonic()
    again = klab("build", "--arch", arch_name)
    assert again.returncode == 0 and "up to date" in again.stderr
    assert time.monotonic() - start < 30


def test_touching_one_file_rebuilds_incrementally() -> None:
    tree = source.fetch("6.12")
    run = klab("build", "--arch", "x86_64")
    assert run.returncode == 0, run.stderr[-2000:]
    bdir = Path(run.stdout.strip().splitlines()[-1])
    touched = tree / "security/landlock/task.c"
    os.utime(touched)
    start = time.monotonic()
    again = klab("build", "--arch", "x86_64")
    took = time.monotonic() - start
    assert again.returncode == 0, again.stderr[-2000:]
    log = (bdir / "build.log").read_text()
    compiled = [ln for ln in log.splitlines() if ln.strip().startswith("CC ") and ln.strip().endswith(".o")]
    assert any("security/landlock/task.o" in ln for ln in compiled)
    assert len(compiled) < 20, compiled
    assert took < 600


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--src", "/nonexistent", "--arch", "x86_64"], "does not exist"),
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
    for tool in ("make", "flex", "bison", "bc", "gcc", "pahole", "apt-get", "dpkg-deb"):
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
