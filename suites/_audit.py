"""Reading the kernel's audit records over NETLINK_AUDIT (stdlib only).

AuditLog makes the test process the audit daemon for its lifetime: it enables
audit and registers its own pid with AUDIT_SET, so the kernel unicasts every
record to its socket instead of printing it (rate-limited) to the kernel log
or dropping it. On exit it unregisters and restores the enabled state it found.

Without a registered daemon, records are only printk'd (subject to printk
rate limiting) and, when audit was enabled at boot, held for a daemon to come;
with audit disabled (the lab kernels boot without audit=1), Landlock and
seccomp do not even build their records. Tests that check records therefore
need the daemon role, which needs CAP_AUDIT_CONTROL in the initial user and
pid namespace. The kernel refuses a second live daemon (EEXIST): AuditLog
waits a few seconds for it to go (another test on the same host), then fails.

Records held from before the registration are delivered too: tests must
select their records by something they own (a pid, a path, a domain ID).
"""

from __future__ import annotations

import errno
import os
import re
import select
import socket
import struct
import time

from _klab import Failure, errname

AUDIT_SECCOMP = 1326
AUDIT_LANDLOCK_ACCESS = 1423
AUDIT_LANDLOCK_DOMAIN = 1424
AUDIT_SYSCALL = 1300

NETLINK_AUDIT = 9
AUDIT_GET = 1000
AUDIT_SET = 1001
AUDIT_STATUS_ENABLED = 0x1
AUDIT_STATUS_PID = 0x4

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
# struct audit_status: mask, enabled, failure, pid, rate_limit, backlog_limit, lost, backlog,
# feature_bitmap, backlog_wait_time, backlog_wait_time_actual. Older kernels copy only what they know.
_STATUS = struct.Struct("=11I")

_REGISTER_WAIT = 10.0  # seconds to wait for another (live) daemon to let go

_HEADER = re.compile(r"audit\((\d+)\.(\d+):(\d+)\):\s*")
_FIELD = re.compile(r'([A-Za-z_][\w.-]*)=("[^"]*"|\S*)')


class Record:
    """One audit record: its type, its text (after the audit(...) stamp) and its key=value fields."""

    def __init__(self, rtype: int, raw: str) -> None:
        self.type = rtype
        match = _HEADER.match(raw)
        self.serial = int(match.group(3)) if match else 0
        self.text = raw[match.end() :] if match else raw
        self.fields: dict[str, str] = {}
        for key, value in _FIELD.findall(self.text):
            # Quoted strings lose their quotes; hex-encoded untrusted strings stay as they are.
            self.fields.setdefault(key, value[1:-1] if value.startswith('"') and value.endswith('"') else value)

    def __repr__(self) -> str:
        return f"Record(type={self.type}, text={self.text!r})"


