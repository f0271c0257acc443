"""A cell as a LAVA job: the job definition, its artifacts, and a device dictionary for lava-run here.

LAVA's results come back through lab.lava.readback.

Why hand-written and not tuxlava (KernelCI's generator, looked at first, 0.28):
its qemu job always waits for a `login:` prompt and logs in (the lab's image
has no getty or init system), its tests are its own named suites or one
`lava-test-case --shell` per command (we need one case per in-guest test), and
for tests on an ext4 rootfs it relies on LAVA's guestfs overlay, which needs a
libguestfs appliance kernel. The job here is small, plain data (a dict dumped
as YAML) that unit tests read field by field.

How the guest gets its tests, with lava-dispatcher 2023.01 and no guestfs:
- the rootfs is the lab's Debian image plus /sbin/klab-lava-init
  (lab/guest/lava-init), written in with debugfs (no loop mount) and cached;
- a small tar image, the payload, holds suites/ and lab/guest/lava-cases; the
  job marks it `overlays: lava: true`, so the dispatcher appends its own test
  overlay to that tar (a plain untar/retar), and QEMU attaches it as a raw
  virtio disk with serial `klab-payload`; the init untars it into / at boot;
- the init then keeps a shell on the console with the prompt `klab-lava# `,
  which is what the job's boot action waits for;
- the inline test definition runs suites/run.py and reports every test with
  `lava-test-case` (lava-cases): pass/fail/skip, ERROR as unknown, duration
  as the measurement.
The job needs only a device of type qemu whose dictionary allows the arch;
`device_dict` writes one for `lava-run` on this host.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab import atomic, proc
from lab.arches import Arch
from lab.errors import LabError, UserError
from lab.paths import HOME, SUITES, cache_dir
from lab.run import catalog
from lab.vm import qemu

GUEST = HOME / "lab" / "guest"
INIT = GUEST / "lava-init"
CASES = GUEST / "lava-cases"
INIT_IN_IMAGE = "/sbin/klab-lava-init"
PROMPT = "klab-lava# "
PAYLOAD_SERIAL = "klab-payload"
RESULTS_IN_GUEST = "/tmp/klab.json"
# Room for LAVA's overlay and the suites' files on the shrunk rootfs.
ROOTFS_HEADROOM_MB = 64
TOOL_TIMEOUT = 300.0
# Minutes; a TCG boot and the suites are slow, a real LAVA lab adds its own margins.
TIMEOUTS = {"deploy": 10, "boot": 5, "test": 30}


@dataclass(frozen=True)
class JobRequest:
    """What one LAVA job runs: a kernel on an arch, with the lab's image, some suites."""

    arch: Arch
    kernel: Path
    image: Path  # the lab's ext4 guest image (lab.image.build)
    suites: tuple[str, ...]
    patterns: tuple[str, ...] = ()
    kernel_release: str = ""
    append: str = ""
    url_base: str = ""  # where the artifacts will be served; "" means file:// paths on this host
    test_minutes: int = TIMEOUTS["test"]


def kernel_cmdline(req: JobRequest) -> str:
    """The lab's own command line for an image root, with our init; a crash ends the job at once.

    loglevel=6: LAVA waits for the "Linux version" banner, which is KERN_NOTICE (5).
    """
    args = [*qemu.crash_args(req.arch, loglevel=6), *qemu.IMAGE_ROOT, f"init={INIT_IN_IMAGE}"]
    return " ".join(args + ([req.append] if req.append else []))


def guest_steps(req: JobRequest) -> list[str]:
    """The test definition's run steps: the suites (their exit status is not LAVA's business), then the cases.

    LAVA writes steps into a shell script verbatim: every word is shell-quoted.
    """
    run = catalog.run_line("/klab/suites", req.suites, req.patterns, RESULTS_IN_GUEST)
    return [f"{run} || true", f"python3 /klab/lava-cases {RESULTS_IN_GUEST}"]


