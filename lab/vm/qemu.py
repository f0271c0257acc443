"""Boot plans and the QEMU process: plan first (pure), then run.

`qemu_argv(plan)` returns the full command line (unit-tested, printed so
anyone can rerun it). `Machine` runs it with the serial console under
pexpect, saves the whole console, and makes sure QEMU never outlives it.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar

import pexpect
from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from lab import proc
from lab.arches import Arch
from lab.errors import KernelFailure, LabError
from lab.paths import HOME
from lab.proc import Deadline
from lab.results import consolelog
from lab.results.consolelog import EventKind
from lab.vm import console, relay
from lab.vm.accel import Decision
from lab.vm.bootfiles import check_kernel_image
from lab.vm.console import WatchEnd, WatchResult

HOST_ROOTFS = "host"
# Where the lab's init mounts the shares in the guest (see lab/guest/init).
GUEST_KLAB = "/run/klab"
GUEST_RESULTS = "/run/results"
# Boot deadline to the lab's init under KVM; TCG and slow arches scale it.
BOOT_TIMEOUT_KVM = 30.0
# The boot deadline of a guest that waits for gdb (--gdb-wait): a day, as good as none.
GDB_WAIT_SECONDS = 24 * 3600.0
TCG_FACTOR = 4.0


@dataclass(frozen=True)
class BootPlan:
    """Everything needed to start one guest; derived values are properties."""

    arch: Arch
    kernel: Path
    accel: Decision
    rootfs: str  # HOST_ROOTFS or the path of an ext4 image
    results_dir: Path  # the writable "results" share; its .klab/ is the control dir
    workdir: Path  # the console log and, on a crash, the memory dump
    append: str = ""
    memory_mb: int = 0
    cpus: int = 0
    ssh_port: int | None = None
    agent: bool = False
    stdio: bool = False  # the command's stdin, stdout and stderr on virtio-serial ports of their own (lab.vm.relay)
    gdb_port: int | None = None  # QEMU's gdbstub on 127.0.0.1:PORT (`--gdb`); the kernel then boots with nokaslr
    gdb_wait: bool = False  # QEMU's -S: the CPUs wait for gdb's `continue` (`--gdb-wait`); no boot deadline then
    qmp: bool = False  # a QMP socket, and a panic that halts instead of rebooting: the memory can be dumped
    klab_dir: Path = field(default=HOME)
    # UNIX sockets (agent, QMP) live apart from workdir: a socket path is limited to
    # 107 bytes, which a results directory deep in a CI tree easily passes.
    socket_dir: Path | None = None

    @property
    def console_log(self) -> Path:
        return self.workdir / "console.log"

    @property
    def agent_socket(self) -> Path:
        return self._socket("agent.sock")

    @property
    def qmp_socket(self) -> Path:
        return self._socket("qmp.sock")

    def stdio_socket(self, stream: str) -> Path:
        return self._socket(relay.socket_name(stream))

    def _socket(self, name: str) -> Path:
        if self.socket_dir is None:
            raise ValueError(f"{name} needs a BootPlan with a socket_dir (command.make_plan gives one)")
        return self.socket_dir / name

    @property
    def boot_timeout(self) -> float:
        if self.accel.accel == "kvm":
            return BOOT_TIMEOUT_KVM
        return BOOT_TIMEOUT_KVM * TCG_FACTOR * self.arch.tcg_slowdown

    def scaled(self, seconds: float) -> float:
        """A deadline for guest work, stretched under TCG."""
        return seconds if self.accel.accel == "kvm" else seconds * TCG_FACTOR * self.arch.tcg_slowdown


# Root on the first virtio disk: the lab's ext4 image.
IMAGE_ROOT = ("root=/dev/vda", "rootfstype=ext4", "rw")


def crash_args(arch: Arch, loglevel: int = 5, keep_panicked: bool = False) -> list[str]:
    """The console, and a crash that ends the run at once instead of hanging until the deadline.

    With keep_panicked the kernel stays in its panic loop (panic=0) instead, so
    the host can dump its memory before QEMU is stopped.
    """
    panic = "panic=0" if keep_panicked else "panic=-1"
    return [f"console={arch.console}", panic, "oops=panic", f"loglevel={loglevel}"]


def kernel_cmdline(plan: BootPlan) -> str:
    args = crash_args(plan.arch, keep_panicked=plan.qmp)
    if plan.gdb_port is not None:
        args.append("nokaslr")  # symbols from vmlinux at their link addresses: what gdb reads
    if plan.rootfs == HOST_ROOTFS:
        args += [
            "root=root",
            "rootfstype=9p",
            "rootflags=trans=virtio,version=9p2000.L,msize=262144,cache=loose",
            "ro",
            f"init={plan.klab_dir / 'lab/guest/init'}",
        ]
    else:
        args += [*IMAGE_ROOT, "init=/sbin/klab-init"]
    if plan.ssh_port is not None:
        args.append("ip=10.0.2.15::10.0.2.2:255.255.255.0::eth0:off")
    if plan.append:
        args.append(plan.append)
    return " ".join(args)


def _share(tag: str, path: Path, readonly: bool) -> list[str]:
    fsdev = f"local,id={tag},path={path},security_model=none,multidevs=remap"
    if readonly:
        fsdev += ",readonly=on"
    return ["-fsdev", fsdev, "-device", f"virtio-9p-pci,fsdev={tag},mount_tag={tag}"]


def qemu_argv(plan: BootPlan) -> list[str]:
    arch = plan.arch
    kvm = plan.accel.accel == "kvm"
    argv = [arch.qemu, *(arch.machine_kvm if kvm else arch.machine_tcg)]
    argv += ["-cpu", arch.cpu_kvm if kvm else arch.cpu_tcg]
    argv += ["-m", str(plan.memory_mb or arch.memory_mb), "-smp", str(plan.cpus or arch.cpus)]
    argv += ["-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]
    # Console on stdio (pexpect's pty); signal=off keeps Ctrl-C for the guest shell.
    argv += ["-chardev", "stdio,id=con,signal=off", "-serial", "chardev:con"]
    argv += ["-kernel", str(plan.kernel), "-append", kernel_cmdline(plan)]
    if plan.rootfs == HOST_ROOTFS:
        argv += _share("root", Path("/"), readonly=True)
    else:
        # snapshot=on: the cached image is never modified by a run. An explicit device placed
        # before the shares takes the first virtio slot, so the guest sees it as /dev/vda.
        argv += ["-drive", f"file={plan.rootfs},format=raw,if=none,id=rootdisk,snapshot=on"]
        argv += ["-device", "virtio-blk-pci,drive=rootdisk"]
    argv += _share("klab", plan.klab_dir, readonly=True)
    argv += _share("results", plan.results_dir, readonly=False)
    if plan.agent or plan.stdio:
        argv += ["-device", "virtio-serial-pci"]
    if plan.agent:
        argv += ["-chardev", f"socket,id=agent,path={plan.agent_socket},server=on,wait=off"]
        argv += ["-device", "virtserialport,chardev=agent,name=klab"]
    if plan.stdio:
        # klab listens (lab.vm.relay); QEMU connects as it starts, before the guest runs.
        for stream in relay.STREAMS:
            argv += ["-chardev", f"socket,id=klab-{stream},path={plan.stdio_socket(stream)}"]
            argv += ["-device", f"virtserialport,chardev=klab-{stream},name={relay.port_name(stream)}"]
    if plan.gdb_port is not None:
        argv += ["-gdb", f"tcp:127.0.0.1:{plan.gdb_port}"]
    if plan.gdb_wait:
        argv.append("-S")
    if plan.qmp:
        argv += ["-qmp", f"unix:{plan.qmp_socket},server=on,wait=off"]
    if plan.ssh_port is not None:
        argv += ["-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{plan.ssh_port}-:22"]
        argv += ["-device", "virtio-net-pci,netdev=net0"]
    return argv


def gdb_command(vmlinux: Path, port: int) -> str:
    """The command that attaches gdb to a guest started with --gdb; lx-symbols needs CONFIG_GDB_SCRIPTS."""
    argv = ["gdb-multiarch", str(vmlinux), "-ex", f"target remote 127.0.0.1:{port}"]
    if (vmlinux.parent / "vmlinux-gdb.py").exists():
        argv += ["-ex", "lx-symbols"]
    return shlex.join(argv)


_QEMU_SAYS = re.compile(r"^qemu-system-\w+: .*$", re.MULTILINE)
_QEMU_SIGNALLED = re.compile(r"^qemu-system-\w+: terminating on signal (\d+)(?: from pid (\d+))?(?: \((.*)\))?", re.M)


def outside_cause(text: str, exitstatus: int | None, signalstatus: int | None) -> str:
    """'' when QEMU ended as the guest asked (exit 0), else what ended it, for the error line."""
    if signalstatus is not None:
        name = signal.Signals(signalstatus).name if signalstatus in signal.Signals._value2member_map_ else ""
        return f"was killed by signal {signalstatus}{f' ({name})' if name else ''}"
    said = _QEMU_SIGNALLED.search(text)
    if said:
        sender = (
            f" from pid {said.group(2)}" + (f" ({said.group(3)})" if said.group(3) else "") if said.group(2) else ""
        )
        return f"was stopped by signal {said.group(1)}{sender}"
    if exitstatus:
        qemu_error = _QEMU_SAYS.search(text)
        return f"exited with status {exitstatus}" + (f" ({qemu_error.group(0)})" if qemu_error else "")
    return ""


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (SSH forwarding binds loopback only)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare_control(plan: BootPlan, mode: str, command: str = "") -> Path:
    """Write the guest's control files into the results share before boot."""
    ctl = plan.results_dir / ".klab"
    if ctl.exists():
        shutil.rmtree(ctl)
    ctl.mkdir(parents=True)
    (ctl / "mode").write_text(mode + "\n")
    (ctl / "console").write_text(plan.arch.console + "\n")
    if command:
        (ctl / "command").write_text(command + "\n")
    return ctl


