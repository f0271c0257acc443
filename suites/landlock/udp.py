"""landlock: UDP bind, connect and send (ABI 10, Linux 7.2).

BIND_UDP is checked on bind() and on every implicit bind: connect() or a
first send on an unbound socket auto-binds an ephemeral port, which needs
BIND_UDP on port 0 (the rule for "any port of the ephemeral range").
CONNECT_SEND_UDP is checked on connect() and on every send with an explicit
destination, whatever the socket is connected to; a send without an address
on a connected socket is not checked again. connect(AF_UNSPEC) dissolves the
association and is always allowed. The unrestricted test process owns the
receiving sockets, so a datagram that was allowed is also seen to arrive.
Each test that sends or binds runs in a network namespace of its own
(net._own_netns), so no test beside it can take its ports or send to them.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct

import _klab
import _landlock as ll
from _klab import expect, expect_eq, expect_errno, in_child

from landlock import suite
from landlock.common import EACCES, EINVAL, _op
from landlock.net import _own_netns

test = suite.test

BIND, SEND = ll.ACCESS_NET_BIND_UDP, ll.ACCESS_NET_CONNECT_SEND_UDP
FAMILIES = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))


def _name(family: int) -> str:
    return "IPv4" if family == socket.AF_INET else "IPv6"


def _receivers(n: int, family: int, host: str) -> list[socket.socket]:
    """n bound UDP sockets of the unrestricted process (distinct ports, held open)."""
    socks = []
    for _ in range(n):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((host, 0))
        s.settimeout(5)
        socks.append(s)
    return socks


def _free_udp_ports(n: int, family: int, host: str) -> list[int]:
    socks = _receivers(n, family, host)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _udp(family: int) -> socket.socket:
    return socket.socket(family, socket.SOCK_DGRAM)


def _bind(family: int, host: str, port: int) -> None:
    with _udp(family) as s:
        s.bind((host, port))


def _connect(family: int, host: str, port: int) -> None:
    with _udp(family) as s:
        s.connect((host, port))


def _sendto(family: int, host: str, port: int, data: bytes = b"x") -> None:
    with _udp(family) as s:
        s.sendto(data, (host, port))


def _received(rx: socket.socket, want: bytes, what: str) -> None:
    try:
        data = rx.recv(64)
    except TimeoutError:
        data = b"<nothing within 5 s>"
    expect_eq(data, want, what)


def _ephemeral_range() -> tuple[int, int]:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = f.read().split()
    return int(low), int(high)


def _raw_unspec(fd: int, call: str, port: int, data: bytes = b"") -> tuple[int, int]:
    """connect/sendto with an AF_UNSPEC address shaped like sockaddr_in (port, 127.0.0.1), 28 bytes long."""
    addr = ctypes.create_string_buffer(
        struct.pack("=H", socket.AF_UNSPEC) + struct.pack("!H4B", port, 127, 0, 0, 1), 28
    )
    if call == "connect":
        return _klab.syscall("connect", fd, addr, 28)
    buf = ctypes.create_string_buffer(data)
    return _klab.syscall("sendto", fd, buf, len(data), 0, addr, 28)


@test
def udp_rule_validation() -> None:
    """ABI 10: UDP rights are port rules like TCP ones: they must be handled, ports stay <= 65535."""
    ll.require_abi(10)
    rule = ll.LANDLOCK_RULE_NET_PORT
    udp_only = ll.ruleset(net=BIND | SEND)
    expect_errno(ll.add_rule(udp_only, rule, ll.NetPortAttr(BIND | SEND, 53)), 0, "BIND_UDP|CONNECT_SEND_UDP on 53")
    expect_errno(ll.add_rule(udp_only, rule, ll.NetPortAttr(BIND, 0)), 0, "BIND_UDP on port 0")
    expect_errno(ll.add_rule(udp_only, rule, ll.NetPortAttr(SEND, 65536)), EINVAL, "CONNECT_SEND_UDP on 65536")
    bad = ll.NetPortAttr(ll.ACCESS_NET_BIND_TCP, 53)
    expect_errno(ll.add_rule(udp_only, rule, bad), EINVAL, "BIND_TCP on a UDP-only ruleset")
    tcp_only = ll.ruleset(net=ll.ACCESS_NET_BIND_TCP | ll.ACCESS_NET_CONNECT_TCP)
    expect_errno(ll.add_rule(tcp_only, rule, ll.NetPortAttr(BIND, 53)), EINVAL, "BIND_UDP on a TCP-only ruleset")


def _bind_cases(family: int, host: str, ok: int, no: int) -> None:
    net = _name(family)
    ll.layer(net=BIND, ports=((ok, BIND),))
    _op(f"{net} UDP bind {ok} (granted)", 0, _bind, family, host, ok)
    _op(f"{net} UDP bind {no}", EACCES, _bind, family, host, no)
    _op(f"{net} UDP bind 0 (no rule on port 0)", EACCES, _bind, family, host, 0)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        _op(f"{net} TCP bind {no} (TCP not handled)", 0, s.bind, (host, no))


@test
def udp_bind_is_per_port() -> None:
    """ABI 10: with BIND_UDP handled, bind works on granted ports only (IPv4 and IPv6); TCP is untouched."""
    ll.require_abi(10)
    _own_netns()
    for family, host in FAMILIES:
        ok, no = _free_udp_ports(2, family, host)
        in_child(_bind_cases, family, host, ok, no)
        _op(f"unrestricted: {_name(family)} UDP bind {no}", 0, _bind, family, host, no)


@test
def udp_bind_port_zero_means_the_ephemeral_range() -> None:
    """ABI 10: a BIND_UDP rule on port 0 allows bind(0), which gets an ephemeral port, and nothing else."""
    ll.require_abi(10)
    _own_netns()
    low, high = _ephemeral_range()
    (no,) = _free_udp_ports(1, socket.AF_INET, "127.0.0.1")

    def body() -> None:
        ll.layer(net=BIND, ports=((0, BIND),))
        with _udp(socket.AF_INET) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            expect(low <= port <= high, f"bind(0) got port {port}, outside the ephemeral range {low}-{high}")
            what = f"bind {port} explicitly (the port bind(0) just got)"
            _op(what, EACCES, _bind, socket.AF_INET, "127.0.0.1", port)
        _op(f"bind {no}", EACCES, _bind, socket.AF_INET, "127.0.0.1", no)

    in_child(body)


def _connect_cases(family: int, host: str, ok: int, no: int) -> None:
    net = _name(family)
    ll.layer(net=SEND, ports=((ok, SEND),))
    _op(f"{net} UDP connect {ok} (granted)", 0, _connect, family, host, ok)
    _op(f"{net} UDP connect {no}", EACCES, _connect, family, host, no)
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        _op(f"{net} TCP connect {no} (TCP not handled, nothing listens)", errno.ECONNREFUSED, s.connect, (host, no))


@test
def udp_connect_is_per_port() -> None:
    """ABI 10: with CONNECT_SEND_UDP handled, connect works on granted ports only; TCP connect is untouched."""
    ll.require_abi(10)
    _own_netns()
    for family, host in FAMILIES:
        ok, no = _free_udp_ports(2, family, host)
        in_child(_connect_cases, family, host, ok, no)


def _sendto_cases(family: int, host: str, ok: int, no: int, early: socket.socket) -> None:
    net = _name(family)
    ll.layer(net=SEND, ports=((ok, SEND),))
    with _udp(family) as s:
        s.connect((host, ok))
        _op(f"{net} send() on a socket connected to {ok}", 0, s.send, b"connected")
        _op(f"{net} sendto({no}) on a socket connected to {ok}", EACCES, s.sendto, b"denied", (host, no))
        _op(f"{net} sendto({ok}) on a socket connected to {ok}", 0, s.sendto, b"explicit", (host, ok))
    _op(f"{net} send() on a socket connected to {no} before the sandbox", 0, early.send, b"early")
    _op(f"{net} sendto({no}) on that socket", EACCES, early.sendto, b"denied", (host, no))
    _op(f"{net} sendto({no}) on an unconnected socket", EACCES, _sendto, family, host, no)


@test
def udp_sendto_checks_every_explicit_destination() -> None:
    """ABI 10: sendto checks its address even on a connected socket; send() on a connected socket is not rechecked."""
    ll.require_abi(10)
    _own_netns()
    for family, host in FAMILIES:
        net = _name(family)
        rx_ok, rx_no = _receivers(2, family, host)
        ok, no = rx_ok.getsockname()[1], rx_no.getsockname()[1]
        with _udp(family) as early:
            early.connect((host, no))  # connected before the sandbox, to a port the domain does not grant
            in_child(_sendto_cases, family, host, ok, no, early)
        _received(rx_ok, b"connected", f"{net}: first datagram on port {ok}")
        _received(rx_ok, b"explicit", f"{net}: second datagram on port {ok}")
        _received(rx_no, b"early", f"{net}: the only datagram on port {no}")
        rx_ok.close()
        rx_no.close()


def _autobind_cases(family: int, host: str, dest: int, own: int, early: socket.socket) -> None:
    net = _name(family)
    ll.layer(net=BIND | SEND, ports=((dest, SEND), (own, BIND)))
    _op(f"{net} sendto({dest}) from an unbound socket (auto-bind denied)", EACCES, _sendto, family, host, dest)
    _op(f"{net} connect({dest}) from an unbound socket (auto-bind denied)", EACCES, _connect, family, host, dest)
    _op(f"{net} sendto({dest}) from a socket bound before the sandbox", 0, early.sendto, b"early", (host, dest))
    with _udp(family) as s:
        s.bind((host, own))
        _op(f"{net} sendto({dest}) after bind({own}) (granted)", 0, s.sendto, b"bound", (host, dest))
    # This layer lacks port 0: a nested layer that grants it cannot add it back.
    in_child(_port_zero_cases, family, host, dest, EACCES, b"")


def _port_zero_cases(family: int, host: str, dest: int, want: int, data: bytes) -> None:
    ll.layer(net=BIND | SEND, ports=((dest, SEND), (0, BIND)))
    what = f"{_name(family)} sendto({dest}) from an unbound socket, BIND_UDP on port 0 in the newest layer"
    _op(what, want, _sendto, family, host, dest, data)


def _send_only_cases(family: int, host: str, dest: int) -> None:
    ll.layer(net=SEND, ports=((dest, SEND),))
    what = f"{_name(family)} sendto({dest}) from an unbound socket, BIND_UDP not handled"
    _op(what, 0, _sendto, family, host, dest, b"unhandled")


@test
def udp_autobind_needs_bind_on_port_zero() -> None:
    """ABI 10: connect or a first send auto-binds: with BIND_UDP handled that needs a rule on port 0."""
    ll.require_abi(10)
    _own_netns()
    for family, host in FAMILIES:
        (rx,) = _receivers(1, family, host)
        dest = rx.getsockname()[1]
        (own,) = _free_udp_ports(1, family, host)
        with _udp(family) as early:
            early.bind((host, 0))  # bound before the sandbox: no implicit bind left to check
            in_child(_autobind_cases, family, host, dest, own, early)
        in_child(_port_zero_cases, family, host, dest, 0, b"auto")
        in_child(_send_only_cases, family, host, dest)
        got = sorted(rx.recv(64) for _ in range(4))
        expect_eq(got, [b"auto", b"bound", b"early", b"unhandled"], f"{_name(family)}: datagrams received on {dest}")
        rx.close()


def _unspec_cases(family: int, ok: int, no: int, conn: socket.socket) -> None:
    net = _name(family)
    ll.layer(net=SEND, ports=((ok, SEND),))
    fd = conn.fileno()
    expect_errno(_raw_unspec(fd, "connect", no), 0, f"{net} connect(AF_UNSPEC) on a connected socket")
    _op(f"{net} send() after the disconnect", errno.EDESTADDRREQ, conn.send, b"nowhere")
    if family == socket.AF_INET:
        # IPv4 reads an AF_UNSPEC destination as AF_INET, so its port is checked.
        expect_errno(_raw_unspec(fd, "sendto", ok, b"unspec"), 0, f"{net} sendto(AF_UNSPEC, port {ok})")
        expect_errno(_raw_unspec(fd, "sendto", no, b"x"), EACCES, f"{net} sendto(AF_UNSPEC, port {no})")
    else:
        # IPv6 would ignore it, but the family can change under Landlock (IPV6_ADDRFORM): denied.
        expect_errno(_raw_unspec(fd, "sendto", ok, b"x"), EACCES, f"{net} sendto(AF_UNSPEC, port {ok})")


@test
def udp_af_unspec_disconnect_is_always_allowed() -> None:
    """ABI 10: connect(AF_UNSPEC) disconnects even with no rule; sendto(AF_UNSPEC) is a port on IPv4, denied on IPv6."""
    ll.require_abi(10)
    _own_netns()
    for family, host in FAMILIES:
        (rx,) = _receivers(1, family, host)
        ok = rx.getsockname()[1]
        (no,) = _free_udp_ports(1, family, host)
        with _udp(family) as conn:
            conn.connect((host, ok))
            in_child(_unspec_cases, family, ok, no, conn)
        if family == socket.AF_INET:
            _received(rx, b"unspec", f"{_name(family)}: the AF_UNSPEC datagram on port {ok}")
        rx.close()


@test
def udp_and_tcp_rights_are_separate() -> None:
    """ABI 10: a TCP rule never grants UDP on the same port, nor the other way round."""
    ll.require_abi(10)
    _own_netns()
    tcp, udp = _free_udp_ports(2, socket.AF_INET, "127.0.0.1")
    bind_tcp = ll.ACCESS_NET_BIND_TCP

    def body() -> None:
        ll.layer(net=bind_tcp | BIND, ports=((tcp, bind_tcp), (udp, BIND)))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            _op(f"TCP bind {tcp} (TCP rule)", 0, s.bind, ("127.0.0.1", tcp))
        _op(f"UDP bind {tcp} (only a TCP rule)", EACCES, _bind, socket.AF_INET, "127.0.0.1", tcp)
        _op(f"UDP bind {udp} (UDP rule)", 0, _bind, socket.AF_INET, "127.0.0.1", udp)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            _op(f"TCP bind {udp} (only a UDP rule)", EACCES, s.bind, ("127.0.0.1", udp))

    in_child(body)
