"""Build planning: make command lines, cache keys, and refusing bad input before anything runs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from lab import arches
from lab.errors import UserError
from lab.kernel import build, kconfig, record, source


def _tree(tmp_path: Path, name: str = "linux") -> Path:
    root = tmp_path / name
    (root / "scripts/kconfig").mkdir(parents=True, exist_ok=True)
    (root / "Kconfig").write_text("")
    (root / "scripts/kconfig/merge_config.sh").write_text("")
    (root / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\n")
    return root


def _request(
    tmp_path: Path, arch: str = "arm64", frags: tuple[str, ...] = ("base",), **kw: object
) -> build.BuildRequest:
    src = source.resolve(_tree(tmp_path))
    fragments = tuple(kconfig.load_fragments(frags, f"arch/{arches.get(arch).name}"))
    return build.BuildRequest(src, arches.get(arch), fragments, jobs=2, **kw)  # type: ignore[arg-type]


def test_make_argv_cross_compiles_arm64(tmp_path: Path) -> None:
    req = _request(tmp_path)
    argv = build.make_argv(req, Path("/b"), "Image")
    assert argv[:5] == ["make", "-C", str(req.source.path), "O=/b", "ARCH=arm64"]
    assert "CROSS_COMPILE=aarch64-linux-gnu-" in argv
    assert argv[-2:] == ["-j2", "Image"]


def test_make_argv_native_x86_has_no_cross_prefix(tmp_path: Path) -> None:
    argv = build.make_argv(_request(tmp_path, "x86_64"), Path("/b"), "bzImage")
    assert not any(a.startswith("CROSS_COMPILE=") for a in argv)


def test_make_argv_llvm(tmp_path: Path) -> None:
    argv = build.make_argv(_request(tmp_path, llvm=True), Path("/b"))
    assert "LLVM=1" in argv and not any(a.startswith("CROSS_COMPILE=") for a in argv)


def test_key_depends_on_arch_fragments_and_source(tmp_path: Path) -> None:
    base = _request(tmp_path)
    assert base.key == _request(tmp_path).key
    assert base.key != _request(tmp_path, "x86_64").key
    assert base.key != _request(tmp_path, frags=("base", "landlock")).key
    other = build.BuildRequest(source.resolve(_tree(tmp_path, "other")), base.arch, base.fragments)
    assert other.key != base.key
    assert base.directory().name.startswith("arm64-linux-")


def test_debian_tree_identity_comes_from_the_marker_beside_it(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    source.marker(root).write_text(json.dumps({"package": "linux-source-6.12", "version": "6.12.117-1"}))
    src = source.resolve(root)
    assert src.identity == "debian:linux-source-6.12:6.12.117-1"
    assert source.kernelversion(root) == "6.12.117"
    assert not any(p.name.startswith(".klab") for p in root.iterdir()), "git would pick up a marker inside the tree"


def test_a_git_repository_made_from_a_fetched_tree_is_a_git_tree(tmp_path: Path) -> None:
    """`git init; git add -A -f; git commit` on a fetched tree: bisect and try must see a git tree."""
    root = _tree(tmp_path)
    source.marker(root).write_text(json.dumps({"package": "linux-source-6.12", "version": "6.12.117-1"}))
    env = dict(
        os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t"
    )
    for argv in (["init", "-q"], ["add", "-A", "-f"], ["commit", "-qm", "import"]):
        subprocess.run(["git", "-C", str(root), *argv], check=True, env=env)
    src = source.resolve(root)
    assert src.identity == f"git:{root}"
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    assert src.describe == head.stdout.strip()  # no tags here: `git describe --always` gives the commit


@pytest.mark.parametrize("version", ["7", "7.3.4", "latest", "7.x", ""])
def test_bad_source_versions_are_refused_before_any_download(version: str) -> None:
    with pytest.raises(UserError, match="give MAJOR.MINOR such as 6.12 or 7.3"):
        source.check_version(version)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "file").write_text("x") and p / "file", "is a file, not a directory; pass the top of a kernel"),
        (lambda p: (p / "notkernel").mkdir() or p / "notkernel", "is not a kernel source tree"),
    ],
)
def test_bad_source_dirs(tmp_path: Path, setup, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match=message):
        source.resolve(setup(tmp_path))


def test_in_tree_build_is_refused(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / ".config").write_text("CONFIG_A=y\n")
    with pytest.raises(UserError, match="mrproper"):
        source.resolve(root)


def test_missing_cross_compiler_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    req = _request(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UserError, match="not found: install the Debian package"):
        build.preflight(req)


@pytest.mark.parametrize(
    ("present", "error"),
    [
        ((), "pahole not found: install the Debian package dwarves"),  # BTF, for the BPF LSM
        (("pahole",), "lz4 not found: install the Debian package lz4"),  # x86_64's image compression
    ],
)
def test_a_missing_tool_an_option_needs_names_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, present: tuple[str, ...], error: str
) -> None:
    req = _request(tmp_path, "x86_64", frags=("base", "bpf-lsm"))
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("make", "flex", "bison", "bc", "gcc", *present):
        (bindir / tool).write_text("#!/bin/sh\n")
        (bindir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    with pytest.raises(UserError, match=error):
        build.preflight(req)


def test_unknown_arch() -> None:
    with pytest.raises(UserError, match="unknown arch 'arm'; choose one of: arm64, x86_64"):
        arches.get("arm")
    assert arches.get("aarch64").name == "arm64"
    assert arches.get("amd64").name == "x86_64"


def test_arch_table_is_complete() -> None:
    for arch in arches.ARCHES.values():
        for name, value in vars(arch).items():
            assert value not in ("", None, ()), f"{arch.name}.{name} is empty"


def test_source_fingerprint_sees_touches(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / "security").mkdir()
    (root / "security/task.c").write_text("int x;\n")
    first = build.source_fingerprint(root)
    assert build.source_fingerprint(root) == first
    os.utime(root / "security/task.c", ns=(1, 1))
    touched_c = build.source_fingerprint(root)
    assert touched_c.files != first.files and touched_c.kconfig == first.kconfig  # rebuild, no reconfigure
    os.utime(root / "Kconfig", ns=(1, 1))
    touched_kconfig = build.source_fingerprint(root)
    assert touched_kconfig.kconfig != touched_c.kconfig  # Kconfig edits reconfigure


def test_config_is_kept_until_kconfig_or_config_changes(tmp_path: Path) -> None:
    req = _request(tmp_path, "x86_64")
    bdir = tmp_path / "out"
    bdir.mkdir()
    config = bdir / ".config"
    config.write_text("CONFIG_SECURITY_LANDLOCK=y\n")
    fingerprint = build.source_fingerprint(req.source.path)
    assert build._config_is_current(req, bdir, fingerprint) is None  # never configured here
    build._stamp_config(req, config, fingerprint)
    # A failed compile removes build.json but not the stamp: the next commit keeps the .config.
    (bdir / build.MANIFEST).unlink(missing_ok=True)
    assert build._config_is_current(req, bdir, fingerprint) == config
    other = _request(tmp_path, "x86_64", frags=("base", "landlock"))
    assert build._config_is_current(other, bdir, fingerprint) is None  # another request's stamp
    os.utime(req.source.path / "Kconfig", ns=(1, 1))
    assert build._config_is_current(req, bdir, build.source_fingerprint(req.source.path)) is None
    config.write_text("CONFIG_SECURITY_LANDLOCK=n\n")  # edited by hand: configure again
    assert build._config_is_current(req, bdir, fingerprint) is None


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p / "missing", r"--build .*/missing does not exist; give the dir `klab build` printed"),
        (lambda p: (p / "f").write_text("x") and p / "f", r"--build .*/f is a file, not a build dir; .* use --kernel"),
        (lambda p: p, r"has no build.json: not a finished klab build dir"),
        (lambda p: (p / "build.json").write_text("{") and p, r"build.json: not JSON \(cut short or overwritten\?\)"),
    ],
)
def test_bad_build_dirs_are_named_with_their_fix(tmp_path: Path, setup, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserError, match=message) as err:
        record.load(setup(tmp_path))
    assert "Expecting" not in str(err.value), "no raw JSON decoder text in a user's error"
