"""A persistent guest session: boot once, run many commands, copy files, shut down.

Two transports behind one small interface:
- `AgentSession`: a shell on a virtio-serial port (the console stays for the
  kernel's own messages, so they never garble command output);
- `SSHSession`: paramiko over user-mode networking, forwarded to 127.0.0.1 on
  a free port, with a fresh key per run and none of the user's keys or agent.
"""

from __future__ import annotations

import base64
import os
import secrets
import select
import shlex
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import paramiko
import pexpect
import pexpect.fdpexpect

from lab.errors import LabError
from lab.proc import Deadline
from lab.results.consolelog import SSHD_STARTED
from lab.vm.console import WatchEnd
from lab.vm.qemu import GDB_WAIT_SECONDS, GUEST_RESULTS, BootPlan, Machine, prepare_control
from lab.vm.shell import Ending, EscapeFilter, host_size, raw_terminal, safe_word, user_shell

COMMAND_SECONDS = 60.0  # a session command's default limit, before the TCG stretch


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str
    duration: float


class Session:
    """Base: owns the Machine; subclasses provide run/put/get over their transport."""

    def __init__(self, plan: BootPlan) -> None:
        self.plan = plan
        self.vm = Machine(plan)
        self.boot_seconds = 0.0

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        raise NotImplementedError

    def run(self, argv: list[str] | str, deadline: Deadline | None = None) -> CommandResult:
        """Run a command (argv list, or a shell line) by `deadline` (default: a minute, stretched under TCG)."""
        raise NotImplementedError

    def deadline(self, seconds: float = COMMAND_SECONDS) -> Deadline:
        """`seconds` of guest work from now, stretched under TCG."""
        return Deadline.after(self.plan.scaled(seconds))

    def put(self, local: Path, remote: str) -> None:
        """Copy a host file into the guest, through the results share."""
        name = f".xfer-{secrets.token_hex(4)}"
        shutil.copyfile(local, self.plan.results_dir / name)
        try:
            self._check(self.run(["cp", f"{GUEST_RESULTS}/{name}", remote]), f"copy {local} to {remote}")
        finally:
            (self.plan.results_dir / name).unlink(missing_ok=True)

    def get(self, remote: str, local: Path) -> None:
        """Copy a guest file out to the host, through the results share."""
        name = f".xfer-{secrets.token_hex(4)}"
        self._check(self.run(["cp", remote, f"{GUEST_RESULTS}/{name}"]), f"copy {remote} out")
        shutil.move(self.plan.results_dir / name, local)

    @staticmethod
    def _check(result: CommandResult, what: str) -> None:
        if result.exit_status != 0:
            raise LabError(f"{what} failed in the guest: {result.stderr.strip() or result.stdout.strip()}")

    def close(self) -> None:
        """Ask the guest to power off; QEMU is killed if it does not go within a few seconds."""
        if self.vm.child is not None and self.vm.child.isalive():
            self._poweroff()
            self.vm.wait_for_exit(self.deadline(10))
        self.vm.close()

    def _poweroff(self) -> None:
        pass


