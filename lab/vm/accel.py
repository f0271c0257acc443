"""Which accelerator really works here: probe KVM by running a guest, never by trusting /dev/kvm.

On some hosts /dev/kvm opens and KVM_CREATE_VM succeeds, yet a guest spins
forever at boot; on this kind of machine the tiny probe guest below
takes 5 s under KVM and 0.1 s under TCG. So the probe boots a 512-byte guest
that writes a word to the serial port and exits QEMU through isa-debug-exit,
under KVM and under TCG: KVM counts as working only when the guest finishes
within a short deadline and no slower than TCG. The verdict is cached per host
kernel and QEMU version.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab import proc
from lab.arches import Arch, is_native
from lab.errors import LabError, UserError
from lab.manifest import Record
from lab.paths import cache_dir

PROBE_DEADLINE = 3.0
_PROBE_WORD = b"KLABKVM"


def _x86_boot_sector() -> bytes:
    """Real-mode boot sector: print _PROBE_WORD on COM1, then exit QEMU via isa-debug-exit (port 0xf4)."""
    code = bytearray(b"\xba\xf8\x03")  # mov dx, 0x3f8
    for ch in _PROBE_WORD + b"\n":
        code += bytes([0xB0, ch, 0xEE])  # mov al, ch; out dx, al
    code += b"\xb0\x01\xe6\xf4"  # mov al, 1; out 0xf4, al -> QEMU exits with status 3
    code += b"\xfa\xf4\xeb\xfd"  # cli; hlt; jmp back (never reached)
    return bytes(code).ljust(510, b"\0") + b"\x55\xaa"


# Per-arch probe guests: (the guest image, extra QEMU arguments). Arches without
# an entry are never probed (TCG); a native arm64 host would add its own here.
_PROBES = {
    "x86_64": (_x86_boot_sector, ("-M", "pc,accel=kvm", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04")),
}


@dataclass(frozen=True)
class KvmVerdict(Record):
    """What the KVM probe found, cached per host kernel and QEMU version."""

    works: bool
    why: str
    qemu: str
    probed: float


@dataclass(frozen=True)
class Decision:
    accel: str  # "kvm" or "tcg"
    why: str


def qemu_version(arch: Arch) -> str:
    binary = shutil.which(arch.qemu)
    if binary is None:
        raise LabError(f"{arch.qemu} not found: install the Debian package {arch.qemu_package} (or run `make setup`)")
    try:
        out = proc.run([binary, "--version"], deadline=proc.Deadline.after(30)).output
    except proc.CommandFailed:
        return "unknown"
    return out.splitlines()[0].strip() if out else "unknown"


def probe_kvm(arch: Arch) -> tuple[bool, str]:
    """Boot the tiny probe guest under KVM; (works, why)."""
    if not is_native(arch):
        return False, f"{arch.name} guest on a {platform.machine()} host: TCG"
    if arch.name not in _PROBES:
        return False, f"no KVM probe guest for {arch.name}: TCG"
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user (add it to the kvm group)"
    make_image, qemu_args = _PROBES[arch.name]
    with tempfile.TemporaryDirectory(prefix="klab-kvm-probe-") as tmp:
        image = Path(tmp) / "probe.img"
        image.write_bytes(make_image())
        kvm_ok, kvm_time, why = _run_probe(arch, qemu_args, image)
        if not kvm_ok:
            return False, why
        tcg_args = tuple(a.replace("accel=kvm", "accel=tcg") for a in qemu_args)
        tcg_ok, tcg_time, _ = _run_probe(arch, tcg_args, image)
    if tcg_ok and kvm_time > max(1.0, 2 * tcg_time):
        return False, f"KVM runs but is slower than TCG ({kvm_time:.1f}s vs {tcg_time:.1f}s for the test guest)"
    return True, f"a KVM test guest ran in {kvm_time:.1f}s"


def _run_probe(arch: Arch, qemu_args: tuple[str, ...], image: Path) -> tuple[bool, float, str]:
    argv = [arch.qemu, *qemu_args, "-display", "none", "-serial", "stdio", "-monitor", "none"]
    argv += ["-no-reboot", "-drive", f"file={image},format=raw,if=ide"]
    run = proc.run(argv, deadline=proc.Deadline.after(PROBE_DEADLINE), check=False)
    if run.timed_out:
        why = f"a KVM test guest did not finish within {PROBE_DEADLINE:.0f}s (KVM present but hangs)"
        return False, PROBE_DEADLINE, why
    if _PROBE_WORD.decode() in run.output:
        return True, run.duration, ""
    err = run.output.strip().splitlines()
    return False, run.duration, f"KVM test guest failed: {err[-1] if err else f'exit {run.returncode}'}"


def _cache_path(arch: Arch, version: str) -> Path:
    key = hashlib.sha256(f"{platform.node()}\0{platform.release()}\0{arch.name}\0{version}".encode()).hexdigest()[:16]
    return cache_dir("accel") / f"{arch.name}-{key}.json"


@dataclass(frozen=True)
class Probes:
    """What `decide` asks of the host; tests give their own answers instead of booting probe guests."""

    kvm: Callable[[Arch], tuple[bool, str]] = probe_kvm
    qemu_version: Callable[[Arch], str] = qemu_version


def decide(arch: Arch, requested: str = "auto", use_cache: bool = True, probes: Probes = Probes()) -> Decision:
    """Pick kvm or tcg. `kvm` that does not work is a usage error; `auto` warns once and uses TCG."""
    if requested not in ("auto", "kvm", "tcg"):
        raise UserError(f"unknown accelerator {requested!r}; choose one of: auto, kvm, tcg")
    if requested == "tcg":
        return Decision("tcg", "requested with --accel tcg")
    version = probes.qemu_version(arch)
    path = _cache_path(arch, version)
    cached = KvmVerdict.read_if_valid(path) if use_cache else None
    if cached is not None:
        works, why = cached.works, cached.why + " (cached)"
    else:
        works, why = probes.kvm(arch)
        KvmVerdict(works, why, version, time.time()).write(path)
    if works:
        return Decision("kvm", why)
    if requested == "kvm":
        raise UserError(f"--accel kvm, but KVM does not work here: {why}; use --accel tcg or auto")
    if is_native(arch) and arch.name not in _warned:
        _warned.add(arch.name)
        print(f"klab: warning: KVM not usable ({why}); using TCG, which is much slower", file=sys.stderr)
    return Decision("tcg", why)


# One warning per arch and process, however many guests it starts.
_warned: set[str] = set()
