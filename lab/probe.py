"""`klab probe`: what this host can do, each line with the fix when something is missing."""

from __future__ import annotations

import platform
import shutil
import subprocess
from dataclasses import dataclass

from lab import accel, arches, images
from lab.errors import LabBaseError


@dataclass(frozen=True)
class Item:
    what: str
    ok: bool
    detail: str


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else f"exit {out.returncode}"


def _tool(what: str, binary: str, package: str, version_arg: str = "--version") -> Item:
    path = shutil.which(binary)
    if path is None:
        return Item(what, False, f"{binary} missing: install {package}")
    return Item(what, True, _version([path, version_arg]))


def collect() -> list[Item]:
    items = [
        Item("host", True, f"{platform.machine()}, kernel {platform.release()}"),
        _tool("make", "make", "make"),
        _tool("gcc", "gcc", "build-essential"),
        _tool("pahole (BTF)", "pahole", "dwarves"),
        _tool("ccache", "ccache", "ccache"),
        _tool("mmdebstrap", "mmdebstrap", "mmdebstrap"),
        _tool("mke2fs", "mke2fs", "e2fsprogs", "-V"),
    ]
    for arch in arches.ARCHES.values():
        prefix = arches.cross_prefix(arch)
        if prefix:
            items.append(_tool(f"{arch.name} cross compiler", f"{prefix}gcc", arch.cross_package))
        items.append(_tool(f"{arch.name} QEMU", arch.qemu, arch.qemu_package))
        if shutil.which(arch.qemu):
            try:
                decision = accel.decide(arch, "auto", use_cache=False)
                items.append(Item(f"{arch.name} accelerator", True, f"{decision.accel}: {decision.why}"))
            except LabBaseError as exc:
                items.append(Item(f"{arch.name} accelerator", False, str(exc)))
        missing = images.image_prereqs(arch)
        items.append(Item(f"{arch.name} image build", not missing, "; ".join(missing) or "ready"))
    return items


def render(items: list[Item]) -> str:
    width = max(len(i.what) for i in items)
    return "\n".join(f"{'ok ' if i.ok else 'NO '} {i.what:<{width}}  {i.detail}" for i in items)
