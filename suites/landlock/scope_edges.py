"""landlock: scoping edge cases (ABI 6): F_SETOWN, datagram peers, self-connect, three generations.

- SIGURG through fcntl(F_SETOWN) is judged by the domain of whoever called
  F_SETOWN, recorded at that moment (hook_file_set_fowner), not by the
  domain of the process that later makes the kernel send it
  (hook_file_send_sigiotask); tools/testing/selftests/landlock/
  scoped_signal_test.c "fown". The signal is raised synchronously by the
  MSG_OOB send on an AF_UNIX socketpair (CONFIG_AF_UNIX_OOB), and the
  receiver blocks SIGURG so that sigpending() tells whether it came.
- A datagram socket connected before its process scoped itself keeps
  sending to its peer (hook_unix_may_send lets the already-connected peer
  through); any other abstract destination, from that socket or an
  unconnected one, is EPERM (scoped_abstract_unix_test.c datagram_sockets,
  self_connect).
- Three processes P1 -> P2 -> P3 with the scoped/unscoped variants of
  scoped_multiple_domain_variants.h: P3 reaches P2 and P1 by abstract
  sockets (stream connect, datagram sendto) or signals.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import time
import traceback
from collections.abc import Callable

import _klab
import _landlock as ll
from _klab import Failure, expect_eq, in_child, oserror_errno

from landlock import suite
from landlock.common import EPERM, _en, _names, _op

test = suite.test


def _abstract(tag: str) -> bytes:
    return f"\0klab-scope-edges-{os.getpid()}-{next(_names)}-{tag}".encode()


def _scope_signals() -> None:
    ll.layer(scoped=ll.SCOPE_SIGNAL)


def _scope_unix() -> None:
    ll.layer(scoped=ll.SCOPE_ABSTRACT_UNIX_SOCKET)


# --- F_SETOWN + SIGURG ------------------------------------------------------------------

# variant -> (when the owner-setting parent scopes itself, whether the child must get SIGURG)
_FOWN = {
    "no_sandbox": (None, True),
    "sandbox_before_fork": ("before_fork", True),  # same domain: allowed
    "sandbox_before_setown": ("before_setown", False),  # recorded domain scopes the child out
    "sandbox_after_setown": ("after_setown", True),  # F_SETOWN recorded no domain
    "setown_again_after_sandbox": ("setown_again", False),  # a new F_SETOWN records the new domain
    "child_sandboxed_only": ("child", True),  # the receiver's own domain never matters
}


def _fown_case(when: str | None, delivered: bool) -> Callable[[], None]:
    def run() -> None:
        """F_SETOWN(child) on a socket, then the child's MSG_OOB makes the kernel send SIGURG to it."""
        ll.require_abi(6)
        if when == "before_fork":
            _scope_signals()
        owned, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        go_r, go_w = os.pipe()

        def child(wfd: int) -> int:
            os.close(go_w)
            owned.close()
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGURG})
            if when == "child":
                _scope_signals()
            os.write(wfd, b"R")
            if os.read(go_r, 1) != b"G":
                return 100
            sent = peer.send(b"!", socket.MSG_OOB)
            os.write(wfd, json.dumps([sent, signal.SIGURG in signal.sigpending()]).encode())
            return 0

        pid, rfd = _klab.fork_pipe(child)
        os.close(go_r)
        peer.close()
        try:
            expect_eq(os.read(rfd, 1), b"R", "child ready")
            if when == "before_setown":
                _scope_signals()
            fcntl.fcntl(owned.fileno(), fcntl.F_SETOWN, pid)
            if when in ("after_setown", "setown_again"):
                _scope_signals()
            if when == "setown_again":
                fcntl.fcntl(owned.fileno(), fcntl.F_SETOWN, pid)
            expect_eq(fcntl.fcntl(owned.fileno(), fcntl.F_GETOWN), pid, "F_GETOWN")
            os.write(go_w, b"G")
            out = _klab.read_pipe(rfd)[0].decode(errors="replace")
            rfd = -1
        finally:
            os.close(go_w)
            if rfd >= 0:
                os.close(rfd)
            status = _klab.wait_status(pid)
        if out.startswith("E"):
            raise Failure(f"child raised: {out[1:].strip().splitlines()[-1]}")
        sent, pending = json.loads(out)
        expect_eq((sent, os.WEXITSTATUS(status)), (1, 0), "child: (bytes sent with MSG_OOB, exit status)")
        expect_eq(owned.recv(1, socket.MSG_OOB), b"!", "the out-of-band byte, as received by the owner's socket")
        want = "SIGURG pending" if delivered else "no SIGURG"
        expect_eq("SIGURG pending" if pending else "no SIGURG", want, "child after its MSG_OOB send")

    return run


