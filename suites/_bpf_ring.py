"""The two transports a BPF policy sends records to user space over, read in Python (stdlib only).

RingBuf is a BPF_MAP_TYPE_RINGBUF read the way libbpf's ring_buffer consumer
reads it (tools/lib/bpf/ringbuf.c): the consumer page mapped read-write at
offset 0, the producer page and the data read-only after it (the kernel maps
the data pages twice in a row, so a record that wraps around the end is still
contiguous); each record is an 8-byte header (length with the BUSY and
DISCARD bits, page offset) then the sample, padded to 8 bytes; the reader
stops at a BUSY record, skips DISCARD ones, and publishes its position after
each. Readiness is epoll on the map fd.

PerfRing is a PERF_COUNT_SW_BPF_OUTPUT software event on one CPU opened with
perf_event_open (the fd a BPF_MAP_TYPE_PERF_EVENT_ARRAY slot holds), its ring
mmap'd and read through perf_event_mmap_page's data_head/data_tail:
PERF_RECORD_SAMPLE with PERF_SAMPLE_RAW (u32 size, then the data padded so the
record stays 8-byte aligned) and PERF_RECORD_LOST (id, lost count).

Memory ordering: the suites read a ring after the program that wrote it has
returned (the worker's syscall answered), so plain loads see its stores.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import select
import struct
from dataclasses import dataclass

import _bpf
from _klab import Failure, errname, syscall

PAGE = mmap.PAGESIZE

# include/uapi/linux/bpf.h
BPF_RINGBUF_BUSY_BIT = 1 << 31
BPF_RINGBUF_DISCARD_BIT = 1 << 30
BPF_RINGBUF_HDR_SZ = 8
BPF_RB_NO_WAKEUP, BPF_RB_FORCE_WAKEUP = 1, 2
BPF_RB_AVAIL_DATA, BPF_RB_RING_SIZE, BPF_RB_CONS_POS, BPF_RB_PROD_POS = 0, 1, 2, 3
BPF_F_CURRENT_CPU = 0xFFFFFFFF

# include/uapi/linux/perf_event.h
PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_ATTR_SIZE_VER5 = 112
PERF_ATTR_FLAG_WATERMARK = 1 << 14
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9
# struct perf_event_mmap_page: data_head, data_tail, data_offset, data_size
_MMAP_DATA_HEAD, _MMAP_DATA_TAIL, _MMAP_DATA_OFFSET, _MMAP_DATA_SIZE = 1024, 1032, 1040, 1048


def round8(n: int) -> int:
    return (n + 7) & ~7


def ringbuf_record_span(size: int) -> int:
    """Bytes one record of `size` sample bytes takes in the ring: header, sample, padding to 8."""
    return round8(size + BPF_RINGBUF_HDR_SZ)


@dataclass(frozen=True)
class RingHeader:
    """A record header as the reader finds it at position pos."""

    pos: int
    length: int  # the sample size, BUSY/DISCARD bits cleared
    busy: bool
    discarded: bool


class RingBuf:
    """A BPF ring buffer map and its reader."""

    def __init__(self, size: int = PAGE, name: str = "klab_rb") -> None:
        self.size = size
        self.mask = size - 1
        self.fd = _bpf.map_create(_bpf.BPF_MAP_TYPE_RINGBUF, 0, 0, size, name)
        self.consumer = mmap.mmap(self.fd, PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self.producer = mmap.mmap(self.fd, PAGE + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=PAGE)
        self.epoll = select.epoll()
        self.epoll.register(self.fd, select.EPOLLIN)

    @property
    def consumer_pos(self) -> int:
        return struct.unpack_from("<Q", self.consumer, 0)[0]

    @property
    def producer_pos(self) -> int:
        return struct.unpack_from("<Q", self.producer, 0)[0]

    def header(self, pos: int) -> RingHeader:
        word = struct.unpack_from("<I", self.producer, PAGE + (pos & self.mask))[0]
        return RingHeader(
            pos,
            word & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT),
            bool(word & BPF_RINGBUF_BUSY_BIT),
            bool(word & BPF_RINGBUF_DISCARD_BIT),
        )

    def headers(self) -> list[RingHeader]:
        """Every header from the consumer to the producer position, without consuming (stops at a BUSY one)."""
        out, pos, end = [], self.consumer_pos, self.producer_pos
        while pos < end:
            head = self.header(pos)
            out.append(head)
            if head.busy:
                break
            pos += ringbuf_record_span(head.length)
        return out

    def consume(self) -> list[bytes]:
        """libbpf's ringbuf_process_ring(): the committed samples in order; position published after each."""
        samples: list[bytes] = []
        pos = self.consumer_pos
        while True:
            end = self.producer_pos
            if pos >= end:
                return samples
            head = self.header(pos)
            if head.busy:  # not committed yet: stop here, the producer will wake us
                return samples
            start = PAGE + (pos & self.mask) + BPF_RINGBUF_HDR_SZ
            if not head.discarded:
                samples.append(bytes(self.producer[start : start + head.length]))
            pos += ringbuf_record_span(head.length)
            struct.pack_into("<Q", self.consumer, 0, pos)

    def woken(self, timeout: float) -> bool:
        """Did epoll report the map readable within `timeout` seconds?"""
        return bool(self.epoll.poll(timeout))

    def close(self) -> None:
        self.epoll.close()
        self.consumer.close()
        self.producer.close()
        os.close(self.fd)


