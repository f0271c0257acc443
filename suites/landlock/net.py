"""landlock: network (ABI 4).

Every test that binds or connects first moves into a network namespace of
its own (_own_netns): its ports, picked free by binding to port 0, then
closed and bound again, cannot be taken in between by a test running beside
it, and nothing it binds or connects reaches another test's sockets.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct

import _klab
import _landlock as ll
from _klab import Failure, Skip, errname, expect_errno, in_child

from landlock import suite
from landlock.common import (
    _IFREQ,
    EACCES,
    EINVAL,
    IFF_UP,
    SIOCGIFFLAGS,
    SIOCSIFFLAGS,
    _op,
    _open_close,
    _tmpdir,
    _touch,
)

test = suite.test


def _ensure_lo_up() -> None:
    """Bring lo up if it is down (guests may boot with it down); Skip when that is impossible."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack(_IFREQ, b"lo", 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        if not flags & IFF_UP:
            try:
                fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | IFF_UP))
            except OSError as exc:
                raise Skip(f"loopback is down and cannot be brought up: {exc}") from exc


CLONE_NEWNET = 0x40000000


def _own_netns() -> None:
    """Move the test process into a fresh network namespace and bring its lo up.

    Its port space and loopback are then the test's alone, so ports it picked and released stay free for
    it while other tests run beside it. The lab kernels have CONFIG_NET_NS (NAMESPACES and NET imply it).
    """
    ret, err = _klab.syscall("unshare", CLONE_NEWNET)
    if ret != 0:
        raise Failure(f"unshare(CLONE_NEWNET): {errname(err)} ({err}); the suite needs CONFIG_NET_NS")
    _ensure_lo_up()


