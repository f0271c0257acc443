"""bpf_lsm: audit records over a BPF ring buffer (BPF_MAP_TYPE_RINGBUF), read as libbpf reads them.

Each program runs on file_open for one worker and writes a record per open;
the test reads the ring through its mmap'd pages (_bpf_ring.RingBuf) and
checks every field, the header the kernel wrote (length, BUSY, DISCARD), the
positions on both sides, and when epoll says the ring is readable.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import tempfile

import _bpf
from _bpf import (
    FN_GET_CURRENT_PID_TGID,
    FN_RINGBUF_DISCARD,
    FN_RINGBUF_OUTPUT,
    FN_RINGBUF_QUERY,
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
from _bpf_ring import (
    BPF_RB_AVAIL_DATA,
    BPF_RB_CONS_POS,
    BPF_RB_FORCE_WAKEUP,
    BPF_RB_NO_WAKEUP,
    BPF_RB_PROD_POS,
    BPF_RB_RING_SIZE,
    PAGE,
    RingBuf,
    RingHeader,
    ringbuf_record_span,
)
from _klab import expect_eq
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.audit import load_slot, next_seq, u64
from bpf_lsm.common import attach, ctx_arg, errno_of, filter_tgid, load, load_field, read_counters, require, store_into

test = suite.test

FIELDS_SIZE = 20  # seq u64, pid_tgid u64, i_ino u32: not a multiple of 8, so the kernel pads the record


def _fields_prog(tgid: int, rb: RingBuf, counters: _bpf.Counters) -> Asm:
    """file_open: query the ring (counters 1-4), then reserve and submit {seq, pid_tgid, file's i_ino}."""
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid)
    next_seq(asm, counters, 0, R8, R7, "other")
    for slot, what in enumerate((BPF_RB_AVAIL_DATA, BPF_RB_PROD_POS, BPF_RB_CONS_POS, BPF_RB_RING_SIZE), 1):
        asm.ld_map_fd(R1, rb.fd).mov64(R2, imm=what).call(FN_RINGBUF_QUERY).mov64(R9, R0)
        store_into(asm, counters, slot, R9)
    asm.ld_map_fd(R1, rb.fd).mov64(R2, imm=FIELDS_SIZE).mov64(R3, imm=0).call(FN_RINGBUF_RESERVE)
    asm.jmp("jeq", R0, "other", imm=0).mov64(R9, R0).stx(SIZE_DW, R9, 0, R8)
    asm.call(FN_GET_CURRENT_PID_TGID).stx(SIZE_DW, R9, 8, R0)
    ctx_arg(asm, R1, R6, 0)
    load_field(asm, R1, R1, "file", "f_inode")
    load_field(asm, R1, R1, "inode", "i_ino")
    asm.stx(SIZE_W, R9, 16, R1).mov64(R1, R9).mov64(R2, imm=0).call(FN_RINGBUF_SUBMIT)
    return asm.ret(0).label("other").ret(0)