@dataclass(frozen=True)
class PerfRecord:
    """One record from a perf ring: a SAMPLE's raw data (size as the kernel reported it) or a LOST count."""

    type: int
    raw_size: int = 0
    data: bytes = b""
    lost: int = 0


def perf_event_open(cpu: int, config: int = PERF_COUNT_SW_BPF_OUTPUT, wakeup: int = 1, watermark: bool = False) -> int:
    """A software event on `cpu` (any task), sampling raw data, enabled; wakeup is wakeup_events or, with
    watermark, wakeup_watermark in bytes."""
    attr = ctypes.create_string_buffer(PERF_ATTR_SIZE_VER5)
    struct.pack_into("<IIQQQ", attr, 0, PERF_TYPE_SOFTWARE, PERF_ATTR_SIZE_VER5, config, 1, PERF_SAMPLE_RAW)
    struct.pack_into("<QI", attr, 40, PERF_ATTR_FLAG_WATERMARK if watermark else 0, wakeup)
    fd, err = syscall("perf_event_open", ctypes.addressof(attr), -1, cpu, -1, PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        raise Failure(f"perf_event_open(software event {config}, cpu {cpu}): {errname(err)} ({err})")
    return fd


class PerfRing:
    """One CPU's PERF_COUNT_SW_BPF_OUTPUT event and its mmap'd ring of `pages` data pages."""

    def __init__(self, cpu: int, pages: int = 1, wakeup: int = 1, watermark: bool = False) -> None:
        self.cpu = cpu
        self.fd = perf_event_open(cpu, wakeup=wakeup, watermark=watermark)
        self.map = mmap.mmap(self.fd, (1 + pages) * PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.data_offset, self.data_size = struct.unpack_from("<QQ", self.map, _MMAP_DATA_OFFSET)
        self.epoll = select.epoll()
        self.epoll.register(self.fd, select.EPOLLIN)

    @property
    def head(self) -> int:
        return struct.unpack_from("<Q", self.map, _MMAP_DATA_HEAD)[0]

    @property
    def tail(self) -> int:
        return struct.unpack_from("<Q", self.map, _MMAP_DATA_TAIL)[0]

    def _read(self, pos: int, n: int) -> bytes:
        """n bytes at ring position pos (the perf ring is mapped once: wrap by hand)."""
        off = pos % self.data_size
        first = min(n, self.data_size - off)
        base = self.data_offset
        chunk = bytes(self.map[base + off : base + off + first])
        return chunk + bytes(self.map[base : base + n - first])

    def records(self) -> list[PerfRecord]:
        """Every record between data_tail and data_head; data_tail moves to data_head afterwards."""
        out: list[PerfRecord] = []
        pos, head = self.tail, self.head
        while pos < head:
            rtype, _misc, size = struct.unpack("<IHH", self._read(pos, 8))
            body = self._read(pos + 8, size - 8)
            if rtype == PERF_RECORD_SAMPLE:
                raw_size = struct.unpack_from("<I", body, 0)[0]
                out.append(PerfRecord(rtype, raw_size, body[4 : 4 + raw_size]))
            elif rtype == PERF_RECORD_LOST:
                _id, lost = struct.unpack_from("<QQ", body, 0)
                out.append(PerfRecord(rtype, lost=lost))
            else:
                out.append(PerfRecord(rtype, data=body))
            if size < 8:
                raise Failure(f"perf ring of cpu {self.cpu}: record of size {size} at {pos}")
            pos += size
        struct.pack_into("<Q", self.map, _MMAP_DATA_TAIL, pos)
        return out

    def woken(self, timeout: float) -> bool:
        return bool(self.epoll.poll(timeout))

    def close(self) -> None:
        self.epoll.close()
        self.map.close()
        os.close(self.fd)


class PerfEventArray:
    """A BPF_MAP_TYPE_PERF_EVENT_ARRAY with one slot per possible CPU, the rings of `cpus` in their slots."""

    def __init__(self, cpus: list[int], slots: int, pages: int = 1, wakeup: int = 1, watermark: bool = False) -> None:
        self.fd = _bpf.map_create(_bpf.BPF_MAP_TYPE_PERF_EVENT_ARRAY, 4, 4, slots, "klab_perf")
        self.rings = {cpu: PerfRing(cpu, pages, wakeup, watermark) for cpu in cpus}
        for cpu, ring in self.rings.items():
            _bpf.map_update(self.fd, struct.pack("<I", cpu), struct.pack("<I", ring.fd))

    def close(self) -> None:
        for ring in self.rings.values():
            ring.close()
        os.close(self.fd)