for _variant, (_when, _delivered) in _FOWN.items():
    suite.add(f"scope_fown_sigurg__{_variant}", _fown_case(_when, _delivered))


# --- datagram sockets ----------------------------------------------------------------------


def _drain(sock: socket.socket) -> list[bytes]:
    got = []
    while True:
        try:
            got.append(sock.recv(16, socket.MSG_DONTWAIT))
        except BlockingIOError:
            return got


@test
def scope_unix_dgram_connected_socket_keeps_its_peer() -> None:
    """ABI 6: after scoping, a datagram socket connected before keeps sending to its peer, and only to it.

    send() and sendto(peer's address) on the connected socket work; sendto() of another outside address,
    from it or from an unconnected socket, and a new connect(), are EPERM; the peers receive exactly what
    was allowed.
    """
    ll.require_abi(6)
    conn_name, other_name = _abstract("conn"), _abstract("other")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(conn_name)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    other.bind(other_name)

    def client() -> None:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        conn.connect(conn_name)
        unconn = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _op("unscoped: send() on the connected socket", 0, conn.send, b"1")
        _op("unscoped: sendto() from an unconnected socket", 0, unconn.sendto, b"2", other_name)
        _scope_unix()
        _op("scoped: send() on the connected socket", 0, conn.send, b"3")
        _op("scoped: sendto(its peer) on the connected socket", 0, conn.sendto, b"4", conn_name)
        _op("scoped: sendto(another outside socket) on the connected socket", EPERM, conn.sendto, b"5", other_name)
        _op("scoped: sendto() from an unconnected socket", EPERM, unconn.sendto, b"6", other_name)
        fresh = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _op("scoped: connect() a new datagram socket to the same peer", EPERM, fresh.connect, conn_name)

    in_child(client)
    expect_eq(_drain(server), [b"1", b"3", b"4"], "datagrams the connected peer received")
    expect_eq(_drain(other), [b"2"], "datagrams the other socket received")


@test
def scope_unix_dgram_self_connect() -> None:
    """ABI 6: sockets created outside the domain stay outside, even the process's own inherited ones.

    A scoped child may not connect() an inherited datagram socket to its own address nor sendto() it (EPERM);
    a socket it creates after scoping may connect to itself and send itself data.
    """
    ll.require_abi(6)
    a_name, b_name, c_name = _abstract("a"), _abstract("b"), _abstract("c")
    a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.bind(a_name)
    b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.bind(b_name)

    def child() -> None:
        _scope_unix()
        _op("connect(inherited socket, its own address)", EPERM, a.connect, a_name)
        _op("sendto(inherited socket, its own address)", EPERM, a.sendto, b"x", a_name)
        _op("sendto(other inherited socket, its own address)", EPERM, b.sendto, b"x", b_name)
        c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        c.bind(c_name)
        _op("connect(socket made in the domain, its own address)", 0, c.connect, c_name)
        _op("send() to itself", 0, c.send, b"y")
        expect_eq(c.recv(4, socket.MSG_DONTWAIT), b"y", "datagram the socket sent itself")

    in_child(child)
    expect_eq(_drain(a) + _drain(b), [], "datagrams the inherited sockets received")
    d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    d_name = _abstract("d")
    d.bind(d_name)
    _op("unscoped control: connect a socket to its own address", 0, d.connect, d_name)


# --- three generations ---------------------------------------------------------------------

NONE, SCOPE, OTHER = "none", "scope", "other"

# scoped_multiple_domain_variants.h: (all: before P1 forks P2, parent: P1 after that fork,
# children: P2 before forking P3, child: P2 after that fork, grand_child: P3), then
# whether P3 reaches P2 and whether it reaches P1.
_THREE_GENERATIONS: dict[str, tuple[tuple[str, str, str, str, str], bool, bool]] = {
    "deny_scoped": ((OTHER, NONE, SCOPE, NONE, NONE), True, False),
    "all_scoped": ((SCOPE, NONE, SCOPE, NONE, NONE), True, False),
    "allow_with_other_domain": ((OTHER, NONE, OTHER, NONE, NONE), True, True),
    "allow_with_one_domain": ((NONE, OTHER, NONE, SCOPE, NONE), True, True),
    "allow_with_grand_parent_scoped": ((NONE, SCOPE, NONE, OTHER, NONE), True, True),
    "allow_with_parents_domain": ((NONE, SCOPE, NONE, SCOPE, NONE), True, True),
    "deny_with_self_and_grandparent_domain": ((NONE, SCOPE, NONE, NONE, SCOPE), False, False),
}