@suite.test
def ringbuf_records_reach_the_reader_with_exact_fields_and_positions() -> None:
    """Each open is one 20-byte record {seq, pid_tgid, i_ino}: header length 20, records 32 bytes apart.

    The program also queries the ring before reserving: available data,
    producer and consumer positions, size. After the reader consumed, the
    kernel sees its consumer position (avail 0); unread records count as
    available; the reader publishes its position after each record.
    """
    require()
    span = ringbuf_record_span(FIELDS_SIZE)
    counters = _bpf.Counters(5)
    rb = RingBuf()
    with tempfile.TemporaryDirectory(prefix="klab-rb-") as tmp, Worker() as target:
        paths = [os.path.join(tmp, name) for name in ("a", "b")]
        for path in paths:
            open(path, "w").close()
        ino = [os.stat(p).st_ino & 0xFFFFFFFF for p in paths]
        who = target.pid << 32 | target.pid
        prog = load("file_open", _fields_prog(target.pid, rb, counters))
        link = attach(prog)
        expect_eq(rb.consume(), [], "records before any open")
        expect_result(target.do("open", paths[0]), 0, "open a")
        expect_eq(rb.headers(), [RingHeader(0, FIELDS_SIZE, False, False)], "header of the first record")
        expect_eq(read_counters(counters, 5)[1:], [0, 0, 0, rb.size], "[avail, prod, cons, size] before record 0")
        expect_eq(rb.consume(), [struct.pack("<QQI", 0, who, ino[0])], "records after open a")
        expect_eq((rb.consumer_pos, rb.producer_pos), (span, span), "(consumer, producer) positions after reading")
        expect_result(target.do("open", paths[1]), 0, "open b")
        expect_eq(read_counters(counters, 5)[1:], [0, span, span, rb.size], "[avail, prod, cons, size] before record 1")
        expect_eq(rb.consume(), [struct.pack("<QQI", 1, who, ino[1])], "records after open b")
        for path in paths:
            expect_result(target.do("open", path), 0, f"open {path} (not read yet)")
        expect_eq(read_counters(counters, 5)[1:], [span, 3 * span, 2 * span, rb.size], "[avail, prod, cons, size]")
        want_heads = [RingHeader(pos, FIELDS_SIZE, False, False) for pos in (2 * span, 3 * span)]
        expect_eq(rb.headers(), want_heads, "headers of the two unread records")
        want = [struct.pack("<QQI", 2, who, ino[0]), struct.pack("<QQI", 3, who, ino[1])]
        expect_eq(rb.consume(), want, "the two unread records, in order")
        expect_eq((rb.consumer_pos, rb.producer_pos), (4 * span, 4 * span), "(consumer, producer) at the end")
        os.close(link)
        expect_result(target.do("open", paths[0]), 0, "open after the link closed")
        expect_eq(rb.producer_pos, 4 * span, "producer position after the link closed (no record)")
        os.close(prog)
    rb.close()


def _mmap_errno(fd: int, length: int, prot: int, offset: int, flags: int = mmap.MAP_SHARED) -> int:
    try:
        mmap.mmap(fd, length, flags, prot, offset=offset).close()
    except OSError as exc:
        return exc.errno or -1
    return 0


