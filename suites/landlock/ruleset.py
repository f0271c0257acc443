"""landlock: ruleset attribute size and content."""

from __future__ import annotations

import ctypes
import errno
import os
import struct

import _klab
import _landlock as ll
from _klab import expect_errno

from landlock import suite
from landlock.common import EINVAL, PAGE_SIZE, _rs_attr

test = suite.test


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
    """A size beyond the kernel's struct is fine with a zero tail and E2BIG with any non-zero byte.

    The kernel's struct is 8, 16, 24 or (ABI 10, Linux 7.2) 48 bytes, so byte 24 is E2BIG before
    ABI 10 and a quiet mask (EINVAL when it is not a subset of the handled rights) since.
    """
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
    # Byte 24 is where the struct grew in Linux 7.2 (ABI 10: quiet_access_fs, quiet_access_net,
    # quiet_scoped; 48 bytes). Before, it is past the struct: E2BIG. Since, it is quiet_access_fs,
    # and 0x2e is not a subset of the handled READ_FILE (0x4): EINVAL.
    buf[24] = b"."
    want = EINVAL if abi >= 10 else errno.E2BIG
    what = f"page-sized attr with 0x2e at byte 24 (quiet_access_fs since ABI 10) on ABI {abi}"
    expect_errno(_klab.syscall("landlock_create_ruleset", ptr, PAGE_SIZE, 0), want, what)
    if abi >= 10:
        # The same byte inside the handled set is a valid quiet mask.
        buf[24] = bytes([ll.ACCESS_FS_READ_FILE])
        fd = expect_errno(_klab.syscall("landlock_create_ruleset", ptr, PAGE_SIZE, 0), 0, "quiet_access_fs=READ_FILE")
        os.close(fd)
    buf[24] = b"\0"


@test
def ruleset_attr_fields_by_abi() -> None:
    """net (ABI 4), scoped (ABI 6) and quiet_* (ABI 10) are E2BIG on older kernels and accepted on newer ones."""
    abi = ll.require_abi(1)
    net = _rs_attr(fs=ll.ACCESS_FS_READ_FILE, net=ll.ACCESS_NET_BIND_TCP)
    scoped = _rs_attr(fs=ll.ACCESS_FS_READ_FILE, scoped=ll.SCOPE_SIGNAL)
    quiet = _rs_attr(fs=ll.ACCESS_FS_READ_FILE)
    quiet.quiet_access_fs = ll.ACCESS_FS_READ_FILE
    fields = ((net, 16, 4, "handled_access_net"), (scoped, 24, 6, "scoped"), (quiet, 48, 10, "quiet_access_fs"))
    for attr, size, since, what in fields:
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
