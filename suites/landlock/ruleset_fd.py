"""landlock: ruleset fd passing and inheritance."""

from __future__ import annotations

import os
import socket

import _klab
import _landlock as ll
from _klab import expect_eq, in_child

from landlock import suite
from landlock.common import EACCES, _mkdirs, _op, _open_close, _recv_fd, _send_fd, _tmpdir, _touch

test = suite.test


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
