"""The files a guest boots from are checked by their own headers: a wrong one is exit 2, not a kernel failure."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from lab import arches
from lab.errors import UserError
from lab.vm import bootfiles

X86 = arches.get("x86_64")
ARM = arches.get("arm64")


def _bzimage(path: Path, *, setup_sects: int = 31, syssize: int = 30000, size: int | None = None) -> Path:
    """A file with a Linux/x86 boot header, `size` bytes long (default: what the header promises)."""
    want = (setup_sects + 1) * 512 + syssize * 16
    data = bytearray(want if size is None else size)
    data[0x1F1] = setup_sects
    struct.pack_into("<I", data, 0x1F4, syssize)
    data[0x202:0x206] = b"HdrS"
    path.write_bytes(bytes(data))
    return path


def _arm64_image(path: Path, *, image_size: int = 1 << 20, size: int | None = None) -> Path:
    data = bytearray(int(image_size * 0.96) if size is None else size)
    struct.pack_into("<Q", data, 16, image_size)
    data[56:60] = b"ARM\x64"
    path.write_bytes(bytes(data))
    return path


def test_whole_images_of_each_format_pass(tmp_path: Path) -> None:
    bootfiles.check_kernel_image(X86, _bzimage(tmp_path / "bzImage"))
    bootfiles.check_kernel_image(ARM, _arm64_image(tmp_path / "Image"))


def test_a_truncated_bzimage_is_refused_by_its_own_header(tmp_path: Path) -> None:
    bz = _bzimage(tmp_path / "bzImage", size=64 * 1024)
    with pytest.raises(UserError, match=r"header promises 496384 bytes but the file has 65536: truncated"):
        bootfiles.check_kernel_image(X86, bz)


@pytest.mark.parametrize("size", [4096, 600 * 1024])
def test_a_truncated_arm64_image_is_refused(tmp_path: Path, size: int) -> None:
    image = _arm64_image(tmp_path / "Image", image_size=2 << 20, size=size)
    with pytest.raises(UserError, match=rf"spans 2097152 bytes but the file has {size}"):
        bootfiles.check_kernel_image(ARM, image)


def test_an_arm64_image_longer_than_its_header_says_is_corrupt(tmp_path: Path) -> None:
    image = _arm64_image(tmp_path / "Image", image_size=1 << 20, size=(1 << 20) + 4096)
    with pytest.raises(UserError, match="truncated or corrupt"):
        bootfiles.check_kernel_image(ARM, image)


@pytest.mark.parametrize(
    ("arch", "make", "said"),
    [
        (ARM, _bzimage, "it is an x86_64 kernel image (bzImage): pass --arch x86_64"),
        (X86, _arm64_image, "it is an arm64 kernel image (Image): pass --arch arm64"),
    ],
)
def test_another_archs_kernel_is_named(tmp_path: Path, arch: arches.Arch, make: object, said: str) -> None:
    path = make(tmp_path / "kernel")  # type: ignore[operator]
    with pytest.raises(UserError) as err:
        bootfiles.check_kernel_image(arch, path)
    assert f"is not a kernel image for {arch.name} ({said})" in str(err.value)


@pytest.mark.parametrize(
    ("head", "said"),
    [(b"\x7fELF\x02\x01", "it is an ELF file (vmlinux?)"), (b"\x1f\x8b\x08", "it is gzip data (Image.gz?)"),
     (b"garbage", "no kernel header found in it")],
)  # fmt: skip
def test_files_often_mistaken_for_a_kernel_are_described_not_dumped(tmp_path: Path, head: bytes, said: str) -> None:
    path = tmp_path / "kernel"
    path.write_bytes(head + bytes(8192))
    with pytest.raises(UserError) as err:
        bootfiles.check_kernel_image(X86, path)
    message = str(err.value)
    assert f"({said}); pass the arch/x86/boot/bzImage of a build for x86_64" in message
    assert "\\x" not in message and "b'" not in message, "no Python bytes in a user's error"


def test_a_missing_kernel_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"does not exist; build one with `klab build --arch x86_64`"):
        bootfiles.check_kernel_image(X86, tmp_path / "nope")


def test_a_directory_is_not_a_kernel_image(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"is a directory; give the image file \(.*/arch/x86/boot/bzImage\?\) or"):
        bootfiles.check_kernel_image(X86, tmp_path)


def test_the_rootfs_must_carry_an_ext4_superblock(tmp_path: Path) -> None:
    good = tmp_path / "rootfs.ext4"
    data = bytearray(4096)
    data[1080:1082] = b"\x53\xef"
    good.write_bytes(bytes(data))
    bootfiles.check_rootfs_image(good)
    with pytest.raises(UserError, match=r"--rootfs /etc/passwd is not an ext4 image \(no superblock magic 0xEF53"):
        bootfiles.check_rootfs_image(Path("/etc/passwd"))
    with pytest.raises(UserError, match="does not exist"):
        bootfiles.check_rootfs_image(tmp_path / "nope.ext4")
