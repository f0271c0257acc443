"""Boot a kernel, run one command in the guest, bring back its exit status and the console verdict."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lab.arches import Arch, is_native
from lab.errors import KernelFailure, LabError, UserError
from lab.proc import Deadline
from lab.results import consolelog
from lab.vm import accel
from lab.vm.qemu import HOST_ROOTFS, BootPlan, Machine, prepare_control

COMMAND_TIMEOUT = 600.0


@dataclass
class RunResult:
    exit_status: int
    boot_seconds: float
    total_seconds: float
    console_log: Path
    events: list[consolelog.KernelEvent] = field(default_factory=list)


class _Tee:
    """pexpect logfile that writes to the console log and, optionally, to the user's terminal."""

    def __init__(self, *outs: TextSink) -> None:
        self.outs = outs

    def write(self, data: str) -> None:
        for out in self.outs:
            out.write(data)

    def flush(self) -> None:
        for out in self.outs:
            out.flush()


def make_plan(
    arch: Arch,
    kernel: Path,
    *,
    rootfs: str = HOST_ROOTFS,
    accel_request: str = "auto",
    results_dir: Path | None = None,
    workdir: Path | None = None,
    append: str = "",
    memory_mb: int = 0,
    cpus: int = 0,
    ssh_port: int | None = None,
    agent: bool = False,
    gdb_port: int | None = None,
    qmp: bool = False,
) -> BootPlan:
    """Validate boot inputs (nothing runs before this passes) and pick the accelerator."""
    if rootfs == HOST_ROOTFS and not is_native(arch):
        raise UserError(f"--rootfs host shares this host's / and needs a {arch.name} host; use --rootfs image")
    if rootfs != HOST_ROOTFS and not Path(rootfs).is_file():
        raise UserError(f"rootfs image {rootfs} does not exist; build it with `klab image build --arch {arch.name}`")
    decision = accel.decide(arch, accel_request)
    if results_dir is None or workdir is None:
        scratch = Path(tempfile.mkdtemp(prefix="klab-run-"))
        results_dir, workdir = results_dir or scratch / "results", workdir or scratch
    # Short, private, and removed when the machine closes (see BootPlan.socket_dir).
    socket_dir = Path(tempfile.mkdtemp(prefix="klab-sock-")) if agent or qmp else None
    return BootPlan(
        arch=arch,
        kernel=kernel.resolve(),
        accel=decision,
        rootfs=rootfs if rootfs == HOST_ROOTFS else str(Path(rootfs).resolve()),
        results_dir=results_dir.resolve(),
        workdir=workdir.resolve(),
        append=append,
        memory_mb=memory_mb,
        cpus=cpus,
        ssh_port=ssh_port,
        agent=agent,
        gdb_port=gdb_port,
        qmp=qmp,
        socket_dir=socket_dir,
    )


@contextlib.contextmanager
def _console_on_failure(log: Path) -> Iterator[None]:
    """Kernel failures carry the console log's path, so the user can read the whole boot."""
    try:
        yield
    except KernelFailure as exc:
        exc.console_log = log
        raise


class TextSink(Protocol):
    """Where the console goes besides its log: a terminal, or lab.run.progress.ConsoleTap."""

    def write(self, data: str, /) -> object: ...

    def flush(self) -> object: ...


def run_command(
    plan: BootPlan, command: str, deadline: Deadline | None = None, stream: TextSink | None = None
) -> RunResult:
    """Boot, run `command` (a shell command line) in the guest, power off, all by `deadline`.

    The boot, the command and the power-off draw on that one deadline (the
    default: COMMAND_TIMEOUT, stretched under TCG). Raises KernelFailure when
    the kernel crashes or hangs (before or during the command), LabError when
    the lab could not do its part.
    """
    deadline = deadline or Deadline.after(plan.scaled(COMMAND_TIMEOUT))
    plan.results_dir.mkdir(parents=True, exist_ok=True)
    ctl = prepare_control(plan, "run", command)
    start = time.monotonic()
    with _console_on_failure(plan.console_log), Machine(plan) as vm:
        if stream is not None:
            assert vm.child is not None and vm._logf is not None
            vm.child.logfile_read = _Tee(vm._logf, stream)
        try:
            boot = vm.wait_for_init(deadline)
            result = vm.watcher().wait(consolelog.COMMAND_EXITED, deadline)
            if result.reason not in ("marker", "eof"):
                raise vm.failure(result, "while the command ran")
        except KernelFailure as exc:
            exc.memory_dump = vm.dump_memory(plan.workdir / "vmcore.elf")
            raise
        # The guest reboots into QEMU's -no-reboot exit; a guest that lingers is killed on leaving.
        vm.wait_for_exit(deadline.within(plan.scaled(15)))
    text = consolelog.read(plan.console_log)
    events = consolelog.scan(text)
    status_file = ctl / "exit-status"
    if not status_file.is_file():
        fatal = [e for e in events if e.fatal]
        if fatal:
            raise KernelFailure(f"kernel {fatal[0].kind} while the command ran", fatal[0].kind, fatal[0].excerpt)
        raise LabError(f"the guest powered off without reporting an exit status; console: {plan.console_log}")
    return RunResult(int(status_file.read_text().strip()), boot, time.monotonic() - start, plan.console_log, events)