class AuditLog:
    """Becomes the audit daemon for its lifetime (AUDIT_SET: enabled=1, pid=getpid()), collects records."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._seq = 0
        self._pending: list[Record] = []
        self._old_enabled: int | None = None
        self._registered = False
        self._queue: list[tuple[int, int, bytes]] = []

    # --- context manager -------------------------------------------------------

    def __enter__(self) -> AuditLog:
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_AUDIT)
        except OSError as exc:
            if exc.errno == errno.EPROTONOSUPPORT:
                raise Failure("no NETLINK_AUDIT socket (EPROTONOSUPPORT): the kernel lacks CONFIG_AUDIT") from exc
            raise
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._sock.bind((0, 0))
        try:
            # A registered daemon that died is replaced (the kernel tests its connection); a live one is
            # EEXIST: wait a little for it (another suite's test on the same host), then give up.
            deadline = time.monotonic() + _REGISTER_WAIT
            while True:
                err = self._set(AUDIT_STATUS_PID, pid=os.getpid(), check=False)
                if err != errno.EEXIST or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if err == errno.EEXIST:
                raise Failure(f"another audit daemon (pid {self.status()['pid']}) owns the audit log (EEXIST)")
            if err:
                raise Failure(f"AUDIT_SET pid={os.getpid()}: {errname(err)} ({err})")
            self._registered = True
            # Only the daemon changes the enabled state, so concurrent AuditLogs cannot undo each other's.
            if self.status()["enabled"] == 0:
                self.set_enabled(1)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._sock is None:
            return
        try:
            if self._old_enabled is not None:
                self._set(AUDIT_STATUS_ENABLED, enabled=self._old_enabled, check=False)
            if self._registered:
                self._set(AUDIT_STATUS_PID, pid=0, check=False)
        finally:
            self._sock.close()
            self._sock = None
            self._registered = False

    # --- the audit control protocol --------------------------------------------

    def status(self) -> dict[str, int]:
        """AUDIT_GET: the kernel's struct audit_status as a dict (enabled, pid, backlog, lost, ...)."""
        seq = self._send(AUDIT_GET, b"")
        reply: dict[str, int] | None = None
        acked = False
        # The ack and the reply (sent from a kernel thread) come in either order.
        while reply is None or not acked:
            mtype, mseq, payload = self._recv_one(5.0)
            if mtype == AUDIT_GET and mseq == seq:
                padded = payload[: _STATUS.size].ljust(_STATUS.size, b"\0")
                names = "mask enabled failure pid rate_limit backlog_limit lost backlog feature_bitmap"
                names += " backlog_wait_time backlog_wait_time_actual"
                reply = dict(zip(names.split(), _STATUS.unpack(padded), strict=True))
            elif mtype == NLMSG_ERROR and mseq == seq:
                err = -struct.unpack_from("=i", payload)[0]
                if err:
                    raise Failure(f"AUDIT_GET: {errname(err)} ({err})")
                acked = True
            elif mtype not in (NLMSG_ERROR, NLMSG_DONE):
                self._pending.append(Record(mtype, payload.rstrip(b"\0\n").decode(errors="replace")))
        return reply

    def set_enabled(self, enabled: int) -> None:
        """AUDIT_SET enabled (0 off, 1 on); __exit__ still restores the state found on entry."""
        if self._old_enabled is None:
            self._old_enabled = self.status()["enabled"]
        self._set(AUDIT_STATUS_ENABLED, enabled=enabled)

    def _set(self, mask: int, enabled: int = 0, pid: int = 0, check: bool = True) -> int:
        """AUDIT_SET with one field; returns the errno the kernel acked (0 on success)."""
        values = [mask, enabled, 0, pid] + [0] * 7
        seq = self._send(AUDIT_SET, _STATUS.pack(*values))
        err = self._wait_ack(seq)
        if err and check:
            raise Failure(f"AUDIT_SET mask={mask:#x}: {errname(err)} ({err})")
        return err

    def _send(self, mtype: int, payload: bytes) -> int:
        assert self._sock is not None
        self._seq += 1
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), mtype, NLM_F_REQUEST | NLM_F_ACK, self._seq, 0)
        self._sock.sendto(header + payload, (0, 0))
        return self._seq

    def _wait_ack(self, seq: int) -> int:
        while True:
            mtype, mseq, payload = self._recv_one(5.0)
            if mtype == NLMSG_ERROR and mseq == seq:
                return -struct.unpack_from("=i", payload)[0]
            if mtype not in (NLMSG_ERROR, NLMSG_DONE):
                self._pending.append(Record(mtype, payload.rstrip(b"\0\n").decode(errors="replace")))

    def _recv_one(self, timeout: float) -> tuple[int, int, bytes]:
        """The next netlink message (type, seq, payload); one datagram may hold several."""
        while True:
            if self._queue:
                return self._queue.pop(0)
            assert self._sock is not None
            if not select.select([self._sock], [], [], timeout)[0]:
                raise Failure(f"no answer from the audit netlink socket within {timeout:.0f}s")
            self._queue = list(_split(self._sock.recv(1 << 16)))

    # --- records ---------------------------------------------------------------

    def records(self, types: set[int] | None = None, settle: float = 0.2, limit: float = 5.0) -> list[Record]:
        """Drain what arrived: read until no record came for `settle` seconds; return those of `types`.

        Every record read is consumed, including those of other types. Reading stops after `limit`
        seconds even while records keep coming (another audit user flooding the log): the caller
        checks what it got instead of waiting for a quiet that never comes until its test's deadline.
        """
        got = self._pending
        self._pending = []
        stop = time.monotonic() + limit
        while True:
            if self._queue:
                mtype, _seq, payload = self._queue.pop(0)
            else:
                assert self._sock is not None
                left = stop - time.monotonic()
                if left <= 0 or not select.select([self._sock], [], [], min(settle, left))[0]:
                    break
                self._queue = list(_split(self._sock.recv(1 << 16)))
                continue
            if mtype not in (NLMSG_ERROR, NLMSG_DONE):
                got.append(Record(mtype, payload.rstrip(b"\0\n").decode(errors="replace")))
        return [r for r in got if types is None or r.type in types]

    def wait_for(self, pred, types: set[int] | None = None, timeout: float = 10.0) -> list[Record]:  # type: ignore[no-untyped-def]
        """Collect records (of `types`) until one satisfies pred or `timeout` passes; returns all collected."""
        deadline = time.monotonic() + timeout
        got: list[Record] = []
        while (left := deadline - time.monotonic()) > 0:
            new = self.records(types, settle=0.05, limit=left)
            got += new
            if any(pred(r) for r in new):
                break
        return got


def _split(data: bytes):  # type: ignore[no-untyped-def]
    """Yield (type, seq, payload) for each netlink message in one datagram.

    Control answers (acks, AUDIT_GET) follow the netlink rules. Records do not: kauditd
    sends one per datagram and, a historical quirk, their nlmsg_len leaves out the header.
    """
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, mtype, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        body = offset + _NLMSGHDR.size
        if mtype in (NLMSG_ERROR, NLMSG_DONE, AUDIT_GET):
            if length < _NLMSGHDR.size:
                return
            yield mtype, seq, data[body : offset + length]
            offset += (length + 3) & ~3
        else:
            yield mtype, seq, data[body : body + length]
            return
