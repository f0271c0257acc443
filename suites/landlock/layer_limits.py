"""landlock: the layer limit with real rules, and layers with different handled masks.

A domain holds at most LANDLOCK_MAX_NUM_LAYERS (16) layers. Every layer must
keep working at every depth: its rules still grant, what it handles but does
not grant stays denied, and the access check walks all 16 layers (the first
and the last included). The 17th restrict_self is E2BIG and must leave the
domain exactly as it was: same accesses, and still the same domain (a
process forked before the attempt, which holds the old domain, may still be
inspected through /proc by its parent; a new domain would not be an
ancestor of the child's and Landlock's ptrace check would deny it).

interleaved_* and inherit_* follow tools/testing/selftests/landlock/fs_test.c
(interleaved_masked_accesses, inherit_subset, inherit_superset): a layer
only restricts what it handles, rules of one layer add up, layers intersect,
and re-enforcing a ruleset extended after the fact never widens anything.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import _klab
import _landlock as ll
from _klab import expect_eq, expect_errno, in_child, oserror_errno

from landlock import suite
from landlock.common import EACCES, RW_FILE, _en, _mkdirs, _op, _open_close, _tmpdir, _touch

test = suite.test

MAX_LAYERS = 16
READ, WRITE = ll.ACCESS_FS_READ_FILE, ll.ACCESS_FS_WRITE_FILE
RO_DIR = ll.ACCESS_FS_READ_FILE | ll.ACCESS_FS_READ_DIR
RW_DIR = RO_DIR | ll.ACCESS_FS_WRITE_FILE


def _expect_opens(cases: tuple[tuple[str, str, int, int], ...], when: str) -> None:
    """(label, path, open flags, errno) for each: the exact outcome of open()."""
    for label, path, flags, want in cases:
        _op(f"{when}: open {label}", want, _open_close, path, flags)


def _ruleset_with(fs: int, rules: tuple[tuple[str, int], ...]) -> int:
    rs = ll.ruleset(fs=fs)
    for path, access in rules:
        ll.allow_path(rs, path, access)
    return rs


@test
def sixteen_layers_with_a_rule_grant_at_every_depth() -> None:
    """One ruleset with a path rule (READ on a/) enforced 16 times: after each, a/f is readable, nothing more."""
    ll.require_abi(1)
    with _tmpdir() as d:
        a, b = _mkdirs(d, "a", "b")
        fa, fb = _touch(f"{a}/f"), _touch(f"{b}/f")

        def body() -> None:
            _klab.set_no_new_privs()
            rs = _ruleset_with(RW_FILE, ((a, READ),))
            for depth in range(1, MAX_LAYERS + 1):
                expect_errno(ll.restrict_self(rs), 0, f"layer {depth}")
                _expect_opens(
                    (
                        ("a/f O_RDONLY (the rule)", fa, os.O_RDONLY, 0),
                        ("a/f O_WRONLY (handled, not granted)", fa, os.O_WRONLY, EACCES),
                        ("b/f O_RDONLY (no rule)", fb, os.O_RDONLY, EACCES),
                    ),
                    f"{depth} layers",
                )

        in_child(body)


def _readlink_errno(pid: int) -> int:
    """readlink(/proc/PID/exe): a PTRACE_MODE_READ check (Landlock's ptrace hook), no mm_access() exception."""
    return oserror_errno(os.readlink, f"/proc/{pid}/exe")


@test
def seventeenth_layer_is_e2big_and_changes_nothing() -> None:
    """16 layers granting READ on a/; then a stricter 17th (no rule) and the same ruleset again: E2BIG both.

    Afterwards a/f is still readable (the stricter layer did not land) and the process is still in the same
    domain: it may still read /proc/CHILD/exe of a child forked before the attempts (a new domain would not be
    the child's ancestor). All capabilities are dropped so that only Landlock decides.
    """
    ll.require_abi(1)
    with _tmpdir() as d:
        a, b = _mkdirs(d, "a", "b")
        fa, fb = _touch(f"{a}/f"), _touch(f"{b}/f")

        def body() -> None:
            _klab.drop_caps()
            _klab.set_no_new_privs()
            rs = _ruleset_with(READ, ((a, READ),))
            for depth in range(1, MAX_LAYERS + 1):
                expect_errno(ll.restrict_self(rs), 0, f"layer {depth}")
            release_r, release_w = os.pipe()
            child = os.fork()
            if child == 0:
                os.close(release_w)
                os.read(release_r, 1)
                os._exit(0)
            os.close(release_r)
            try:
                expect_eq(_en(_readlink_errno(child)), _en(0), "readlink /proc/CHILD/exe before the 17th attempt")
                stricter = ll.ruleset(fs=READ)
                expect_errno(ll.restrict_self(stricter), errno.E2BIG, "17th layer (stricter ruleset)")
                expect_errno(ll.restrict_self(rs), errno.E2BIG, "17th layer (the same ruleset)")
                _expect_opens(
                    (
                        ("a/f O_RDONLY (a stricter 17th layer would deny it)", fa, os.O_RDONLY, 0),
                        ("b/f O_RDONLY", fb, os.O_RDONLY, EACCES),
                    ),
                    "after the E2BIG attempts",
                )
                after = _en(_readlink_errno(child))
                expect_eq(after, _en(0), "readlink /proc/CHILD/exe after E2BIG (still the child's domain)")
            finally:
                os.close(release_w)
                _klab.wait_status(child)

        in_child(body)


def _lone_denier(position: int) -> Callable[[], None]:
    def run() -> None:
        ll.require_abi(1)
        with _tmpdir() as d:
            a, b = _mkdirs(d, "a", "b")
            fa, fb = _touch(f"{a}/f"), _touch(f"{b}/f")

            def body() -> None:
                for depth in range(1, MAX_LAYERS + 1):
                    grant = a if depth == position else d
                    ll.layer(fs=READ, paths=((grant, READ),))
                _expect_opens(
                    (
                        ("a/f (granted by all 16 layers)", fa, os.O_RDONLY, 0),
                        (f"b/f (denied by layer {position} alone)", fb, os.O_RDONLY, EACCES),
                    ),
                    "16 layers",
                )

            in_child(body)

    run.__doc__ = f"16 layers handle READ; all grant it on d/ but layer {position}, which grants a/ only: b/f denied."
    return run


for _position in (1, MAX_LAYERS):
    suite.add(f"layer_{_position}_of_16_alone_denies", _lone_denier(_position))


@test
def sixteenth_layer_handling_another_right_denies_it() -> None:
    """15 layers handle READ only (granted on d/); the 16th handles WRITE only, granted on a/: b/f is unwritable."""
    ll.require_abi(1)
    with _tmpdir() as d:
        a, b = _mkdirs(d, "a", "b")
        fa, fb = _touch(f"{a}/f"), _touch(f"{b}/f")

        def body() -> None:
            for _ in range(MAX_LAYERS - 1):
                ll.layer(fs=READ, paths=((d, READ),))
            ll.layer(fs=WRITE, paths=((a, WRITE),))
            _expect_opens(
                (
                    ("a/f O_RDWR", fa, os.O_RDWR, 0),
                    ("b/f O_RDONLY (the 16th does not handle READ)", fb, os.O_RDONLY, 0),
                    ("b/f O_WRONLY (only the 16th handles WRITE)", fb, os.O_WRONLY, EACCES),
                ),
                "16 layers",
            )

        in_child(body)


@test
def interleaved_layers_with_different_handled_masks() -> None:
    """fs_test.c interleaved_masked_accesses: 7 layers, some handling READ, some READ|WRITE, one EXECUTE.

    Rules per layer (s1 = d1/d2/d3, f1 and f2 in d3):
    1 (R): R on f1;  2 (RW): RW on d3, W on d2;  3 (R): R on d1;  4 (RW): R on d2;  5 (R): R on d2;
    6 (X): X on another tree;  7 (RW): W on d2.  Checked after every layer.
    """
    ll.require_abi(1)
    with _tmpdir() as root:
        d1, other = _mkdirs(root, "d1", "other")
        d2 = _mkdirs(d1, "d2")[0]
        d3 = _mkdirs(d2, "d3")[0]
        f1, f2 = _touch(f"{d3}/f1"), _touch(f"{d3}/f2")
        layers: tuple[tuple[int, tuple[tuple[str, int], ...]], ...] = (
            (READ, ((f1, READ),)),
            (RW_FILE, ((d3, RW_FILE), (d2, WRITE))),
            (READ, ((d1, READ),)),
            (RW_FILE, ((d2, READ),)),
            (READ, ((d2, READ),)),
            (ll.ACCESS_FS_EXECUTE, ((other, ll.ACCESS_FS_EXECUTE),)),
            (RW_FILE, ((d2, WRITE),)),
        )
        # After each layer: (f1 O_RDWR, f1 O_RDONLY, f1 O_WRONLY, f2 O_RDONLY, f2 O_WRONLY)
        expected = (
            (0, 0, 0, EACCES, 0),
            (0, 0, 0, EACCES, 0),
            (0, 0, 0, EACCES, 0),
            (EACCES, 0, EACCES, EACCES, EACCES),
            (EACCES, 0, EACCES, EACCES, EACCES),
            (EACCES, 0, EACCES, EACCES, EACCES),
            (EACCES, EACCES, EACCES, EACCES, EACCES),
        )
        probes = ((f1, os.O_RDWR), (f1, os.O_RDONLY), (f1, os.O_WRONLY), (f2, os.O_RDONLY), (f2, os.O_WRONLY))
        names = ("f1 O_RDWR", "f1 O_RDONLY", "f1 O_WRONLY", "f2 O_RDONLY", "f2 O_WRONLY")

        def body() -> None:
            for n, ((handled, rules), want) in enumerate(zip(layers, expected, strict=True), 1):
                ll.layer(fs=handled, paths=rules)
                got = tuple(oserror_errno(_open_close, p, fl) for p, fl in probes)
                expect_eq(
                    dict(zip(names, map(_en, got), strict=True)),
                    dict(zip(names, map(_en, want), strict=True)),
                    f"after layer {n}",
                )

        in_child(body)


@test
def inherit_subset_reenforced_ruleset_only_removes() -> None:
    """fs_test.c inherit_subset: rules added to an enforced ruleset and re-enforced never grant anything new.

    Layer 1 grants READ_FILE|READ_DIR on d2. Re-enforcing after adding WRITE on d2, then RW on d1, changes
    nothing; re-enforcing after adding WRITE on d3 still leaves readdir of d3 allowed (the rules of one
    layer add up: d2's READ_DIR reaches d3 inside that layer).
    """
    ll.require_abi(1)
    with _tmpdir() as root:
        d1 = _mkdirs(root, "d1")[0]
        d2 = _mkdirs(d1, "d2")[0]
        d3 = _mkdirs(d2, "d3")[0]
        f1, f2, f3 = (_touch(f"{x}/f") for x in (d1, d2, d3))
        checks = (
            ("d1/f O_WRONLY", f1, os.O_WRONLY, EACCES),
            ("d1 readdir", d1, os.O_RDONLY | os.O_DIRECTORY, EACCES),
            ("d2/f O_WRONLY", f2, os.O_WRONLY, EACCES),
            ("d2 readdir", d2, os.O_RDONLY | os.O_DIRECTORY, 0),
            ("d3/f O_WRONLY", f3, os.O_WRONLY, EACCES),
            ("d3 readdir", d3, os.O_RDONLY | os.O_DIRECTORY, 0),
            ("d3/f O_RDONLY", f3, os.O_RDONLY, 0),
        )

        def body() -> None:
            _klab.set_no_new_privs()
            rs = _ruleset_with(RW_DIR, ((d2, RO_DIR),))
            expect_errno(ll.restrict_self(rs), 0, "first enforcement")
            _expect_opens(checks, "one layer")
            for path, access, what in (
                (d2, WRITE, "WRITE on d2"),
                (d1, RW_DIR, "RW on d1"),
                (d3, WRITE, "WRITE on d3"),
            ):
                ll.allow_path(rs, path, access)
                expect_errno(ll.restrict_self(rs), 0, f"re-enforcement after adding {what}")
                _expect_opens(checks, f"after adding {what} and re-enforcing")

        in_child(body)


@test
def inherit_superset_parent_rule_added_later() -> None:
    """fs_test.c inherit_superset: RO on d3, then RO added on its parent d2 and re-enforced: d2 stays denied."""
    ll.require_abi(1)
    with _tmpdir() as root:
        d2 = _mkdirs(root, "d2")[0]
        d3 = _mkdirs(d2, "d3")[0]
        f3 = _touch(f"{d3}/f")
        checks = (
            ("d2 readdir", d2, os.O_RDONLY | os.O_DIRECTORY, EACCES),
            ("d3 readdir", d3, os.O_RDONLY | os.O_DIRECTORY, 0),
            ("d3/f O_RDONLY", f3, os.O_RDONLY, 0),
            ("d3/f O_WRONLY", f3, os.O_WRONLY, EACCES),
        )

        def body() -> None:
            _klab.set_no_new_privs()
            rs = _ruleset_with(RW_DIR, ((d3, RO_DIR),))
            expect_errno(ll.restrict_self(rs), 0, "first enforcement")
            _expect_opens(checks, "one layer")
            ll.allow_path(rs, d2, RO_DIR)
            expect_errno(ll.restrict_self(rs), 0, "re-enforcement after adding RO on d2")
            _expect_opens(checks, "two layers")

        in_child(body)
