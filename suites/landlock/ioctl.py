"""landlock: IOCTL_DEV (ABI 5)."""

from __future__ import annotations

import ctypes
import errno
import os
import stat

import _klab
import _landlock as ll
from _klab import Skip, expect, expect_eq, in_child

from landlock import suite
from landlock.common import EACCES, FIOCLEX, FIONBIO, FIONCLEX, FIONREAD, FIOQSIZE, TCGETS, _en, _tmpdir, _touch

test = suite.test


def _ioctl(fd: int, cmd: int) -> int:
    """Raw ioctl with a 4-byte argument buffer: 0 or the errno."""
    buf = ctypes.create_string_buffer(64)
    ctypes.set_errno(0)
    ret = _klab.libc.ioctl(fd, ctypes.c_ulong(cmd), buf)
    return 0 if ret >= 0 else ctypes.get_errno()


@test
def ioctl_dev_right() -> None:
    """ABI 5: device ioctls need IOCTL_DEV (fixed at open); FIOCLEX/FIONBIO and non-devices are exempt."""
    ll.require_abi(5)
    null = "/dev/null"
    if not stat.S_ISCHR(os.stat(null).st_mode):
        raise Skip("/dev/null is not a character device here")
    with _tmpdir() as d:
        reg = _touch(f"{d}/f")
        unrestricted = os.open(null, os.O_RDWR)
        base = {cmd: _ioctl(unrestricted, cmd) for cmd in (FIONREAD, TCGETS)}
        expect(all(e != EACCES for e in base.values()), f"unrestricted ioctl on /dev/null gave EACCES: {base}")

        def body(granted: bool) -> None:
            right = ll.ACCESS_FS_IOCTL_DEV
            paths = (("/dev/null", right),) if granted else ()
            early = os.open(null, os.O_RDWR)
            ll.layer(fs=right, paths=paths)
            fd = os.open(null, os.O_RDWR)
            for cmd, name in ((FIONREAD, "FIONREAD"), (TCGETS, "TCGETS")):
                want = base[cmd] if granted else EACCES
                expect_eq(_en(_ioctl(fd, cmd)), _en(want), f"{name} on /dev/null, IOCTL_DEV granted={granted}")
                expect_eq(_en(_ioctl(early, cmd)), _en(base[cmd]), f"{name} on an fd opened before restrict_self")
            for cmd, name in ((FIOCLEX, "FIOCLEX"), (FIONCLEX, "FIONCLEX"), (FIONBIO, "FIONBIO")):
                expect_eq(_en(_ioctl(fd, cmd)), _en(0), f"{name} (always allowed) on /dev/null")
            # FIOQSIZE is exempt too; on a device the VFS itself answers ENOTTY, never EACCES.
            expect_eq(_en(_ioctl(fd, FIOQSIZE)), _en(errno.ENOTTY), "FIOQSIZE (always allowed) on /dev/null")
            rfd = os.open(reg, os.O_RDONLY)
            expect_eq(_en(_ioctl(rfd, FIONREAD)), _en(0), "FIONREAD on a regular file (not a device)")

        in_child(body, False)
        in_child(body, True)
