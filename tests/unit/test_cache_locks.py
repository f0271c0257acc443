"""Parallel workers asking for the same cache entry: one makes it, the others wait and reuse it.

A cold `make test` runs two xdist workers that both need Debian's 6.12 tree
first; without the lock the second unpacker deleted the tree the first one
was already configuring (every test of that cell then errored).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from lab import arches, images, paths, source


def test_exclusive_serializes_holders(tmp_path: Path) -> None:
    entry = tmp_path / "entry"
    inside: list[int] = []
    overlaps: list[int] = []

    def hold(n: int) -> None:
        with paths.exclusive(entry):
            inside.append(n)
            if len(inside) > 1:
                overlaps.append(n)
            time.sleep(0.05)
            inside.remove(n)

    threads = [threading.Thread(target=hold, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    assert (tmp_path / "entry.lock").is_file() and not entry.exists()


def test_parallel_fetches_unpack_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAB_CACHE", str(tmp_path))
    unpacked: list[Path] = []

    def slow_unpack(version: str, final: Path) -> None:
        time.sleep(0.1)  # apt-get download + tar: long enough for the other worker to arrive
        final.mkdir()
        (final / "Makefile").write_text("VERSION = 6\n")
        (final / ".klab-source.json").write_text("{}\n")
        unpacked.append(final)

    monkeypatch.setattr(source, "_download_and_unpack", slow_unpack)
    got: list[Path] = []
    threads = [threading.Thread(target=lambda: got.append(source.fetch("6.12"))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert unpacked == [tmp_path / "src" / "linux-6.12"]
    assert got == unpacked * 2
    assert source.fetch("6.12") == unpacked[0] and len(unpacked) == 1  # later calls only look


def test_parallel_image_builds_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAB_CACHE", str(tmp_path))
    built: list[str] = []

    def slow_build(recipe: images.Recipe, arch: arches.Arch, progress: object) -> dict[str, str]:
        time.sleep(0.1)  # mmdebstrap: minutes, in truth
        built.append(arch.name)
        return {"image": "built"}

    monkeypatch.setattr(images, "cached_image", lambda recipe, arch: {"image": "cached"} if built else None)
    monkeypatch.setattr(images, "_build_image", slow_build)
    monkeypatch.setattr(images, "ensure_binfmt", lambda arch: None)  # host set-up is not what this test is about
    monkeypatch.setattr(images, "image_prereqs", lambda arch: [])
    recipe = images.find_recipe(images.DEFAULT_RECIPE)
    got: list[str] = []
    threads = [
        threading.Thread(target=lambda: got.append(images.build_image(arches.get("arm64"), recipe)["image"]))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert built == ["arm64"]
    assert sorted(got) == ["built", "cached"]