_SCOPES = {"unix": ll.SCOPE_ABSTRACT_UNIX_SOCKET, "signal": ll.SCOPE_SIGNAL}
_OTHER_SCOPE = {"unix": ll.SCOPE_SIGNAL, "signal": ll.SCOPE_ABSTRACT_UNIX_SOCKET}


def _apply(kind: str, op: str) -> None:
    """SCOPE: a layer scoping op; OTHER: a layer handling a filesystem right and scoping the other kind only."""
    if kind == SCOPE:
        ll.layer(scoped=_SCOPES[op])
    elif kind == OTHER:
        ll.layer(fs=ll.ACCESS_FS_MAKE_BLOCK, scoped=_OTHER_SCOPE[op])


class _Servers:
    """An abstract stream listener and datagram socket, made by the calling process after its layers."""

    def __init__(self, base: bytes) -> None:
        self.stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.stream.bind(base + b"-stream")
        self.stream.listen(4)
        self.dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.dgram.bind(base + b"-dgram")


def _reach(op: str, pid: int, base: bytes) -> dict[str, str]:
    """What P3 gets trying to reach a process: each way of reaching it, 'success' or the errno."""
    if op == "signal":
        return {f"kill({sig})": _en(_klab.syscall("kill", pid, sig)[1]) for sig in (0, signal.SIGURG)}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        stream = oserror_errno(s.connect, base + b"-stream")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        dgram = oserror_errno(s.sendto, b"x", base + b"-dgram")
    return {"stream connect": _en(stream), "dgram sendto": _en(dgram)}


def _three_generations(op: str, variant: str) -> Callable[[], None]:
    (all_, parent, children, child, grand_child), to_p2, to_p1 = _THREE_GENERATIONS[variant]

    def run() -> None:
        ll.require_abi(6)
        p1_base, p2_base = _abstract("p1"), _abstract("p2")
        p2_ready_r, p2_ready_w = os.pipe()
        go_r, go_w = os.pipe()
        result_r, result_w = os.pipe()
        release_r, release_w = os.pipe()
        _apply(all_, op)
        p1 = os.getpid()
        p2 = os.fork()
        if p2 == 0:
            code = 100
            try:
                for fd in (p2_ready_r, go_w, result_r, release_w):
                    os.close(fd)
                _apply(children, op)
                p3 = os.fork()
                if p3 == 0:
                    msg = "E"
                    try:
                        os.close(p2_ready_w)
                        os.close(release_r)
                        _apply(grand_child, op)
                        if os.read(go_r, 1) == b"G":
                            msg = json.dumps({"P2": _reach(op, os.getppid(), p2_base), "P1": _reach(op, p1, p1_base)})
                    except BaseException:  # noqa: BLE001 - reported to P1 through the pipe
                        msg = "E" + traceback.format_exc()
                    finally:
                        os.write(result_w, msg.encode()[:60000])
                        os._exit(0)
                os.close(go_r)
                os.close(result_w)
                _apply(child, op)
                servers = _Servers(p2_base)
                os.write(p2_ready_w, b"R")
                os.read(release_r, 1)
                del servers
                _klab.wait_status(p3)
                code = 0
            except BaseException:  # noqa: BLE001 - P1 sees no "R" and fails
                traceback.print_exc()
            finally:
                os._exit(code)
        for fd in (p2_ready_w, go_r, result_w, release_r):
            os.close(fd)
        try:
            _apply(parent, op)
            servers = _Servers(p1_base)
            expect_eq(os.read(p2_ready_r, 1), b"R", "P2 ready")
            os.write(go_w, b"G")
            out, _ = _klab.read_pipe(result_r, time.monotonic() + 20)
            result_r = -1
        finally:
            os.close(release_w)
            os.close(go_w)
            os.close(p2_ready_r)
            if result_r >= 0:
                os.close(result_r)
            status = _klab.wait_status(p2)
        del servers
        text = out.decode(errors="replace")
        if not text.startswith("{"):
            raise Failure(f"P3 did not report: {text[1:].strip()[-300:] or 'nothing'}")
        got = json.loads(text)
        expect_eq(os.WEXITSTATUS(status), 0, "P2 exit status")
        for target, allowed in (("P2", to_p2), ("P1", to_p1)):
            want = _en(0 if allowed else EPERM)
            expect_eq(got[target], {k: want for k in got[target]}, f"P3 -> {target} ({op}, {variant})")

    run.__doc__ = f"ABI 6, {variant}: P3 reaching its parent P2 and grandparent P1 by {op}, by domain ancestry."
    return run


for _op_name in ("unix", "signal"):
    for _variant in _THREE_GENERATIONS:
        suite.add(f"scope_three_generations_{_op_name}__{_variant}", _three_generations(_op_name, _variant))