@suite.test
def ringbuf_map_rules_for_creation_and_mmap() -> None:
    """A ring is a power-of-2, page-aligned size with no key or value; user space may write only the consumer page.

    Creation: key or value size, a size that is not a power of 2 or not a
    multiple of the page are EINVAL. mmap: the consumer page read-write
    (exactly one page at offset 0); the producer page and data read-only
    (writable: EPERM), up to twice the data size (more: EINVAL); MAP_PRIVATE
    is EINVAL.
    """
    require()
    ringbuf = _bpf.BPF_MAP_TYPE_RINGBUF
    for args, what in (
        ((4, 0, PAGE), "key_size 4"),
        ((0, 4, PAGE), "value_size 4"),
        ((0, 0, 3 * PAGE), "3 pages (not a power of 2)"),
        ((0, 0, PAGE // 2), "half a page"),
    ):
        expect_eq(errno_of(_bpf.map_create, ringbuf, *args), errno.EINVAL, f"creating a ring buffer with {what}")
    fd = _bpf.map_create(ringbuf, 0, 0, 2 * PAGE, "klab_rb_rules")
    rw, ro = mmap.PROT_READ | mmap.PROT_WRITE, mmap.PROT_READ
    for length, prot, offset, flags, want, what in (
        (PAGE, rw, 0, mmap.MAP_SHARED, 0, "consumer page read-write"),
        (2 * PAGE, rw, 0, mmap.MAP_SHARED, errno.EPERM, "consumer and producer pages read-write"),
        (PAGE, rw, PAGE, mmap.MAP_SHARED, errno.EPERM, "producer page read-write"),
        (PAGE, rw, 2 * PAGE, mmap.MAP_SHARED, errno.EPERM, "data page read-write"),
        (PAGE + 4 * PAGE, ro, PAGE, mmap.MAP_SHARED, 0, "producer page and the data twice, read-only"),
        (PAGE + 5 * PAGE, ro, PAGE, mmap.MAP_SHARED, errno.EINVAL, "a page beyond the double-mapped data"),
        (PAGE, ro, 0, mmap.MAP_PRIVATE, errno.EINVAL, "consumer page MAP_PRIVATE"),
    ):
        expect_eq(_mmap_errno(fd, length, prot, offset, flags), want, f"errno of mmap {what}")
    os.close(fd)


def _discard_prog(tgid: int, rb: RingBuf, counters: _bpf.Counters) -> Asm:
    """file_open: reserve 16 bytes {seq, pid_tgid}; discard when seq is odd, submit when even."""
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid)
    next_seq(asm, counters, 0, R8, R7, "other")
    asm.ld_map_fd(R1, rb.fd).mov64(R2, imm=16).mov64(R3, imm=0).call(FN_RINGBUF_RESERVE)
    asm.jmp("jeq", R0, "other", imm=0).mov64(R9, R0).stx(SIZE_DW, R9, 0, R8)
    asm.call(FN_GET_CURRENT_PID_TGID).stx(SIZE_DW, R9, 8, R0)
    asm.mov64(R1, R9).mov64(R2, imm=0).jmp("jset", R8, "odd", imm=1).call(FN_RINGBUF_SUBMIT).ja("other")
    asm.label("odd").call(FN_RINGBUF_DISCARD)
    return asm.ret(0).label("other").ret(0)


@suite.test
def ringbuf_discarded_records_are_skipped_by_the_reader() -> None:
    """bpf_ringbuf_discard leaves its record in the ring with the DISCARD bit: the reader steps over it.

    Four opens: records 0 and 2 submitted, 1 and 3 discarded. The headers show
    all four (length 16, DISCARD on 1 and 3); the reader returns 0 and 2 only
    and its position ends after record 3.
    """
    require()
    span = ringbuf_record_span(16)
    counters = _bpf.Counters(1)
    rb = RingBuf()
    with Worker() as target:
        who = target.pid << 32 | target.pid
        prog = load("file_open", _discard_prog(target.pid, rb, counters))
        link = attach(prog)
        for i in range(4):
            expect_result(target.do("open", "/dev/null"), 0, f"open {i}")
        want_heads = [RingHeader(i * span, 16, False, bool(i & 1)) for i in range(4)]
        expect_eq(rb.headers(), want_heads, "headers of the four records (DISCARD on the odd ones)")
        expect_eq(rb.consume(), [struct.pack("<QQ", i, who) for i in (0, 2)], "records the reader returns")
        expect_eq((rb.consumer_pos, rb.producer_pos), (4 * span, 4 * span), "(consumer, producer) after reading")
        os.close(link)
        os.close(prog)
    rb.close()


# Settings slots of the wakeup program: the flags its next record uses, and which API it uses.
SEQ, FLAGS, API, RESULT, RESERVE_FLAGS, NULLS = range(6)
API_RESERVE, API_OUTPUT = 0, 1


def _wakeup_prog(tgid: int, rb: RingBuf, counters: _bpf.Counters) -> Asm:
    """file_open: a {seq, pid_tgid} record committed with counters[FLAGS], through reserve/submit or output.

    Output's return goes to counters[RESULT]; a reserve that returned NULL
    (reserve flags from counters[RESERVE_FLAGS]) counts in counters[NULLS].
    """
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid)
    next_seq(asm, counters, SEQ, R8, R7, "other")
    load_slot(asm, counters, FLAGS, R7, "other")
    load_slot(asm, counters, API, R9, "other")
    asm.jmp("jeq", R9, "output", imm=API_OUTPUT)
    load_slot(asm, counters, RESERVE_FLAGS, R3, "other")
    asm.ld_map_fd(R1, rb.fd).mov64(R2, imm=16).call(FN_RINGBUF_RESERVE)
    asm.jmp("jeq", R0, "null", imm=0).mov64(R9, R0).stx(SIZE_DW, R9, 0, R8)
    asm.call(FN_GET_CURRENT_PID_TGID).stx(SIZE_DW, R9, 8, R0)
    asm.mov64(R1, R9).mov64(R2, R7).call(FN_RINGBUF_SUBMIT).ja("other")
    asm.label("null").mov64(R9, imm=1)
    store_into(asm, counters, NULLS, R9)
    asm.ja("other")
    asm.label("output").stx(SIZE_DW, R10, -16, R8).call(FN_GET_CURRENT_PID_TGID).stx(SIZE_DW, R10, -8, R0)
    asm.ld_map_fd(R1, rb.fd).mov64(R2, R10).alu64("add", R2, imm=-16).mov64(R3, imm=16).mov64(R4, R7)
    asm.call(FN_RINGBUF_OUTPUT).mov64(R9, R0)
    store_into(asm, counters, RESULT, R9)
    return asm.ret(0).label("other").ret(0)