def job_definition(req: JobRequest, urls: dict[str, str], cell: str) -> dict[str, Any]:
    """The LAVA job as data: deploy kernel, rootfs and payload to tmpfs; boot with QEMU; run the suites."""
    images = {
        "kernel": {"url": urls["kernel"], "image_arg": f'-kernel {{kernel}} -append "{kernel_cmdline(req)}"'},
        "rootfs": {
            "url": urls["rootfs"],
            # Explicit devices, rootfs first: PCI slots follow command-line order, so it is /dev/vda.
            "image_arg": "-drive file={rootfs},if=none,format=raw,id=rootfs -device virtio-blk-pci,drive=rootfs",
        },
        "payload": {
            "url": urls["payload"],
            "format": "tar",
            "overlays": {"lava": True},
            "image_arg": "-drive file={payload},if=none,format=raw,id=payload,readonly=on "
            f"-device virtio-blk-pci,drive=payload,serial={PAYLOAD_SERIAL}",
        },
    }
    definition = {
        "from": "inline",
        "name": "klab",
        "path": "inline/klab.yaml",
        "repository": {
            "metadata": {
                "format": "Lava-Test Test Definition 1.0",
                "name": "klab",
                "description": f"kernel-lab suites: {', '.join(req.suites)}",
            },
            "run": {"steps": guest_steps(req)},
        },
    }
    total = TIMEOUTS["deploy"] + TIMEOUTS["boot"] + req.test_minutes
    return {
        "device_type": "qemu",
        "job_name": f"klab {cell}: {', '.join(req.suites)}",
        "priority": "medium",
        "visibility": "public",
        "timeouts": {"job": {"minutes": total}, "action": {"minutes": total}, "connection": {"minutes": 2}},
        "context": {"arch": req.arch.name},
        "metadata": {
            "klab.cell": cell,
            "klab.arch": req.arch.name,
            "klab.kernel_release": req.kernel_release,
            "klab.suites": " ".join(req.suites),
            "klab.patterns": " ".join(req.patterns),
        },
        "actions": [
            {"deploy": {"to": "tmpfs", "os": "debian", "timeout": {"minutes": TIMEOUTS["deploy"]}, "images": images}},
            {
                "boot": {
                    "method": "qemu",
                    "media": "tmpfs",
                    "timeout": {"minutes": TIMEOUTS["boot"]},
                    "prompts": [PROMPT],
                }
            },
            {"test": {"timeout": {"minutes": req.test_minutes}, "definitions": [definition]}},
        ],
    }


def device_dict(arch: Arch, kvm: bool = False) -> dict[str, Any]:
    """A rendered device dictionary for a local `lava-run --device`: the qemu device type, this arch only."""
    machine = arch.machine_kvm if kvm else arch.machine_tcg
    options = [*machine, "-cpu", arch.cpu_kvm if kvm else arch.cpu_tcg]
    options += ["-m", str(arch.memory_mb), "-smp", str(arch.cpus)]
    options += ["-nographic", "-nodefaults", "-serial", "mon:stdio", "-no-reboot", "-nic", "none"]
    return {
        "device_type": "qemu",
        "available_architectures": [arch.name],
        "constants": _CONSTANTS,
        "commands": {"connections": {}},
        "actions": {
            "deploy": {
                "connections": {"serial": None},
                "methods": {"image": {"parameters": {"guest": {"size": 512, "interface": "virtio"}}}},
            },
            "boot": {
                "connections": {"serial": None},
                "methods": {"qemu": {"parameters": {"command": arch.qemu, "options": options}}},
            },
        },
        "timeouts": {"actions": {}, "connections": {}},
    }


# What lava-server's base device template sets; the dispatcher reads these by name.
_CONSTANTS: dict[str, Any] = {
    "kernel-start-message": "Linux version [0-9]",
    "shutdown-message": "The system is going down for reboot NOW",
    "default-shell-prompt": "lava-test: # ",
    "spawn_maxread": 4092,
    # One try: a lab boot that fails fails again, and a retry triples a TCG job's time.
    "failure_retry": 1,
    "boot_retry": 1,
    "posix": {
        "lava_test_sh_cmd": "/bin/sh",
        "lava_test_results_dir": "/lava-%s",
        "lava_test_shell_file": "~/.bashrc",
    },
}


# --- artifacts ------------------------------------------------------------------------------------


