"""Landlock suite: syscall semantics, domain inheritance, filesystem, network and scoping.

Every test pins the exact outcome on both sides (the allowed action succeeds,
the denied one fails with the exact errno), which process is restricted and
which layer decides. Features are gated by probing the ABI version, so a 6.1
kernel (ABI 2) skips what it lacks instead of failing. Runs as root; tests
that need the unprivileged path drop capabilities first, like the kernel's
own selftests (tools/testing/selftests/landlock/).

Restricted code runs in forked children (in_child) so that the unrestricted
test process can create and remove its fresh /tmp tree. Everything the
restricted side calls is imported up front: a lazy import after a READ_FILE
restriction would fail for reasons unrelated to the kernel under test.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import itertools
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator

import _klab
import _landlock as ll
from _klab import Failure, Skip, errname, expect, expect_eq, expect_errno, in_child, oserror_errno

suite = _klab.Suite("landlock")
test = suite.test

EACCES, EXDEV, EPERM, EINVAL = errno.EACCES, errno.EXDEV, errno.EPERM, errno.EINVAL
RW_FILE = ll.ACCESS_FS_READ_FILE | ll.ACCESS_FS_WRITE_FILE
FIONREAD = 0x541B
FIOCLEX = 0x5451
FIONCLEX = 0x5450
FIOQSIZE = 0x5460
FIONBIO = 0x5421
TCGETS = 0x5401
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ = "16sH22x"  # struct ifreq: name, ifr_flags, rest of the 24-byte union
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_names = itertools.count()


# --- small helpers -------------------------------------------------------------


def _en(err: int) -> str:
    """errno as 'EACCES (13)', 0 as 'success'."""
    return "success" if err == 0 else f"{errname(err)} ({err})"


def _op(what: str, want: int, fn: Callable[..., object], *args: object) -> None:
    """Run an os-level call and pin its outcome: want 0 for success, else the errno."""
    got = oserror_errno(fn, *args)
    if got != want:
        raise Failure(f"{what}: expected {_en(want)}, got {_en(got)}")


def _open_close(path: str, flags: int) -> None:
    os.close(os.open(path, flags | os.O_CLOEXEC))


def _touch(path: str, data: bytes = b"data\n") -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


@contextlib.contextmanager
def _tmpdir() -> Iterator[str]:
    """A fresh directory under /tmp, removed by the (unrestricted) caller afterwards."""
    root = tempfile.mkdtemp(prefix="klab-landlock-", dir="/tmp")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _mkdirs(root: str, *names: str) -> list[str]:
    paths = [os.path.join(root, n) for n in names]
    for p in paths:
        os.makedirs(p, exist_ok=True)
    return paths


def _nnp(status: str = "/proc/thread-self/status") -> int:
    """The NoNewPrivs flag of the calling thread (or of the status file given)."""
    with open(status) as f:
        for line in f:
            if line.startswith("NoNewPrivs:"):
                return int(line.split()[1])
    raise Failure(f"no NoNewPrivs line in {status}")


def _no_rules(fs: int = 0, net: int = 0, scoped: int = 0) -> None:
    """Enforce one layer that handles these rights and grants none of them."""
    ll.layer(fs=fs, net=net, scoped=scoped)


def _rs_attr(fs: int = 0, net: int = 0, scoped: int = 0) -> ll.RulesetAttr:
    return ll.RulesetAttr(fs, net, scoped)


# --- ABI and errata queries ------------------------------------------------------


@test
def abi_version_query() -> None:
    """VERSION needs attr NULL and size 0; anything else next to it is EINVAL."""
    abi = ll.require_abi(1)
    expect(abi >= 1, f"ABI version must be >= 1, got {abi}")
    expect_eq(ll.abi_version(), abi, "second ABI query")
    attr = _rs_attr(fs=ll.ACCESS_FS_READ_FILE)
    version = ll.LANDLOCK_CREATE_RULESET_VERSION
    expect_errno(ll.create_ruleset(attr, 0, version), EINVAL, "VERSION with non-NULL attr, size 0")
    expect_errno(ll.create_ruleset(None, 8, version), EINVAL, "VERSION with NULL attr, size 8")
    expect_errno(ll.create_ruleset(attr, 8, version), EINVAL, "VERSION with attr and size")
    expect_errno(ll.create_ruleset(None, 0, version | 1 << 31), EINVAL, "VERSION | bit 31")
    both = version | ll.LANDLOCK_CREATE_RULESET_ERRATA
    expect_errno(ll.create_ruleset(None, 0, both), EINVAL, "VERSION | ERRATA together")


@test
def create_ruleset_unknown_flags() -> None:
    """Unknown flags are EINVAL before attr and size are even looked at."""
    abi = ll.require_abi(1)
    attr = _rs_attr(fs=ll.ACCESS_FS_READ_FILE)
    bad = [1 << 31] + ([1 << 2] if abi <= ll.MAX_KNOWN_ABI else [])
    for flag in bad:
        for a, size in ((None, 0), (attr, 0), (None, 8), (attr, 8)):
            what = f"create_ruleset(attr={'set' if a else 'NULL'}, size={size}, flags={flag:#x})"
            expect_errno(ll.create_ruleset(a, size, flag), EINVAL, what)


@test
def errata_query() -> None:
    """ERRATA (when the kernel knows it) obeys the same NULL/0 rule and is stable."""
    ll.require_abi(1)
    first = ll.errata()
    if first is None:
        # Kernels before the errata interface (e.g. 6.1) reject the flag as unknown.
        flag = ll.LANDLOCK_CREATE_RULESET_ERRATA
        expect_errno(ll.create_ruleset(None, 0, flag), EINVAL, "ERRATA on a kernel without errata")
        raise Skip("kernel predates LANDLOCK_CREATE_RULESET_ERRATA (EINVAL checked)")
    expect(first >= 0, f"errata bitmask must be non-negative, got {first}")
    expect_eq(ll.errata(), first, "second errata query")
    attr = _rs_attr(fs=ll.ACCESS_FS_READ_FILE)
    flag = ll.LANDLOCK_CREATE_RULESET_ERRATA
    expect_errno(ll.create_ruleset(attr, 0, flag), EINVAL, "ERRATA with non-NULL attr")
    expect_errno(ll.create_ruleset(None, 8, flag), EINVAL, "ERRATA with size 8")
    expect_errno(ll.create_ruleset(attr, 8, flag), EINVAL, "ERRATA with attr and size")


# --- ruleset attribute size and content -------------------------------------------


@test
def ruleset_attr_size_rules() -> None:
    """size < 8 is EINVAL, > page is E2BIG, NULL attr is EFAULT, empty is ENOMSG."""
    ll.require_abi(1)
    buf = ctypes.create_string_buffer(PAGE_SIZE + 1)
    ptr = ctypes.addressof(buf)
    for size in (0, 1, 7):
        expect_errno(_klab.syscall("landlock_create_ruleset", ptr, size, 0), EINVAL, f"size {size}")
    expect_errno(_klab.syscall("landlock_create_ruleset", ptr, PAGE_SIZE + 1, 0), errno.E2BIG, "size page+1")
    expect_errno(_klab.syscall("landlock_create_ruleset", ptr, -1, 0), errno.E2BIG, "size (size_t)-1")
    for size in (0, 1, 8, 24):
        expect_errno(ll.create_ruleset(None, size, 0), errno.EFAULT, f"NULL attr, size {size}")
    for size in (8, 16, 24, PAGE_SIZE):
        expect_errno(
            _klab.syscall("landlock_create_ruleset", ptr, size, 0), errno.ENOMSG, f"all-zero attr, size {size}"
        )


@test
def ruleset_attr_larger_size() -> None:
    """A size beyond the kernel's struct is fine with a zero tail and E2BIG with any non-zero byte."""
    abi = ll.require_abi(1)
    ksize = ll.attr_size_for(abi)
    buf = ctypes.create_string_buffer(PAGE_SIZE)
    struct.pack_into("<Q", buf, 0, ll.ACCESS_FS_READ_FILE)
    ptr = ctypes.addressof(buf)
    fd = expect_errno(_klab.syscall("landlock_create_ruleset", ptr, PAGE_SIZE, 0), 0, "page-sized attr, zero tail")
    os.close(fd)
    for offset in (ksize, PAGE_SIZE // 2, PAGE_SIZE - 1):
        buf[offset] = b"."
        what = f"page-sized attr with non-zero byte at {offset} (kernel struct is {ksize} bytes)"
        expect_errno(_klab.syscall("landlock_create_ruleset", ptr, PAGE_SIZE, 0), errno.E2BIG, what)
        buf[offset] = b"\0"


@test
def ruleset_attr_fields_by_abi() -> None:
    """net (ABI 4) and scoped (ABI 6) are E2BIG on older kernels and accepted on newer ones."""
    abi = ll.require_abi(1)
    net = _rs_attr(fs=ll.ACCESS_FS_READ_FILE, net=ll.ACCESS_NET_BIND_TCP)
    scoped = _rs_attr(fs=ll.ACCESS_FS_READ_FILE, scoped=ll.SCOPE_SIGNAL)
    for attr, size, since, what in ((net, 16, 4, "handled_access_net"), (scoped, 24, 6, "scoped")):
        res = ll.create_ruleset(attr, size, 0)
        if abi >= since:
            os.close(expect_errno(res, 0, f"{what} on ABI {abi}"))
        else:
            expect_errno(res, errno.E2BIG, f"{what} (ABI {since}) on ABI {abi}")
    # Only net or only scoped handled is a valid, non-empty ruleset.
    if abi >= 4:
        os.close(expect_errno(ll.create_ruleset(_rs_attr(net=ll.ACCESS_NET_BIND_TCP), 16), 0, "net-only ruleset"))
    if abi >= 6:
        os.close(expect_errno(ll.create_ruleset(_rs_attr(scoped=ll.SCOPE_SIGNAL), 24), 0, "scoped-only ruleset"))


@test
def ruleset_unknown_access_bits() -> None:
    """Unknown fs, net and scope bits are EINVAL; every known bit is accepted."""
    abi = ll.require_abi(1)
    size = ll.attr_size_for(abi)
    cases = [("fs", ll.fs_access_all(abi), lambda v: _rs_attr(fs=v))]
    if abi >= 4:
        cases.append(("net", ll.net_access_all(abi), lambda v: _rs_attr(fs=ll.ACCESS_FS_READ_FILE, net=v)))
    if abi >= 6:
        cases.append(("scoped", ll.scope_all(abi), lambda v: _rs_attr(fs=ll.ACCESS_FS_READ_FILE, scoped=v)))
    for name, known, make in cases:
        os.close(expect_errno(ll.create_ruleset(make(known), size), 0, f"all known {name} bits {known:#x}"))
        bad = [1 << 63, 1 << 32]
        if abi <= ll.MAX_KNOWN_ABI:
            bad.append(known + 1)  # the next bit up
        for bit in bad:
            expect_errno(ll.create_ruleset(make(known | bit), size), EINVAL, f"unknown {name} bit {bit:#x}")


# --- landlock_add_rule ---------------------------------------------------------------


@test
def add_rule_checks_ordering() -> None:
    """flags, then ruleset fd, then rule type, then attr pointer, then content."""
    ll.require_abi(1)
    rs = ll.ruleset(fs=ll.ACCESS_FS_EXECUTE)
    beneath = ll.LANDLOCK_RULE_PATH_BENEATH
    bad_parent = ll.PathBeneathAttr(ll.ACCESS_FS_EXECUTE, -1)
    expect_errno(ll.add_rule(-1, 0, None, 1), EINVAL, "add_rule flags=1 with bad fd and type")
    expect_errno(ll.add_rule(rs, beneath, bad_parent, 1 << 31), EINVAL, "add_rule flags=1<<31")
    expect_errno(ll.add_rule(-1, 0, None, 0), errno.EBADF, "add_rule on fd -1")
    for rule_type in (0, 3, 0x7FFFFFFF):
        expect_errno(ll.add_rule(rs, rule_type, None, 0), EINVAL, f"rule type {rule_type}")
    expect_errno(ll.add_rule(rs, beneath, None, 0), errno.EFAULT, "PATH_BENEATH with NULL attr")
    expect_errno(ll.add_rule(rs, beneath, bad_parent), errno.EBADF, "parent_fd -1")
    expect_errno(ll.add_path_rule(rs, "/tmp", ll.ACCESS_FS_EXECUTE), 0, "valid rule on /tmp")


@test
def add_rule_access_checks() -> None:
    """allowed_access 0 is ENOMSG, a right outside the handled set EINVAL (both before the fd check)."""
    ll.require_abi(1)
    rs = ll.ruleset(fs=ll.ACCESS_FS_READ_FILE | ll.ACCESS_FS_READ_DIR)
    beneath = ll.LANDLOCK_RULE_PATH_BENEATH
    expect_errno(ll.add_rule(rs, beneath, ll.PathBeneathAttr(0, -1)), errno.ENOMSG, "allowed_access 0, parent_fd -1")
    expect_errno(ll.add_path_rule(rs, "/tmp", 0), errno.ENOMSG, "allowed_access 0")
    outside = ll.ACCESS_FS_READ_FILE | ll.ACCESS_FS_WRITE_FILE
    expect_errno(ll.add_rule(rs, beneath, ll.PathBeneathAttr(outside, -1)), EINVAL, "unhandled right, parent_fd -1")
    expect_errno(ll.add_path_rule(rs, "/tmp", outside), EINVAL, "READ|WRITE when only READ handled")
    expect_errno(ll.add_path_rule(rs, "/tmp", 1 << 63), EINVAL, "unknown bit 63")
    expect_errno(ll.add_path_rule(rs, "/tmp", ll.ACCESS_FS_READ_DIR), 0, "handled READ_DIR on /tmp")
    expect_errno(ll.add_path_rule(rs, "/tmp", ll.ACCESS_FS_READ_FILE), 0, "second rule on the same dir")


@test
def add_rule_file_rights_only_on_files() -> None:
    """A rule on a non-directory may only carry file rights; directory rights are EINVAL."""
    abi = ll.require_abi(1)
    rs = ll.ruleset(fs=ll.fs_access_all(abi))
    with _tmpdir() as d:
        f = _touch(os.path.join(d, "f"))
        file_rights = ll.ACCESS_FS_EXECUTE | RW_FILE
        file_rights |= ll.ACCESS_FS_TRUNCATE if abi >= 3 else 0
        file_rights |= ll.ACCESS_FS_IOCTL_DEV if abi >= 5 else 0
        expect_errno(ll.add_path_rule(rs, f, file_rights), 0, f"file rights {file_rights:#x} on a file")
        for right in (ll.ACCESS_FS_READ_DIR, ll.ACCESS_FS_MAKE_REG, ll.ACCESS_FS_REMOVE_FILE, ll.ACCESS_FS_MAKE_DIR):
            expect_errno(
                ll.add_path_rule(rs, f, ll.ACCESS_FS_READ_FILE | right), EINVAL, f"dir right {right:#x} on a file"
            )
        expect_errno(ll.add_path_rule(rs, d, ll.fs_access_all(abi)), 0, "every right on a directory")


@test
def add_rule_parent_fd_types() -> None:
    """parent_fd must name a real filesystem object: pipes, sockets and rulesets are EBADFD."""
    ll.require_abi(1)
    rs = ll.ruleset(fs=ll.ACCESS_FS_READ_FILE)
    other = ll.ruleset(fs=ll.ACCESS_FS_READ_FILE)
    r, w = os.pipe()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    beneath = ll.LANDLOCK_RULE_PATH_BENEATH
    for fd, what in ((other, "ruleset fd"), (rs, "the ruleset's own fd"), (r, "pipe"), (sock.fileno(), "socket")):
        attr = ll.PathBeneathAttr(ll.ACCESS_FS_READ_FILE, fd)
        expect_errno(ll.add_rule(rs, beneath, attr), errno.EBADFD, f"parent_fd is a {what}")
    dfd = os.open("/tmp", os.O_RDONLY | os.O_DIRECTORY)
    attr = ll.PathBeneathAttr(ll.ACCESS_FS_READ_FILE, dfd)
    expect_errno(ll.add_rule(rs, beneath, attr), 0, "parent_fd opened O_RDONLY (not O_PATH)")
    os.close(dfd)
    expect_errno(
        ll.add_rule(rs, beneath, ll.PathBeneathAttr(ll.ACCESS_FS_READ_FILE, w + 1000)), errno.EBADF, "closed fd"
    )


@test
def ruleset_fd_type_checks() -> None:
    """A non-ruleset fd is EBADFD for add_rule and restrict_self; an O_PATH fd is EBADF."""
    ll.require_abi(1)
    r, _w = os.pipe()
    with _tmpdir() as d:
        reg = os.open(_touch(os.path.join(d, "f")), os.O_RDWR)
        opath = os.open(d, os.O_PATH)
        attr = ll.PathBeneathAttr(ll.ACCESS_FS_READ_FILE, opath)
        beneath = ll.LANDLOCK_RULE_PATH_BENEATH
        for fd, what in ((r, "pipe"), (reg, "regular file"), (os.open("/dev/null", os.O_RDWR), "/dev/null")):
            expect_errno(ll.add_rule(fd, beneath, attr), errno.EBADFD, f"add_rule on a {what} fd")
        expect_errno(ll.add_rule(opath, beneath, attr), errno.EBADF, "add_rule on an O_PATH fd")

        def body() -> None:
            _klab.set_no_new_privs()
            expect_errno(ll.restrict_self(r), errno.EBADFD, "restrict_self on a pipe fd")
            expect_errno(ll.restrict_self(reg), errno.EBADFD, "restrict_self on a regular file fd")
            expect_errno(ll.restrict_self(opath), errno.EBADF, "restrict_self on an O_PATH fd")

        in_child(body)


@test
def ruleset_fd_properties() -> None:
    """The ruleset fd is an O_RDWR, O_CLOEXEC anon inode; read and write on it are EINVAL."""
    ll.require_abi(1)
    _klab.drop_caps()
    rs = ll.ruleset(fs=ll.ACCESS_FS_READ_FILE)
    expect(fcntl.fcntl(rs, fcntl.F_GETFD) & fcntl.FD_CLOEXEC, "ruleset fd lacks FD_CLOEXEC")
    expect_eq(fcntl.fcntl(rs, fcntl.F_GETFL) & os.O_ACCMODE, os.O_RDWR, "ruleset fd access mode")
    expect_eq(os.readlink(f"/proc/self/fd/{rs}"), "anon_inode:[landlock-ruleset]", "ruleset fd link")
    buf = ctypes.create_string_buffer(8)
    expect_errno(_klab.syscall("read", rs, buf, 1), EINVAL, "read(ruleset fd)")
    expect_errno(_klab.syscall("write", rs, buf, 1), EINVAL, "write(ruleset fd)")


# --- landlock_restrict_self ------------------------------------------------------------


@test
def restrict_self_eperm_first() -> None:
    """Without no_new_privs and CAP_SYS_ADMIN, EPERM comes before any flag or fd check."""
    ll.require_abi(1)
    rs = ll.ruleset(fs=ll.ACCESS_FS_EXECUTE)
    r, _w = os.pipe()
    _klab.drop_caps()
    expect_eq(_nnp(), 0, "no_new_privs before the test")
    for fd, flags in ((-1, -1), (-1, 0), (-1, 1 << 31), (rs, 0), (r, 0), (rs, -1)):
        expect_errno(ll.restrict_self(fd, flags & 0xFFFFFFFF), EPERM, f"restrict_self({fd}, {flags:#x}) unprivileged")
    _klab.set_no_new_privs()
    expect_errno(ll.restrict_self(-1, 0xFFFFFFFF), EINVAL, "restrict_self(-1, -1) with no_new_privs")
    expect_errno(ll.restrict_self(-1, 0), errno.EBADF, "restrict_self(-1, 0) with no_new_privs")
    expect_errno(ll.restrict_self(r, 0), errno.EBADFD, "restrict_self(pipe, 0) with no_new_privs")
    expect_errno(ll.restrict_self(rs, 0), 0, "restrict_self(ruleset, 0) with no_new_privs")


@test
def restrict_self_needs_cap_sys_admin_specifically() -> None:
    """Root without CAP_SYS_ADMIN (and without no_new_privs) gets EPERM; with it, succeeds without nnp."""
    ll.require_abi(1)
    rs = ll.ruleset(fs=ll.ACCESS_FS_EXECUTE)

    def without_admin() -> None:
        _klab.drop_caps(_klab.CAP_SYS_ADMIN)
        expect_errno(ll.restrict_self(rs), EPERM, "restrict_self as root minus CAP_SYS_ADMIN")

    in_child(without_admin)
    expect_errno(ll.restrict_self(rs), 0, "restrict_self with CAP_SYS_ADMIN, no no_new_privs")
    expect_eq(_nnp(), 0, "no_new_privs after a CAP_SYS_ADMIN restrict_self (must not be set implicitly)")


@test
def restrict_self_unknown_flags() -> None:
    """Flags beyond what this ABI knows are EINVAL (before the fd is looked at)."""
    abi = ll.require_abi(1)
    rs = ll.ruleset(fs=ll.ACCESS_FS_EXECUTE)
    _klab.set_no_new_privs()
    known = ll.restrict_flags_known(abi)
    bad = [1 << 31] + ([known + 1] if abi <= ll.MAX_KNOWN_ABI else [])
    for flag in bad:
        expect_errno(ll.restrict_self(rs, flag), EINVAL, f"restrict_self(ruleset, {flag:#x}) on ABI {abi}")
        expect_errno(ll.restrict_self(-1, flag), EINVAL, f"restrict_self(-1, {flag:#x}) on ABI {abi}")


@test
def restrict_self_logging_flags() -> None:
    """ABI 7: LOG_* flags work with a ruleset; only LOG_SUBDOMAINS_OFF alone may go with fd -1."""
    ll.require_abi(7)
    _klab.set_no_new_privs()
    same_off = ll.LANDLOCK_RESTRICT_SELF_LOG_SAME_EXEC_OFF
    new_on = ll.LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON
    sub_off = ll.LANDLOCK_RESTRICT_SELF_LOG_SUBDOMAINS_OFF
    for flags in (same_off, new_on, same_off | new_on | sub_off):
        expect_errno(ll.restrict_self(-1, flags), errno.EBADF, f"restrict_self(-1, {flags:#x})")
    null = os.open("/dev/null", os.O_RDONLY)
    expect_errno(ll.restrict_self(null, sub_off), errno.EBADFD, "restrict_self(/dev/null, LOG_SUBDOMAINS_OFF)")
    expect_errno(ll.restrict_self(-1, sub_off), 0, "restrict_self(-1, LOG_SUBDOMAINS_OFF)")
    for flags in (same_off, new_on, sub_off, same_off | new_on | sub_off):
        rs = ll.ruleset(fs=ll.ACCESS_FS_MAKE_BLOCK)
        expect_errno(ll.restrict_self(rs, flags), 0, f"restrict_self(ruleset, {flags:#x})")
        os.close(rs)


@test
def log_subdomains_off_creates_no_layer() -> None:
    """ABI 7: restrict_self(-1, LOG_SUBDOMAINS_OFF) adds no layer: 16 real layers still fit after it."""
    ll.require_abi(7)
    _klab.set_no_new_privs()
    for _ in range(3):
        expect_errno(ll.restrict_self(-1, ll.LANDLOCK_RESTRICT_SELF_LOG_SUBDOMAINS_OFF), 0, "LOG_SUBDOMAINS_OFF")
    rs = ll.ruleset(fs=ll.ACCESS_FS_MAKE_BLOCK)
    for i in range(16):
        expect_errno(ll.restrict_self(rs), 0, f"layer {i + 1} after LOG_SUBDOMAINS_OFF")
    expect_errno(ll.restrict_self(rs), errno.E2BIG, "layer 17")


@test
def sixteen_layers_then_e2big() -> None:
    """16 stacked layers succeed, the 17th is E2BIG and leaves the domain (and its children's) as is."""
    ll.require_abi(1)
    _klab.set_no_new_privs()
    rs = ll.ruleset(fs=ll.ACCESS_FS_MAKE_BLOCK)
    for i in range(16):
        expect_errno(ll.restrict_self(rs), 0, f"layer {i + 1}")
    expect_errno(ll.restrict_self(rs), errno.E2BIG, "layer 17")
    expect_errno(ll.restrict_self(rs), errno.E2BIG, "layer 17, second try")
    in_child(lambda: expect_errno(ll.restrict_self(rs), errno.E2BIG, "layer 17 in a forked child"))


# --- ruleset fd passing and inheritance ---------------------------------------------------


def _send_fd(sock: socket.socket, fd: int) -> None:
    socket.send_fds(sock, [b"F"], [fd])


def _recv_fd(sock: socket.socket) -> int:
    _msg, fds, _flags, _addr = socket.recv_fds(sock, 1, 1)
    expect_eq(len(fds), 1, "fds received over SCM_RIGHTS")
    return fds[0]


@test
def ruleset_fd_transfer_scm_rights() -> None:
    """A ruleset passed over SCM_RIGHTS restricts only the receiver that enforces it."""
    ll.require_abi(1)
    _klab.drop_caps()
    with _tmpdir() as d:
        inside = _mkdirs(d, "inside")[0]
        rs = ll.ruleset(fs=ll.ACCESS_FS_READ_DIR)
        ll.allow_path(rs, inside, ll.ACCESS_FS_READ_DIR)
        tx, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        _send_fd(tx, rs)
        tx.close()
        os.close(rs)

        def receiver() -> None:
            got = _recv_fd(rx)
            expect_eq(os.readlink(f"/proc/self/fd/{got}"), "anon_inode:[landlock-ruleset]", "received fd")
            ll.enforce(got)
            _op("receiver: open / (O_DIRECTORY)", EACCES, _open_close, "/", os.O_DIRECTORY)
            _op("receiver: open d (outside the rule)", EACCES, _open_close, d, os.O_DIRECTORY)
            _op("receiver: open inside", 0, _open_close, inside, os.O_DIRECTORY)

        in_child(receiver)
        _op("sender after the receiver enforced: open /", 0, _open_close, "/", os.O_DIRECTORY)
        _op("sender: open d", 0, _open_close, d, os.O_DIRECTORY)


@test
def inherited_ruleset_fd_only_restricts_enforcer() -> None:
    """A ruleset fd inherited over fork is usable by the child; the parent stays unrestricted."""
    ll.require_abi(1)
    with _tmpdir() as d:
        f = _touch(os.path.join(d, "f"))
        rs = ll.ruleset(fs=ll.ACCESS_FS_READ_FILE)

        def child() -> None:
            ll.enforce(rs)
            _op("child: read f", EACCES, _open_close, f, os.O_RDONLY)

        in_child(child)
        _op("parent: read f", 0, _open_close, f, os.O_RDONLY)


# --- domain inheritance ------------------------------------------------------------------


@test
def fork_inherits_domain_parent_unrestricted() -> None:
    """Children forked after restrict_self are restricted; the parent and earlier children are not."""
    ll.require_abi(1)
    with _tmpdir() as d:
        f = _touch(os.path.join(d, "f"))

        def restricted() -> None:
            go_r, go_w = os.pipe()
            earlier = os.fork()
            if earlier == 0:
                os.read(go_r, 1)
                os._exit(oserror_errno(_open_close, f, os.O_RDONLY))
            _no_rules(fs=ll.ACCESS_FS_READ_FILE)
            _op("restricted process: read f", EACCES, _open_close, f, os.O_RDONLY)
            got = in_child(lambda: oserror_errno(_open_close, f, os.O_RDONLY))
            expect_eq(_en(got), _en(EACCES), "grandchild forked after restrict_self: read f")
            os.write(go_w, b"g")
            status = _klab.wait_status(earlier)
            expect_eq(_en(os.WEXITSTATUS(status)), _en(0), "child forked before restrict_self: read f")

        in_child(restricted)
        _op("unrestricted parent: read f", 0, _open_close, f, os.O_RDONLY)


@test
def later_layers_do_not_propagate() -> None:
    """Domains are append-only per task: a parent's later layer never reaches an already-forked child."""
    ll.require_abi(1)
    with _tmpdir() as d:
        fa, fb = _touch(f"{d}/a"), _touch(f"{d}/b")

        def everything_but(f: str) -> tuple[tuple[str, int], ...]:
            return tuple((p, ll.ACCESS_FS_READ_FILE) for p in (fa, fb) if p != f)

        def parent() -> None:
            ll.layer(fs=ll.ACCESS_FS_READ_FILE, paths=everything_but(fa))
            go_r, go_w = os.pipe()
            child = os.fork()
            if child == 0:
                os.read(go_r, 1)
                a, b = (oserror_errno(_open_close, p, os.O_RDONLY) for p in (fa, fb))
                os._exit(0 if (a, b) == (EACCES, 0) else 100 + a + b)
            ll.layer(fs=ll.ACCESS_FS_READ_FILE, paths=everything_but(fb))
            os.write(go_w, b"g")
            _op("parent after its second layer: read a", EACCES, _open_close, fa, os.O_RDONLY)
            _op("parent after its second layer: read b", EACCES, _open_close, fb, os.O_RDONLY)
            status = _klab.wait_status(child)
            expect_eq(os.WEXITSTATUS(status), 0, "child forked between the layers: exit 0 means (a: EACCES, b: ok)")

        in_child(parent)
        _op("unrestricted grandparent: read b", 0, _open_close, fb, os.O_RDONLY)


_EXEC_CHECK = """
import os, sys
try:
    os.close(os.open(sys.argv[1], os.O_WRONLY))
    err = 0
except OSError as exc:
    err = exc.errno
nnp = [l.split()[1] for l in open('/proc/self/status') if l.startswith('NoNewPrivs:')][0]
print(err, nnp)
"""


@test
def domain_and_nnp_survive_execve() -> None:
    """After execve the new program is still in the domain and still has no_new_privs."""
    ll.require_abi(1)
    with _tmpdir() as d:
        f = _touch(os.path.join(d, "f"))

        def restricted() -> None:
            _no_rules(fs=ll.ACCESS_FS_WRITE_FILE)
            proc = subprocess.run(
                [sys.executable, "-I", "-B", "-S", "-c", _EXEC_CHECK, f], capture_output=True, timeout=30, check=False
            )
            expect_eq(proc.returncode, 0, f"exec'd python exit status (stderr: {proc.stderr.decode()[-300:]!r})")
            expect_eq(proc.stdout.decode().split(), [str(EACCES), "1"], "exec'd program: [write errno, NoNewPrivs]")

        in_child(restricted)
        _op("unrestricted parent: write f", 0, _open_close, f, os.O_WRONLY)


def _thread_result(fn: Callable[[], object], gate: threading.Event | None = None) -> tuple[threading.Thread, list]:
    """Start a thread that (after gate) runs fn and stores its result."""
    out: list = []

    def run() -> None:
        if gate is not None:
            gate.wait(10)
        out.append(fn())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _write_probe(path: str) -> Callable[[], tuple[int, int]]:
    """In the calling thread: (errno of opening path for writing, NoNewPrivs)."""
    return lambda: (oserror_errno(_open_close, path, os.O_WRONLY), _nnp())


@test
def threads_restrict_self_is_per_thread() -> None:
    """Without TSYNC only the calling thread (and threads it creates later) is restricted."""
    ll.require_abi(1)
    with _tmpdir() as d:
        f = _touch(os.path.join(d, "f"))

        def body() -> None:
            gate = threading.Event()
            before, before_out = _thread_result(_write_probe(f), gate)
            _no_rules(fs=ll.ACCESS_FS_WRITE_FILE)
            _op("main thread after restrict_self: write f", EACCES, _open_close, f, os.O_WRONLY)
            after, after_out = _thread_result(_write_probe(f))
            gate.set()
            before.join(10)
            after.join(10)
            expect_eq(before_out, [(0, 0)], "thread created before restrict_self: [(write errno, nnp)]")
            expect_eq(after_out, [(EACCES, 1)], "thread created after restrict_self: [(write errno, nnp)]")

        in_child(body)


@test
def tsync_restricts_existing_threads() -> None:
    """ABI 8: TSYNC puts sibling threads in the domain and sets their no_new_privs."""
    ll.require_abi(8)
    with _tmpdir() as d:
        f = _touch(os.path.join(d, "f"))

        def body() -> None:
            _klab.drop_caps()
            gate = threading.Event()
            before, before_out = _thread_result(_write_probe(f), gate)
            _no_rules_flags(ll.ACCESS_FS_WRITE_FILE, ll.LANDLOCK_RESTRICT_SELF_TSYNC)
            gate.set()
            before.join(10)
            expect_eq(before_out, [(EACCES, 1)], "pre-existing thread after TSYNC: [(write errno, nnp)]")

        in_child(body)


@test
def tsync_resyncs_diverged_threads() -> None:
    """ABI 8: after a plain restrict_self diverged the threads, TSYNC still succeeds and syncs them."""
    ll.require_abi(8)
    with _tmpdir() as d:
        f = _touch(os.path.join(d, "f"))

        def body() -> None:
            gate = threading.Event()
            before, before_out = _thread_result(_write_probe(f), gate)
            _klab.set_no_new_privs()
            rs = ll.ruleset(fs=ll.ACCESS_FS_WRITE_FILE)
            expect_errno(ll.restrict_self(rs), 0, "plain restrict_self (threads diverge)")
            expect_errno(ll.restrict_self(rs, ll.LANDLOCK_RESTRICT_SELF_TSYNC), 0, "restrict_self TSYNC")
            gate.set()
            before.join(10)
            expect_eq(before_out, [(EACCES, 1)], "diverged thread after TSYNC: [(write errno, nnp)]")

        in_child(body)


def _no_rules_flags(fs: int, flags: int) -> None:
    ll.layer(fs=fs, flags=flags)


# --- layers: union within, intersection across ------------------------------------------------


@test
def rules_union_within_layer() -> None:
    """Rules of one layer add up along the path and on the same inode."""
    ll.require_abi(1)
    with _tmpdir() as d:
        sub, same = _mkdirs(d, "sub", "same")
        top_f, sub_f, same_f = (_touch(os.path.join(p, "f")) for p in (d, sub, same))

        def body() -> None:
            ll.layer(
                fs=RW_FILE,
                paths=(
                    (d, ll.ACCESS_FS_READ_FILE),
                    (sub, ll.ACCESS_FS_WRITE_FILE),
                    (same, ll.ACCESS_FS_WRITE_FILE),
                    (same, ll.ACCESS_FS_READ_FILE),
                ),
            )
            _op("top/f O_RDONLY (READ from d)", 0, _open_close, top_f, os.O_RDONLY)
            _op("top/f O_RDWR (no WRITE on d)", EACCES, _open_close, top_f, os.O_RDWR)
            _op("sub/f O_RDWR (READ from d + WRITE from sub)", 0, _open_close, sub_f, os.O_RDWR)
            _op("same/f O_RDWR (two rules on the same dir)", 0, _open_close, same_f, os.O_RDWR)
            _op("a file outside d (/proc/self/status): O_RDONLY", EACCES, _open_close, "/proc/self/status", os.O_RDONLY)

        in_child(body)


def _layers_intersect(n: int) -> Callable[[], None]:
    def run() -> None:
        """Each of n layers denies one file: every one of them is denied, the shared one allowed."""
        ll.require_abi(1)
        with _tmpdir() as d:
            files = [_touch(os.path.join(d, f"f{i}")) for i in range(n)]
            shared = _touch(os.path.join(d, "shared"))

            def body() -> None:
                for k in range(n):
                    allowed = [(p, ll.ACCESS_FS_READ_FILE) for i, p in enumerate(files) if i != k]
                    ll.layer(fs=ll.ACCESS_FS_READ_FILE, paths=(*allowed, (shared, ll.ACCESS_FS_READ_FILE)))
                for i, p in enumerate(files):
                    _op(f"read f{i} (denied only by layer {i + 1} of {n})", EACCES, _open_close, p, os.O_RDONLY)
                _op(f"read shared (allowed by all {n} layers)", 0, _open_close, shared, os.O_RDONLY)

            in_child(body)

    return run


for _n in (3, 5, 7):
    suite.add(f"layers_intersect_{_n}", _layers_intersect(_n))


@test
def layer_handling_different_rights() -> None:
    """A layer only restricts what it handles: READ in layer 1, WRITE in layer 2, each with its own rule."""
    ll.require_abi(1)
    with _tmpdir() as d:
        a, b = _mkdirs(d, "a", "b")
        fa, fb = _touch(os.path.join(a, "f")), _touch(os.path.join(b, "f"))

        def body() -> None:
            ll.layer(fs=ll.ACCESS_FS_READ_FILE, paths=((a, ll.ACCESS_FS_READ_FILE),))
            ll.layer(fs=ll.ACCESS_FS_WRITE_FILE, paths=((b, ll.ACCESS_FS_WRITE_FILE),))
            _op("a/f read (layer 1 rule)", 0, _open_close, fa, os.O_RDONLY)
            _op("a/f write (layer 2 denies)", EACCES, _open_close, fa, os.O_WRONLY)
            _op("b/f read (layer 1 denies)", EACCES, _open_close, fb, os.O_RDONLY)
            _op("b/f write (layer 2 rule, layer 1 does not handle write)", 0, _open_close, fb, os.O_WRONLY)

        in_child(body)


@test
def reenforce_extended_ruleset_never_widens() -> None:
    """Rules added after enforcement (and enforced again) cannot widen the existing layer."""
    ll.require_abi(1)
    with _tmpdir() as d:
        a, b = _mkdirs(d, "a", "b")
        fa, fb = _touch(os.path.join(a, "f")), _touch(os.path.join(b, "f"))

        def body() -> None:
            _klab.set_no_new_privs()
            rs = ll.ruleset(fs=ll.ACCESS_FS_READ_FILE)
            ll.allow_path(rs, a, ll.ACCESS_FS_READ_FILE)
            expect_errno(ll.restrict_self(rs), 0, "first restrict_self")
            ll.allow_path(rs, b, ll.ACCESS_FS_READ_FILE)
            _op("b/f after adding a rule to the enforced ruleset", EACCES, _open_close, fb, os.O_RDONLY)
            expect_errno(ll.restrict_self(rs), 0, "restrict_self with the extended ruleset")
            _op("b/f after enforcing the extended ruleset", EACCES, _open_close, fb, os.O_RDONLY)
            _op("a/f still readable", 0, _open_close, fa, os.O_RDONLY)

        in_child(body)


# --- filesystem access rights, one test per right ------------------------------------------


def _unix_bind(path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)


def _mknod(path: str, kind: int, dev: tuple[int, int]) -> None:
    os.mknod(path, kind | 0o600, os.makedev(*dev))


def _creat(path: str) -> None:
    _open_close(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)


_FS_OPS: tuple[tuple[str, int, int, Callable[[str], None], int], ...] = (
    # (name, right, min ABI, operation inside directory d, errno when denied)
    ("write_file", ll.ACCESS_FS_WRITE_FILE, 1, lambda d: _open_close(f"{d}/f", os.O_WRONLY), EACCES),
    ("read_file", ll.ACCESS_FS_READ_FILE, 1, lambda d: _open_close(f"{d}/f", os.O_RDONLY), EACCES),
    ("read_dir", ll.ACCESS_FS_READ_DIR, 1, lambda d: _open_close(d, os.O_RDONLY | os.O_DIRECTORY), EACCES),
    ("remove_dir", ll.ACCESS_FS_REMOVE_DIR, 1, lambda d: os.rmdir(f"{d}/empty"), EACCES),
    ("remove_file", ll.ACCESS_FS_REMOVE_FILE, 1, lambda d: os.unlink(f"{d}/f"), EACCES),
    ("make_char", ll.ACCESS_FS_MAKE_CHAR, 1, lambda d: _mknod(f"{d}/c", stat.S_IFCHR, (1, 3)), EACCES),
    ("make_dir", ll.ACCESS_FS_MAKE_DIR, 1, lambda d: os.mkdir(f"{d}/newdir"), EACCES),
    ("make_reg", ll.ACCESS_FS_MAKE_REG, 1, lambda d: _creat(f"{d}/new"), EACCES),
    ("make_sock", ll.ACCESS_FS_MAKE_SOCK, 1, lambda d: _unix_bind(f"{d}/sock"), EACCES),
    ("make_fifo", ll.ACCESS_FS_MAKE_FIFO, 1, lambda d: os.mkfifo(f"{d}/fifo"), EACCES),
    ("make_block", ll.ACCESS_FS_MAKE_BLOCK, 1, lambda d: _mknod(f"{d}/b", stat.S_IFBLK, (7, 0)), EACCES),
    ("make_sym", ll.ACCESS_FS_MAKE_SYM, 1, lambda d: os.symlink("f", f"{d}/sym"), EACCES),
    ("refer", ll.ACCESS_FS_REFER, 2, lambda d: os.rename(f"{d}/f", f"{d}/empty/f"), EXDEV),
    ("truncate", ll.ACCESS_FS_TRUNCATE, 3, lambda d: os.truncate(f"{d}/f", 0), EACCES),
)


def _fs_right(name: str, right: int, since: int, op: Callable[[str], None], denied: int) -> Callable[[], None]:
    def run() -> None:
        """Everything handled; d_allow grants all, d_deny all but this right: exact errno on each side."""
        abi = ll.require_abi(since)
        everything = ll.fs_access_all(abi)
        with _tmpdir() as d:
            allow, deny = _mkdirs(d, "allow", "deny")
            for x in (allow, deny):
                _touch(f"{x}/f")
                os.mkdir(f"{x}/empty")

            def body() -> None:
                ll.layer(fs=everything, paths=((allow, everything), (deny, everything & ~right)))
                _op(f"{name} where every right is granted", 0, op, allow)
                _op(f"{name} where only {name} is missing", denied, op, deny)

            in_child(body)

    return run


for _name, _right, _since, _fn, _denied in _FS_OPS:
    suite.add(f"fs_right_{_name}", _fs_right(_name, _right, _since, _fn, _denied))


@test
def fs_execute_right() -> None:
    """EXECUTE is checked at execve on the program; the same script runs from a granted directory."""
    ll.require_abi(1)
    with _tmpdir() as d:
        allow, deny = _mkdirs(d, "allow", "deny")
        scripts = []
        for x in (allow, deny):
            scripts.append(_touch(f"{x}/run.sh", b"#!/bin/sh\nexit 7\n"))
            os.chmod(scripts[-1], 0o755)
        if subprocess.run([scripts[0]], check=False).returncode != 7:
            raise Skip("cannot execute scripts under /tmp here (noexec?)")
        system = tuple(
            (p, ll.ACCESS_FS_EXECUTE) for p in ("/usr", "/bin", "/lib", "/lib64", "/sbin") if os.path.exists(p)
        )

        def body() -> None:
            ll.layer(fs=ll.ACCESS_FS_EXECUTE, paths=(*system, (allow, ll.ACCESS_FS_EXECUTE)))
            expect_eq(subprocess.run([scripts[0]], check=False).returncode, 7, "exit status of allow/run.sh")
            _op("execve deny/run.sh", EACCES, subprocess.run, [scripts[1]])
            _op("read deny/run.sh (READ_FILE not handled)", 0, _open_close, scripts[1], os.O_RDONLY)

        in_child(body)


@test
def fs_rule_on_single_file() -> None:
    """A rule on a file grants that file only, not its siblings or its directory."""
    ll.require_abi(1)
    with _tmpdir() as d:
        f, g = _touch(f"{d}/f"), _touch(f"{d}/g")

        def body() -> None:
            ll.layer(fs=ll.ACCESS_FS_READ_FILE | ll.ACCESS_FS_READ_DIR, paths=((f, ll.ACCESS_FS_READ_FILE),))
            _op("read f (rule on f)", 0, _open_close, f, os.O_RDONLY)
            _op("read g (sibling)", EACCES, _open_close, g, os.O_RDONLY)
            _op("list d", EACCES, _open_close, d, os.O_DIRECTORY)

        in_child(body)


@test
def fs_unrestricted_operations() -> None:
    """O_PATH opens, stat and fds opened before restrict_self are not access-checked."""
    ll.require_abi(1)
    with _tmpdir() as d:
        f = _touch(f"{d}/f")

        def body() -> None:
            early = os.open(f, os.O_RDWR)
            _no_rules(fs=ll.fs_access_all(ll.require_abi(1)))
            _op("open O_RDONLY", EACCES, _open_close, f, os.O_RDONLY)
            _op("open O_PATH", 0, _open_close, f, os.O_PATH)
            _op("stat", 0, os.stat, f)
            _op("write on an fd opened before restrict_self", 0, os.pwrite, early, b"x", 0)
            expect_eq(os.pread(early, 1, 0), b"x", "read back through the early fd")

        in_child(body)


def _private_mount_ns() -> None:
    """unshare(CLONE_NEWNS) and make / private, so test mounts never reach the host."""
    libc = _klab.libc
    libc.unshare.argtypes = [ctypes.c_int]
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
    if libc.unshare(0x00020000) != 0:
        raise Skip(f"unshare(CLONE_NEWNS) failed: {errname(ctypes.get_errno())}")
    if libc.mount(None, b"/", None, 0x4000 | 0x40000, None) != 0:  # MS_REC | MS_PRIVATE
        raise Skip(f"making / private failed: {errname(ctypes.get_errno())}")


def _mount_errnos(target: str) -> tuple[str, str]:
    """(mount tmpfs on target, make target private): each 'success' or the errno name."""
    libc = _klab.libc
    ctypes.set_errno(0)
    ret = libc.mount(b"none", target.encode(), b"tmpfs", 0, None)
    first = _en(0 if ret == 0 else ctypes.get_errno())
    ctypes.set_errno(0)
    ret = libc.mount(None, b"/", None, 0x4000 | 0x40000, None)
    return first, _en(0 if ret == 0 else ctypes.get_errno())


@test
def fs_domain_denies_mount() -> None:
    """mount(2) (new mounts and propagation changes) is EPERM in a domain handling fs rights, root or not."""
    abi = ll.require_abi(1)
    with _tmpdir() as d:

        def run(restrict: Callable[[], None] | None) -> tuple[str, str]:
            _private_mount_ns()
            if restrict is not None:
                restrict()
            return _mount_errnos(d)

        def check(restrict: Callable[[], None] | None, want: int, what: str) -> None:
            got = in_child(lambda: expect_eq(run(restrict), (_en(want), _en(want)), what))
            expect_eq(got, 0, what)

        check(None, 0, "unrestricted (mount tmpfs, make / private)")
        check(lambda: ll.layer(fs=ll.ACCESS_FS_MAKE_BLOCK), EPERM, "fs domain (mount tmpfs, make / private)")
        if abi >= 4:
            check(lambda: ll.layer(net=ll.ACCESS_NET_BIND_TCP), 0, "network-only domain (mount, make private)")


# --- REFER (ABI 2) -------------------------------------------------------------------------

_REFER_BASE = ll.ACCESS_FS_MAKE_REG | ll.ACCESS_FS_REMOVE_FILE


@test
def refer_needs_right_on_both_sides() -> None:
    """ABI 2: cross-directory rename/link needs REFER on source and destination, else EXDEV."""
    ll.require_abi(2)
    with _tmpdir() as d:
        d1, d2, d3, d4 = _mkdirs(d, "d1", "d2", "d3", "d4")
        for name in ("a", "b", "c", "e", "h"):
            _touch(f"{d1}/{name}")
        _touch(f"{d3}/x")
        handled = _REFER_BASE | ll.ACCESS_FS_REFER
        refer = ll.ACCESS_FS_REFER

        def body() -> None:
            ll.layer(fs=handled, paths=((d1, handled), (d2, handled), (d3, _REFER_BASE), (d4, refer)))
            _op("rename d1/a -> d2/a (REFER both sides)", 0, os.rename, f"{d1}/a", f"{d2}/a")
            _op("link d1/h -> d2/h (REFER both sides)", 0, os.link, f"{d1}/h", f"{d2}/h")
            _op("rename d1/b -> d3/b (no REFER on d3)", EXDEV, os.rename, f"{d1}/b", f"{d3}/b")
            _op("link d1/c -> d3/c (no REFER on d3)", EXDEV, os.link, f"{d1}/c", f"{d3}/c")
            _op("rename d3/x -> d1/x (no REFER on d3)", EXDEV, os.rename, f"{d3}/x", f"{d1}/x")
            _op("rename d3/x -> d3/y (same directory)", 0, os.rename, f"{d3}/x", f"{d3}/y")
            _op("rename d1/e -> d4/e (REFER but no MAKE_REG: EACCES wins)", EACCES, os.rename, f"{d1}/e", f"{d4}/e")

        in_child(body)


@test
def refer_denied_by_layer_not_handling_it() -> None:
    """ABI 2: a layer that does not handle REFER (ABI 1 style) still forbids reparenting (EXDEV)."""
    ll.require_abi(2)
    with _tmpdir() as d:
        d1, d2 = _mkdirs(d, "d1", "d2")
        _touch(f"{d1}/a")
        _touch(f"{d1}/b")
        handled = _REFER_BASE | ll.ACCESS_FS_REFER

        def only_first() -> None:
            ll.layer(fs=handled, paths=((d, handled),))
            _op("rename d1/a -> d2/a, one REFER layer", 0, os.rename, f"{d1}/a", f"{d2}/a")

        def both() -> None:
            ll.layer(fs=handled, paths=((d, handled),))
            ll.layer(fs=ll.ACCESS_FS_READ_FILE, paths=((d, ll.ACCESS_FS_READ_FILE),))
            _op("rename d1/b -> d2/b with a second layer not handling REFER", EXDEV, os.rename, f"{d1}/b", f"{d2}/b")
            _op("link d1/b -> d2/c with a second layer not handling REFER", EXDEV, os.link, f"{d1}/b", f"{d2}/c")
            _op("rename d1/b -> d1/c (same directory)", 0, os.rename, f"{d1}/b", f"{d1}/c")

        in_child(only_first)
        in_child(both)


@test
def refer_cannot_gain_rights() -> None:
    """ABI 2: moving a file where it would gain rights is EXDEV; where it loses rights, allowed."""
    ll.require_abi(2)
    with _tmpdir() as d:
        low, high = _mkdirs(d, "low", "high")
        _touch(f"{low}/a")
        _touch(f"{high}/b")
        base = _REFER_BASE | ll.ACCESS_FS_REFER

        def body() -> None:
            ll.layer(fs=base | ll.ACCESS_FS_READ_FILE, paths=((low, base), (high, base | ll.ACCESS_FS_READ_FILE)))
            _op("rename low/a -> high/a (would gain READ_FILE)", EXDEV, os.rename, f"{low}/a", f"{high}/a")
            _op("rename high/b -> low/b (loses READ_FILE)", 0, os.rename, f"{high}/b", f"{low}/b")
            _op("read low/b after the move", EACCES, _open_close, f"{low}/b", os.O_RDONLY)

        in_child(body)


# --- TRUNCATE (ABI 3) --------------------------------------------------------------------


@test
def truncate_right_paths_and_fds() -> None:
    """ABI 3: truncate(), O_TRUNC and ftruncate() follow the right the fd was opened with."""
    ll.require_abi(3)
    with _tmpdir() as d:
        yes, no = _mkdirs(d, "yes", "no")
        fy, fn = _touch(f"{yes}/f"), _touch(f"{no}/f")
        handled = ll.ACCESS_FS_WRITE_FILE | ll.ACCESS_FS_TRUNCATE

        def body() -> None:
            early = os.open(fn, os.O_WRONLY)
            ll.layer(fs=handled, paths=((yes, handled), (no, ll.ACCESS_FS_WRITE_FILE)))
            _op("truncate(yes/f)", 0, os.truncate, fy, 0)
            _op("truncate(no/f)", EACCES, os.truncate, fn, 0)
            _op("open(yes/f, O_TRUNC)", 0, _open_close, fy, os.O_WRONLY | os.O_TRUNC)
            _op("open(no/f, O_TRUNC)", EACCES, _open_close, fn, os.O_WRONLY | os.O_TRUNC)
            fd = os.open(fn, os.O_WRONLY)
            _op("ftruncate(fd of no/f opened after restrict_self)", EACCES, os.ftruncate, fd, 0)
            _op("ftruncate(fd of no/f opened before restrict_self)", 0, os.ftruncate, early, 0)

        in_child(body)


@test
def truncate_right_travels_with_fd() -> None:
    """ABI 3: an fd opened without TRUNCATE stays so in an unrestricted receiver (and one with it works)."""
    ll.require_abi(3)
    with _tmpdir() as d:
        yes, no = _mkdirs(d, "yes", "no")
        fy, fn = _touch(f"{yes}/f"), _touch(f"{no}/f")
        handled = ll.ACCESS_FS_WRITE_FILE | ll.ACCESS_FS_TRUNCATE
        tx, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

        def sender() -> None:
            ll.layer(fs=handled, paths=((yes, handled), (no, ll.ACCESS_FS_WRITE_FILE)))
            _send_fd(tx, os.open(fy, os.O_WRONLY))
            _send_fd(tx, os.open(fn, os.O_WRONLY))

        in_child(sender)
        got_yes, got_no = _recv_fd(rx), _recv_fd(rx)
        _op("unrestricted receiver: ftruncate(fd of yes/f)", 0, os.ftruncate, got_yes, 0)
        _op("unrestricted receiver: ftruncate(fd of no/f)", EACCES, os.ftruncate, got_no, 0)
        _op("unrestricted receiver: truncate(no/f) by path", 0, os.truncate, fn, 0)


# --- IOCTL_DEV (ABI 5) -------------------------------------------------------------------


def _ioctl(fd: int, cmd: int) -> int:
    """Raw ioctl with a 4-byte argument buffer: 0 or the errno."""
    buf = ctypes.create_string_buffer(64)
    ctypes.set_errno(0)
    ret = _klab.libc.ioctl(fd, ctypes.c_ulong(cmd), buf)
    return 0 if ret >= 0 else ctypes.get_errno()


@test
def ioctl_dev_right() -> None:
    """ABI 5: device ioctls need IOCTL_DEV (fixed at open); FIOCLEX/FIONBIO and non-devices are exempt."""
    ll.require_abi(5)
    null = "/dev/null"
    if not stat.S_ISCHR(os.stat(null).st_mode):
        raise Skip("/dev/null is not a character device here")
    with _tmpdir() as d:
        reg = _touch(f"{d}/f")
        unrestricted = os.open(null, os.O_RDWR)
        base = {cmd: _ioctl(unrestricted, cmd) for cmd in (FIONREAD, TCGETS)}
        expect(all(e != EACCES for e in base.values()), f"unrestricted ioctl on /dev/null gave EACCES: {base}")

        def body(granted: bool) -> None:
            right = ll.ACCESS_FS_IOCTL_DEV
            paths = (("/dev/null", right),) if granted else ()
            early = os.open(null, os.O_RDWR)
            ll.layer(fs=right, paths=paths)
            fd = os.open(null, os.O_RDWR)
            for cmd, name in ((FIONREAD, "FIONREAD"), (TCGETS, "TCGETS")):
                want = base[cmd] if granted else EACCES
                expect_eq(_en(_ioctl(fd, cmd)), _en(want), f"{name} on /dev/null, IOCTL_DEV granted={granted}")
                expect_eq(_en(_ioctl(early, cmd)), _en(base[cmd]), f"{name} on an fd opened before restrict_self")
            for cmd, name in ((FIOCLEX, "FIOCLEX"), (FIONCLEX, "FIONCLEX"), (FIONBIO, "FIONBIO")):
                expect_eq(_en(_ioctl(fd, cmd)), _en(0), f"{name} (always allowed) on /dev/null")
            # FIOQSIZE is exempt too; on a device the VFS itself answers ENOTTY, never EACCES.
            expect_eq(_en(_ioctl(fd, FIOQSIZE)), _en(errno.ENOTTY), "FIOQSIZE (always allowed) on /dev/null")
            rfd = os.open(reg, os.O_RDONLY)
            expect_eq(_en(_ioctl(rfd, FIONREAD)), _en(0), "FIONREAD on a regular file (not a device)")

        in_child(body, False)
        in_child(body, True)


# --- network (ABI 4) ----------------------------------------------------------------------


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
    _ensure_lo_up()
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
    _ensure_lo_up()
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
    _ensure_lo_up()
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


# --- scoping (ABI 6): signals and abstract unix sockets ----------------------------------------

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
