"""seccomp: shared constants and helpers."""

from __future__ import annotations

import os
import threading

import _seccomp as sc
from _klab import expect_eq

MAGIC = 0x5EC0_0C01  # args[0] of every targeted call: nothing else passes it

MAGIC_FD = 777  # a dirfd number for argument-matched openat

NOTIF_VALUE = 4242  # what the supervisor answers when USER_NOTIF wins

TRAP_DATA = 0x0123

TRACE_DATA = 0x1234


def target(*rest: int) -> tuple[int, int]:
    """The call every filter here matches: getppid(MAGIC, ...)."""
    return sc.call("getppid", MAGIC, *rest)


def deny(action: int) -> list[sc.Insn]:
    """A filter returning `action` for the target call and ALLOW for everything else."""
    return sc.rules(("getppid", action, MAGIC))


def expect_allowed(result: tuple[int, int], what: str) -> None:
    """The target call went through: it returned the real parent pid."""
    expect_eq(result, (os.getppid(), 0), f"{what} (getppid result, errno)")


def parked_thread(fn=None):  # type: ignore[no-untyped-def]
    """Start a thread that optionally runs fn, then parks until released; returns (tid, release, results)."""
    ready, release = threading.Event(), threading.Event()
    box: dict[str, object] = {}

    def run() -> None:
        box["tid"] = threading.get_native_id()
        if fn is not None:
            box["setup"] = fn()
        ready.set()
        release.wait(10)
        box["call"] = target()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(10)
    box["thread"] = thread
    return box["tid"], release, box


_ALLOW = sc.ret(sc.RET_ALLOW)
