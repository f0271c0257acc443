"""lab.image.build without building anything: keys, argv plans, the rootfs touches, cache hits, failures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lab import arches, proc
from lab.errors import LabError, UserError
from lab.image import build, recipes
from lab.paths import IMAGES
from tests.unit.test_hostprep import ENABLED, fake_host
from tests.unit.test_recipes import GOOD, write

X86 = arches.get("x86_64")
ARM64 = arches.get("arm64")


def test_key_is_stable_and_sensitive(tmp_path: Path) -> None:
    recipe = recipes.load_recipe(write(tmp_path, GOOD))
    key = build.image_key(recipe, X86)
    assert key == build.image_key(recipes.load_recipe(recipe.path), X86)
    assert len(key) == 16
    assert build.image_key(recipe, ARM64) != key
    moved = recipes.load_recipe(write(tmp_path / "..", GOOD))  # same bytes elsewhere: same key
    assert build.image_key(moved, X86) == key
    edited = recipes.load_recipe(write(tmp_path, GOOD + "# comment\n"))
    assert build.image_key(edited, X86) != key
    assert build.image_key(recipe, X86, build.Builder(version="next")) != key


def test_key_follows_bootstrap(tmp_path: Path) -> None:
    recipe = recipes.load_recipe(write(tmp_path, GOOD))
    key = build.image_key(recipe, X86)
    fake = tmp_path / "bootstrap"
    fake.write_text("#!/bin/sh\nexec /other\n")
    assert build.image_key(recipe, X86, build.Builder(bootstrap=fake)) != key


def test_image_path_is_content_addressed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAB_CACHE", str(tmp_path / "cache"))
    recipe = recipes.load_recipe(write(tmp_path, GOOD))
    path = build.image_path(recipe, ARM64)
    stem = f"tiny-arm64-{build.image_key(recipe, ARM64)}"
    assert path == tmp_path / "cache/images" / stem / f"{stem}.ext4"
    assert build.cached_image(recipe, ARM64) is None


def test_mmdebstrap_argv(tmp_path: Path) -> None:
    recipe = recipes.load_recipe(IMAGES / "debian-bookworm.yaml")
    argv = build.mmdebstrap_argv(recipe, ARM64, Path("/r"), "http://mirror.example/debian")
    assert argv[0] == "mmdebstrap"
    assert "--architectures=arm64" in argv
    assert "--variant=apt" in argv
    assert any(a.startswith("--include=") and "python3" in a and "openssh-server" in a for a in argv)
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in argv
    assert argv[-3:] == ["bookworm", "/r", "http://mirror.example/debian"]


def test_mke2fs_argv_makes_ext4_from_a_directory() -> None:
    argv = build.mke2fs_argv(Path("/r"), Path("/i.ext4"), 512)
    assert argv[:1] == ["mke2fs"]
    assert argv[argv.index("-t") + 1] == "ext4"
    assert argv[argv.index("-d") + 1] == "/r"
    assert argv[argv.index("-L") + 1] == "klab-root"
    assert argv[-2:] == ["/i.ext4", "512M"]


def test_customize_adds_init_mount_points_and_hostname(tmp_path: Path) -> None:
    rootfs = tmp_path / "root"
    (rootfs / "usr/sbin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "sbin").symlink_to("usr/sbin")  # merged /usr, as in bookworm
    build.customize(rootfs)
    init = rootfs / "usr/sbin/klab-init"
    assert init.read_bytes() == build.BUILDER.bootstrap.read_bytes()
    assert init.stat().st_mode & 0o777 == 0o755
    assert (rootfs / "klab").is_dir() and (rootfs / "results").is_dir()
    assert (rootfs / "etc/hostname").read_text() == "klab\n"


def test_customize_refuses_paths_leaving_the_rootfs(tmp_path: Path) -> None:
    rootfs = tmp_path / "root"
    rootfs.mkdir()
    (rootfs / "sbin").symlink_to(tmp_path)  # absolute link out of the tree
    with pytest.raises(LabError, match="outside the root filesystem"):
        build.customize(rootfs)


def test_installed_packages_reads_dpkg_status(tmp_path: Path) -> None:
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: python3\nStatus: install ok installed\nVersion: 3.11.2-1+b1\nDescription: x\n more\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        "Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b7\n"
    )
    assert build.installed_packages(tmp_path) == {"bash": "5.2.15-2+b7", "python3": "3.11.2-1+b1"}


def test_build_image_reports_missing_prereqs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KLAB_CACHE", str(tmp_path / "cache"))
    host = fake_host(tmp_path, root=False, tools={"mke2fs"}, qemu=True, binfmt=ENABLED)
    with pytest.raises(UserError, match=r"cannot build tiny for x86_64; missing: root: .*apt-get install mmdebstrap"):
        build.build_image(X86, write(tmp_path, GOOD), host=host)
    assert not list((tmp_path / "cache/images").iterdir())  # nothing half-written


def test_build_image_reuses_a_finished_image(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KLAB_CACHE", str(tmp_path / "cache"))
    recipe = recipes.load_recipe(write(tmp_path, GOOD))
    path = build.image_path(recipe, X86)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    doc = build.ImageManifest(
        recipe="tiny", recipe_path=str(recipe.path), arch="x86_64", debian_arch="amd64",
        key=build.image_key(recipe, X86), builder_version=build.BUILDER.version, image=str(path), sha256="0",
        size_bytes=0, allocated_bytes=0, label="klab-root", init="/sbin/klab-init", packages=recipe.packages,
        installed={}, mmdebstrap="1.3.5", mirror="http://mirror.example/debian", reproducer="mmdebstrap ...",
        durations={}, duration=0.0, log="", finished=0.0,
    )  # fmt: skip
    doc.write(path.parent / build.MANIFEST)
    nothing = fake_host(tmp_path, root=False, tools=set(), qemu=False, binfmt=None)  # could build nothing
    assert build.build_image(X86, recipe.path, host=nothing) == doc
    # Another schema (an older klab's image.json) is not trusted: it is rebuilt, here refused for prerequisites.
    (path.parent / build.MANIFEST).write_text(
        (path.parent / build.MANIFEST).read_text().replace('"schema": 2', '"schema": 1')
    )
    with pytest.raises(UserError, match="missing: root"):
        build.build_image(X86, recipe.path, host=nothing)


def test_failed_build_keeps_its_log_and_nothing_else(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KLAB_CACHE", str(tmp_path / "cache"))
    host = fake_host(tmp_path, root=True, tools={"mmdebstrap", "mke2fs"}, qemu=False, binfmt=None)

    def fail(argv: list[str], *, log: Path | None = None, **kwargs: object) -> None:
        assert log is not None
        log.write_text("E: cannot reach the mirror\n")
        raise proc.CommandFailed(argv, 25, "E: cannot reach the mirror", log, False)

    host = dataclasses.replace(host, run=fail, mirror=lambda: "http://mirror.example/debian")
    recipe = write(tmp_path, GOOD)
    with pytest.raises(LabError, match=r"mmdebstrap failed: .*log: .*tiny-x86_64-\w+\.failed\.log"):
        build.build_image(X86, recipe, host=host)
    # Only the log, beside the (empty) lock file that parallel builders of this image share.
    left = [p.name for p in (tmp_path / "cache/images").iterdir() if p.suffix != ".lock"]
    assert len(left) == 1 and left[0].endswith(".failed.log")
    assert "cannot reach the mirror" in (tmp_path / "cache/images" / left[0]).read_text()
