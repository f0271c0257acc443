"""bpf_lsm: sleepable programs."""

from __future__ import annotations

import errno
import os

import _bpf
from _klab import expect_eq
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.common import attach, enforce, load, require, tgid_prog, true_binary

test = suite.test


@suite.test
def sleepable_file_open_denies() -> None:
    """A BPF_F_SLEEPABLE program on file_open runs and denies its tgid only."""
    require()
    with Worker() as target, Worker() as bystander:
        prog, link = enforce("file_open", target.pid, -errno.EPERM, sleepable=True)
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open under a sleepable deny program")
        expect_result(bystander.do("open", "/dev/null"), 0, "open by another process")
        os.close(link)
        os.close(prog)


@suite.test
def sleepable_bprm_committed_creds_counts_exec() -> None:
    """A sleepable counter on bprm_committed_creds (void hook) sees exactly one exec of its tgid."""
    require("bprm_committed_creds")
    path = true_binary()
    counters = _bpf.Counters(1)
    with Worker() as target:
        prog = load("bprm_committed_creds", tgid_prog(target.pid, counters=counters), sleepable=True)
        link = attach(prog)
        expect_eq(counters[0], 0, "counter before the exec")
        expect_result(target.do("exec", path), Worker.REPLACED, "exec under a counting program")
        expect_eq(counters[0], 1, "bprm_committed_creds count after one successful exec of that tgid")
        os.close(link)
        os.close(prog)
