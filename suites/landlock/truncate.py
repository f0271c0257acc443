"""landlock: TRUNCATE (ABI 3)."""

from __future__ import annotations

import os
import socket

import _landlock as ll
from _klab import in_child

from landlock import suite
from landlock.common import EACCES, _mkdirs, _op, _open_close, _recv_fd, _send_fd, _tmpdir, _touch

test = suite.test


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
