"""bpf_lsm: preconditions and canary."""

from __future__ import annotations

import os

import _bpf
import _klab
from _klab import Failure, Skip, expect, expect_eq
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.common import (
    BTF,
    BTF_ERROR,
    HOOK_ARGS,
    _load_refusal,
    active_lsms,
    attach,
    load,
    open_n,
    read_counters,
    tgid_prog,
)

test = suite.test


@suite.test
def btf_resolves_lsm_hooks() -> None:
    """vmlinux BTF has a FUNC bpf_lsm_<hook> with the hook's parameter count for every hook used."""
    if BTF_ERROR:
        raise Skip(BTF_ERROR)
    for hook, nargs in HOOK_ARGS.items():
        func = BTF.get(f"bpf_lsm_{hook}")
        expect(func is not None, f"bpf_lsm_{hook}: expected a FUNC in vmlinux BTF, found none (CONFIG_BPF_LSM off?)")
        expect_eq(func.nr_args, nargs, f"bpf_lsm_{hook} FUNC_PROTO parameter count")  # type: ignore[union-attr]
    ids = [BTF[f"bpf_lsm_{h}"].type_id for h in HOOK_ARGS]
    expect_eq(len(set(ids)), len(ids), "distinct BTF ids for distinct hooks")


@suite.test
def canary_counts_file_open() -> None:
    """A file_open counter for our own tgid counts exactly our opens, not another process's.

    If this fails, no other result of the suite means anything: with `bpf`
    missing from the active LSM list programs load and attach but never run.
    """
    _klab.require_root()
    lsms = active_lsms()
    if lsms is not None and "bpf" not in lsms:
        raise Failure(
            f"bpf is not in the active LSM list ({','.join(lsms)}): BPF LSM programs would load and attach "
            "but never run; boot with lsm=...,bpf (CONFIG_LSM)"
        )
    if BTF_ERROR:
        raise Failure(f"BPF LSM programs cannot be loaded: {BTF_ERROR}")
    if "bpf_lsm_file_open" not in BTF:
        raise Failure("bpf_lsm_file_open is not in vmlinux BTF: CONFIG_BPF_LSM is off")
    refusal = _load_refusal()
    if refusal:
        raise Skip(refusal)
    counters = _bpf.Counters(2)
    with Worker() as other:
        mine = load("file_open", tgid_prog(os.getpid(), counters=counters, slot=0))
        theirs = load("file_open", tgid_prog(other.pid, counters=counters, slot=1))
        links = [attach(mine), attach(theirs)]
        expect_eq(read_counters(counters, 2), [0, 0], "counters right after attach (no open yet)")
        for _ in range(3):
            expect_result(other.do("open", "/dev/null"), 0, "open by the other process")
        got = read_counters(counters, 2)
        if got == [0, 0]:
            where = "the LSM list is unreadable" if lsms is None else f"active LSMs: {','.join(lsms)}"
            raise Failure(f"file_open programs attached but never ran (3 opens, counters {got}); {where}")
        expect_eq(got, [0, 3], "[own tgid, other tgid] counters after the other process opened 3 files")
        open_n(5)
        expect_eq(read_counters(counters, 2), [5, 3], "[own tgid, other tgid] counters after we opened 5 files")
        for fd in links:
            os.close(fd)
