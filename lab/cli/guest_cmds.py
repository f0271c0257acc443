"""Commands that boot a guest for a person: `klab run` (one command) and `klab shell`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from lab import arches
from lab.cli import args as common
from lab.errors import UserError
from lab.results import consolelog
from lab.vm import command, qemu, relay, session, shell


def cmd_run(args: argparse.Namespace) -> int:
    guest_argv = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not guest_argv:
        raise UserError("no command given: klab run ... -- CMD [ARGS...]")
    plan = common.boot_plan(args, command.scratch(), stdio=True)
    command.prune_runs()
    if args.verbose:
        print(f"$ {shlex.join(qemu.qemu_argv(plan))}", file=sys.stderr)
        print(f"klab: accel {plan.accel.accel} ({plan.accel.why})", file=sys.stderr)
    _announce_gdb(args, plan)
    sys.stdout.flush()
    stdin = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.fileno()
    result = command.run_command(
        plan,
        shlex.join(guest_argv),
        args.timeout,
        stream=sys.stderr if args.verbose else None,
        fds=relay.StdFds(stdin, sys.stdout.fileno(), sys.stderr.fileno()),
        cwd=command.guest_cwd(plan, Path.cwd()),
    )
    if args.verbose or result.events:
        print(
            f"klab: exit {result.exit_status}, boot {result.boot_seconds:.1f}s, "
            f"total {result.total_seconds:.1f}s, console {result.console_log}",
            file=sys.stderr,
        )
    for event in result.events:
        print(f"klab: kernel {event.kind}: {event.title}", file=sys.stderr)
    return result.exit_status


def cmd_shell(args: argparse.Namespace) -> int:
    if args.ssh:
        check_host_sshd(args)
    work = command.scratch()
    plan = common.boot_plan(args, work, ssh_port=qemu.free_port() if args.ssh else None)
    command.prune_runs()
    # Piped stdin is a script, read to its end before the boot: `echo 'uname -r' | klab shell`.
    script = None if sys.stdin.isatty() else sys.stdin.buffer.read()
    _announce_gdb(args, plan)
    if args.ssh:
        with session.SSHSession(plan) as sess:
            if script is None:
                print(f"klab: guest up in {sess.boot_seconds:.1f}s; ssh session, {shell.ESCAPE_HELP}", file=sys.stderr)
            end = session.interactive_ssh(sess, script)
        status = None if isinstance(end, shell.Ending) else str(end)
        ending = end if isinstance(end, shell.Ending) else shell.Ending.EOF
        verdict = shell.verdict(consolelog.read(plan.console_log), status, ending, "", plan.console_log)
    else:
        qemu.prepare_control(plan, "shell")
        verdict = shell.console_shell(plan, script)
    if verdict.message:
        print(verdict.message, file=sys.stderr)
    return verdict.exit_status


HOST_SSHD = Path("/usr/sbin/sshd")


def check_host_sshd(args: argparse.Namespace, sshd: Path = HOST_SSHD) -> None:
    """--ssh on the host's own root needs the host's sshd: say so before anything boots."""
    host_root = args.rootfs == qemu.HOST_ROOTFS or (args.rootfs == "auto" and arches.is_native(arches.get(args.arch)))
    if host_root and not sshd.is_file():
        raise UserError(
            f"--ssh on the host's root needs {sshd}, which this host lacks: install openssh-server, "
            "or use --rootfs image (the lab's image has it), or drop --ssh for the serial console"
        )


def _announce_gdb(args: argparse.Namespace, plan: qemu.BootPlan) -> None:
    if plan.gdb_port is None:
        return
    _, doc = common.kernel_of(args, plan.arch)
    vmlinux = Path(doc.artifacts.vmlinux) if doc else Path("vmlinux")
    print(f"klab: gdb: {qemu.gdb_command(vmlinux, plan.gdb_port)}", file=sys.stderr)
    if plan.gdb_wait:
        print("klab: the guest waits for gdb's `continue` (QEMU -S); no boot deadline meanwhile", file=sys.stderr)


def _add_boot_args(p: argparse.ArgumentParser) -> None:
    common.add_arch(p)
    common.add_kernel_choice(p)
    common.add_guest(p)
    common.add_gdb(p, wait=True)


def register(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="boot a kernel, run CMD in the guest, exit with its status",
        description="Boot a kernel and run CMD in the guest, as `vng -- CMD` does: CMD's stdout and stderr are "
        "klab's, byte for byte (no kernel or init lines in them); klab's stdin is CMD's when it is a pipe or a "
        "file (a terminal is not read: CMD gets EOF at once; use `klab shell` to type at a guest); CMD runs in "
        "the current directory (read-only) with the host's root (--rootfs host), in /tmp with an image. "
        "Kernel messages go to the console log (its path is printed with --verbose or on a kernel report), "
        "and to stderr with --verbose; kernel reports (oops, panic...) are always named on stderr.",
        epilog="example: klab run --arch x86_64 --build ~/.cache/kernel-lab/build/x86_64-linux-7.3-KEY -- uname -r",
    )
    _add_boot_args(run)
    run.add_argument(
        "--timeout", type=common.positive_seconds, default=600, help="seconds for the command (stretched under TCG)"
    )
    run.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also the QEMU command line, the accelerator, the kernel console (on stderr) and the timing line",
    )
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    run.set_defaults(func=cmd_run)

    sh = sub.add_parser(
        "shell",
        help="boot a kernel and give an interactive shell (console, or --ssh)",
        epilog=(
            "The guest gets this terminal's size (and follows it), TERM, and your $SHELL if its rootfs has it.\n"
            "Ctrl-a x leaves the guest (QEMU stopped, exit 130); Ctrl-a Ctrl-a sends Ctrl-a.\n"
            "Piped stdin is run as a script: echo 'uname -r' | klab shell ...  (exit: the script's status).\n"
            "Exit: the shell's status (exit N; poweroff: 0), 1 kernel panic, 2 bad input, 128 lab fault, 130 left.\n"
            "--gdb-wait: the CPUs wait for gdb's `continue` (QEMU -S), no boot deadline meanwhile.\n"
            "example: klab shell --arch arm64 --kernel arch/arm64/boot/Image\n"
            "example: klab shell --arch x86_64 --build ~/.cache/kernel-lab/build/x86_64-linux-7.3-KEY --gdb-wait"
        ),
    )
    _add_boot_args(sh)
    sh.add_argument("--ssh", action="store_true", help="use SSH (paramiko) instead of the serial console")
    sh.set_defaults(func=cmd_shell)
