"""Architecture facts in one table: every arch-specific detail lives here.

Adding an arch (riscv64, say) is one more `Arch(...)` entry; no other module
branches on the arch name.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from lab.errors import UserError


@dataclass(frozen=True)
class Arch:
    # Name users type and the lab uses in paths and result names.
    name: str
    # Other spellings accepted on the command line.
    aliases: tuple[str, ...]
    # `uname -m` inside a guest of this arch (also the host's when native).
    machine: str
    # ARCH= for the kernel's make, and the arch/<srcarch> directory.
    kernel_arch: str
    srcarch: str
    # CROSS_COMPILE prefix when the host is another arch, and the Debian package that provides it.
    cross_compile: str
    cross_package: str
    # Kernel image make target and its path in the build dir.
    image_target: str
    image_path: str
    # How to recognise the image: (offset, magic bytes) of its boot header.
    image_magic: tuple[int, bytes]
    # QEMU system emulator, and the Debian package that provides it.
    qemu: str
    qemu_package: str
    # Machine type and CPU model, per accelerator.
    machine_kvm: tuple[str, ...]
    machine_tcg: tuple[str, ...]
    cpu_kvm: str
    cpu_tcg: str
    # Serial console device in the guest.
    console: str
    # Debian architecture name (images) and qemu-user binary for foreign-arch chroots.
    debian_arch: str
    qemu_user: str
    # Boot deadlines: how much slower this arch is under TCG than under KVM.
    tcg_slowdown: float
    # Defaults for a guest.
    memory_mb: int
    cpus: int
    # First kernel version (major, minor) where BPF LSM programs can attach (trampolines).
    bpf_lsm_since: tuple[int, int]


ARCHES: dict[str, Arch] = {
    a.name: a
    for a in (
        Arch(
            name="x86_64",
            aliases=("amd64", "x86-64"),
            machine="x86_64",
            kernel_arch="x86_64",
            srcarch="x86",
            cross_compile="x86_64-linux-gnu-",
            cross_package="gcc-x86-64-linux-gnu",
            image_target="bzImage",
            image_path="arch/x86/boot/bzImage",
            # Linux/x86 boot protocol: "HdrS" at 0x202.
            image_magic=(0x202, b"HdrS"),
            qemu="qemu-system-x86_64",
            qemu_package="qemu-system-x86",
            machine_kvm=("-M", "q35,accel=kvm"),
            machine_tcg=("-M", "q35,accel=tcg"),
            cpu_kvm="host",
            cpu_tcg="max",
            console="ttyS0",
            debian_arch="amd64",
            qemu_user="qemu-x86_64",
            tcg_slowdown=1.0,
            memory_mb=1024,
            cpus=2,
            bpf_lsm_since=(5, 7),
        ),
        Arch(
            name="arm64",
            aliases=("aarch64",),
            machine="aarch64",
            kernel_arch="arm64",
            srcarch="arm64",
            cross_compile="aarch64-linux-gnu-",
            cross_package="gcc-aarch64-linux-gnu",
            image_target="Image",
            image_path="arch/arm64/boot/Image",
            # arm64 Image header: "ARM\x64" magic at offset 56.
            image_magic=(56, b"ARM\x64"),
            qemu="qemu-system-aarch64",
            qemu_package="qemu-system-arm",
            machine_kvm=("-M", "virt,gic-version=host,accel=kvm"),
            machine_tcg=("-M", "virt,gic-version=3,accel=tcg"),
            cpu_kvm="host",
            # pauth-impdef: QEMU's fast pointer-auth algorithm; the architected one is slow under TCG.
            cpu_tcg="max,pauth-impdef=on",
            console="ttyAMA0",
            debian_arch="arm64",
            qemu_user="qemu-aarch64",
            tcg_slowdown=2.0,
            memory_mb=1024,
            cpus=2,
            bpf_lsm_since=(6, 0),
        ),
    )
}


def get(name: str) -> Arch:
    """Look an arch up by name or alias; unknown names are a usage error."""
    for arch in ARCHES.values():
        if name == arch.name or name in arch.aliases:
            return arch
    raise UserError(f"unknown arch {name!r}; choose one of: {', '.join(sorted(ARCHES))}")


def host() -> Arch | None:
    """The arch of this machine, if the lab knows it."""
    machine = platform.machine()
    return next((a for a in ARCHES.values() if a.machine == machine), None)


def is_native(arch: Arch) -> bool:
    native = host()
    return native is not None and native.name == arch.name


def cross_prefix(arch: Arch) -> str:
    """CROSS_COMPILE for building `arch` on this host ('' when native)."""
    return "" if is_native(arch) else arch.cross_compile