class AgentSession(Session):
    """Commands over the virtio-serial agent shell started by the lab's init (mode=agent)."""

    def __init__(self, plan: BootPlan, answer_slack: float = 10.0) -> None:
        if not plan.agent:
            raise ValueError("AgentSession needs a BootPlan with agent=True")
        super().__init__(plan)
        self.answer_slack = answer_slack  # beyond the guest's own limit, for the output to come back
        self.sock: socket.socket | None = None
        self.chan: pexpect.fdpexpect.fdspawn | None = None

    def start(self) -> None:
        prepare_control(self.plan, "agent")
        self.vm.start()
        self.boot_seconds = self.vm.wait_for_init(Deadline.after(self.plan.boot_timeout))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(self.plan.agent_socket))
        self.chan = pexpect.fdpexpect.fdspawn(self.sock.fileno(), encoding="utf-8", codec_errors="replace")
        ready = self.run("echo ready", self.deadline(30))
        if ready.stdout.strip() != "ready":
            raise LabError(f"the guest agent did not answer as expected: {ready}")

    def run(self, argv: list[str] | str, deadline: Deadline | None = None) -> CommandResult:
        """The deadline holds twice: timeout(1) kills the command in the guest, and the answer is awaited here."""
        assert self.chan is not None
        deadline = deadline or self.deadline()
        line = argv if isinstance(argv, str) else shlex.join(argv)
        token = secrets.token_hex(8)
        out, err = f"/tmp/.klab-{token}.out", f"/tmp/.klab-{token}.err"
        limit = max(1, int(deadline.left()))
        script = (
            f"timeout -k 2 {limit} /bin/sh -c {shlex.quote(line)} >{out} 2>{err} </dev/null; "
            f'echo "KLAB-RC-{token} $?"; base64 -w0 {out}; echo " KLAB-OUT-{token}"; '
            f'base64 -w0 {err}; echo " KLAB-ERR-{token}"; rm -f {out} {err}\n'
        )
        start = time.monotonic()
        self.chan.send(script)
        # One deadline for the whole answer: the three parts share it, so a call never waits three times over.
        answer = Deadline(deadline.at + self.answer_slack)
        status = self._expect(rf"KLAB-RC-{token} (\d+)", answer)
        stdout = self._expect(rf"(\S*) KLAB-OUT-{token}", answer)
        stderr = self._expect(rf"(\S*) KLAB-ERR-{token}", answer)
        return CommandResult(
            int(status),
            base64.b64decode(stdout).decode(errors="replace"),
            base64.b64decode(stderr).decode(errors="replace"),
            time.monotonic() - start,
        )

    def _expect(self, pattern: str, deadline: Deadline) -> str:
        assert self.chan is not None
        index = self.chan.expect([pattern, pexpect.EOF, pexpect.TIMEOUT], timeout=deadline.left())
        if index != 0:
            events = self.vm.watcher().text()
            raise LabError(
                f"guest agent {'closed' if index == 1 else 'timed out'} (console: {self.plan.console_log}); "
                f"last console line: {events.strip().splitlines()[-1] if events.strip() else '(none)'}"
            )
        assert self.chan.match is not None
        return str(self.chan.match.group(1))

    def _poweroff(self) -> None:
        if self.chan is not None:
            try:
                self.chan.send("sync; echo b > /proc/sysrq-trigger\n")
            except OSError:
                pass

    def close(self) -> None:
        super().close()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class SSHSession(Session):
    """Commands over SSH (paramiko), for images with openssh-server."""

    def __init__(self, plan: BootPlan) -> None:
        if plan.ssh_port is None:
            raise ValueError("SSHSession needs a BootPlan with ssh_port set")
        super().__init__(plan)
        self.client: paramiko.SSHClient | None = None

    def start(self) -> None:
        ctl = prepare_control(self.plan, "agent" if self.plan.agent else "wait")
        key = paramiko.ECDSAKey.generate(bits=256)
        (ctl / "ssh").write_text("")
        (ctl / "authorized_keys").write_text(f"{key.get_name()} {key.get_base64()} klab\n")
        self.vm.start()
        boot = GDB_WAIT_SECONDS if self.plan.gdb_wait else self.plan.boot_timeout
        deadline = Deadline.after(boot + self.plan.scaled(60))
        self.boot_seconds = self.vm.wait_for_init(deadline)
        # slirp accepts the forwarded connection before sshd listens: connect once the init says sshd is up.
        up = self.vm.watcher().wait(SSHD_STARTED, deadline)
        if up.end is not WatchEnd.MARKER:
            raise self.vm.failure(up, "before sshd started in the guest")
        assert self.plan.ssh_port is not None
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # fresh guest key every boot
        client.connect(
            "127.0.0.1",
            port=self.plan.ssh_port,
            username="root",
            pkey=key,
            allow_agent=False,
            look_for_keys=False,
            timeout=30,
            banner_timeout=self.plan.scaled(30),
        )
        self.client = client

    def run(self, argv: list[str] | str, deadline: Deadline | None = None) -> CommandResult:
        assert self.client is not None
        deadline = deadline or self.deadline()
        line = argv if isinstance(argv, str) else shlex.join(argv)
        start = time.monotonic()
        _, out, err = self.client.exec_command(line, timeout=max(1.0, deadline.left()))
        # Read both streams before the status: a full channel buffer otherwise deadlocks (paramiko's own advice).
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
        status = out.channel.recv_exit_status()
        return CommandResult(status, stdout, stderr, time.monotonic() - start)

    def put(self, local: Path, remote: str) -> None:
        assert self.client is not None
        with self.client.open_sftp() as sftp:
            sftp.put(str(local), remote)

    def get(self, remote: str, local: Path) -> None:
        assert self.client is not None
        with self.client.open_sftp() as sftp:
            sftp.get(remote, str(local))

    def _poweroff(self) -> None:
        if self.client is not None:
            try:
                self.client.exec_command("sync; echo b > /proc/sysrq-trigger", timeout=5)
            except Exception:  # noqa: BLE001 - the guest may already be gone
                pass

    def close(self) -> None:
        super().close()
        if self.client is not None:
            self.client.close()
            self.client = None


