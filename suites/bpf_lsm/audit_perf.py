"""bpf_lsm: audit records over a perf event array (bpf_perf_event_output), the transport of the KRSI design.

The map's slot for a CPU holds a PERF_COUNT_SW_BPF_OUTPUT event bound to that
CPU; the program writes to the slot of the CPU it runs on (BPF_F_CURRENT_CPU)
or to an explicit index. The test reads the event's mmap'd ring
(_bpf_ring.PerfRing): each record is a PERF_RECORD_SAMPLE whose raw data is
the program's bytes, padded so the record stays 8-byte aligned; a full ring
drops whole records and says how many in a PERF_RECORD_LOST before the next.
"""

from __future__ import annotations

import errno
import os
import struct

import _bpf
from _bpf import (
    FN_GET_CURRENT_PID_TGID,
    FN_PERF_EVENT_OUTPUT,
    R0,
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
    SIZE_DW,
    Asm,
)
from _bpf_ring import (
    BPF_F_CURRENT_CPU,
    PERF_RECORD_LOST,
    PERF_RECORD_SAMPLE,
    PerfEventArray,
    PerfRecord,
    perf_event_open,
)
from _klab import expect_eq
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.audit import AuditLoop, load_slot, next_seq, u64
from bpf_lsm.common import attach, filter_tgid, load, require, store_into

test = suite.test

SEQ, FLAGS, RESULT, WORDS = range(4)
PERF_COUNT_SW_DUMMY = 9
BPF_F_INDEX_MASK = 0xFFFFFFFF


def _output_prog(tgid: int, events: int, counters: _bpf.Counters, words: int) -> Asm:
    """file_open: bpf_perf_event_output(ctx, events, counters[FLAGS], {seq, pid_tgid, seq|i...}, 8 * words)."""
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid)
    next_seq(asm, counters, SEQ, R8, R7, "other")
    load_slot(asm, counters, FLAGS, R7, "other")
    base = -8 * words
    asm.stx(SIZE_DW, R10, base, R8).call(FN_GET_CURRENT_PID_TGID).stx(SIZE_DW, R10, base + 8, R0)
    for i in range(2, words):
        asm.mov64(R1, R8).alu64("lsh", R1, imm=32).alu64("or", R1, imm=i).stx(SIZE_DW, R10, base + 8 * i, R1)
    asm.mov64(R1, R6).ld_map_fd(R2, events).mov64(R3, R7).mov64(R4, R10).alu64("add", R4, imm=base)
    asm.mov64(R5, imm=8 * words).call(FN_PERF_EVENT_OUTPUT).mov64(R9, R0)
    store_into(asm, counters, RESULT, R9)
    return asm.ret(0).label("other").ret(0)


def _payload(seq: int, who: int, words: int) -> bytes:
    return struct.pack("<QQ", seq, who) + b"".join(struct.pack("<Q", seq << 32 | i) for i in range(2, words))


def _sample(seq: int, who: int, words: int) -> tuple[int, int, bytes, int]:
    """What a `words`-word output leaves: raw size padded so u32 size + raw is a multiple of 8.

    The 4 padding bytes are skipped by the kernel, not written (perf_output_sample): not compared.
    """
    return (PERF_RECORD_SAMPLE, 8 * words + 4, _payload(seq, who, words), 0)


def _view(records: list[PerfRecord], words: int) -> list[tuple[int, int, bytes, int]]:
    """(type, raw size, the raw data without its padding, lost count) of each record."""
    return [(r.type, r.raw_size, r.data[: 8 * words], r.lost) for r in records]


@suite.test
def perf_output_lands_in_the_ring_of_the_cpu_it_ran_on_with_exact_bytes() -> None:
    """Each open of the worker (pinned to one CPU) is one PERF_RECORD_SAMPLE in that CPU's ring, and nowhere else.

    Raw size 20 for 16 bytes (4 bytes of zero padding), data {seq, pid_tgid};
    epoll wakes the reader after each sample (wakeup_events 1). The return is
    0 for BPF_F_CURRENT_CPU and for the CPU's explicit index; -ENOENT for an
    empty slot, -E2BIG past the map's end, -EINVAL for a flag outside the
    index mask or a slot whose event is not PERF_COUNT_SW_BPF_OUTPUT. Records
    that failed leave nothing in any ring.
    """
    require()
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[0]
    slots = max(cpus) + 3  # slot max+1 stays empty, slot max+2 holds a dummy event
    counters = _bpf.Counters(4)
    events = PerfEventArray(cpus, slots)
    dummy = perf_event_open(cpus[0], config=PERF_COUNT_SW_DUMMY)
    _bpf.map_update(events.fd, struct.pack("<I", slots - 1), struct.pack("<I", dummy))
    with Worker(AuditLoop) as target:
        expect_result(target.do("pin", cpu), 0, f"pin the worker to cpu {cpu}")
        who = target.pid << 32 | target.pid
        prog = load("file_open", _output_prog(target.pid, events.fd, counters, 2))
        link = attach(prog)
        for seq, (flags, want, what) in enumerate(
            (
                (BPF_F_CURRENT_CPU, 0, "BPF_F_CURRENT_CPU"),
                (cpu, 0, f"index {cpu} (the worker's cpu)"),
                (slots - 2, u64(-errno.ENOENT), "an empty slot"),
                (slots, u64(-errno.E2BIG), "index past max_entries"),
                (1 << 32 | BPF_F_CURRENT_CPU, u64(-errno.EINVAL), "a flag outside BPF_F_INDEX_MASK"),
                (slots - 1, u64(-errno.EINVAL), "a slot holding a PERF_COUNT_SW_DUMMY event"),
            )
        ):
            counters[FLAGS], counters[RESULT] = flags, 7
            expect_result(target.do("open", "/dev/null"), 0, f"open with {what}")
            expect_eq(counters[RESULT], want, f"bpf_perf_event_output return with {what}")
            wanted = [_sample(seq, who, 2)] if want == 0 else []
            if want == 0:
                expect_eq(events.rings[cpu].woken(10.0), True, f"epoll on cpu {cpu}'s ring after a sample ({what})")
            expect_eq(
                _view(events.rings[cpu].records(), 2), wanted, f"records in cpu {cpu}'s ring after the open with {what}"
            )
            for other in cpus[1:]:
                expect_eq(events.rings[other].records(), [], f"records in cpu {other}'s ring ({what})")
        os.close(link)
        os.close(prog)
    os.close(dummy)
    events.close()
    counters.close()


