"""landlock: LANDLOCK_ACCESS_FS_RESOLVE_UNIX, connecting to pathname UNIX sockets (ABI 9, Linux 7.1).

Like a scope, the right is about where the server socket comes from: the
domain of the credentials that created it (socket(2)), not who bound it.
A server created outside the client's domain (by an unrestricted process, a
parent domain, or by the client itself before it sandboxed itself) is
EACCES unless a rule grants RESOLVE_UNIX on the socket's path; a server
created in the same domain, or in a domain nested in it, stays reachable.
Stream connect and datagram sendto are both checked; abstract sockets are not.
"""

from __future__ import annotations

import errno
import os
import socket

import _landlock as ll
from _klab import expect_eq, in_child, wait_status

from landlock import suite
from landlock.common import EACCES, _op, _tmpdir, _touch

test = suite.test

RESOLVE = ll.ACCESS_FS_RESOLVE_UNIX


def _server(path: str, kind: int = socket.SOCK_STREAM) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, kind)
    s.bind(path)
    if kind == socket.SOCK_STREAM:
        s.listen(8)
    return s


def _connect(path: str, kind: int = socket.SOCK_STREAM) -> None:
    with socket.socket(socket.AF_UNIX, kind) as c:
        c.connect(path)


def _sendto(path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as c:
        c.sendto(b"x", path)


@test
def resolve_unix_denies_servers_from_outside() -> None:
    """ABI 9: a server created outside the domain is EACCES for connect and sendto; abstract sockets are not checked."""
    ll.require_abi(9)
    with _tmpdir() as d:
        stream, dgram = _server(f"{d}/stream"), _server(f"{d}/dgram", socket.SOCK_DGRAM)
        abstract = _server(f"\0klab-landlock-{os.getpid()}")

        def restricted() -> None:
            ll.layer(fs=RESOLVE)
            _op("connect to an outside stream server", EACCES, _connect, f"{d}/stream")
            _op("sendto an outside datagram server", EACCES, _sendto, f"{d}/dgram")
            _op("connect to an outside abstract server", 0, _connect, abstract.getsockname())

        def unhandled() -> None:
            ll.layer(fs=ll.ACCESS_FS_READ_FILE | ll.ACCESS_FS_WRITE_FILE)
            _op("connect to the stream server, RESOLVE_UNIX not handled", 0, _connect, f"{d}/stream")
            _op("sendto the datagram server, RESOLVE_UNIX not handled", 0, _sendto, f"{d}/dgram")

        in_child(restricted)
        in_child(unhandled)
        _op("unrestricted: connect to the stream server", 0, _connect, f"{d}/stream")
        for s in (stream, dgram, abstract):
            s.close()


@test
def resolve_unix_rule_grants_a_hierarchy() -> None:
    """ABI 9: RESOLVE_UNIX granted on a directory (or the socket file) opens the outside servers beneath it only."""
    ll.require_abi(9)
    with _tmpdir() as d:
        os.mkdir(f"{d}/ok")
        os.mkdir(f"{d}/no")
        servers = [_server(p) for p in (f"{d}/ok/s", f"{d}/no/s", f"{d}/no/file-rule")]

        def body() -> None:
            ll.layer(fs=RESOLVE, paths=((f"{d}/ok", RESOLVE), (f"{d}/no/file-rule", RESOLVE)))
            _op("connect beneath the granted directory", 0, _connect, f"{d}/ok/s")
            _op("connect beneath another directory", EACCES, _connect, f"{d}/no/s")
            _op("connect to a socket with its own rule", 0, _connect, f"{d}/no/file-rule")

        in_child(body)
        for s in servers:
            s.close()


@test
def resolve_unix_same_or_nested_domain_stays_reachable() -> None:
    """ABI 9: servers created in the client's domain or a nested one are reachable; from an outer layer they are not."""
    ll.require_abi(9)
    with _tmpdir() as d:
        same, early, own, inner = f"{d}/same", f"{d}/early", f"{d}/own", f"{d}/inner"

        def nested_client() -> None:
            ll.layer(fs=RESOLVE)
            _op("nested domain: connect to a server it created", 0, _serve_and_connect, own)
            _op("nested domain: connect to the outer domain's server", EACCES, _connect, same)

        def body() -> None:
            early_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # created before the sandbox
            ll.layer(fs=RESOLVE)
            same_sock = _server(same)
            early_sock.bind(early)
            early_sock.listen(8)
            _op("connect to a server created in the same domain", 0, _connect, same)
            _op("connect to a server created before restrict_self, bound after", EACCES, _connect, early)
            in_child(lambda: _op("forked child (same domain): connect", 0, _connect, same))
            in_child(nested_client)
            _connect_to_nested_server(inner)
            same_sock.close()
            early_sock.close()

        in_child(body)


def _serve_and_connect(path: str) -> None:
    server = _server(path)
    try:
        _connect(path)
    finally:
        server.close()


def _connect_to_nested_server(path: str) -> None:
    """A server created in a nested domain is reachable from the outer one (the client is an ancestor layer)."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            ll.layer(fs=RESOLVE)
            server = _server(path)
            os.write(ready_w, b"1")
            server.settimeout(10)
            server.accept()[0].close()
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    expect_eq(os.read(ready_r, 1), b"1", "nested server ready")
    os.close(ready_r)
    try:
        _op("outer domain: connect to a server created in a nested domain", 0, _connect, path)
    finally:
        status = wait_status(pid)
    expect_eq(os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1, 0, "nested server: exit status (accepted)")


@test
def resolve_unix_lookup_errors_come_first() -> None:
    """ABI 9: ENOENT, ECONNREFUSED (not a socket) and EPROTOTYPE (wrong type) come before the Landlock check."""
    ll.require_abi(9)
    with _tmpdir() as d:
        stream = _server(f"{d}/stream")
        regular = _touch(f"{d}/regular")

        def body() -> None:
            ll.layer(fs=RESOLVE)
            _op("connect to a missing path", errno.ENOENT, _connect, f"{d}/missing")
            _op("connect to a regular file", errno.ECONNREFUSED, _connect, regular)
            _op(
                "datagram connect to an outside stream server",
                errno.EPROTOTYPE,
                _connect,
                f"{d}/stream",
                socket.SOCK_DGRAM,
            )
            _op("stream connect to the same outside server", EACCES, _connect, f"{d}/stream")

        in_child(body)
        stream.close()
