"""The guest command's own stdin, stdout and stderr: virtio-serial ports pumped to klab's file descriptors.

The serial console carries the kernel's messages and the lab's init lines;
`klab run` gives the command three ports of its own instead (`klab.stdin`,
`klab.stdout`, `klab.stderr`), each a UNIX socket on the host, so its output
arrives byte for byte with nothing else in it.

Two ends need care:
- stdin's EOF: the host closes its socket, QEMU tells the guest the host side
  went away, and a read of the port returns 0 once its data is read
  (drivers/char/virtio_console.c, port_fops_read: `!host_connected`).
- output's end: a guest write returns once its buffer is queued, not once the
  host has it, so the guest powering off could lose the last bytes. After the
  command the guest writes an end mark (random per run) on both output ports
  and waits for the host's answer (a newline on stderr's port, which is
  bidirectional) before it powers off; the host passes everything before the
  mark on and drops the mark.
- a reader that goes away (`klab run -- yes | head -1`): a pipe's writer gets
  SIGPIPE, so the command must too, or it runs to --timeout. A guest's write
  to a port whose host side is closed blocks rather than fails
  (will_write_block: `!host_connected`), so klab keeps reading and dropping
  that stream and asks the guest's init, on stderr's port, to send the
  command's process group SIGPIPE (PIPE_ASK); the exit status is then 141,
  as a shell reports a pipeline's writer.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError
from lab.proc import Deadline

STREAMS = ("stdin", "stdout", "stderr")
CHUNK = 64 * 1024
# The end mark starts with ASCII's record separator, which text never holds: text output is never held
# back waiting to see whether a mark begins. No NUL, no newline: the guest's shell keeps it in a variable.
MARK_PREFIX = b"\x1eklab-end-"
# Lines klab sends on stderr's port (bidirectional): the init reads them (lab/guest/init, `run`).
PIPE_ASK = b"pipe\n"  # a reader of klab's went away: SIGPIPE the command
END_ANSWER = b"end\n"  # both end marks came: the guest may power off


def port_name(stream: str) -> str:
    """The virtio-serial port name the guest's init looks for (/sys/class/virtio-ports/*/name)."""
    return f"klab.{stream}"


def socket_name(stream: str) -> str:
    return f"{stream}.sock"


def new_mark() -> bytes:
    return MARK_PREFIX + secrets.token_hex(8).encode()


@dataclass(frozen=True)
class StdFds:
    """klab's side of the command's streams."""

    stdin: int | None  # None: the command reads EOF at once (klab's stdin is a terminal, or closed)
    stdout: int
    stderr: int


def held_back(data: bytes, mark: bytes) -> int:
    """How many bytes at the end of `data` could be the start of `mark`: those wait for the next chunk."""
    for size in range(min(len(mark) - 1, len(data)), 0, -1):
        if data.endswith(mark[:size]):
            return size
    return 0


