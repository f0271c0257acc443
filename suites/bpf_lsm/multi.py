"""bpf_lsm: several programs on one hook."""

from __future__ import annotations

import errno
import os

import _bpf
from _bpf import R0, R1, R6, R7, Asm
from _klab import expect_eq
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.common import (
    HOOK_ARGS,
    attach,
    count_into,
    ctx_arg,
    filter_tgid,
    load,
    open_n,
    read_counters,
    require,
    store_into,
    tgid_prog,
)

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


# Never a verdict: slots holding it were not written by the program.
UNSEEN = 0x5A5A5A5A


def _ret_prog(tgid: int, counters: _bpf.Counters, slot: int, verdict: int, pass_on_ret: bool) -> Asm:
    """file_open: counts[slot] += 1, counters[slot+1] = ret (the `ret` argument, after `file`).

    pass_on_ret: the documented pattern (Documentation/bpf/prog_lsm.rst),
    `if (ret != 0) return ret;` before deciding; otherwise return `verdict` whatever ret is.
    """
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid)
    ctx_arg(asm, R7, R6, HOOK_ARGS["file_open"])
    store_into(asm, counters, slot + 1, R7)
    count_into(asm, counters, slot)
    if pass_on_ret:
        asm.jmp("jeq", R7, "decide", imm=0).mov64(R0, R7).exit().label("decide")
    return asm.ret(verdict).label("other").ret(0)


@suite.test
def ret_argument_is_previous_verdict_and_zero_does_not_override() -> None:
    """A program's `ret` is the verdict of the program before it; after a denial no later program runs to undo it.

    Programs on a hook run in reverse attach order (bpf_trampoline_link_prog
    adds at the head of the list; v6.1 to v7.3). Run order: P1 returns 0,
    P2 passes on a non-zero ret else returns -ENOKEY, P3 returns 0 whatever.
    P1 sees ret 0 (first invocation), P2 sees P1's 0 and denies, P3 does not
    run: the trampoline skips the remaining programs once one returns
    non-zero (invoke_bpf_mod_ret, x86_64 and arm64), so its 0 cannot override.
    """
    require()
    counters = _bpf.Counters(6)
    for slot in (1, 3, 5):
        counters[slot] = UNSEEN
    with Worker() as target:
        p1 = load("file_open", _ret_prog(target.pid, counters, 0, 0, pass_on_ret=False))
        p2 = load("file_open", _ret_prog(target.pid, counters, 2, -errno.ENOKEY, pass_on_ret=True))
        p3 = load("file_open", _ret_prog(target.pid, counters, 4, 0, pass_on_ret=False))
        links = {p: attach(p) for p in (p3, p2, p1)}  # attached last runs first
        expect_result(target.do("open", "/dev/null"), errno.ENOKEY, "open, P2 denying between two allowing programs")
        got = read_counters(counters, 6)
        expect_eq(got, [1, 0, 1, 0, 0, UNSEEN], "[P1 runs, P1 ret, P2 runs, P2 ret, P3 runs, P3 ret] after one open")
        os.close(links.pop(p2))
        expect_result(target.do("open", "/dev/null"), 0, "open after P2's link closed")
        got = read_counters(counters, 6)
        expect_eq(got, [2, 0, 1, 0, 1, 0], "[P1 runs, P1 ret, P2 runs, P2 ret, P3 runs, P3 ret] after P2 left")
        for fd in [*links.values(), p1, p2, p3]:
            os.close(fd)
