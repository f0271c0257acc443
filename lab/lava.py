"""Scale-out on LAVA: job definitions for the lab's kernels, and LAVA's results back into results.json.

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
import re
import shutil
import tarfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from lab import console, ktap, proc, results
from lab.arches import Arch
from lab.errors import LabError, UserError
from lab.paths import REPO_ROOT, SUITES, cache_dir
from lab.results import Cell, Status

GUEST = REPO_ROOT / "lab" / "guest"
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
    image: Path  # the lab's ext4 guest image (lab.images)
    suites: tuple[str, ...]
    patterns: tuple[str, ...] = ()
    kernel_release: str = ""
    append: str = ""
    url_base: str = ""  # where the artifacts will be served; "" means file:// paths on this host
    test_minutes: int = TIMEOUTS["test"]


def kernel_cmdline(req: JobRequest) -> str:
    """Root on the first virtio disk (the rootfs), our init; a crash ends the job at once."""
    args = [f"console={req.arch.console}", "root=/dev/vda", "rootfstype=ext4", "rw", f"init={INIT_IN_IMAGE}"]
    # loglevel=6: LAVA waits for the "Linux version" banner, which is KERN_NOTICE (5).
    args += ["panic=-1", "oops=panic", "loglevel=6"]
    return " ".join(args + ([req.append] if req.append else []))


def guest_steps(req: JobRequest) -> list[str]:
    """The test definition's run steps: the suites (their exit status is not LAVA's business), then the cases."""
    run = ["python3", "-u", "/klab/suites/run.py", "--json", RESULTS_IN_GUEST]
    for suite in req.suites:
        run += ["--suite", suite]
    for pattern in req.patterns:
        run += ["-k", pattern]
    return [" ".join(_sh_quote(a) for a in run) + " || true", f"python3 /klab/lava-cases {RESULTS_IN_GUEST}"]


def _sh_quote(word: str) -> str:
    """Single-quote unless plainly safe: LAVA writes steps into a shell script verbatim."""
    safe = all(c.isalnum() or c in "-_./=:," for c in word)
    return word if word and safe else "'" + word.replace("'", "'\\''") + "'"


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
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    log = final.with_suffix(".log")
    try:
        proc.run(["cp", "--sparse=always", str(image), str(tmp)], deadline=proc.Deadline.after(TOOL_TIMEOUT), log=log)
        commands = tmp.with_suffix(".debugfs")
        commands.write_text(
            f"cd {os.path.dirname(_resolved_in_image(INIT_IN_IMAGE))}\n"
            f"write {INIT} {os.path.basename(INIT_IN_IMAGE)}\n"
            f"sif {os.path.basename(INIT_IN_IMAGE)} mode 0100755\n"
        )
        proc.run(["debugfs", "-w", "-f", str(commands), str(tmp)], deadline=proc.Deadline.after(TOOL_TIMEOUT), log=log)
        commands.unlink()
        proc.run(["e2fsck", "-f", "-y", str(tmp)], deadline=proc.Deadline.after(TOOL_TIMEOUT), log=log, check=False)
        proc.run(["resize2fs", "-M", str(tmp)], deadline=proc.Deadline.after(TOOL_TIMEOUT), log=log)
        size_mb = tmp.stat().st_size // (1 << 20) + ROOTFS_HEADROOM_MB
        proc.run(["resize2fs", str(tmp), f"{size_mb}M"], deadline=proc.Deadline.after(TOOL_TIMEOUT), log=log)
    except proc.CommandFailed as exc:
        tmp.unlink(missing_ok=True)
        raise LabError(f"cannot make the LAVA rootfs from {image}: {exc}; log: {log}") from exc
    os.replace(tmp, final)
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

    tmp = path.with_name(f".{path.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
        tar.add(SUITES, arcname="klab/suites", filter=clean)
        tar.add(CASES, arcname="klab/lava-cases", filter=clean)
    os.replace(tmp, path)


def write_job(req: JobRequest, out: Path, cell: str) -> Path:
    """Write the job and its artifacts (kernel, rootfs, payload) in `<job stem>-artifacts/` beside it."""
    if not req.kernel.is_file():
        raise UserError(f"kernel image {req.kernel} does not exist")
    if not req.image.is_file():
        raise UserError(
            f"guest image {req.image} does not exist; build it with `klab image build --arch {req.arch.name}`"
        )
    artifacts = out.parent / f"{out.stem}-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    files = {
        "kernel": artifacts / req.kernel.name,
        "rootfs": artifacts / "rootfs.ext4",
        "payload": artifacts / "payload.tar",
    }
    shutil.copyfile(req.kernel, files["kernel"])
    _link_or_copy(lava_rootfs(req.arch, req.image), files["rootfs"])
    write_payload(files["payload"])
    urls = {
        k: (f"{req.url_base.rstrip('/')}/{p.name}" if req.url_base else p.resolve().as_uri()) for k, p in files.items()
    }
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(yaml.safe_dump(job_definition(req, urls, cell), sort_keys=False, width=1000))
    os.replace(tmp, out)
    return artifacts


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        proc.run(["cp", "--sparse=always", str(src), str(dst)], deadline=proc.Deadline.after(TOOL_TIMEOUT))


# --- results back -----------------------------------------------------------------------------------

# LAVA's four results; lava-cases sends ERROR as unknown.
_STATUS = {"pass": Status.PASS, "fail": Status.FAIL, "skip": Status.SKIP, "unknown": Status.ERROR}
LOG_NAME = "lava.log"  # where `lava-run ... > DIR/lava.log 2>&1` puts the dispatcher's log


@dataclass
class LavaRun:
    """What a LAVA job left: its result records, the console, and the job verdict."""

    records: list[dict[str, Any]] = field(default_factory=list)
    console: str = ""
    boot_command: str = ""
    seconds: float = 0.0


def read_lava_results(path: Path) -> LavaRun:
    """A lava-run log (one YAML record a line; a dir means DIR/lava.log) or a server's results export."""
    if path.is_dir():
        path = path / LOG_NAME
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise UserError(f"cannot read LAVA results {path}: {exc.strerror}") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        doc = None
    if isinstance(doc, list) and all(isinstance(r, dict) and "suite" in r and "name" in r for r in doc):
        # The server's /results/<job>/yaml: suite is the definition, name the case.
        return LavaRun([dict(r, case=r["name"], definition=r["suite"]) for r in doc])
    return _read_log(text, path)