def _wakeup_case(api: int) -> None:
    name = ("bpf_ringbuf_reserve/submit", "bpf_ringbuf_output")[api]
    counters = _bpf.Counters(6)
    counters[API] = api
    rb = RingBuf()
    with Worker() as target:
        who = target.pid << 32 | target.pid
        prog = load("file_open", _wakeup_prog(target.pid, rb, counters))
        link = attach(prog)
        seq = 0

        def record(flags: int, what: str) -> bytes:
            nonlocal seq
            counters[FLAGS], counters[RESULT] = flags, 1
            expect_result(target.do("open", "/dev/null"), 0, f"open for {what}")
            if api == API_OUTPUT:
                expect_eq(counters[RESULT], 0, f"{name} return for {what}")
            seq += 1
            return struct.pack("<QQ", seq - 1, who)

        first = record(BPF_RB_NO_WAKEUP, "a BPF_RB_NO_WAKEUP record, reader caught up")
        expect_eq(rb.woken(0.5), False, f"{name}: epoll woken by a BPF_RB_NO_WAKEUP record")
        expect_eq(rb.consume(), [first], f"{name}: the BPF_RB_NO_WAKEUP record is readable all the same")
        second = record(0, "a default record, reader caught up")
        expect_eq(rb.woken(10.0), True, f"{name}: epoll woken by a default record when the reader caught up")
        expect_eq(rb.consume(), [second], f"{name}: records after that wakeup")
        expect_eq(rb.woken(0), False, f"{name}: epoll readable with nothing left to read")
        behind = [record(BPF_RB_NO_WAKEUP, "a BPF_RB_NO_WAKEUP record"), record(0, "a default record, reader behind")]
        expect_eq(rb.woken(0.5), False, f"{name}: epoll woken by a default record while the reader is behind")
        forced = record(BPF_RB_FORCE_WAKEUP, "a BPF_RB_FORCE_WAKEUP record, reader behind")
        expect_eq(rb.woken(10.0), True, f"{name}: epoll woken by BPF_RB_FORCE_WAKEUP while the reader is behind")
        expect_eq(rb.consume(), [*behind, forced], f"{name}: the three records, in order")
        if api == API_OUTPUT:
            counters[FLAGS] = 4
            expect_result(target.do("open", "/dev/null"), 0, "open with output flags 4")
            expect_eq(counters[RESULT], u64(-errno.EINVAL), "bpf_ringbuf_output return for flags 4 (unknown)")
        else:
            counters[RESERVE_FLAGS] = 1
            expect_result(target.do("open", "/dev/null"), 0, "open with reserve flags 1")
            expect_eq(counters[NULLS], 1, "bpf_ringbuf_reserve returned NULL for flags 1 (must be 0)")
        expect_eq((rb.consume(), rb.producer_pos), ([], 5 * ringbuf_record_span(16)), "records, producer after that")
        os.close(link)
        os.close(prog)
    rb.close()


@suite.test
def ringbuf_wakeup_flags_decide_when_epoll_wakes_the_reader() -> None:
    """Default commits wake a reader that caught up only; NO_WAKEUP never wakes; FORCE_WAKEUP always does.

    bpf_ringbuf_commit() wakes when the consumer position is the committed
    record's; a reader still behind is not woken again. The same for
    bpf_ringbuf_reserve/submit and bpf_ringbuf_output; output refuses unknown
    flags (EINVAL), reserve returns NULL for any flag.
    """
    require()
    _wakeup_case(API_RESERVE)
    _wakeup_case(API_OUTPUT)
