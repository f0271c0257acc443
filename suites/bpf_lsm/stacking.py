"""bpf_lsm: stacking with Landlock."""

from __future__ import annotations

import errno
import os

import _bpf
import _klab
import _landlock
from _klab import Skip, expect_eq
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.common import active_lsms, attach, enforce, load, require, tgid_prog

test = suite.test


def _require_landlock() -> None:
    _landlock.require_abi(1)


def _order(lsms: list[str] | None) -> str:
    """Which of landlock and bpf runs first (the LSM list is in call order)."""
    if lsms is None or "landlock" not in lsms or "bpf" not in lsms:
        raise Skip("cannot tell the landlock/bpf call order from the LSM list")
    return "landlock" if lsms.index("landlock") < lsms.index("bpf") else "bpf"


@suite.test
def landlock_same_domain_bpf_still_denies_ptrace() -> None:
    """Inside one Landlock domain ptrace is allowed by Landlock, yet a BPF -ENOKEY still denies it."""
    require("ptrace_access_check")
    _require_landlock()
    with Worker() as tracer:
        expect_result(tracer.do("landlock_ptrace"), 0, "entering a Landlock domain")
        tracer.do("spawn")  # the tracee inherits the tracer's domain
        expect_result(tracer.do("ptrace"), 0, "PTRACE_ATTACH within one Landlock domain, no BPF program")
        prog, link = enforce("ptrace_access_check", tracer.pid, -errno.ENOKEY)
        expect_result(tracer.do("ptrace"), errno.ENOKEY, "PTRACE_ATTACH within one domain under BPF -ENOKEY")
        os.close(link)
        expect_result(tracer.do("ptrace"), 0, "PTRACE_ATTACH within one domain after the BPF link closed")
        os.close(prog)


@suite.test
def landlock_denial_not_overridden_by_bpf_allow() -> None:
    """A BPF program returning 0 cannot undo Landlock's EPERM; with landlock first it is not even consulted."""
    require("ptrace_access_check")
    _require_landlock()
    first = _order(active_lsms())
    counters = _bpf.Counters(1)
    with Worker() as tracer:
        tracer.do("spawn")  # the tracee stays outside the tracer's future domain
        prog = load("ptrace_access_check", tgid_prog(tracer.pid, 0, counters=counters))
        link = attach(prog)
        expect_result(tracer.do("ptrace"), 0, "PTRACE_ATTACH before Landlock, BPF allowing")
        expect_eq(counters[0], 1, "BPF ptrace_access_check calls after one allowed attach")
        expect_result(tracer.do("landlock_ptrace"), 0, "entering a Landlock domain")
        expect_result(tracer.do("ptrace"), errno.EPERM, "PTRACE_ATTACH out of the domain, BPF returning 0")
        want = 1 if first == "landlock" else 2
        expect_eq(counters[0], want, f"BPF ptrace_access_check calls ({first} runs first, stops at a denial)")
        os.close(link)
        os.close(prog)


@suite.test
def first_denying_lsm_decides_errno() -> None:
    """Landlock (EPERM) and BPF (-ENOKEY) both deny: the errno is that of whichever LSM runs first."""
    require("ptrace_access_check")
    _require_landlock()
    first = _order(active_lsms())
    with Worker() as tracer:
        tracer.do("spawn")
        prog, link = enforce("ptrace_access_check", tracer.pid, -errno.ENOKEY)
        expect_result(tracer.do("ptrace"), errno.ENOKEY, "PTRACE_ATTACH with only BPF denying")
        expect_result(tracer.do("landlock_ptrace"), 0, "entering a Landlock domain")
        want = errno.EPERM if first == "landlock" else errno.ENOKEY
        expect_result(tracer.do("ptrace"), want, f"PTRACE_ATTACH with both denying ({first} runs first)")
        os.close(link)
        expect_result(tracer.do("ptrace"), errno.EPERM, "PTRACE_ATTACH with only Landlock denying")
        os.close(prog)


@suite.test
def landlock_fs_and_bpf_file_open() -> None:
    """file_open: where Landlock allows, BPF's -ENOKEY decides; where Landlock denies, its EACCES wins if first."""
    require()
    _require_landlock()
    first = _order(active_lsms())
    denied = os.path.abspath(_klab.__file__)
    with Worker() as target:
        expect_result(target.do("landlock_fs", "/dev/null"), 0, "Landlock: READ_FILE allowed on /dev/null only")
        expect_result(target.do("open", "/dev/null"), 0, "open of the allowed file, no BPF program")
        expect_result(target.do("open", denied), errno.EACCES, f"open of {denied} outside the rule, no BPF program")
        prog, link = enforce("file_open", target.pid, -errno.ENOKEY)
        expect_result(target.do("open", "/dev/null"), errno.ENOKEY, "open Landlock allows, BPF -ENOKEY")
        want = errno.EACCES if first == "landlock" else errno.ENOKEY
        expect_result(target.do("open", denied), want, f"open both deny ({first} runs first)")
        os.close(link)
        os.close(prog)
