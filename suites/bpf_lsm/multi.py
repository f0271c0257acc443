"""bpf_lsm: several programs on one hook."""

from __future__ import annotations

import errno
import os

import _bpf
from _klab import expect_eq
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.common import attach, load, open_n, read_counters, require, tgid_prog

test = suite.test


@suite.test
def several_programs_all_run() -> None:
    """Three counters on file_open for our tgid each see every one of our opens."""
    require()
    counters = _bpf.Counters(3)
    progs = [load("file_open", tgid_prog(os.getpid(), counters=counters, slot=i)) for i in range(3)]
    links = [attach(p) for p in progs]
    open_n(4)
    expect_eq(read_counters(counters, 3), [4, 4, 4], "each of three counters after 4 opens")
    for fd in links + progs:
        os.close(fd)


def _deny_among_counters(deny_first: bool) -> None:
    """One -EPERM program among counters denies its target whatever the attach order."""
    require()
    counters = _bpf.Counters(2)
    with Worker() as target, Worker() as bystander:
        deny = load("file_open", tgid_prog(target.pid, -errno.EPERM))
        count = [load("file_open", tgid_prog(bystander.pid, counters=counters, slot=i)) for i in range(2)]
        order = [deny, *count] if deny_first else [*count, deny]
        links = [attach(p) for p in order]
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open by the denied tgid")
        for _ in range(3):
            expect_result(bystander.do("open", "/dev/null"), 0, "open by the counted bystander")
        expect_eq(read_counters(counters, 2), [3, 3], "both counters after the bystander's 3 opens")
        os.close(links[order.index(deny)])
        expect_result(target.do("open", "/dev/null"), 0, "open after closing only the deny link")
        for fd in [fd for fd, p in zip(links, order, strict=True) if p != deny] + order:
            os.close(fd)


suite.add("deny_verdict_deny_attached_first", lambda: _deny_among_counters(True))

suite.add("deny_verdict_deny_attached_last", lambda: _deny_among_counters(False))
