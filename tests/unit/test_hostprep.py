"""What the host needs to build images, from a described host (no patching of the process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import arches
from lab.errors import UserError
from lab.image import hostprep

X86 = arches.get("x86_64")
ARM64 = arches.get("arm64")


def fake_host(tmp_path: Path, *, root: bool, tools: set[str], qemu: bool, binfmt: str | None) -> hostprep.Host:
    """An x86_64 host described by flags: euid, tools on PATH, qemu-user-static, binfmt_misc state."""
    qemu_dir = tmp_path / "bin"
    qemu_dir.mkdir()
    if qemu:
        (qemu_dir / "qemu-aarch64-static").write_text("")
    binfmt_dir = tmp_path / "binfmt_misc"
    binfmt_dir.mkdir()
    if binfmt is not None:
        (binfmt_dir / "register").write_text("")
        if binfmt:
            (binfmt_dir / "qemu-aarch64").write_text(binfmt)
    conf = tmp_path / "binfmt.d"
    conf.mkdir()
    (conf / "qemu-aarch64.conf").write_text("# comment\n:qemu-aarch64:M::\\x7fELF:\\xff:/usr/libexec/x:OPF\n")
    return hostprep.Host(
        euid=0 if root else 1000,
        which=lambda tool: f"/usr/bin/{tool}" if tool in tools else None,
        native=lambda arch: arch.name == "x86_64",
        binfmt_dir=binfmt_dir,
        binfmt_conf_dirs=(conf,),
        qemu_user_dir=qemu_dir,
        keyring=Path(__file__),
    )


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
    tmp_path: Path,
    arch: arches.Arch,
    root: bool,
    tools: set[str],
    qemu: bool,
    binfmt: str | None,
    expected: list[str],
) -> None:
    host = fake_host(tmp_path, root=root, tools=tools, qemu=qemu, binfmt=binfmt)
    missing = hostprep.image_prereqs(arch, host)
    assert len(missing) == len(expected), missing
    for item, want in zip(missing, expected, strict=True):
        assert want in item


def test_ensure_binfmt_registers_once(tmp_path: Path) -> None:
    host = fake_host(tmp_path, root=True, tools=set(), qemu=True, binfmt="")
    hostprep.ensure_binfmt(ARM64, host)
    assert (tmp_path / "binfmt_misc/register").read_text() == ":qemu-aarch64:M::\\x7fELF:\\xff:/usr/libexec/x:OPF"
    (tmp_path / "binfmt_misc/register").write_text("")
    (tmp_path / "binfmt_misc/qemu-aarch64").write_text(ENABLED)  # what the kernel does on registration
    hostprep.ensure_binfmt(ARM64, host)
    assert (tmp_path / "binfmt_misc/register").read_text() == ""  # already there: nothing written
    hostprep.ensure_binfmt(X86, host)  # native: nothing to do
    assert (tmp_path / "binfmt_misc/register").read_text() == ""


def test_ensure_binfmt_without_qemu_names_the_package(tmp_path: Path) -> None:
    host = fake_host(tmp_path, root=True, tools=set(), qemu=False, binfmt="")
    with pytest.raises(UserError, match="apt-get install qemu-user-static"):
        hostprep.ensure_binfmt(ARM64, host)
