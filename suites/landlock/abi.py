"""landlock: ABI and errata queries."""

from __future__ import annotations

import os

import _landlock as ll
from _klab import Skip, expect, expect_eq, expect_errno, kernel_version

from landlock import suite
from landlock.common import EINVAL, _rs_attr

test = suite.test


@test
def abi_version_query() -> None:
    """VERSION reports the ABI the table gives this release; attr NULL and size 0, else EINVAL."""
    abi = ll.require_abi(1)
    low, high = ll.expected_abi()
    release = "{}.{}".format(*kernel_version())
    if low == high:
        expect_eq(abi, low, f"Landlock ABI of kernel {release} (landlock_abi.json)")
    else:
        expect(abi >= low, f"Landlock ABI of kernel {release}: expected at least {low} (landlock_abi.json), got {abi}")
        expect(high is None or abi <= high, f"Landlock ABI of kernel {release}: expected at most {high}, got {abi}")
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
    """ERRATA reports the table's bitmask for this kernel (only errata of its ABI or older), stable, NULL/0 only."""
    abi = ll.require_abi(1)
    first = ll.errata()
    exact = ll.expected_errata()
    if exact is not None:
        expect_eq(first, exact, f"errata bitmask of kernel {os.uname().release} (landlock_abi.json)")
    if first is None:
        # Kernels before the errata interface (e.g. 6.1) reject the flag as unknown.
        flag = ll.LANDLOCK_CREATE_RULESET_ERRATA
        expect_errno(ll.create_ruleset(None, 0, flag), EINVAL, "ERRATA on a kernel without errata")
        raise Skip("kernel predates LANDLOCK_CREATE_RULESET_ERRATA (EINVAL checked)")
    allowed = ll.possible_errata(abi)
    expect(first & ~allowed == 0, f"errata {first:#x} has bits outside {allowed:#x}, the errata of ABI <= {abi}")
    expect_eq(ll.errata(), first, "second errata query")
    attr = _rs_attr(fs=ll.ACCESS_FS_READ_FILE)
    flag = ll.LANDLOCK_CREATE_RULESET_ERRATA
    expect_errno(ll.create_ruleset(attr, 0, flag), EINVAL, "ERRATA with non-NULL attr")
    expect_errno(ll.create_ruleset(None, 8, flag), EINVAL, "ERRATA with size 8")
    expect_errno(ll.create_ruleset(attr, 8, flag), EINVAL, "ERRATA with attr and size")