def _free_ports(n: int, family: int = socket.AF_INET, host: str = "127.0.0.1") -> list[int]:
    """Ports picked by binding to port 0 (all held at once so they differ)."""
    socks = [socket.socket(family, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _bind(port: int, family: int = socket.AF_INET, host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> None:
    with socket.socket(family, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))


def _connect(port: int, family: int = socket.AF_INET, host: str = "127.0.0.1") -> None:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect((host, port))


def _listener(port: int, family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(8)
    return s


@test
def net_rule_validation() -> None:
    """ABI 4: port > 65535 and unhandled rights are EINVAL, empty access ENOMSG, NULL attr EFAULT."""
    ll.require_abi(4)
    bind, conn = ll.ACCESS_NET_BIND_TCP, ll.ACCESS_NET_CONNECT_TCP
    rs = ll.ruleset(net=bind)
    port_rule = ll.LANDLOCK_RULE_NET_PORT
    expect_errno(ll.add_rule(rs, port_rule, ll.NetPortAttr(bind, 65535)), 0, "port 65535")
    expect_errno(ll.add_rule(rs, port_rule, ll.NetPortAttr(bind, 65536)), EINVAL, "port 65536")
    expect_errno(ll.add_rule(rs, port_rule, ll.NetPortAttr(bind, 1 << 63)), EINVAL, "port 1<<63")
    expect_errno(ll.add_rule(rs, port_rule, ll.NetPortAttr(0, 80)), errno.ENOMSG, "allowed_access 0")
    expect_errno(ll.add_rule(rs, port_rule, ll.NetPortAttr(bind | conn, 80)), EINVAL, "CONNECT not handled")
    expect_errno(ll.add_rule(rs, port_rule, None), errno.EFAULT, "NULL net_port attr")
    fs_only = ll.ruleset(fs=ll.ACCESS_FS_READ_FILE)
    expect_errno(ll.add_rule(fs_only, port_rule, ll.NetPortAttr(bind, 80)), EINVAL, "port rule, no net handled")
    net_only = ll.ruleset(net=bind)
    expect_errno(ll.add_path_rule(net_only, "/tmp", ll.ACCESS_FS_READ_FILE), EINVAL, "path rule, no fs handled")


@test
def net_tcp_bind_connect() -> None:
    """ABI 4: handled TCP bind/connect are EACCES except on granted ports; UDP is not affected."""
    ll.require_abi(4)
    _own_netns()
    b_ok, b_no, c_ok, c_no = _free_ports(4)
    listeners = [_listener(c_ok), _listener(c_no)]
    both = ll.ACCESS_NET_BIND_TCP | ll.ACCESS_NET_CONNECT_TCP

    def body() -> None:
        ll.layer(net=both, ports=((b_ok, ll.ACCESS_NET_BIND_TCP), (c_ok, ll.ACCESS_NET_CONNECT_TCP)))
        _op(f"bind TCP {b_ok} (granted)", 0, _bind, b_ok)
        _op(f"bind TCP {b_no}", EACCES, _bind, b_no)
        _op(f"bind TCP {c_ok} (only CONNECT granted)", EACCES, _bind, c_ok)
        _op(f"connect TCP {c_ok} (granted)", 0, _connect, c_ok)
        _op(f"connect TCP {c_no} (listening, not granted)", EACCES, _connect, c_no)
        _op(f"connect TCP {b_ok} (only BIND granted, nothing listening)", EACCES, _connect, b_ok)
        _op(f"bind UDP {b_no} (UDP not restricted)", 0, _bind, b_no, socket.AF_INET, "127.0.0.1", socket.SOCK_DGRAM)

    in_child(body)
    _op(f"unrestricted: bind TCP {b_no}", 0, _bind, b_no)
    _op(f"unrestricted: connect TCP {b_ok} (nothing listening)", errno.ECONNREFUSED, _connect, b_ok)
    for s in listeners:
        s.close()


@test
def net_tcp_layers_intersect() -> None:
    """ABI 4: a port works only if every layer handling that access grants it."""
    ll.require_abi(4)
    _own_netns()
    b1, b2, c1, c2, c3 = _free_ports(5)
    listeners = [_listener(c1), _listener(c2), _listener(c3)]
    bind, conn = ll.ACCESS_NET_BIND_TCP, ll.ACCESS_NET_CONNECT_TCP

    def body() -> None:
        ll.layer(net=bind | conn, ports=((b1, bind), (b2, bind), (c1, conn), (c2, conn)))
        ll.layer(net=bind | conn, ports=((b1, bind), (c1, conn), (c3, conn)))
        ll.layer(net=bind, ports=((b1, bind),))
        _op(f"bind {b1} (granted by all 3 layers)", 0, _bind, b1)
        _op(f"bind {b2} (layer 2 denies)", EACCES, _bind, b2)
        _op(f"connect {c1} (granted by both connect layers)", 0, _connect, c1)
        _op(f"connect {c2} (layer 2 denies)", EACCES, _connect, c2)
        _op(f"connect {c3} (layer 1 denies)", EACCES, _connect, c3)

    in_child(body)
    for s in listeners:
        s.close()


@test
def net_tcp_ipv6() -> None:
    """ABI 4: the same port rules apply to IPv6 TCP on ::1."""
    ll.require_abi(4)
    _own_netns()
    try:
        ok, no = _free_ports(2, socket.AF_INET6, "::1")
    except OSError as exc:
        raise Skip(f"no IPv6 loopback: {exc}") from exc
    bind = ll.ACCESS_NET_BIND_TCP

    def body() -> None:
        ll.layer(net=bind, ports=((ok, bind),))
        _op(f"bind [::1]:{ok} (granted)", 0, _bind, ok, socket.AF_INET6, "::1")
        _op(f"bind [::1]:{no}", EACCES, _bind, no, socket.AF_INET6, "::1")

    in_child(body)


@test
def net_domain_leaves_fs_alone() -> None:
    """ABI 4: a network-only domain does not restrict filesystem access."""
    ll.require_abi(4)
    with _tmpdir() as d:
        f = _touch(f"{d}/f")

        def body() -> None:
            ll.layer(net=ll.ACCESS_NET_BIND_TCP | ll.ACCESS_NET_CONNECT_TCP)
            _op("write f in a net-only domain", 0, _open_close, f, os.O_WRONLY)
            _op("create a file in a net-only domain", 0, _open_close, f"{d}/g", os.O_CREAT | os.O_WRONLY)

        in_child(body)