def interactive_ssh(sess: SSHSession, script: bytes | None = None) -> int | Ending:
    """Hand the user's terminal to a login shell over the session's SSH connection, or run `script` (piped stdin).

    Returns the shell's exit status; Ending.LEFT when the user pressed the
    escape key (Ctrl-a x, as on the serial console), Ending.EOF when the
    connection closed without a status (the guest went away: its console says why).
    """
    assert sess.client is not None
    if script is not None:
        return _ssh_script(sess.client, script)
    size = host_size()
    term = safe_word(os.environ.get("TERM", ""), "xterm")
    chan = sess.client.invoke_shell(term=term, width=size.columns, height=size.lines)
    fd = sys.stdin.fileno()
    escape = EscapeFilter()

    def resized(signum: int, frame: object) -> None:
        now = host_size()
        chan.resize_pty(width=now.columns, height=now.lines)

    previous = signal.signal(signal.SIGWINCH, resized)
    try:
        with raw_terminal(fd):
            while not chan.exit_status_ready() and not chan.closed:
                ready, _, _ = select.select([chan, fd], [], [], 1.0)
                if chan in ready:
                    data = chan.recv(4096)
                    if not data:
                        break
                    sys.stdout.buffer.write(data)
                    sys.stdout.flush()
                if fd in ready:
                    keys, leave = escape.feed(os.read(fd, 1024))
                    if keys:
                        chan.send(keys)
                    if leave:
                        return Ending.LEFT
    finally:
        signal.signal(signal.SIGWINCH, previous)
    return chan.recv_exit_status() if chan.exit_status_ready() else Ending.EOF


def _ssh_script(client: paramiko.SSHClient, script: bytes) -> int | Ending:
    """`script` on the guest shell's stdin, its stdout and stderr apart, until it exits."""
    transport = client.get_transport()
    assert transport is not None
    chan = transport.open_session()
    chan.exec_command(f'exec "$(command -v {user_shell()} || echo /bin/sh)" -s')
    chan.sendall(script)
    chan.shutdown_write()  # EOF: the shell ends after the script, as in a pipe
    while True:
        while chan.recv_ready():
            sys.stdout.buffer.write(chan.recv(65536))
        while chan.recv_stderr_ready():
            sys.stderr.buffer.write(chan.recv_stderr(65536))
        sys.stdout.flush()
        sys.stderr.flush()
        if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
            return chan.recv_exit_status()
        if chan.closed:
            return Ending.EOF
        select.select([chan], [], [], 0.2)
