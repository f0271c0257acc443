"""landlock: scoping (ABI 6): signals and abstract unix sockets."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable

import _klab
import _landlock as ll
from _klab import Failure, Skip, expect_eq, expect_errno, in_child, oserror_errno

from landlock import suite
from landlock.common import EPERM, _en, _names, _op, _thread_result, _tmpdir

test = suite.test

_SCOPE = {"signal": ll.SCOPE_SIGNAL, "unix": ll.SCOPE_ABSTRACT_UNIX_SOCKET, "unix_dgram": ll.SCOPE_ABSTRACT_UNIX_SOCKET}

_OTHER = {"signal": ll.SCOPE_ABSTRACT_UNIX_SOCKET, "unix": ll.SCOPE_SIGNAL, "unix_dgram": ll.SCOPE_SIGNAL}


class _Peer:
    """A forked target process: applies `setup`, opens abstract sockets, waits to be released."""

    def __init__(self, setup: Callable[[], None] | None = None) -> None:
        self.name = f"\0klab-landlock-{os.getpid()}-{next(_names)}".encode()
        ready_r, ready_w = os.pipe()
        self._release_r, self._release_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            self._serve(setup, ready_w)
        os.close(ready_w)
        os.close(self._release_r)
        msg = os.read(ready_r, 4096).decode(errors="replace")
        os.close(ready_r)
        self.pid = pid
        if msg != "R":
            self.close()
            raise Failure(f"target process failed to set up: {msg or 'no message'}")

    def _serve(self, setup: Callable[[], None] | None, ready_w: int) -> None:
        try:
            os.close(self._release_w)
            if setup is not None:
                setup()
            stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            stream.bind(self.name)
            stream.listen(8)
            dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            dgram.bind(self.name + b"-dgram")
            os.write(ready_w, b"R")
            os.read(self._release_r, 1)
        except BaseException as exc:  # noqa: BLE001 - reported to the test through the pipe
            os.write(ready_w, f"{type(exc).__name__}: {exc}".encode())
        finally:
            os._exit(0)

    def close(self) -> None:
        os.close(self._release_w)
        _klab.wait_status(self.pid)


def _reach(op: str, peer: _Peer) -> int:
    """Try to reach the peer: kill(0 and SIGURG), stream connect, or datagram sendto. Returns the errno."""
    if op == "signal":
        errs = {_klab.syscall("kill", peer.pid, sig)[1] for sig in (0, signal.SIGURG)}
        pidfd = os.pidfd_open(peer.pid)
        errs.add(oserror_errno(signal.pidfd_send_signal, pidfd, 0))
        os.close(pidfd)
        if len(errs) != 1:
            raise Failure(f"kill(0), kill(SIGURG) and pidfd_send_signal disagree: {sorted(map(_en, errs))}")
        return errs.pop()
    if op == "unix":
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            return oserror_errno(s.connect, peer.name)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        return oserror_errno(s.sendto, b"x", peer.name + b"-dgram")


def _scope(op: str) -> Callable[[], None]:
    return lambda: ll.layer(scoped=_SCOPE[op])


def _unscoped_layer() -> None:
    ll.layer(fs=ll.ACCESS_FS_MAKE_BLOCK)


# Each case: (name, setup of the test process before the peer exists, peer setup,
# client setup after the peer exists, expected errno). Setups take the op name.
_Setup = Callable[[str], None] | None

_SCOPE_CASES: tuple[tuple[str, _Setup, _Setup, _Setup, int], ...] = (
    ("outside_domain", None, None, lambda op: _scope(op)(), EPERM),
    ("same_domain", lambda op: _scope(op)(), None, None, 0),
    ("descendant_domain", lambda op: _scope(op)(), lambda op: _scope(op)(), None, 0),
    ("parent_domain", lambda op: _scope(op)(), None, lambda op: _scope(op)(), EPERM),
    ("sibling_domain", None, lambda op: _scope(op)(), lambda op: _scope(op)(), EPERM),
    ("nested_unscoped_layer", lambda op: _scope(op)(), None, lambda op: _unscoped_layer(), 0),
    ("scoped_under_unscoped_layer", None, None, lambda op: (_scope(op)(), _unscoped_layer()), EPERM),
    ("other_scope_only", None, None, lambda op: ll.layer(scoped=_OTHER[op]), 0),
    ("fs_only_domain", None, None, lambda op: _unscoped_layer(), 0),
    ("unrestricted_to_scoped", None, lambda op: _scope(op)(), None, 0),
)


def _scope_case(op: str, pre: _Setup, peer_setup: _Setup, client: _Setup, want: int) -> Callable[[], None]:
    def run() -> None:
        """Scope matrix cell: who may signal/connect whom, by domain ancestry."""
        ll.require_abi(6)
        if pre is not None:
            pre(op)
        peer = _Peer((lambda: peer_setup(op)) if peer_setup is not None else None)
        try:

            def reach() -> int:
                if client is not None:
                    client(op)
                return _reach(op, peer)

            expect_eq(_en(in_child(reach)), _en(want), f"{op}: client reaching the target")
        finally:
            peer.close()

    return run


for _op_name in ("signal", "unix", "unix_dgram"):
    for _case, _pre, _peer_setup, _client, _want in _SCOPE_CASES:
        suite.add(f"scope_{_op_name}_{_case}", _scope_case(_op_name, _pre, _peer_setup, _client, _want))


@test
def scope_unix_socket_domain_is_creators() -> None:
    """ABI 6: an abstract socket belongs to the domain of its creator at creation time."""
    ll.require_abi(6)
    early = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    early_name = f"\0klab-landlock-early-{os.getpid()}".encode()
    early.bind(early_name)
    early.listen(4)
    ll.layer(scoped=ll.SCOPE_ABSTRACT_UNIX_SOCKET)
    late = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    late_name = f"\0klab-landlock-late-{os.getpid()}".encode()
    late.bind(late_name)
    late.listen(4)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        _op("connect to own socket created before restrict_self", EPERM, s.connect, early_name)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        _op("connect to own socket created after restrict_self", 0, s.connect, late_name)


@test
def scope_unix_pathname_and_socketpair_unaffected() -> None:
    """ABI 6: abstract-socket scoping leaves pathname sockets and socketpairs alone."""
    ll.require_abi(6)
    with _tmpdir() as d:
        path = f"{d}/sock"
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(4)

        def body() -> None:
            ll.layer(scoped=ll.SCOPE_ABSTRACT_UNIX_SOCKET)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                _op("connect to an outside pathname socket", 0, s.connect, path)
            a, b = socket.socketpair()
            a.send(b"x")
            expect_eq(b.recv(1), b"x", "socketpair data in a scoped domain")

        in_child(body)


@test
def scope_signal_self_always_allowed() -> None:
    """ABI 6: a signal-scoped process can still signal itself."""
    ll.require_abi(6)
    ll.layer(scoped=ll.SCOPE_SIGNAL)
    expect_errno(_klab.syscall("kill", os.getpid(), 0), 0, "kill(self, 0)")
    expect_errno(_klab.syscall("kill", os.getpid(), signal.SIGURG), 0, "kill(self, SIGURG)")


@test
def scope_signal_between_threads() -> None:
    """ABI 6 + erratum 2: threads of one process may signal each other whatever their domains."""
    ll.require_abi(6)
    if not (ll.errata() or 0) & (1 << 1):
        raise Skip("kernel lacks Landlock erratum 2 (same-process signals under signal scoping)")

    def body() -> None:
        main_tid = threading.get_native_id()

        def scoped_thread() -> int:
            ll.layer(scoped=ll.SCOPE_SIGNAL)
            return _klab.syscall("tgkill", os.getpid(), main_tid, signal.SIGURG)[1]

        t, out = _thread_result(scoped_thread)
        t.join(10)
        expect_eq([_en(e) for e in out], [_en(0)], "scoped thread tgkill() to its unscoped main thread")

    in_child(body)
