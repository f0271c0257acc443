"""What the host needs before it can build a guest image: tools, root, and qemu-user under binfmt_misc.

`image_prereqs` lists what is missing, each item naming its fix (klab probe
shows them too); `ensure_binfmt` registers qemu-user for a foreign arch, as
root, without systemd.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab import arches, debian, proc
from lab.arches import Arch
from lab.errors import LabError, UserError

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_CONF_DIRS = (Path("/usr/lib/binfmt.d"), Path("/etc/binfmt.d"))
QEMU_USER_DIR = Path("/usr/bin")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


@dataclass(frozen=True)
class Host:
    """The facts about this machine the checks read; tests describe a host instead of patching the process."""

    euid: int
    which: Callable[[str], str | None]
    native: Callable[[Arch], bool] = arches.is_native
    mirror: Callable[[], str] = debian.archive_uri  # the Debian archive of the host's apt sources
    run: Callable[..., proc.Result] = proc.run  # how commands run here (tests give one that fails)
    binfmt_dir: Path = BINFMT_DIR
    binfmt_conf_dirs: tuple[Path, ...] = BINFMT_CONF_DIRS
    qemu_user_dir: Path = QEMU_USER_DIR
    keyring: Path = KEYRING

    @classmethod
    def this(cls) -> Host:
        return cls(os.geteuid(), shutil.which)

    def qemu_static(self, arch: Arch) -> Path:
        return self.qemu_user_dir / f"{arch.qemu_user}-static"

    def binfmt_status(self, arch: Arch) -> str | None:
        try:
            return (self.binfmt_dir / arch.qemu_user).read_text()
        except OSError:
            return None


def image_prereqs(arch: Arch, host: Host | None = None) -> list[str]:
    """What this host lacks to build an image for `arch`, each item naming its fix; empty when ready."""
    host = host or Host.this()
    missing = []
    if host.euid != 0:
        missing.append("root: mmdebstrap's chroot mode and root-owned image files need it; run as root")
    for tool, package in (("mmdebstrap", "mmdebstrap"), ("mke2fs", "e2fsprogs")):
        if not host.which(tool):
            missing.append(f"{tool}: apt-get install {package}")
    if not host.keyring.is_file():
        missing.append(f"{host.keyring}: apt-get install debian-archive-keyring")
    if not host.native(arch):
        missing += _binfmt_prereqs(arch, host)
    return missing


def _binfmt_prereqs(arch: Arch, host: Host) -> list[str]:
    """A foreign-arch chroot runs its binaries through qemu-user, registered with binfmt_misc."""
    missing = []
    if not host.qemu_static(arch).is_file():
        missing.append(f"{host.qemu_static(arch)}: apt-get install qemu-user-static")
    if not (host.binfmt_dir / "register").exists():
        missing.append(f"binfmt_misc not mounted: mount -t binfmt_misc binfmt_misc {host.binfmt_dir}")
        return missing
    handler = host.binfmt_status(arch)
    if handler is None:
        missing.append(
            f"binfmt handler {arch.qemu_user} not registered: run klab as root (it registers it), "
            f"or update-binfmts --enable {arch.qemu_user} (package binfmt-support)"
        )
    elif not handler.startswith("enabled"):
        missing.append(f"binfmt handler {arch.qemu_user} disabled: echo 1 > {host.binfmt_dir / arch.qemu_user}")
    elif not re.search(r"^flags:.*F", handler, re.MULTILINE):
        missing.append(
            f"binfmt handler {arch.qemu_user} lacks the F flag, so a chroot cannot find qemu: "
            f"echo -1 > {host.binfmt_dir / arch.qemu_user} and rerun klab as root to register it again"
        )
    return missing


def ensure_binfmt(arch: Arch, host: Host | None = None) -> None:
    """As root, mount binfmt_misc and register qemu-user for `arch` (idempotent; no systemd needed).

    The registration line comes from qemu-user-static's own binfmt.d file (flag F: the
    interpreter is opened now, so it works inside chroots that lack it).
    """
    host = host or Host.this()
    if host.native(arch):
        return
    if not host.qemu_static(arch).is_file():
        raise UserError(f"{host.qemu_static(arch)} is missing: apt-get install qemu-user-static")
    if not (host.binfmt_dir / "register").exists():
        argv = ["mount", "-t", "binfmt_misc", "binfmt_misc", str(host.binfmt_dir)]
        try:
            proc.run(argv, deadline=proc.Deadline.after(30))
        except proc.CommandFailed as exc:
            raise LabError(f"cannot mount binfmt_misc ({exc.tail.strip()}): is this a privileged container?") from exc
    if host.binfmt_status(arch) is not None:
        return
    name = f"{arch.qemu_user}.conf"
    conf = next((d / name for d in host.binfmt_conf_dirs if (d / name).is_file()), None)
    if conf is None:
        raise UserError(f"no binfmt.d entry for {arch.qemu_user}: apt-get install qemu-user-static")
    line = next(ln for ln in conf.read_text().splitlines() if ln.startswith(":"))
    try:
        (host.binfmt_dir / "register").write_text(line)
    except OSError as exc:
        if host.binfmt_status(arch) is None:  # EEXIST from a concurrent registration is fine
            raise LabError(f"cannot register {arch.qemu_user} with binfmt_misc: {exc.strerror}") from exc