@suite.test
def perf_full_ring_drops_whole_records_and_reports_the_lost_count() -> None:
    """A one-page ring takes (data_size - 1) // 264 records of 248 bytes; the rest are -ENOSPC, counted, not written.

    After the reader empties the ring, the next record is preceded by one
    PERF_RECORD_LOST whose count is the number of failed outputs; every kept
    record is intact to its last byte.
    """
    require()
    cpu = sorted(os.sched_getaffinity(0))[0]
    words = 31  # 248 bytes: header 8 + size 4 + 248 + 4 padding = 264 per record
    counters = _bpf.Counters(4)
    counters[FLAGS] = BPF_F_CURRENT_CPU
    events = PerfEventArray([cpu], cpu + 1)
    ring = events.rings[cpu]
    fits = (ring.data_size - 1) // 264
    lost = 3
    with Worker(AuditLoop) as target:
        expect_result(target.do("pin", cpu), 0, f"pin the worker to cpu {cpu}")
        who = target.pid << 32 | target.pid
        prog = load("file_open", _output_prog(target.pid, events.fd, counters, words))
        link = attach(prog)
        results = []
        for i in range(fits + lost):
            counters[RESULT] = 7
            expect_result(target.do("open", "/dev/null"), 0, f"open {i}")
            results.append(counters[RESULT])
        want = [0] * fits + [u64(-errno.ENOSPC)] * lost
        expect_eq(results, want, f"bpf_perf_event_output returns ({fits} fit in {ring.data_size} bytes)")
        expect_eq(
            _view(ring.records(), words), [_sample(i, who, words) for i in range(fits)], "records in the full ring"
        )
        expect_result(target.do("open", "/dev/null"), 0, "open after the reader emptied the ring")
        expect_eq(counters[RESULT], 0, "bpf_perf_event_output return after the ring was emptied")
        got = _view(ring.records(), words)
        expect_eq(
            got,
            [(PERF_RECORD_LOST, 0, b"", lost), _sample(fits + lost, who, words)],
            "records after the drop: the lost count, then the new sample",
        )
        os.close(link)
        os.close(prog)
    events.close()
    counters.close()


def _wakeup_case(watermark: bool) -> None:
    """Open after open, with the reader not reading: the opens after which epoll says readable."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    counters = _bpf.Counters(4)
    counters[FLAGS] = BPF_F_CURRENT_CPU
    events = PerfEventArray([cpu], cpu + 1, wakeup=100 if watermark else 3, watermark=watermark)
    ring = events.rings[cpu]
    mode = "wakeup_watermark 100 bytes" if watermark else "wakeup_events 3"
    with Worker(AuditLoop) as target:
        expect_result(target.do("pin", cpu), 0, f"pin the worker to cpu {cpu}")
        who = target.pid << 32 | target.pid
        prog = load("file_open", _output_prog(target.pid, events.fd, counters, 2))
        link = attach(prog)
        woken = []
        for i in range(7):
            expect_result(target.do("open", "/dev/null"), 0, f"open {i}")
            if ring.woken(10.0 if i in ((3, 6) if watermark else (2, 5)) else 0.3):
                woken.append(i)  # perf_poll hands out the pending wakeup once (atomic_xchg of rb->poll)
        expect_eq(woken, [3, 6] if watermark else [2, 5], f"{mode}: opens after which epoll woke the reader")
        expect_eq(_view(ring.records(), 2), [_sample(i, who, 2) for i in range(7)], f"{mode}: the records, in order")
        os.close(link)
        os.close(prog)
    events.close()
    counters.close()


@suite.test
def perf_wakeup_events_and_watermark_decide_when_the_reader_is_woken() -> None:
    """wakeup_events 3: epoll wakes after the 3rd and 6th sample; wakeup_watermark 100: after 128 and 224 bytes.

    Samples of 16 bytes take 32 bytes of ring each. perf_output_sample counts
    events against wakeup_events; with watermark set, __perf_output_begin
    wakes when the head passes the last wakeup by more than the watermark
    (the 4th record, head 128; then the 7th, head 224 > 100 + 100). Every
    record is in the ring whether or not it woke the reader.
    """
    require()
    _wakeup_case(False)
    _wakeup_case(True)
