"""lab.images without building anything: recipes, validation errors, keys, argv plans, prerequisites."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import arches, images, manifest, proc
from lab.errors import LabError, UserError
from lab.paths import IMAGES

X86 = arches.get("x86_64")
ARM64 = arches.get("arm64")
GOOD = """\
name: tiny
suite: bookworm
variant: apt
packages: [python3, kmod]
size_mb: 256
"""


def write(tmp_path: Path, text: str, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_shipped_recipes_load() -> None:
    for path in sorted(IMAGES.glob("*.yaml")):
        recipe = images.load_recipe(path)
        assert recipe.name == path.stem
        assert "python3" in recipe.packages


def test_minimal_recipe_defaults(tmp_path: Path) -> None:
    recipe = images.load_recipe(write(tmp_path, GOOD))
    assert recipe.packages == ("python3", "kmod")
    assert recipe.size_mb == 256
    assert recipe.components == ("main",)
    assert recipe.mirror.startswith("http")
    assert recipe.exclude == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD + "pkgs: [x]\n", r"tiny.yaml:6: unknown key 'pkgs'; known keys: name, suite"),
        (GOOD.replace("size_mb: 256\n", ""), r"missing key: size_mb; add them"),
        (GOOD.replace("size_mb: 256", "size_mb: big"), r"tiny.yaml:5: size_mb is 'big'; it must be a positive integer"),
        (GOOD.replace("size_mb: 256", "size_mb: 0"), r"tiny.yaml:5: size_mb is 0"),
        (GOOD.replace("size_mb: 256", "size_mb: true"), r"tiny.yaml:5: size_mb is True"),
        (GOOD.replace("[python3, kmod]", "python3"), r"tiny.yaml:4: packages is 'python3'; it must be a list"),
        (GOOD.replace("[python3, kmod]", "[Python 3]"), r"tiny.yaml:4: packages"),
        (GOOD.replace("variant: apt", "variant: fat"), r"tiny.yaml:3: variant is 'fat'; it must be one of: essential"),
        (GOOD.replace("suite: bookworm", "suite: 12"), r"tiny.yaml:2: suite is 12"),
        (GOOD + "mirror: ftp://x\n", r"tiny.yaml:6: mirror is 'ftp://x'; it must be an http\(s\) URL"),
        (GOOD + "components: []\n", r"tiny.yaml:6: components is \[\]"),
        (GOOD + "exclude: [usr/share/doc]\n", r"tiny.yaml:6: exclude .* absolute path globs"),
        (GOOD.replace("name: tiny", "name: other"), r"tiny.yaml:1: name 'other' differs from the file name; rename"),
        (GOOD + "packages: [\n", r"tiny.yaml:\d+: invalid YAML .*fix the syntax"),
        (GOOD + "  bad: indent\n", r"tiny.yaml:\d+: invalid YAML"),
        ("- a\n- b\n", r"tiny.yaml: an image recipe must be a mapping"),
        ("", r"tiny.yaml: an image recipe must be a mapping"),
    ],
)
def test_validation_errors(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        images.load_recipe(write(tmp_path, text))


def test_unreadable_recipe(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read image recipe"):
        images.load_recipe(tmp_path / "absent.yaml")


def test_find_recipe_by_name_and_path(tmp_path: Path) -> None:
    assert images.find_recipe("debian-bookworm") == IMAGES / "debian-bookworm.yaml"
    path = write(tmp_path, GOOD)
    assert images.find_recipe(str(path)) == path


def test_find_recipe_unknown_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unknown image recipe 'nope'; choose one of: .*debian-bookworm"):
        images.find_recipe("nope")
    with pytest.raises(UserError, match="does not exist"):
        images.find_recipe(str(tmp_path / "nope.yaml"))


def test_key_is_stable_and_sensitive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = images.load_recipe(write(tmp_path, GOOD))
    key = images.image_key(recipe, X86)
    assert key == images.image_key(images.load_recipe(recipe.path), X86)
    assert len(key) == 16
    assert images.image_key(recipe, ARM64) != key
    moved = images.load_recipe(write(tmp_path / "..", GOOD))  # same bytes elsewhere: same key
    assert images.image_key(moved, X86) == key
    edited = images.load_recipe(write(tmp_path, GOOD + "# comment\n"))
    assert images.image_key(edited, X86) != key
    monkeypatch.setattr(images, "BUILDER_VERSION", "next")
    assert images.image_key(recipe, X86) != key


def test_key_follows_bootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = images.load_recipe(write(tmp_path, GOOD))
    key = images.image_key(recipe, X86)
    fake = tmp_path / "bootstrap"
    fake.write_text("#!/bin/sh\nexec /other\n")
    monkeypatch.setattr(images, "BOOTSTRAP", fake)
    assert images.image_key(recipe, X86) != key


def test_image_path_is_content_addressed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KLAB_CACHE", str(tmp_path / "cache"))
    recipe = images.load_recipe(write(tmp_path, GOOD))
    path = images.image_path(recipe, ARM64)
    stem = f"tiny-arm64-{images.image_key(recipe, ARM64)}"
    assert path == tmp_path / "cache/images" / stem / f"{stem}.ext4"
    assert images.cached_image(recipe, ARM64) is None


def test_mmdebstrap_argv(tmp_path: Path) -> None:
    recipe = images.load_recipe(IMAGES / "debian-bookworm.yaml")
    argv = images.mmdebstrap_argv(recipe, ARM64, Path("/r"))
    assert argv[0] == "mmdebstrap"
    assert "--architectures=arm64" in argv
    assert "--variant=apt" in argv
    assert any(a.startswith("--include=") and "python3" in a and "openssh-server" in a for a in argv)
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in argv
    assert argv[-3:] == ["bookworm", "/r", "http://deb.debian.org/debian"]


def test_mke2fs_argv_makes_ext4_from_a_directory() -> None:
    argv = images.mke2fs_argv(Path("/r"), Path("/i.ext4"), 512)
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
    images.customize(rootfs)
    init = rootfs / "usr/sbin/klab-init"
    assert init.read_bytes() == images.BOOTSTRAP.read_bytes()
    assert init.stat().st_mode & 0o777 == 0o755
    assert (rootfs / "klab").is_dir() and (rootfs / "results").is_dir()
    assert (rootfs / "etc/hostname").read_text() == "klab\n"


def test_customize_refuses_paths_leaving_the_rootfs(tmp_path: Path) -> None:
    rootfs = tmp_path / "root"
    rootfs.mkdir()
    (rootfs / "sbin").symlink_to(tmp_path)  # absolute link out of the tree
    with pytest.raises(LabError, match="outside the root filesystem"):
        images.customize(rootfs)


def test_installed_packages_reads_dpkg_status(tmp_path: Path) -> None:
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text(
        "Package: python3\nStatus: install ok installed\nVersion: 3.11.2-1+b1\nDescription: x\n more\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n"
        "Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b7\n"
    )
    assert images.installed_packages(tmp_path) == {"bash": "5.2.15-2+b7", "python3": "3.11.2-1+b1"}


def fake_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, root: bool, tools: set[str], qemu: bool, binfmt: str | None
) -> None:
    """A host described by flags: euid, tools on PATH, qemu-user-static, binfmt_misc state."""
    monkeypatch.setattr("os.geteuid", lambda: 0 if root else 1000)
    monkeypatch.setattr("shutil.which", lambda tool: f"/usr/bin/{tool}" if tool in tools else None)
    monkeypatch.setattr(arches, "host", lambda: X86)
    qemu_dir = tmp_path / "bin"
    qemu_dir.mkdir()
    if qemu:
        (qemu_dir / "qemu-aarch64-static").write_text("")
    monkeypatch.setattr(images, "QEMU_USER_DIR", qemu_dir)
    binfmt_dir = tmp_path / "binfmt_misc"
    binfmt_dir.mkdir()
    if binfmt is not None:
        (binfmt_dir / "register").write_text("")
        if binfmt:
            (binfmt_dir / "qemu-aarch64").write_text(binfmt)
    monkeypatch.setattr(images, "BINFMT_DIR", binfmt_dir)


ENABLED = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\n"


@pytest.mark.parametrize(
    ("arch", "root", "tools", "qemu", "binfmt", "expected"),
    [
        (X86, True, {"mmdebstrap", "mke2fs"}, False, None, []),
        (X86, False, {"mmdebstrap", "mke2fs"}, False, None, ["root:"]),
        (X86, True, {"mke2fs"}, False, None, ["mmdebstrap: apt-get install mmdebstrap"]),
        (X86, True, {"mmdebstrap"}, False, None, ["mke2fs: apt-get install e2fsprogs"]),
        (ARM64, True, {"mmdebstrap", "mke2fs"}, True, ENABLED, []),
        (ARM64, True, {"mmdebstrap", "mke2fs"}, False, ENABLED, ["apt-get install qemu-user-static"]),
        (ARM64, True, {"mmdebstrap", "mke2fs"}, True, None, ["mount -t binfmt_misc binfmt_misc"]),
        (ARM64, True, {"mmdebstrap", "mke2fs"}, True, "", ["qemu-aarch64 not registered"]),
        (ARM64, True, {"mmdebstrap", "mke2fs"}, True, "disabled\nflags: F\n", ["qemu-aarch64 disabled"]),
        (ARM64, True, {"mmdebstrap", "mke2fs"}, True, "enabled\nflags: PO\n", ["lacks the F flag"]),
    ],
)
def test_prereqs(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    arch: arches.Arch,
    root: bool,
    tools: set[str],
    qemu: bool,
    binfmt: str | None,
    expected: list[str],
) -> None:
    fake_host(monkeypatch, tmp_path, root=root, tools=tools, qemu=qemu, binfmt=binfmt)
    monkeypatch.setattr(images, "KEYRING", Path(__file__))
    missing = images.image_prereqs(arch)
    assert len(missing) == len(expected), missing
    for item, want in zip(missing, expected, strict=True):
        assert want in item


def test_ensure_binfmt_registers_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_host(monkeypatch, tmp_path, root=True, tools=set(), qemu=True, binfmt="")
    conf = tmp_path / "binfmt.d"
    conf.mkdir()
    (conf / "qemu-aarch64.conf").write_text("# comment\n:qemu-aarch64:M::\\x7fELF:\\xff:/usr/libexec/x:OPF\n")
    monkeypatch.setattr(images, "BINFMT_CONF_DIRS", (conf,))
    images.ensure_binfmt(ARM64)
    assert (tmp_path / "binfmt_misc/register").read_text() == ":qemu-aarch64:M::\\x7fELF:\\xff:/usr/libexec/x:OPF"
    (tmp_path / "binfmt_misc/register").write_text("")
    (tmp_path / "binfmt_misc/qemu-aarch64").write_text(ENABLED)  # what the kernel does on registration
    images.ensure_binfmt(ARM64)
    assert (tmp_path / "binfmt_misc/register").read_text() == ""  # already there: nothing written
    images.ensure_binfmt(X86)  # native: nothing to do


def test_ensure_binfmt_without_qemu_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake_host(monkeypatch, tmp_path, root=True, tools=set(), qemu=False, binfmt="")
    with pytest.raises(UserError, match="apt-get install qemu-user-static"):
        images.ensure_binfmt(ARM64)


def test_build_image_reports_missing_prereqs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KLAB_CACHE", str(tmp_path / "cache"))
    fake_host(monkeypatch, tmp_path, root=False, tools={"mke2fs"}, qemu=True, binfmt=ENABLED)
    with pytest.raises(UserError, match=r"cannot build tiny for x86_64; missing: root: .*apt-get install mmdebstrap"):
        images.build_image(X86, write(tmp_path, GOOD))
    assert not list((tmp_path / "cache/images").iterdir())  # nothing half-written


def test_build_image_reuses_a_finished_image(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KLAB_CACHE", str(tmp_path / "cache"))
    recipe = images.load_recipe(write(tmp_path, GOOD))
    path = images.image_path(recipe, X86)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    doc = {"key": images.image_key(recipe, X86), "image": str(path)}
    manifest.write(path.parent / images.MANIFEST, doc)
    monkeypatch.setattr(images, "image_prereqs", lambda arch: pytest.fail("a cache hit checks nothing"))
    assert images.build_image(X86, recipe.path) == doc


def test_default_image_is_the_default_recipe_built_or_reused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(images, "build_image", lambda arch, path: {"image": f"/cache/{arch.name}/{path.name}"})
    assert images.default_image(ARM64) == Path(f"/cache/arm64/{images.DEFAULT_RECIPE}.yaml")


def test_cli_registers_image_build() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    images.register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["image", "build", "--arch", "arm64"])
    assert args.func is images.cmd_image_build
    assert args.recipe == "debian-bookworm"


def test_failed_build_keeps_its_log_and_nothing_else(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KLAB_CACHE", str(tmp_path / "cache"))
    fake_host(monkeypatch, tmp_path, root=True, tools={"mmdebstrap", "mke2fs"}, qemu=False, binfmt=None)
    monkeypatch.setattr(images, "KEYRING", Path(__file__))

    def fail(argv: list[str], *, log: Path | None = None, **kwargs: object) -> None:
        assert log is not None
        log.write_text("E: cannot reach the mirror\n")
        raise proc.CommandFailed(argv, 25, "E: cannot reach the mirror", log, False)

    monkeypatch.setattr("lab.proc.run", fail)
    recipe = write(tmp_path, GOOD)
    with pytest.raises(LabError, match=r"mmdebstrap failed: .*log: .*tiny-x86_64-\w+\.failed\.log"):
        images.build_image(X86, recipe)
    # Only the log, beside the (empty) lock file that parallel builders of this image share.
    left = [p.name for p in (tmp_path / "cache/images").iterdir() if p.suffix != ".lock"]
    assert len(left) == 1 and left[0].endswith(".failed.log")
    assert "cannot reach the mirror" in (tmp_path / "cache/images" / left[0]).read_text()
