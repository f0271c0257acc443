"""landlock: layers: union within, intersection across."""

from __future__ import annotations

import os
from collections.abc import Callable

import _klab
import _landlock as ll
from _klab import expect_errno, in_child

from landlock import suite
from landlock.common import EACCES, RW_FILE, _mkdirs, _op, _open_close, _tmpdir, _touch

test = suite.test


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
