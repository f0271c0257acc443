"""bpf_lsm: a full ring buffer and records that wrap around its end.

A policy that emits faster than its reader reads must lose records whole
(reserve gives NULL, output -EAGAIN) and never corrupt the ones already in
the ring.
"""

from __future__ import annotations

import errno
import os
import struct

import _bpf
from _bpf import (
    FN_MAP_LOOKUP_ELEM,
    FN_RINGBUF_OUTPUT,
    FN_RINGBUF_RESERVE,
    FN_RINGBUF_SUBMIT,
    R0,
    R1,
    R2,
    R3,
    R4,
    R6,
    R7,
    R8,
    R9,
    R10,
    SIZE_DW,
    SIZE_W,
    Asm,
)
from _bpf_ring import PAGE, RingBuf, RingHeader, ringbuf_record_span
from _klab import expect, expect_eq
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.audit import load_slot, next_seq, slot_ptr, u64
from bpf_lsm.common import attach, filter_tgid, load, read_counters, require, store_into

test = suite.test

SEQ, API, FAILS, LAST_ERR = range(4)
API_RESERVE, API_OUTPUT = 0, 1


def _sizes(ring: int) -> tuple[int, int]:
    """(sample bytes, record span) such that exactly 4 records fit in `ring` bytes (at most ring - 1 unread)."""
    sample = ring // 4 - 16
    return sample, ringbuf_record_span(sample)


def _fill(asm: Asm, base: int, words: int, seq_hi: int) -> Asm:
    """Emit: ((u64 *)base)[i] = seq_hi | i for every word of the sample (every byte written, nothing stale)."""
    for i in range(words):
        asm.mov64(R1, seq_hi).alu64("or", R1, imm=i).stx(SIZE_DW, base, 8 * i, R1)
    return asm


def _full_prog(tgid: int, rb: RingBuf, counters: _bpf.Counters, scratch: int, sample: int) -> Asm:
    """file_open: one `sample`-byte record per open through reserve/submit or output (counters[API]).

    A failure (NULL reservation, output's error) counts in counters[FAILS],
    output's error goes to counters[LAST_ERR].
    """
    words = sample // 8
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid)
    next_seq(asm, counters, SEQ, R8, R7, "other")
    asm.mov64(R7, R8).alu64("lsh", R7, imm=32)
    load_slot(asm, counters, API, R9, "other")
    asm.jmp("jeq", R9, "output", imm=API_OUTPUT)
    asm.ld_map_fd(R1, rb.fd).mov64(R2, imm=sample).mov64(R3, imm=0).call(FN_RINGBUF_RESERVE)
    asm.jmp("jeq", R0, "failed", imm=0).mov64(R9, R0)
    _fill(asm, R9, words, R7)
    asm.mov64(R1, R9).mov64(R2, imm=0).call(FN_RINGBUF_SUBMIT).ja("other")
    asm.label("output").st(SIZE_W, R10, -4, 0).mov64(R2, R10).alu64("add", R2, imm=-4).ld_map_fd(R1, scratch)
    asm.call(FN_MAP_LOOKUP_ELEM).jmp("jeq", R0, "other", imm=0).mov64(R9, R0)
    _fill(asm, R9, words, R7)
    asm.ld_map_fd(R1, rb.fd).mov64(R2, R9).mov64(R3, imm=sample).mov64(R4, imm=0).call(FN_RINGBUF_OUTPUT)
    asm.jmp("jeq", R0, "other", imm=0).mov64(R9, R0)
    store_into(asm, counters, LAST_ERR, R9)
    asm.label("failed")
    slot_ptr(asm, counters, FAILS, R9, "other")
    asm.ldx(SIZE_DW, R1, R9, 0).alu64("add", R1, imm=1).stx(SIZE_DW, R9, 0, R1)
    return asm.ret(0).label("other").ret(0)


def _sample(seq: int, words: int) -> bytes:
    return b"".join(struct.pack("<Q", seq << 32 | i) for i in range(words))


def _full_case(api: int) -> None:
    name = ("bpf_ringbuf_reserve", "bpf_ringbuf_output")[api]
    sample, span = _sizes(PAGE)
    counters = _bpf.Counters(4)
    counters[API] = api
    scratch = _bpf.map_create(_bpf.BPF_MAP_TYPE_ARRAY, 4, sample, 1, "klab_rb_scratch")
    rb = RingBuf(PAGE)
    words = sample // 8
    with Worker() as target:
        prog = load("file_open", _full_prog(target.pid, rb, counters, scratch, sample))
        link = attach(prog)
        for i in range(6):
            expect_result(target.do("open", "/dev/null"), 0, f"open {i}")
        want_err = u64(-errno.EAGAIN) if api == API_OUTPUT else 0
        expect_eq(read_counters(counters, 4)[1:], [api, 2, want_err], f"{name}: [api, failures, error] after 6 opens")
        want_heads = [RingHeader(i * span, sample, False, False) for i in range(4)]
        expect_eq(rb.headers(), want_heads, f"{name}: headers in the full ring (4 fit)")
        got = rb.consume()
        expect_eq(len(got), 4, f"{name}: records read from the full ring")
        for i, record in enumerate(got):
            expect(record == _sample(i, words), f"{name}: record {i} corrupted (first bytes {record[:16].hex()})")
        for i in range(4):
            expect_result(target.do("open", "/dev/null"), 0, f"open {6 + i} (after the reader made room)")
        expect_eq(counters[FAILS], 2, f"{name}: failures after the reader made room")
        got = rb.consume()
        want = [_sample(seq, words) for seq in range(6, 10)]
        for i, (record, expected) in enumerate(zip(got, want, strict=False)):
            expect(record == expected, f"{name}: record {6 + i} (wraps: {i == 0}) corrupted: {record[:16].hex()}")
        expect_eq(len(got), 4, f"{name}: records read after the ring wrapped around")
        expect_eq((rb.consumer_pos, rb.producer_pos), (8 * span, 8 * span), f"{name}: (consumer, producer) at the end")
        os.close(link)
        os.close(prog)
    rb.close()
    os.close(scratch)


@suite.test
def ringbuf_full_ring_loses_whole_records_and_keeps_the_others_intact() -> None:
    """With the reader not reading, a one-page ring takes 4 quarter-page records: the 5th and 6th are lost.

    bpf_ringbuf_reserve returns NULL and bpf_ringbuf_output -EAGAIN for them;
    the 4 in the ring are intact to the last byte, the lost ones leave no
    trace. Once read, 4 more fit; the first of them wraps around the end of
    the ring and reads contiguous through the double mapping.
    """
    require()
    _full_case(API_RESERVE)
    _full_case(API_OUTPUT)
