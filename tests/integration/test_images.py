"""Real image builds for every arch (minutes when cold; reused from ~/.cache/kernel-lab when present).

The ext4 image is inspected with debugfs and e2fsck: never mounted.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab import arches, debian, proc
from lab.image import build, hostprep, recipes
from lab.image.build import ImageManifest
from lab.paths import IMAGES

pytestmark = pytest.mark.kernel
RECIPE = IMAGES / "debian-bookworm.yaml"


def debugfs(image: Path, request: str) -> str:
    return proc.run(["debugfs", "-R", request, str(image)], deadline=proc.Deadline.after(60)).output


def stat(image: Path, path: str) -> tuple[str, str, str]:
    """(type, octal mode, fast-link target or '') of `path` in the image."""
    out = debugfs(image, f"stat {path}")
    found = re.search(r"Type: (\w+)\s+Mode:\s+(\d+)", out)
    assert found, f"{path} not in {image}:\n{out}"
    link = re.search(r'Fast link dest: "([^"]+)"', out)
    return found.group(1), found.group(2), link.group(1) if link else ""


@pytest.fixture(scope="module", params=sorted(arches.ARCHES))
def built(request: pytest.FixtureRequest) -> tuple[arches.Arch, ImageManifest]:
    arch = arches.get(request.param)
    host = hostprep.Host.this()
    if host.euid == 0:
        hostprep.ensure_binfmt(arch, host)
    missing = hostprep.image_prereqs(arch, host)
    if missing:
        pytest.skip(f"cannot build {arch.name} images here: {'; '.join(missing)}")
    return arch, build.build_image(arch, RECIPE)


def test_image_has_klab_init(built: tuple[arches.Arch, ImageManifest]) -> None:
    _, doc = built
    image = Path(doc.image)
    assert stat(image, "/sbin/klab-init")[:2] == ("regular", "0755")
    assert debugfs(image, "cat /sbin/klab-init").endswith(build.BUILDER.bootstrap.read_text())
    for mount_point in build.MOUNT_POINTS:
        assert stat(image, f"/{mount_point}")[0] == "directory"
    assert debugfs(image, "cat /etc/hostname").strip().endswith(build.HOSTNAME)


def test_image_has_python_for_its_arch(built: tuple[arches.Arch, ImageManifest]) -> None:
    arch, doc = built
    image = Path(doc.image)
    kind, _, target = stat(image, "/usr/bin/python3")
    if kind == "symlink":
        kind, mode, _ = stat(image, f"/usr/bin/{target}")
        assert (kind, mode) == ("regular", "0755")
    status = debugfs(image, "cat /var/lib/dpkg/status")
    assert re.search(rf"Package: python3\.\d+-minimal\n(?:.+\n)*?Architecture: {arch.debian_arch}\n", status)
    assert doc.installed["python3"]


def test_image_is_a_clean_ext4_without_apt_lists(built: tuple[arches.Arch, ImageManifest]) -> None:
    _, doc = built
    image = Path(doc.image)
    proc.run(["e2fsck", "-fn", str(image)], deadline=proc.Deadline.after(120))
    assert "klab-root" in proc.run(["e2label", str(image)], deadline=proc.Deadline.after(30)).output
    lists = debugfs(image, "ls /var/lib/apt/lists")
    assert "Packages" not in lists and "InRelease" not in lists
    assert doc.size_bytes == image.stat().st_size == recipes.load_recipe(RECIPE).size_mb << 20


def test_second_build_is_a_cache_hit(built: tuple[arches.Arch, ImageManifest]) -> None:
    arch, doc = built
    stamp = Path(doc.image).stat().st_mtime_ns
    nothing = hostprep.Host(euid=1000, which=lambda tool: None)  # could build nothing: a hit must not need to
    again = build.build_image(arch, RECIPE, host=nothing)
    assert again == doc
    assert Path(again.image) == build.image_path(recipes.load_recipe(RECIPE), arch)
    assert Path(again.image).stat().st_mtime_ns == stamp


def test_image_comes_from_the_hosts_own_archive(built: tuple[arches.Arch, ImageManifest]) -> None:
    """The recipe names no mirror: mmdebstrap used the archive of the host's apt sources."""
    _, doc = built
    assert doc.mirror and doc.mirror in {uri for e in debian.host_entries() for uri in e.uris}
    assert doc.mirror in doc.reproducer
