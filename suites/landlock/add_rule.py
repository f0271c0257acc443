"""landlock: landlock_add_rule."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket

import _klab
import _landlock as ll
from _klab import expect, expect_eq, expect_errno, in_child

from landlock import suite
from landlock.common import EINVAL, RW_FILE, _tmpdir, _touch

test = suite.test


@test
def add_rule_checks_ordering() -> None:
    """flags, then ruleset fd, then rule type, then attr pointer, then content.

    Flag 1 is unknown (EINVAL) before ABI 10; Linux 7.2 (ABI 10) made it LANDLOCK_ADD_RULE_QUIET,
    so add_rule(-1, 0, NULL, 1) goes on to the fd check (EBADF) there. Flag 2 stays unknown.
    """
    abi = ll.require_abi(1)
    rs = ll.ruleset(fs=ll.ACCESS_FS_EXECUTE)
    beneath = ll.LANDLOCK_RULE_PATH_BENEATH
    bad_parent = ll.PathBeneathAttr(ll.ACCESS_FS_EXECUTE, -1)
    want = errno.EBADF if abi >= 10 else EINVAL
    expect_errno(ll.add_rule(-1, 0, None, 1), want, f"add_rule flags=1 with bad fd and type on ABI {abi}")
    for flags in (2, 3, 1 << 31):
        expect_errno(ll.add_rule(-1, 0, None, flags), EINVAL, f"add_rule flags={flags:#x} with bad fd and type")
    expect_errno(ll.add_rule(rs, beneath, bad_parent, 1 << 31), EINVAL, "add_rule flags=1<<31")
    if abi >= 10:
        # QUIET passes the flag check, then the same order: fd, type, attr pointer, content.
        quiet = ll.LANDLOCK_ADD_RULE_QUIET
        expect_errno(ll.add_rule(rs, 0, None, quiet), EINVAL, "QUIET with rule type 0")
        expect_errno(ll.add_rule(rs, beneath, None, quiet), errno.EFAULT, "QUIET with NULL attr")
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
        file_rights |= ll.ACCESS_FS_RESOLVE_UNIX if abi >= 9 else 0  # a right on the socket file itself
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
