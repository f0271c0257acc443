"""Parallel workers asking for the same cache entry: one makes it, the others wait and reuse it.

A cold `make test` runs two xdist workers that both need Debian's 6.12 tree
first; without the lock the second unpacker deleted the tree the first one
was already configuring (every test of that cell then errored).

No sleeps: each test makes the overlap certain by holding the first worker
until every worker has reached the lock (`_Arrivals`), then checks that only
one of them did the work.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab import arches, debian, paths
from lab.image import build as image_build
from lab.image import hostprep, recipes
from lab.kernel import source


class _Arrivals:
    """Counts callers of `paths.exclusive` before they take the lock, so a holder can wait for the others."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *modules: object) -> None:
        self.count = 0
        self.cond = threading.Condition()
        real = paths.exclusive

        @contextlib.contextmanager
        def spy(entry: Path) -> Iterator[None]:
            with self.cond:
                self.count += 1
                self.cond.notify_all()
            with real(entry):
                yield

        for module in modules:
            monkeypatch.setattr(module, "exclusive", spy)

    def wait_for(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.count >= n, timeout=10), f"only {self.count} of {n} arrived"


def _run_threads(target: Callable[[], None], n: int) -> None:
    threads = [threading.Thread(target=target) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive(), "a worker never got the lock"


def test_exclusive_serializes_holders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = tmp_path / "entry"
    arrivals = _Arrivals(monkeypatch, paths)
    inside: list[int] = []
    overlaps: list[int] = []
    lock = threading.Lock()

    def hold() -> None:
        with paths.exclusive(entry):
            with lock:
                inside.append(1)
                overlaps.extend([1] if len(inside) > 1 else [])
            arrivals.wait_for(4)  # every other holder is now queued on the lock
            with lock:
                inside.pop()

    _run_threads(hold, 4)
    assert overlaps == []
    assert (tmp_path / "entry.lock").is_file() and not entry.exists()


def test_parallel_fetches_unpack_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAB_CACHE", str(tmp_path))
    arrivals = _Arrivals(monkeypatch, source)
    unpacked: list[Path] = []

    class Archive:  # the offer is asked for before the lock; the archive is the network's, not this test's
        def find(self, package: str) -> debian.Offer:
            return debian.Offer(package, "6.12.118-1", "bookworm")

    def unpack(archive: object, offer: debian.Offer, version: str, final: Path) -> None:
        arrivals.wait_for(2)  # the other worker is waiting on the lock while this one unpacks
        final.mkdir()
        (final / "Makefile").write_text("VERSION = 6\n")
        source.marker(final).write_text("{}\n")
        unpacked.append(final)

    monkeypatch.setattr(source, "_download_and_unpack", unpack)
    monkeypatch.setattr(source.debian, "Archive", Archive)
    got: list[Path] = []
    _run_threads(lambda: got.append(source.fetch("6.12")), 2)
    assert unpacked == [tmp_path / "src" / "linux-6.12"]
    assert got == unpacked * 2
    assert source.fetch("6.12") == unpacked[0] and len(unpacked) == 1  # later calls only look


def test_parallel_image_builds_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAB_CACHE", str(tmp_path))
    arrivals = _Arrivals(monkeypatch, image_build)
    built: list[str] = []

    def fake_build(recipe: recipes.Recipe, arch: arches.Arch, progress: object, host: object) -> dict[str, str]:
        arrivals.wait_for(2)
        built.append(arch.name)
        return {"image": "built"}

    monkeypatch.setattr(image_build, "cached_image", lambda recipe, arch: {"image": "cached"} if built else None)
    monkeypatch.setattr(image_build, "_build_image", fake_build)
    ready = hostprep.Host(euid=0, which=lambda tool: "/usr/bin/" + tool, native=lambda arch: True)
    recipe = recipes.find_recipe(recipes.DEFAULT_RECIPE)
    got: list[str] = []
    _run_threads(lambda: got.append(image_build.build_image(arches.get("arm64"), recipe, host=ready)["image"]), 2)
    assert built == ["arm64"]
    assert sorted(got) == ["built", "cached"]
