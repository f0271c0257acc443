"""landlock: landlock_restrict_self."""

from __future__ import annotations

import errno
import os

import _klab
import _landlock as ll
from _klab import expect_eq, expect_errno, in_child

from landlock import suite
from landlock.common import EINVAL, EPERM, _nnp

test = suite.test


@test
def restrict_self_eperm_first() -> None:
    """Without no_new_privs and CAP_SYS_ADMIN, EPERM comes before any fd check (and, before ABI 11, any flag check).

    Linux 7.3 (ABI 11) added LANDLOCK_RESTRICT_SELF_NO_NEW_PRIVS, which itself satisfies the
    privilege requirement, so it validates the flags first: unknown flags are EINVAL even
    unprivileged, and the NO_NEW_PRIVS flag gets past the EPERM check to the fd check.
    """
    abi = ll.require_abi(1)
    rs = ll.ruleset(fs=ll.ACCESS_FS_EXECUTE)
    r, _w = os.pipe()
    _klab.drop_caps()
    expect_eq(_nnp(), 0, "no_new_privs before the test")
    flags_first = abi >= 11
    cases = [(-1, -1, EINVAL if flags_first else EPERM), (-1, 1 << 31, EINVAL if flags_first else EPERM)]
    cases += [(rs, -1, EINVAL if flags_first else EPERM), (-1, 0, EPERM), (rs, 0, EPERM), (r, 0, EPERM)]
    if abi >= 7:
        cases.append((rs, ll.LANDLOCK_RESTRICT_SELF_LOG_SAME_EXEC_OFF, EPERM))  # a known flag: still EPERM
    if abi >= 11:
        nnp = ll.LANDLOCK_RESTRICT_SELF_NO_NEW_PRIVS
        cases += [(-1, nnp, errno.EBADF), (r, nnp, errno.EBADFD), (rs, nnp | 1 << 31, EINVAL)]
    for fd, flags, want in cases:
        what = f"restrict_self({fd}, {flags:#x}) unprivileged on ABI {abi}"
        expect_errno(ll.restrict_self(fd, flags & 0xFFFFFFFF), want, what)
    expect_eq(_nnp(), 0, "no_new_privs after the failed calls")
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