def lava_rootfs(arch: Arch, image: Path) -> Path:
    """The lab's image with the LAVA init in it, shrunk to its contents; cached by (image, init)."""
    h = hashlib.sha256()
    for part in (_file_digest(image).encode(), INIT.read_bytes(), arch.name.encode()):
        h.update(hashlib.sha256(part).digest())
    final = cache_dir("lava") / f"rootfs-{arch.name}-{h.hexdigest()[:16]}.ext4"
    if final.is_file():
        return final
    log = final.with_suffix(".log")
    deadline = proc.Deadline.after(TOOL_TIMEOUT)
    try:
        with atomic.replacing(final) as tmp:
            proc.run(["cp", "--sparse=always", str(image), str(tmp)], deadline=deadline, log=log)
            commands = tmp.with_suffix(".debugfs")
            commands.write_text(
                f"cd {os.path.dirname(_resolved_in_image(INIT_IN_IMAGE))}\n"
                f"write {INIT} {os.path.basename(INIT_IN_IMAGE)}\n"
                f"sif {os.path.basename(INIT_IN_IMAGE)} mode 0100755\n"
            )
            proc.run(["debugfs", "-w", "-f", str(commands), str(tmp)], deadline=deadline, log=log)
            commands.unlink()
            proc.run(["e2fsck", "-f", "-y", str(tmp)], deadline=deadline, log=log, check=False)
            proc.run(["resize2fs", "-M", str(tmp)], deadline=deadline, log=log)
            size_mb = tmp.stat().st_size // (1 << 20) + ROOTFS_HEADROOM_MB
            proc.run(["resize2fs", str(tmp), f"{size_mb}M"], deadline=deadline, log=log)
    except proc.CommandFailed as exc:
        raise LabError(f"cannot make the LAVA rootfs from {image}: {exc}; log: {log}") from exc
    return final


def _resolved_in_image(path: str) -> str:
    """Merged /usr: /sbin is a symlink in the image, and debugfs does not follow links."""
    return "/usr" + path if path.startswith(("/sbin/", "/bin/")) else path


def _file_digest(path: Path) -> str:
    """Size and mtime stand in for content: the image cache never rewrites a finished image in place."""
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def write_payload(path: Path) -> None:
    """suites/ and the case reporter as a tar, root-owned, under /klab: LAVA appends its overlay to it."""

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if "__pycache__" in info.name or info.name.endswith(".pyc"):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with atomic.replacing(path) as tmp, tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(SUITES, arcname="klab/suites", filter=clean)
        tar.add(CASES, arcname="klab/lava-cases", filter=clean)


EXT4_MAGIC = (1080, b"\x53\xef")  # the superblock's s_magic, 0xEF53 little-endian, 1024 + 56 bytes in


def check_image(image: Path, arch: Arch) -> None:
    """The rootfs must be an ext4 image (the lab's, from `klab image build`): refuse anything else up front."""
    fix = f"build the lab's image with `klab image build --arch {arch.name}`"
    if not image.is_file():
        raise UserError(f"guest image {image} does not exist; {fix}")
    with open(image, "rb") as f:
        f.seek(EXT4_MAGIC[0])
        if f.read(2) != EXT4_MAGIC[1]:
            raise UserError(f"guest image {image} is not an ext4 image; {fix}")


def write_job(req: JobRequest, out: Path, cell: str) -> Path:
    """Write the job and its artifacts (kernel, rootfs, payload) in `<job stem>-artifacts/` beside it.

    Inputs are checked first; the artifacts are made in a temporary dir renamed
    into place, and the job file is written last, so a failure leaves nothing.
    """
    if not req.kernel.is_file():
        raise UserError(f"kernel image {req.kernel} does not exist")
    check_image(req.image, req.arch)
    artifacts = out.parent / f"{out.stem}-artifacts"
    names = {"kernel": req.kernel.name, "rootfs": "rootfs.ext4", "payload": "payload.tar"}
    staging = out.parent / f".{out.stem}-artifacts.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        shutil.copyfile(req.kernel, staging / names["kernel"])
        _link_or_copy(lava_rootfs(req.arch, req.image), staging / names["rootfs"])
        write_payload(staging / names["payload"])
        if artifacts.exists():
            shutil.rmtree(artifacts)
        staging.rename(artifacts)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    urls = {
        k: (f"{req.url_base.rstrip('/')}/{name}" if req.url_base else (artifacts / name).resolve().as_uri())
        for k, name in names.items()
    }
    atomic.write_text(out, yaml.safe_dump(job_definition(req, urls, cell), sort_keys=False, width=1000))
    return artifacts


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        proc.run(["cp", "--sparse=always", str(src), str(dst)], deadline=proc.Deadline.after(TOOL_TIMEOUT))
