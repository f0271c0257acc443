"""Boot a kernel, run one command in the guest, bring back its exit status and the console verdict."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from lab.arches import Arch, is_native
from lab.errors import CommandTimeout, KernelFailure, LabError, UserError
from lab.paths import cache_root
from lab.proc import Deadline
from lab.results import consolelog
from lab.vm import relay
from lab.vm.accel import Decision
from lab.vm.console import WatchEnd
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
    accel: Decision,
    *,
    workdir: Path,
    results_dir: Path | None = None,
    rootfs: str = HOST_ROOTFS,
    append: str = "",
    memory_mb: int = 0,
    cpus: int = 0,
    ssh_port: int | None = None,
    agent: bool = False,
    stdio: bool = False,
    gdb_port: int | None = None,
    qmp: bool = False,
    socket_root: Path | None = None,
) -> BootPlan:
    """Check the boot inputs and compute the plan; nothing runs and no directory is made here.

    The accelerator is decided by the caller (lab.vm.accel.decide boots probe
    guests); the workdir, the results share (default: workdir/results) and the
    socket dir are made when the machine starts (qemu.Machine.start).
    """
    if rootfs == HOST_ROOTFS and not is_native(arch):
        raise UserError(f"--rootfs host shares this host's / and needs a {arch.name} host; use --rootfs image")
    if rootfs != HOST_ROOTFS and not Path(rootfs).is_file():
        raise UserError(f"rootfs image {rootfs} does not exist; build it with `klab image build --arch {arch.name}`")
    # Short and private (see BootPlan.socket_dir); the machine makes it and removes it.
    base = socket_root or Path(tempfile.gettempdir())
    socket_dir = base / f"klab-sock-{secrets.token_hex(4)}" if agent or stdio or qmp else None
    return BootPlan(
        arch=arch,
        kernel=kernel.resolve(),
        accel=accel,
        rootfs=rootfs if rootfs == HOST_ROOTFS else str(Path(rootfs).resolve()),
        results_dir=(results_dir or workdir / "results").resolve(),
        workdir=workdir.resolve(),
        append=append,
        memory_mb=memory_mb,
        cpus=cpus,
        ssh_port=ssh_port,
        agent=agent,
        stdio=stdio,
        gdb_port=gdb_port,
        qmp=qmp,
        socket_dir=socket_dir,
    )


KEEP_RUNS = 10  # interactive boots whose console logs stay in the cache's logs/


def scratch() -> Path:
    """Where one interactive boot (`klab run`, `klab shell`) keeps its console log and results share.

    In the cache's logs/, so the console log a message names is still there
    afterwards; the machine makes it when it starts. `prune_runs` keeps the newest.
    """
    return cache_root() / "logs" / f"{time.strftime('run-%Y%m%d-%H%M%S')}-{os.getpid()}"


def prune_runs(keep: int = KEEP_RUNS) -> None:
    """Remove all but the newest `keep` interactive boot dirs: boots leave no litter."""
    runs = sorted((cache_root() / "logs").glob("run-*"), key=lambda p: p.stat().st_mtime)
    for old in runs[: max(0, len(runs) - keep)]:
        shutil.rmtree(old, ignore_errors=True)


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


def guest_cwd(plan: BootPlan, here: Path) -> str | None:
    """Where `klab run` runs its command: the caller's directory when the guest's / is the host's (as vng does).

    An image has none of the host's directories: there the init's /tmp it is.
    """
    return str(here) if plan.rootfs == HOST_ROOTFS else None


def run_command(
    plan: BootPlan,
    command: str,
    timeout: float = COMMAND_TIMEOUT,
    stream: TextSink | None = None,
    fds: relay.StdFds | None = None,
    cwd: str | None = None,
) -> RunResult:
    """Boot, run `command` (a shell command line) in the guest within `timeout` seconds, power off.

    With `fds` (a plan made with stdio=True) the command reads klab's stdin and
    writes klab's stdout and stderr, byte for byte (lab.vm.relay); without, its
    output goes to the console with the kernel's (where the suites' harness is
    read) and its stdin is empty. `cwd`: its directory in the guest (default /tmp).
    The boot has its own deadline (the plan's boot timeout: a loaded host
    slows the boot, and a short --timeout is the command's, not the boot's);
    the command and the power-off then draw on `timeout`, stretched under TCG.
    Under --gdb-wait the boot waits for a person: one deadline, `timeout`,
    holds the wait, the boot and the command, so a forgotten debugger ends.
    Raises KernelFailure when the kernel crashes or hangs (before or during
    the command), CommandTimeout when the command outlives its deadline while
    the kernel says nothing, LabError when the lab could not
    do its part (QEMU killed from outside included).
    """
    if fds is not None and not plan.stdio:
        raise ValueError("run_command with fds needs a plan made with stdio=True")
    booting = Deadline.after(plan.scaled(timeout) if plan.gdb_wait else plan.boot_timeout)
    ctl = prepare_control(plan, "run", command)
    if cwd is not None:
        (ctl / "cwd").write_text(cwd)
    pipes = None
    if fds is not None:
        pipes = relay.Relay({s: plan.stdio_socket(s) for s in relay.STREAMS}, fds, relay.new_mark())
        (ctl / "end-mark").write_bytes(pipes.mark)
    start = time.monotonic()
    try:
        if pipes is not None:
            pipes.listen()
        with _console_on_failure(plan.console_log), Machine(plan) as vm:
            if stream is not None:
                assert vm.child is not None and vm._logf is not None
                vm.child.logfile_read = _Tee(vm._logf, stream)
            try:
                if pipes is not None:
                    _connect(vm, pipes, booting)
                boot = vm.wait_for_init(booting)
                deadline = booting if plan.gdb_wait else Deadline.after(plan.scaled(timeout))
                result = vm.watcher().wait(consolelog.COMMAND_EXITED, deadline)
                if result.end is WatchEnd.TIMEOUT:
                    raise _timed_out(plan, timeout)
                if result.end is not WatchEnd.MARKER:
                    raise vm.failure(result, "while the command ran")
            except KernelFailure as exc:
                exc.memory_dump = vm.dump_memory(plan.workdir / "vmcore.elf")
                raise
            if pipes is not None:
                _drain(plan, pipes, deadline)
            # The guest reboots into QEMU's -no-reboot exit; a guest that lingers is killed on leaving.
            vm.wait_for_exit(deadline.within(plan.scaled(15)))
    finally:
        if pipes is not None:
            pipes.close()  # after QEMU is gone: what it sent before a crash is still passed on
    status_file = ctl / "exit-status"
    if not status_file.is_file():
        raise LabError(f"the guest's init ended the command without its exit status; console: {plan.console_log}")
    events = consolelog.scan(consolelog.read(plan.console_log))
    return RunResult(int(status_file.read_text().strip()), boot, time.monotonic() - start, plan.console_log, events)


def _connect(vm: Machine, pipes: relay.Relay, deadline: Deadline) -> None:
    """Connect the command's streams; QEMU failing to start (a bad option, a missing file) says why on its console."""
    assert vm.child is not None
    try:
        pipes.accept(deadline.within(vm.plan.boot_timeout), vm.child.isalive)
    except LabError:
        raise vm.failure(vm.wait_for_exit(deadline.within(5)), "before the guest started") from None
    pipes.start()


def _drain(plan: BootPlan, pipes: relay.Relay, deadline: Deadline) -> None:
    """Wait until the command's output has all come (its end marks); the guest powers off only then."""
    if not pipes.wait(deadline):
        why = "within the deadline" if deadline.expired else "before the guest's ports closed"
        raise LabError(f"the command exited but its output did not all arrive {why}; console: {plan.console_log}")


def _timed_out(plan: BootPlan, timeout: float) -> KernelFailure | CommandTimeout:
    """A kernel report on the console (a hung task, a soft lockup...) makes it the kernel's; else the command's."""
    text = consolelog.read(plan.console_log)
    reports = consolelog.scan(text)
    if reports:
        first = reports[0]
        return KernelFailure(
            f"kernel {first.kind} while the command ran, which then timed out", first.kind, first.excerpt
        )
    stretched = f" ({plan.scaled(timeout):.0f} s under TCG)" if plan.scaled(timeout) != timeout else ""
    return CommandTimeout(
        f"the command did not finish within {timeout:.0f} s{stretched}, and the kernel reported nothing; "
        f"give it more with --timeout (console: {plan.console_log})",
        consolelog.tail(text),
    )
