"""landlock: small helpers."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator

import _landlock as ll
from _klab import Failure, errname, expect_eq, oserror_errno

EACCES, EXDEV, EPERM, EINVAL = errno.EACCES, errno.EXDEV, errno.EPERM, errno.EINVAL

RW_FILE = ll.ACCESS_FS_READ_FILE | ll.ACCESS_FS_WRITE_FILE

FIONREAD = 0x541B

FIOCLEX = 0x5451

FIONCLEX = 0x5450

FIOQSIZE = 0x5460

FIONBIO = 0x5421

TCGETS = 0x5401

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

_IFREQ = "16sH22x"  # struct ifreq: name, ifr_flags, rest of the 24-byte union

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

_names = itertools.count()


def _en(err: int) -> str:
    """errno as 'EACCES (13)', 0 as 'success'."""
    return "success" if err == 0 else f"{errname(err)} ({err})"


def _op(what: str, want: int, fn: Callable[..., object], *args: object) -> None:
    """Run an os-level call and pin its outcome: want 0 for success, else the errno."""
    got = oserror_errno(fn, *args)
    if got != want:
        raise Failure(f"{what}: expected {_en(want)}, got {_en(got)}")


def _open_close(path: str, flags: int) -> None:
    os.close(os.open(path, flags | os.O_CLOEXEC))


def _touch(path: str, data: bytes = b"data\n") -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


@contextlib.contextmanager
def _tmpdir() -> Iterator[str]:
    """A fresh directory under /tmp, removed by the (unrestricted) caller afterwards."""
    root = tempfile.mkdtemp(prefix="klab-landlock-", dir="/tmp")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _mkdirs(root: str, *names: str) -> list[str]:
    paths = [os.path.join(root, n) for n in names]
    for p in paths:
        os.makedirs(p, exist_ok=True)
    return paths


def _nnp(status: str = "/proc/thread-self/status") -> int:
    """The NoNewPrivs flag of the calling thread (or of the status file given)."""
    with open(status) as f:
        for line in f:
            if line.startswith("NoNewPrivs:"):
                return int(line.split()[1])
    raise Failure(f"no NoNewPrivs line in {status}")


def _no_rules(fs: int = 0, net: int = 0, scoped: int = 0) -> None:
    """Enforce one layer that handles these rights and grants none of them."""
    ll.layer(fs=fs, net=net, scoped=scoped)


def _rs_attr(fs: int = 0, net: int = 0, scoped: int = 0) -> ll.RulesetAttr:
    return ll.RulesetAttr(fs, net, scoped)


def _send_fd(sock: socket.socket, fd: int) -> None:
    socket.send_fds(sock, [b"F"], [fd])


def _recv_fd(sock: socket.socket) -> int:
    _msg, fds, _flags, _addr = socket.recv_fds(sock, 1, 1)
    expect_eq(len(fds), 1, "fds received over SCM_RIGHTS")
    return fds[0]


def _thread_result(fn: Callable[[], object], gate: threading.Event | None = None) -> tuple[threading.Thread, list]:
    """Start a thread that (after gate) runs fn and stores its result."""
    out: list = []

    def run() -> None:
        if gate is not None:
            gate.wait(10)
        out.append(fn())

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out
