"""bpf_lsm: sleepable programs."""

from __future__ import annotations

import errno
import os

import _bpf
from _bpf import FN_COPY_FROM_USER, R0, R1, R2, R3, R7, R8, R10, SIZE_DW, Asm
from _klab import errname, expect, expect_eq
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.common import (
    attach,
    enforce,
    filter_tgid,
    load,
    read_counters,
    require,
    store_into,
    tgid_prog,
    true_binary,
    try_load,
)

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


def _copy_prog(tgid: int, counters: _bpf.Counters, addr: int) -> Asm:
    """file_open: bpf_copy_from_user(8 bytes at addr) -> [bytes, ret]; from address 0 -> [.., .., ret]."""
    asm = Asm()
    filter_tgid(asm, tgid)
    asm.mov64(R1, R10).alu64("add", R1, imm=-8).mov64(R2, imm=8).ld_imm64(R3, addr).call(FN_COPY_FROM_USER)
    asm.mov64(R7, R0).ldx(SIZE_DW, R8, R10, -8)
    store_into(asm, counters, 0, R8)
    store_into(asm, counters, 1, R7)
    asm.mov64(R1, R10).alu64("add", R1, imm=-16).mov64(R2, imm=8).mov64(R3, imm=0).call(FN_COPY_FROM_USER)
    asm.mov64(R7, R0)
    store_into(asm, counters, 2, R7)
    return asm.ret(0).label("other").ret(0)


@suite.test
def copy_from_user_only_in_sleepable_programs() -> None:
    """bpf_copy_from_user (may fault, so may sleep) is refused in a non-sleepable program and works in a sleepable one.

    Non-sleepable: EINVAL, the verifier names the non-sleepable program. On
    file_open (a sleepable hook) the sleepable program copies the 8 bytes the
    worker wrote at an address of its own, and gets -EFAULT for address 0.
    """
    require()
    counters = _bpf.Counters(3)
    magic = b"klab-bpf"
    with Worker() as target:
        addr = target.do("mmap_bytes", magic.hex())
        expect(addr > 0, f"worker mapping its bytes: {addr}")
        asm = _copy_prog(target.pid, counters, addr)
        got, log = try_load("file_open", asm)
        expect(
            got == errno.EINVAL and "non-sleepable prog" in log,
            f"non-sleepable copy_from_user: expected EINVAL "
            f"(verifier: ... non-sleepable prog), got {errname(got)} ({got}); log: {log.strip()[-300:]!r}",
        )
        prog = load("file_open", asm, sleepable=True)
        link = attach(prog)
        expect_result(target.do("open", "/dev/null"), 0, "open under the sleepable copying program")
        seen = read_counters(counters, 3)
        want = [int.from_bytes(magic, "little"), 0, (-errno.EFAULT) & ((1 << 64) - 1)]
        expect_eq(seen, want, "[8 bytes copied from the worker, copy's return, return for address 0]")
        os.close(link)
        os.close(prog)
