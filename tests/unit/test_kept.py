"""lab.kernel.kept: finished kernels found again by the content of the git tree they were built from.

Real git repositories (a few files each) and fake build dirs under a
temporary KLAB_CACHE; what is kept must boot alone (image, .config,
System.map, the uts header, the log), with the build dir gone.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from lab import arches
from lab.kernel import kept
from lab.kernel.record import Artifacts, BuildManifest, SourceInfo


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("KLAB_CACHE", str(root))
    return root


def repo(path: Path, files: dict[str, str], message: str = "one") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text)

    def git(*args: str) -> None:
        ident = ["-c", "user.name=t", "-c", "user.email=t@example.org"]
        subprocess.run(["git", "-C", str(path), *ident, *args], check=True, capture_output=True, timeout=60)

    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", message)
    return path


def finished_build(bdir: Path, image_bytes: bytes) -> BuildManifest:
    image = bdir / arches.get("x86_64").image_path
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(image_bytes)
    (bdir / ".config").write_text("CONFIG_SECURITY_LANDLOCK=y\n")
    (bdir / "System.map").write_text("ffffffff81000000 T _text\n")
    (bdir / kept.UTS_HEADER).parent.mkdir(parents=True)
    (bdir / kept.UTS_HEADER).write_text('#define UTS_VERSION "#3 SMP Mon Dec  7 10:00:00 UTC 2026"\n')
    (bdir / "build.log").write_text("# .config kept: ...\n")
    doc = BuildManifest(
        key="k", arch="x86_64", source=SourceInfo("/src", "git", "v6.12", "f", "kf"), kernelrelease="6.12.0",
        fragments=(), not_applicable={}, config_sha256="c0" * 32, toolchain={}, durations={},
        artifacts=Artifacts(str(image), str(bdir / "vmlinux"), str(bdir / ".config"), str(bdir / "System.map"),
                            str(bdir / "build.log")),
        reproducer="make", finished=1.0,
    )  # fmt: skip
    doc.write(bdir / "build.json")
    return doc


def test_the_same_tree_content_has_one_key_whatever_the_commit_or_path(tmp_path: Path) -> None:
    one = repo(tmp_path / "a", {"Makefile": "all:\n", "fs.c": "int x;\n"}, message="first")
    two = repo(tmp_path / "b", {"Makefile": "all:\n", "fs.c": "int x;\n"}, message="another commit, same tree")
    other = repo(tmp_path / "c", {"Makefile": "all:\n", "fs.c": "int y;\n"})
    assert kept.content_key(one, "x86_64") == kept.content_key(two, "x86_64") is not None
    assert kept.content_key(one, "x86_64") != kept.content_key(other, "x86_64")
    assert kept.content_key(one, "x86_64") != kept.content_key(one, "arm64"), "the parts are in the key"


def test_a_changed_or_untracked_file_or_no_git_has_no_key(tmp_path: Path) -> None:
    edited = repo(tmp_path / "edited", {"fs.c": "int x;\n"})
    (edited / "fs.c").write_text("int x = 1;\n")
    assert kept.content_key(edited, "x86_64") is None
    untracked = repo(tmp_path / "untracked", {"fs.c": "int x;\n"})
    (untracked / "new.c").write_text("int z;\n")  # a Makefile's wildcard may build it
    assert kept.content_key(untracked, "x86_64") is None
    plain = tmp_path / "plain"
    plain.mkdir()
    assert kept.content_key(plain, "x86_64") is None


def test_a_kept_kernel_is_found_with_its_files_after_the_build_dir_is_gone(tmp_path: Path, cache: Path) -> None:
    doc = finished_build(tmp_path / "build", b"HdrS kernel one")
    assert kept.find("k1") is None
    kept.keep("k1", doc)
    subprocess.run(["rm", "-rf", str(tmp_path / "build")], check=True)  # the next step's build rewrites it
    found = kept.find("k1")
    assert found is not None
    assert found.build_dir == cache / "kernels" / "k1"
    assert found.image.read_bytes() == b"HdrS kernel one"
    assert Path(found.artifacts.config).read_text() == "CONFIG_SECURITY_LANDLOCK=y\n"
    assert Path(found.artifacts.log).read_text().startswith("# .config kept")
    assert found.uts_version() == "#3 SMP Mon Dec  7 10:00:00 UTC 2026"
    assert found.artifacts.vmlinux == "", "vmlinux is not kept, and not claimed"
    assert dataclasses.replace(found, artifacts=doc.artifacts) == doc, "the rest of the record is the build's"


def test_only_the_kernels_used_last_stay(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kept, "KEEP", 2)
    for i in range(2):
        kept.keep(f"k{i}", finished_build(tmp_path / f"b{i}", f"HdrS {i}".encode()))
        os.utime(cache / "kernels" / f"k{i}", (1_000_000 + i, 1_000_000 + i))  # k0 kept first
    assert kept.find("k0") is not None  # a hit counts as use: k1 is now the one used longest ago
    kept.keep("k2", finished_build(tmp_path / "b2", b"HdrS 2"))
    assert sorted(p.name for p in (cache / "kernels").iterdir()) == ["k0", "k2"]