class MarkCutter:
    """Passes a stream through up to the end mark; holds back only what may still turn out to be the mark."""

    def __init__(self, mark: bytes) -> None:
        self.mark = mark
        self.held = b""
        self.ended = False

    def feed(self, chunk: bytes) -> bytes:
        """What may go out now. After the mark nothing does (a process the command left behind is cut off)."""
        if self.ended:
            return b""
        data = self.held + chunk
        at = data.find(self.mark)
        if at >= 0:
            self.ended, self.held = True, b""
            return data[:at]
        keep = held_back(data, self.mark)
        self.held = data[len(data) - keep :]
        return data[: len(data) - keep]

    def flush(self) -> bytes:
        """The stream ended without its mark (the guest died): what was held back is output after all."""
        held, self.held = self.held, b""
        return held


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Relay:
    """Three threads: klab's stdin to the guest, the guest's stdout and stderr to klab's.

    klab listens and QEMU connects as it starts, so the guest never runs
    before klab is there: a port with no host side reads EOF, and a write to
    it waits (virtio_console.c, will_write_block).
    """

    def __init__(self, paths: dict[str, Path], fds: StdFds, mark: bytes) -> None:
        self.paths = paths  # stream -> QEMU's chardev socket
        self.fds = fds
        self.mark = mark
        self.socks: dict[str, socket.socket] = {}
        self._listeners: dict[str, socket.socket] = {}
        self.ended: dict[str, bool] = {}  # output stream -> its end mark came
        self.gone: set[int] = set()  # klab's fds whose reader went away (`| head`)
        self._threads: list[threading.Thread] = []
        self._to_guest = threading.Lock()  # both output threads and wait() write stderr's port

    def listen(self) -> None:
        """Before QEMU starts: it connects its chardevs (server=off) as it starts, before the guest runs."""
        for stream in STREAMS:
            path = self.paths[stream]
            path.parent.mkdir(mode=0o700, exist_ok=True)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listeners[stream] = listener
            listener.bind(str(path))
            listener.listen(1)

    def accept(self, deadline: Deadline, alive: Callable[[], bool]) -> None:
        """Take QEMU's three connections; QEMU exiting first (a bad option, say) is a LabError."""
        for stream, listener in self._listeners.items():
            listener.settimeout(0.05)
            while stream not in self.socks:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    if not alive() or deadline.expired:
                        raise LabError(f"QEMU did not connect the command's {stream}") from None
                    continue
                conn.settimeout(None)
                self.socks[stream] = conn

    def start(self) -> None:
        self._thread(self._feed_stdin, "stdin", daemon=True)  # may block on klab's stdin forever: never joined
        self._thread(self._drain, "stdout", self.fds.stdout)
        self._thread(self._drain, "stderr", self.fds.stderr)

    def _thread(self, target: Callable[..., None], *args: object, daemon: bool = False) -> None:
        thread = threading.Thread(target=target, args=args, name=f"klab-relay-{args[0]}", daemon=daemon)
        self._threads.append(thread)
        thread.start()

    def _feed_stdin(self, stream: str) -> None:
        sock = self.socks[stream]
        try:
            while self.fds.stdin is not None:
                try:
                    data = os.read(self.fds.stdin, CHUNK)
                except OSError:
                    data = b""
                if not data:
                    break
                sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)  # QEMU sees EOF and tells the guest: its next read returns 0
        except OSError:
            pass  # the guest is gone (QEMU closed the socket), or the command never read it all

    def _drain(self, stream: str, fd: int) -> None:
        cutter = MarkCutter(self.mark)
        sock = self.socks[stream]
        while not cutter.ended:
            try:
                chunk = sock.recv(CHUNK)
            except OSError:
                chunk = b""
            out = cutter.feed(chunk) if chunk else cutter.flush()
            self._emit(fd, out)
            if not chunk:
                break
        self.ended[stream] = cutter.ended

    def _emit(self, fd: int, data: bytes) -> None:
        if not data or fd in self.gone:
            return  # still read on, so the guest never blocks on a full port
        try:
            _write_all(fd, data)
        except BrokenPipeError:
            first = not self.gone
            self.gone.add(fd)
            if first:
                self._tell_guest(PIPE_ASK)

    def _tell_guest(self, line: bytes) -> bool:
        with self._to_guest:
            try:
                self.socks["stderr"].sendall(line)
            except OSError:
                return False
        return True

    def wait(self, deadline: Deadline) -> bool:
        """True when both output streams ended with their mark by the deadline: nothing of them was lost.

        Then the guest, which waits for it, is told it may power off.
        """
        for thread in self._threads[1:]:
            thread.join(deadline.left())
        if not all(self.ended.get(stream, False) for stream in STREAMS[1:]):
            return False
        return self._tell_guest(END_ANSWER)

    def close(self) -> None:
        """After QEMU is gone: let the output threads read what is left (a crash's last lines), then close."""
        for thread in self._threads[1:]:
            thread.join(2)
        for sock in self.socks.values():
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads[1:]:
            thread.join(5)
        for sock in (*self.socks.values(), *self._listeners.values()):
            sock.close()
        for path in self.paths.values():
            path.unlink(missing_ok=True)