class Machine:
    """One running guest. `with Machine(plan) as vm:`: QEMU is gone when the block ends."""

    _running: ClassVar[set[Machine]] = set()  # every started, unclosed machine of this process
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, plan: BootPlan) -> None:
        self.plan = plan
        self.child: pexpect.spawn | None = None
        self.started = 0.0
        self.stopped = False  # stop_all ended it: the run was interrupted, not the guest's doing
        self._logf: IO[str] | None = None

    @classmethod
    def stop_all(cls) -> None:
        """End every running guest (an interrupted parallel run): each waiting thread then sees QEMU gone."""
        with cls._lock:
            running = list(cls._running)
        for vm in running:
            vm.stopped = True
            if vm.child is not None and vm.child.isalive():
                vm.child.terminate(force=True)

    def __enter__(self) -> Machine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def argv(self) -> list[str]:
        return qemu_argv(self.plan)

    def start(self) -> None:
        binary = shutil.which(self.plan.arch.qemu)
        if binary is None:
            raise LabError(f"{self.plan.arch.qemu} not found: install the Debian package {self.plan.arch.qemu_package}")
        check_kernel_image(self.plan.arch, self.plan.kernel)
        self.plan.workdir.mkdir(parents=True, exist_ok=True)
        if self.plan.socket_dir is not None:
            self.plan.socket_dir.mkdir(mode=0o700, exist_ok=True)  # made already where klab listens (stdio)
        argv = self.argv
        argv = proc.dies_with_us(argv)  # the kernel dies with us, even when we are SIGKILLed
        self._logf = open(self.plan.console_log, "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._logf.write(f"{consolelog.COMMAND_MARK}{shlex.join(self.argv)}\n")
        self._logf.flush()
        self.started = time.monotonic()
        self.child = pexpect.spawn(
            argv[0],
            argv[1:],
            encoding="utf-8",
            codec_errors="replace",
            timeout=None,
            searchwindowsize=8192,
            dimensions=(50, 200),
            env=dict(os.environ, TERM="dumb"),
        )
        self.child.logfile_read = self._logf
        with self._lock:
            self._running.add(self)

    def watcher(self) -> console.Watcher:
        assert self.child is not None
        return console.Watcher(self.child, self.plan.console_log)

    def wait_for_init(self, deadline: Deadline) -> float:
        """Wait until the lab's init runs; a panic or a silent hang first is a kernel failure."""
        # Under --gdb-wait the boot starts when the debugger says so: only the caller's deadline holds.
        limit = deadline if self.plan.gdb_wait else deadline.within(self.plan.boot_timeout)
        result = self.watcher().wait(consolelog.INIT_STARTED, limit)
        if result.end is WatchEnd.MARKER:
            return time.monotonic() - self.started
        raise self.failure(result, "before the lab's init started")

    def wait_for_exit(self, deadline: Deadline) -> WatchResult:
        """Wait for QEMU to exit (the guest powers off); returns early on a fatal report."""
        assert self.child is not None
        result = self.watcher().wait("\0never\0", deadline)
        if result.end is WatchEnd.EOF:
            self.child.close()
        return result

    def failure(self, result: WatchResult, when: str) -> LabError | KernelFailure:
        """The error a bad console wait means: LabError when the lab is at fault, else KernelFailure."""
        text = self.watcher().text()
        fatal_init = consolelog.init_fatal(text)
        if fatal_init:
            return LabError(f"the guest could not be set up: {fatal_init} (console: {self.plan.console_log})")
        qemu_error = _QEMU_SAYS.search(text)
        if qemu_error and not consolelog.reached_init(text):
            return LabError(f"QEMU failed: {qemu_error.group(0)}")
        if result.end is WatchEnd.FATAL and result.event is not None:
            return KernelFailure(f"kernel {result.event.kind} {when}", result.event.kind, result.event.excerpt)
        if result.end is WatchEnd.TIMEOUT:
            kind = EventKind.TIMEOUT if consolelog.reached_init(text) else EventKind.BOOT_TIMEOUT
            what = "no output at all" if not consolelog.tail(text).strip() else "the console went quiet"
            return KernelFailure(f"{kind} {when}: {what}", kind, consolelog.tail(text))
        fatal = [e for e in consolelog.scan(text) if e.fatal]
        if fatal:
            return KernelFailure(f"kernel {fatal[0].kind} {when}", fatal[0].kind, fatal[0].excerpt)
        cause = self.ended_from_outside(text)
        if cause:
            return LabError(f"QEMU {cause} {when}, and the console shows no kernel report: not the kernel's doing")
        what = f"the guest reset itself {when} with no kernel report"
        return KernelFailure(what, EventKind.DIED, consolelog.tail(text))

    def ended_from_outside(self, text: str) -> str:
        """How QEMU ended when something other than the guest ended it ('' when the guest reset or powered off).

        The guest ending makes QEMU exit 0 (it runs with -no-reboot); a signal
        (the OOM killer's SIGKILL, a CI runner's or a user's kill), QEMU's own
        error exit, or QEMU's "terminating on signal" line mean the host did it.
        """
        if self.child is None or self.child.isalive():
            return ""
        self.child.close()
        if self.stopped:
            return "was stopped because the run was interrupted"
        return outside_cause(text, self.child.exitstatus, self.child.signalstatus)

    def dump_memory(self, dest: Path) -> Path | None:
        """The guest's memory as an ELF core (QMP dump-guest-memory), for `crash` or gdb; None without QMP."""
        if not self.plan.qmp or self.child is None or not self.child.isalive():
            return None
        monitor = QEMUMonitorProtocol(str(self.plan.qmp_socket))
        try:
            monitor.connect()
            monitor.cmd("dump-guest-memory", paging=False, protocol=f"file:{dest}")
        except (OSError, QMPError) as exc:
            raise LabError(f"dumping the guest's memory failed: {exc}") from exc
        finally:
            monitor.close()
        return dest

    def close(self) -> None:
        """Stop QEMU: it normally exited already; otherwise terminate, then kill."""
        with self._lock:
            self._running.discard(self)
        if self.child is not None:
            if self.child.isalive():
                self.child.terminate(force=True)
            self.child.close(force=True)
            self.child = None
        if self._logf is not None:
            self._logf.close()
            self._logf = None
        if self.plan.socket_dir is not None:
            shutil.rmtree(self.plan.socket_dir, ignore_errors=True)
