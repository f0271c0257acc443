"""landlock: REFER (ABI 2)."""

from __future__ import annotations

import os

import _landlock as ll
from _klab import in_child

from landlock import suite
from landlock.common import EACCES, EXDEV, _mkdirs, _op, _open_close, _tmpdir, _touch

test = suite.test

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
