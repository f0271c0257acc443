"""The files a guest boots from, checked before QEMU starts: a wrong one is the user's mistake, not the kernel's.

A garbage kernel with a valid magic boots and waits for its deadline; a
rootfs that is not ext4 makes the kernel panic "VFS: Unable to mount root fs".
Both read as "kernel bad" to CI and bisect, so their own headers are read
first and the run stops with exit 2 and one line naming the file.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from lab import arches
from lab.arches import Arch
from lab.errors import UserError

_HEAD = 4096  # every header read here lies in the first page


def _bzimage_problem(head: bytes, size: int) -> str:
    """Linux/x86 boot protocol: setup_sects at 0x1f1 (0 means 4), syssize (16-byte units) at 0x1f4."""
    setup_sects = head[0x1F1] or 4
    (syssize,) = struct.unpack_from("<I", head, 0x1F4)
    want = (setup_sects + 1) * 512 + syssize * 16
    if syssize == 0 or size < want:
        return f"its header promises {want} bytes but the file has {size}: truncated or not a bzImage"
    return ""


def _image_problem(head: bytes, size: int) -> str:
    """arm64 (and riscv) Image header: image_size at 16 counts text, data and BSS, so the file is a bit less."""
    (image_size,) = struct.unpack_from("<Q", head, 16)
    if image_size == 0:  # kernels before 3.17 leave it 0: nothing to compare
        return ""
    if not image_size // 2 <= size <= image_size:
        return f"its header says the kernel spans {image_size} bytes but the file has {size}: truncated or corrupt"
    return ""


# Keyed by Arch.image_target: the format's own size check.
_PAYLOAD_CHECKS: dict[str, Callable[[bytes, int], str]] = {"bzImage": _bzimage_problem, "Image": _image_problem}

# Files often passed by mistake, told apart by their first bytes.
_OTHER_FILES = ((b"\x7fELF", "an ELF file (vmlinux?)"), (b"\x1f\x8b", "gzip data (Image.gz?)"))


def _has_magic(head: bytes, arch: Arch) -> bool:
    offset, magic = arch.image_magic
    return head[offset : offset + len(magic)] == magic


def _describe(head: bytes) -> str:
    """What the file is, from its bytes: another arch's kernel, or a file kernels are often confused with."""
    for other in arches.ARCHES.values():
        if _has_magic(head, other):
            return f"it is an {other.name} kernel image ({other.image_target}): pass --arch {other.name}"
    for prefix, what in _OTHER_FILES:
        if head.startswith(prefix):
            return f"it is {what}"
    return "no kernel header found in it"


def check_kernel_image(arch: Arch, kernel: Path) -> None:
    """Refuse a missing kernel, one built for another arch, or one shorter than its own header says."""
    if kernel.is_dir():
        raise UserError(
            f"kernel image {kernel} is a directory; give the image file ({kernel / arch.image_path}?) "
            "or, for a klab build dir, --build"
        )
    if not kernel.is_file():
        raise UserError(f"kernel image {kernel} does not exist; build one with `klab build --arch {arch.name}`")
    with open(kernel, "rb") as f:
        head = f.read(_HEAD)
    size = kernel.stat().st_size
    if len(head) < _HEAD or not _has_magic(head, arch):
        raise UserError(
            f"{kernel} is not a kernel image for {arch.name} ({_describe(head)}); "
            f"pass the {arch.image_path} of a build for {arch.name}"
        )
    problem = _PAYLOAD_CHECKS[arch.image_target](head, size)
    if problem:
        raise UserError(f"{kernel}: {problem}; rebuild it (klab build --arch {arch.name})")


_EXT4_MAGIC_AT = 1024 + 0x38  # the superblock starts at byte 1024; s_magic is at 0x38 in it
_EXT4_MAGIC = b"\x53\xef"  # 0xEF53, little-endian


def check_rootfs_image(path: Path) -> None:
    """Refuse a rootfs the guest cannot mount: the lab boots ext4 images (root=/dev/vda rootfstype=ext4)."""
    if not path.is_file():
        raise UserError(f"--rootfs {path} does not exist; give an ext4 image, `image` (the lab's) or `host`")
    with open(path, "rb") as f:
        f.seek(_EXT4_MAGIC_AT)
        magic = f.read(2)
    if magic != _EXT4_MAGIC:
        raise UserError(
            f"--rootfs {path} is not an ext4 image (no superblock magic 0xEF53 at byte {_EXT4_MAGIC_AT}); "
            "give an ext4 image (klab image build), `image` or `host`"
        )
