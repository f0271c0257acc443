"""`klab probe`: what this host can do, each line with the fix when something is missing."""

from __future__ import annotations

import platform
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from lab import arches, proc
from lab.errors import LabBaseError
from lab.image import hostprep
from lab.kernel import source
from lab.paths import cache_root
from lab.vm import accel


@dataclass(frozen=True)
class Item:
    what: str
    ok: bool
    detail: str


def _version(argv: list[str]) -> str:
    try:
        out = proc.run(argv, deadline=proc.Deadline.after(30), check=False).output.strip()
    except proc.CommandFailed as exc:
        return str(exc)
    return out.splitlines()[0] if out else "no output"


def _tool(what: str, binary: str, package: str, version_arg: str = "--version") -> Item:
    path = shutil.which(binary)
    if path is None:
        return Item(what, False, f"{binary} missing: install {package}")
    return Item(what, True, _version([path, version_arg]))


def _as_number(version: str) -> int | None:
    """pahole's "v1.24" -> 124, the form Kconfig compares (PAHOLE_VERSION >= 122)."""
    match = re.search(r"(\d+)\.(\d+)", version)
    return int(match.group(1)) * 100 + int(match.group(2)) if match else None


def btf_needs(tree: Path) -> tuple[int | None, int | None]:
    """(the pahole DEBUG_INFO_BTF depends on, the pahole changes.rst lists as the minimum) for a kernel tree."""
    kconfig = tree / "lib/Kconfig.debug"
    text = kconfig.read_text(errors="replace") if kconfig.is_file() else ""
    block = (
        text.split("config DEBUG_INFO_BTF\n", 1)[1].split("\nconfig ", 1)[0]
        if "config DEBUG_INFO_BTF\n" in text
        else ""
    )
    needed = [int(n) for n in re.findall(r"PAHOLE_VERSION >= (\d+)", block)]
    changes = tree / "Documentation/process/changes.rst"
    listed = (
        re.search(r"^pahole\s+(\d+\.\d+)", changes.read_text(errors="replace"), re.M) if changes.is_file() else None
    )
    return (max(needed) if needed else None), (_as_number(listed.group(1)) if listed else None)


def pahole_items() -> list[Item]:
    """pahole, and which fetched kernels it can build BTF for (the BPF LSM needs BTF)."""
    item = _tool("pahole (BTF)", "pahole", "dwarves")
    have = _as_number(item.detail) if item.ok else None
    out = [item]
    for tree in sorted((cache_root() / "src").glob("linux-*[0-9]")):
        if not source.marker(tree).is_file():
            continue
        needed, listed = btf_needs(tree)
        name = f"  BTF for {tree.name}"
        if have is None:
            out.append(Item(name, False, "no pahole: install dwarves"))
        elif needed is not None and have < needed:
            out.append(Item(name, False, f"DEBUG_INFO_BTF needs pahole >= {needed / 100:.2f}; install a newer dwarves"))
        else:
            note = ""
            if listed is not None and have < listed:
                note = (
                    f"; changes.rst lists {listed / 100:.2f} (newer pahole adds kfunc tags and optimized-function "
                    "encoding, which the lab's suites do not use)"
                )
            out.append(Item(name, True, f"yes (DEBUG_INFO_BTF needs >= {(needed or 0) / 100:.2f}){note}"))
    return out


def collect() -> list[Item]:
    items = [
        Item("host", True, f"{platform.machine()}, kernel {platform.release()}"),
        _tool("make", "make", "make"),
        _tool("gcc", "gcc", "build-essential"),
        *pahole_items(),
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
        missing = hostprep.image_prereqs(arch)
        items.append(Item(f"{arch.name} image build", not missing, "; ".join(missing) or "ready"))
    return items


def render(items: list[Item]) -> str:
    width = max(len(i.what) for i in items)
    return "\n".join(f"{'ok ' if i.ok else 'NO '} {i.what:<{width}}  {i.detail}" for i in items)