def _read_log(text: str, path: Path) -> LavaRun:
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.startswith("{"):
            continue
        try:
            rec = yaml.safe_load(line)
        except yaml.YAMLError as exc:
            raise UserError(f"{path}:{number}: not a LAVA log record: {exc}") from exc
        if isinstance(rec, dict):
            records.append(rec)
    if not records:
        raise UserError(f"{path}: no LAVA log records or results in it; pass lava-run's log or a results export")
    run = LavaRun([r["msg"] for r in records if r.get("lvl") == "results" and isinstance(r.get("msg"), dict)])
    run.console = "".join(f"{r['msg']}\n" for r in records if r.get("lvl") == "target" and isinstance(r["msg"], str))
    boot = [r["msg"] for r in records if isinstance(r.get("msg"), str) and r["msg"].startswith("Boot command: ")]
    run.boot_command = boot[0] if boot else ""
    stamps = [_timestamp(r.get("dt")) for r in records]
    known = [s for s in stamps if s is not None]
    run.seconds = round(max(known) - min(known), 2) if known else 0.0
    return run


def _timestamp(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError:
        return None


def to_cell(run: LavaRun, cell_id: str, arch: str, planned: list[tuple[str, str]], kernel_release: str = "") -> Cell:
    """One results.Cell: LAVA's verdict per test, reasons and logs from the guest's KTAP on the console."""
    by_ktap = {(t.suite, t.name): t for t in results.from_ktap(ktap.parse(run.console))} if run.console else {}
    tests = []
    for rec in run.records:
        if rec.get("definition") == "lava" or "case" not in rec:
            continue  # the dispatcher's own actions, not tests
        suite, _, name = str(rec["case"]).partition(".")
        status = _STATUS.get(str(rec.get("result")), Status.ERROR)
        seen = by_ktap.get((suite, name))
        reason = f"LAVA: {rec.get('result')}" if status is not Status.PASS else ""
        if seen and seen.status is status:
            reason = seen.reason
        seconds = _float(rec.get("measurement")) if rec.get("units") == "seconds" else 0.0
        tests.append(
            {"suite": suite, "name": name, "status": status.value, "reason": reason, "duration": seconds}
            | {"log": seen.log if seen else ""}
        )
    events = console.scan(run.console)
    cell = Cell(id=cell_id, arch=arch, kernel_release=kernel_release or _release(run.console))
    cell.kernel_events = events
    cell.tests = results.collect(planned, {"tests": tests}, None, run.console, events)
    cell.accel = "kvm" if ("accel=kvm" in run.boot_command or "-enable-kvm" in run.boot_command) else "tcg"
    cell.accel_reason = "from the LAVA device's QEMU command line"
    cell.error = _job_error(run.records)
    cell.durations = {"total": run.seconds} if run.seconds else {}
    return cell


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


_BANNER = re.compile(r"Linux version (\S+)")


def _release(text: str) -> str:
    """The kernel's own banner on the console, when the job did not say."""
    match = _BANNER.search(text)
    return match.group(1) if match else ""


def _job_error(records: list[dict[str, Any]]) -> str:
    """LAVA's job verdict: a failed job is a lab error here (a failed test is a test result, not this)."""
    job = next((r for r in records if r.get("definition") == "lava" and r.get("case") == "job"), None)
    if job is None or job.get("result") == "pass":
        return ""
    return f"LAVA job failed ({job.get('error_type', 'unknown')} error): {job.get('error_msg', 'no message')}"
