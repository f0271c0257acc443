"""landlock: LANDLOCK_RESTRICT_SELF_NO_NEW_PRIVS (ABI 11, Linux 7.3).

The flag replaces the prctl(PR_SET_NO_NEW_PRIVS) step: restrict_self sets
no_new_privs on the calling thread past its last point of failure, so the
flag is set if and only if the call succeeds. It needs a ruleset (the
ruleset_fd == -1 form stays LOG_SUBDOMAINS_OFF[|TSYNC] only). With TSYNC the
sibling threads get no_new_privs too; without it only the caller does.
"""

from __future__ import annotations

import errno
import os
import threading

import _klab
import _landlock as ll
from _klab import expect_eq, expect_errno, in_child

from landlock import suite
from landlock.common import EACCES, EINVAL, EPERM, _nnp, _op, _open_close, _tmpdir, _touch

test = suite.test

NNP = ll.LANDLOCK_RESTRICT_SELF_NO_NEW_PRIVS
TSYNC = ll.LANDLOCK_RESTRICT_SELF_TSYNC
SUBDOMAINS_OFF = ll.LANDLOCK_RESTRICT_SELF_LOG_SUBDOMAINS_OFF


def _probe(path: str) -> tuple[int, int]:
    """In the calling thread: (errno of opening path for writing, NoNewPrivs)."""
    try:
        _open_close(path, os.O_WRONLY)
        err = 0
    except OSError as exc:
        err = exc.errno or -1
    return err, _nnp()


def _sibling(path: str) -> tuple[threading.Thread, threading.Event, list[tuple[int, int]]]:
    """A thread started now that probes `path` once the returned event is set."""
    gate, out = threading.Event(), []

    def run() -> None:
        gate.wait(10)
        out.append(_probe(path))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, gate, out


@test
def nnp_flag_sets_no_new_privs_on_success() -> None:
    """ABI 11: unprivileged and without prctl, restrict_self(NO_NEW_PRIVS) succeeds, enforces and sets no_new_privs."""
    ll.require_abi(11)
    with _tmpdir() as d:
        f = _touch(f"{d}/f")

        def unprivileged() -> None:
            rs = ll.ruleset(fs=ll.ACCESS_FS_WRITE_FILE)
            _klab.drop_caps()
            expect_eq(_nnp(), 0, "no_new_privs before")
            expect_errno(ll.restrict_self(rs, 0), EPERM, "restrict_self(ruleset, 0) without no_new_privs")
            expect_errno(ll.restrict_self(rs, NNP), 0, "restrict_self(ruleset, NO_NEW_PRIVS)")
            expect_eq(_nnp(), 1, "no_new_privs after a successful NO_NEW_PRIVS call")
            _op("write f in the new domain", EACCES, _open_close, f, os.O_WRONLY)

        def with_cap_sys_admin() -> None:
            rs = ll.ruleset(fs=ll.ACCESS_FS_WRITE_FILE)
            expect_errno(ll.restrict_self(rs, NNP), 0, "restrict_self(ruleset, NO_NEW_PRIVS) with CAP_SYS_ADMIN")
            expect_eq(_nnp(), 1, "no_new_privs after NO_NEW_PRIVS (set even though CAP_SYS_ADMIN sufficed)")

        in_child(unprivileged)
        in_child(with_cap_sys_admin)
        _op("unrestricted parent: write f", 0, _open_close, f, os.O_WRONLY)


@test
def nnp_flag_left_unset_when_the_call_fails() -> None:
    """ABI 11: every failing restrict_self(NO_NEW_PRIVS), EINVAL, EBADF, EBADFD or E2BIG, leaves no_new_privs unset."""
    ll.require_abi(11)
    with _tmpdir() as d:
        f = _touch(f"{d}/f")

        def unprivileged() -> None:
            rs = ll.ruleset(fs=ll.ACCESS_FS_WRITE_FILE)
            r, _w = os.pipe()
            _klab.drop_caps()
            cases = (
                (rs, NNP | 1 << 31, EINVAL, "unknown flag"),
                (-1, NNP, errno.EBADF, "fd -1"),
                (r, NNP, errno.EBADFD, "a pipe"),
            )
            for fd, flags, want, what in cases:
                expect_errno(ll.restrict_self(fd, flags), want, f"restrict_self({what}, {flags:#x})")
                expect_eq(_nnp(), 0, f"no_new_privs after the failed call on {what}")
            _op("write f (no domain was enforced)", 0, _open_close, f, os.O_WRONLY)

        def too_many_layers() -> None:
            rs = ll.ruleset(fs=ll.ACCESS_FS_MAKE_BLOCK)
            for i in range(16):  # CAP_SYS_ADMIN allows stacking without no_new_privs
                expect_errno(ll.restrict_self(rs), 0, f"layer {i + 1} (CAP_SYS_ADMIN, no no_new_privs)")
            expect_eq(_nnp(), 0, "no_new_privs after 16 layers without the flag")
            expect_errno(ll.restrict_self(rs, NNP), errno.E2BIG, "layer 17 with NO_NEW_PRIVS")
            expect_eq(_nnp(), 0, "no_new_privs after the E2BIG call")

        in_child(unprivileged)
        in_child(too_many_layers)


@test
def nnp_flag_needs_a_ruleset() -> None:
    """ABI 11: the ruleset_fd == -1 form takes LOG_SUBDOMAINS_OFF[|TSYNC] only: adding NO_NEW_PRIVS makes it EBADF."""
    ll.require_abi(11)

    def body() -> None:
        _klab.drop_caps()
        for flags in (NNP, SUBDOMAINS_OFF | NNP, SUBDOMAINS_OFF | TSYNC | NNP):
            expect_errno(ll.restrict_self(-1, flags), errno.EBADF, f"restrict_self(-1, {flags:#x})")
            expect_eq(_nnp(), 0, f"no_new_privs after restrict_self(-1, {flags:#x})")
        # Without the flag the -1 form is still bound by the privilege rule.
        expect_errno(ll.restrict_self(-1, SUBDOMAINS_OFF), EPERM, "restrict_self(-1, LOG_SUBDOMAINS_OFF) unprivileged")
        _klab.set_no_new_privs()
        expect_errno(ll.restrict_self(-1, SUBDOMAINS_OFF), 0, "restrict_self(-1, LOG_SUBDOMAINS_OFF) with prctl nnp")

    in_child(body)


@test
def nnp_flag_reaches_siblings_only_with_tsync() -> None:
    """ABI 11: with TSYNC every thread gets the domain and no_new_privs; without it, only the caller does."""
    ll.require_abi(11)
    with _tmpdir() as d:
        f = _touch(f"{d}/f")

        def body(flags: int, sibling_want: tuple[int, int]) -> None:
            rs = ll.ruleset(fs=ll.ACCESS_FS_WRITE_FILE)
            _klab.drop_caps()
            t, gate, out = _sibling(f)
            expect_errno(ll.restrict_self(rs, flags), 0, f"restrict_self(ruleset, {flags:#x})")
            gate.set()
            t.join(10)
            expect_eq(_probe(f), (EACCES, 1), f"caller after flags {flags:#x}: (write errno, nnp)")
            expect_eq(out, [sibling_want], f"sibling thread after flags {flags:#x}: [(write errno, nnp)]")

        in_child(body, NNP | TSYNC, (EACCES, 1))
        in_child(body, NNP, (0, 0))
