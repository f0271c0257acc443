"""Minimal BPF loader for LSM programs over the raw bpf() syscall (stdlib only).

Enough to test KRSI (BPF_PROG_TYPE_LSM) without libbpf or clang: a BTF reader
that finds the FUNC id of ``bpf_lsm_<hook>`` in /sys/kernel/btf/vmlinux, a small
eBPF assembler, and thin wrappers over BPF_PROG_LOAD, BPF_LINK_CREATE (with the
BPF_RAW_TRACEPOINT_OPEN fallback), BPF_LINK_DETACH, BPF_OBJ_PIN/GET,
BPF_OBJ_GET_INFO_BY_FD and array/hash maps. Every failure raises BpfError
carrying the raw errno (and the verifier log for loads): the suites pin exact
kernel behaviour, so nothing here retries or translates an error.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass

from _klab import errname, syscall

# --- bpf() commands, types and flags (include/uapi/linux/bpf.h) ---------------

BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_PROG_LOAD = 5
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_LINK_CREATE = 28
BPF_LINK_DETACH = 34

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_PROG_TYPE_LSM = 29
BPF_LSM_MAC = 27
BPF_LINK_TYPE_TRACING = 2
BPF_F_SLEEPABLE = 1 << 4
BPF_PSEUDO_MAP_FD = 1
BPF_ANY = 0

# Kernel-internal errno that bpf() leaks for "no trampoline on this arch".
ENOTSUPP = 524

# Helper ids (enum bpf_func_id).
FN_MAP_LOOKUP_ELEM = 1
FN_MAP_UPDATE_ELEM = 2
FN_GET_CURRENT_PID_TGID = 14

# Larger than any kernel's union bpf_attr we touch; the tail stays zero, which
# the kernel accepts (bpf_check_uarg_tail_zero) on older and newer kernels.
ATTR_SIZE = 160
LOG_SIZE = 1 << 18


class BpfError(OSError):
    """A bpf() command failed; errno is the raw kernel errno, log the verifier log."""

    def __init__(self, op: str, err: int, log: str = "") -> None:
        super().__init__(err, f"{op}: {errname(err)} ({err})")
        self.op = op
        self.log = log

    def __str__(self) -> str:
        tail = f"; verifier log: {self.log.strip()[-600:]}" if self.log.strip() else ""
        return f"{self.op}: {errname(self.errno)} ({self.errno}){tail}"


def _attr() -> ctypes.Array:
    return ctypes.create_string_buffer(ATTR_SIZE)


def _bpf(cmd: int, attr: ctypes.Array, op: str) -> int:
    ret, err = syscall("bpf", cmd, ctypes.addressof(attr), ATTR_SIZE)
    if ret < 0:
        raise BpfError(op, err)
    return ret


# --- BTF ------------------------------------------------------------------------

BTF_PATH = "/sys/kernel/btf/vmlinux"
BTF_MAGIC = 0xEB9F
KIND_FUNC = 12
KIND_FUNC_PROTO = 13

# Bytes of kind-specific data after the 12-byte struct btf_type, as
# (fixed, per-vlen-entry). Unknown kinds are an error: guessing would shift
# every later type id.
_KIND_TRAILER = {
    1: (4, 0),  # INT: u32 encoding
    2: (0, 0),  # PTR
    3: (12, 0),  # ARRAY: struct btf_array
    4: (0, 12),  # STRUCT: btf_member[vlen]
    5: (0, 12),  # UNION
    6: (0, 8),  # ENUM: btf_enum[vlen]
    7: (0, 0),  # FWD
    8: (0, 0),  # TYPEDEF
    9: (0, 0),  # VOLATILE
    10: (0, 0),  # CONST
    11: (0, 0),  # RESTRICT
    12: (0, 0),  # FUNC
    13: (0, 8),  # FUNC_PROTO: btf_param[vlen]
    14: (4, 0),  # VAR: btf_var
    15: (0, 12),  # DATASEC: btf_var_secinfo[vlen]
    16: (0, 0),  # FLOAT
    17: (4, 0),  # DECL_TAG: btf_decl_tag
    18: (0, 0),  # TYPE_TAG
    19: (0, 12),  # ENUM64: btf_enum64[vlen]
}


@dataclass(frozen=True)
class BtfFunc:
    """A FUNC type found in BTF: its id, its FUNC_PROTO id and that proto's parameter count."""

    name: str
    type_id: int
    proto_id: int
    nr_args: int


class BtfError(Exception):
    """The BTF blob is missing or malformed."""


def btf_find_funcs(names: list[str] | set[str], path: str = BTF_PATH) -> dict[str, BtfFunc]:
    """Find the FUNC types named `names` in one pass over the BTF type section.

    Only the names asked for are resolved (vmlinux BTF has ~10^5 types and
    this runs under TCG too). Missing names are simply absent from the result.
    """
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 24:
        raise BtfError(f"{path}: {len(blob)} bytes, too short for a BTF header")
    magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<HBBIIIII", blob, 0)
    if magic != BTF_MAGIC or version != 1:
        raise BtfError(f"{path}: magic {magic:#x} version {version}, expected {BTF_MAGIC:#x} version 1")
    types_start, strs_start = hdr_len + type_off, hdr_len + str_off
    if types_start + type_len > len(blob) or strs_start + str_len > len(blob):
        raise BtfError(f"{path}: sections overrun the {len(blob)}-byte blob")
    strings = blob[strs_start : strs_start + str_len]
    wanted = _string_offsets(strings, names)
    funcs: dict[int, tuple[str, int, int]] = {}
    protos: dict[int, int] = {}
    unpack = struct.Struct("<III").unpack_from
    pos, end, type_id = types_start, types_start + type_len, 1
    while pos < end:
        name_off, info, size_or_type = unpack(blob, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        if kind == KIND_FUNC and name_off in wanted:
            funcs[type_id] = (wanted[name_off], size_or_type, pos)
        elif kind == KIND_FUNC_PROTO:
            protos[type_id] = vlen
        trailer = _KIND_TRAILER.get(kind)
        if trailer is None:
            raise BtfError(f"{path}: type {type_id} has unknown kind {kind} at offset {pos - types_start}")
        pos += 12 + trailer[0] + trailer[1] * vlen
        type_id += 1
    if pos != end:
        raise BtfError(f"{path}: type section ends at {pos - types_start}, header says {type_len}")
    return {
        name: BtfFunc(name, tid, proto, protos.get(proto, -1))
        for tid, (name, proto, _) in sorted(funcs.items())
        if proto in protos
    }


def _string_offsets(strings: bytes, names: list[str] | set[str]) -> dict[int, str]:
    """Map the string-section offset of each wanted name to that name."""
    out: dict[int, str] = {}
    for name in names:
        needle = b"\0" + name.encode() + b"\0"
        start = 0
        while (hit := strings.find(needle, start)) >= 0:
            out[hit + 1] = name
            start = hit + 1
    return out


# --- eBPF assembler ---------------------------------------------------------------

R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)

_LD, _LDX, _ST, _STX, _ALU, _JMP, _JMP32, _ALU64 = range(8)
SIZE_W, SIZE_H, SIZE_B, SIZE_DW = 0x00, 0x08, 0x10, 0x18
_MODE_IMM, _MODE_MEM, _MODE_ATOMIC = 0x00, 0x60, 0xC0
_SRC_K, _SRC_X = 0x00, 0x08

ALU_OPS = {
    "add": 0x00,
    "sub": 0x10,
    "mul": 0x20,
    "div": 0x30,
    "or": 0x40,
    "and": 0x50,
    "lsh": 0x60,
    "rsh": 0x70,
    "mod": 0x90,
    "xor": 0xA0,
    "mov": 0xB0,
    "arsh": 0xC0,
}
JMP_OPS = {
    "jeq": 0x10,
    "jgt": 0x20,
    "jge": 0x30,
    "jset": 0x40,
    "jne": 0x50,
    "jsgt": 0x60,
    "jsge": 0x70,
    "jlt": 0xA0,
    "jle": 0xB0,
    "jslt": 0xC0,
    "jsle": 0xD0,
}
_JA, _CALL, _EXIT = 0x00, 0x80, 0x90


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


class Asm:
    """Build an eBPF program; jumps name labels, resolved when assemble() is called.

    Methods return self so programs read top to bottom:
    ``Asm().call(FN_GET_CURRENT_PID_TGID).alu64("rsh", R0, imm=32)...``.
    """

    def __init__(self) -> None:
        self._slots: list[bytes | tuple[int, int, int, int, str]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> Asm:
        if name in self._labels:
            raise ValueError(f"label {name!r} defined twice")
        self._labels[name] = len(self._slots)
        return self

    def alu64(self, op: str, dst: int, src: int | None = None, imm: int = 0) -> Asm:
        """64-bit ALU: dst op= src (register) or dst op= imm when src is None."""
        mode = _SRC_K if src is None else _SRC_X
        self._slots.append(_insn(_ALU64 | ALU_OPS[op] | mode, dst, src or 0, 0, imm))
        return self

    def alu32(self, op: str, dst: int, src: int | None = None, imm: int = 0) -> Asm:
        mode = _SRC_K if src is None else _SRC_X
        self._slots.append(_insn(_ALU | ALU_OPS[op] | mode, dst, src or 0, 0, imm))
        return self

    def mov64(self, dst: int, src: int | None = None, imm: int = 0) -> Asm:
        return self.alu64("mov", dst, src, imm)

    def ld_imm64(self, dst: int, value: int, src: int = 0) -> Asm:
        """Two-slot 64-bit immediate load; src=BPF_PSEUDO_MAP_FD makes value a map fd."""
        value &= (1 << 64) - 1
        lo, hi = struct.unpack("<ii", struct.pack("<Q", value))
        self._slots.append(_insn(_LD | SIZE_DW | _MODE_IMM, dst, src, 0, lo))
        self._slots.append(_insn(0, 0, 0, 0, hi))
        return self

    def ld_map_fd(self, dst: int, map_fd: int) -> Asm:
        return self.ld_imm64(dst, map_fd, BPF_PSEUDO_MAP_FD)

    def ldx(self, size: int, dst: int, src: int, off: int) -> Asm:
        """dst = *(size *)(src + off)"""
        self._slots.append(_insn(_LDX | size | _MODE_MEM, dst, src, off))
        return self

    def stx(self, size: int, dst: int, off: int, src: int) -> Asm:
        """*(size *)(dst + off) = src"""
        self._slots.append(_insn(_STX | size | _MODE_MEM, dst, src, off))
        return self

    def st(self, size: int, dst: int, off: int, imm: int) -> Asm:
        """*(size *)(dst + off) = imm"""
        self._slots.append(_insn(_ST | size | _MODE_MEM, dst, 0, off, imm))
        return self

    def atomic_add(self, size: int, dst: int, off: int, src: int) -> Asm:
        """lock *(size *)(dst + off) += src (BPF_ATOMIC BPF_ADD, formerly BPF_XADD)."""
        self._slots.append(_insn(_STX | size | _MODE_ATOMIC, dst, src, off, 0x00))
        return self

    def jmp(self, op: str, dst: int, target: str, src: int | None = None, imm: int = 0) -> Asm:
        """if dst op src/imm goto target (64-bit compare)."""
        mode = _SRC_K if src is None else _SRC_X
        self._slots.append((_JMP | JMP_OPS[op] | mode, dst, src or 0, imm, target))
        return self

    def ja(self, target: str) -> Asm:
        self._slots.append((_JMP | _JA, 0, 0, 0, target))
        return self

    def call(self, helper: int) -> Asm:
        self._slots.append(_insn(_JMP | _CALL, 0, 0, 0, helper))
        return self

    def exit(self) -> Asm:
        self._slots.append(_insn(_JMP | _EXIT))
        return self

    def ret(self, value: int) -> Asm:
        """r0 = value; exit"""
        return self.mov64(R0, imm=value).exit()

    def assemble(self) -> bytes:
        out = []
        for pc, slot in enumerate(self._slots):
            if isinstance(slot, bytes):
                out.append(slot)
                continue
            code, dst, src, imm, target = slot
            if target not in self._labels:
                raise ValueError(f"undefined label {target!r}")
            out.append(_insn(code, dst, src, self._labels[target] - pc - 1, imm))
        return b"".join(out)


# --- programs -------------------------------------------------------------------


def prog_load(
    insns: bytes,
    attach_btf_id: int,
    *,
    license: str = "GPL",
    sleepable: bool = False,
    name: str = "klab",
    prog_type: int = BPF_PROG_TYPE_LSM,
    attach_type: int = BPF_LSM_MAC,
) -> int:
    """BPF_PROG_LOAD an LSM program; return its fd or raise BpfError with the verifier log.

    The log (log_level 1) is requested on the one and only attempt so the
    error the test sees is the one the kernel returned, not a retry's.
    """
    if len(insns) % 8:
        raise ValueError("instruction bytes must be a multiple of 8")
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    log = ctypes.create_string_buffer(LOG_SIZE)
    attr = _attr()
    struct.pack_into(
        "<IIQQIIQ",
        attr,
        0,
        prog_type,
        len(insns) // 8,
        ctypes.addressof(code),
        ctypes.addressof(lic),
        1,
        LOG_SIZE,
        ctypes.addressof(log),
    )
    struct.pack_into("<I", attr, 44, BPF_F_SLEEPABLE if sleepable else 0)
    struct.pack_into("16s", attr, 48, name.encode()[:15])
    struct.pack_into("<I", attr, 68, attach_type)
    struct.pack_into("<I", attr, 108, attach_btf_id)
    ret, err = syscall("bpf", BPF_PROG_LOAD, ctypes.addressof(attr), ATTR_SIZE)
    if ret < 0:
        raise BpfError("BPF_PROG_LOAD", err, log.value.decode(errors="replace"))
    return ret


def link_create(prog_fd: int, attach_type: int = BPF_LSM_MAC) -> int:
    """Attach an LSM program; return the link fd.

    BPF_LINK_CREATE is tried first. Kernels whose link_create() does not know
    tracing/LSM programs answer EINVAL; BPF_RAW_TRACEPOINT_OPEN with a NULL
    name is the older way to get the same tracing link.
    """
    attr = _attr()
    struct.pack_into("<IIII", attr, 0, prog_fd, 0, attach_type, 0)
    try:
        return _bpf(BPF_LINK_CREATE, attr, "BPF_LINK_CREATE")
    except BpfError as exc:
        if exc.errno != errno.EINVAL:
            raise
    return raw_tracepoint_open(prog_fd)


def raw_tracepoint_open(prog_fd: int) -> int:
    attr = _attr()
    struct.pack_into("<QI", attr, 0, 0, prog_fd)
    return _bpf(BPF_RAW_TRACEPOINT_OPEN, attr, "BPF_RAW_TRACEPOINT_OPEN")


def link_detach(link_fd: int) -> tuple[int, int]:
    """BPF_LINK_DETACH, returned as the raw (ret, errno): the tests assert its errno."""
    attr = _attr()
    struct.pack_into("<I", attr, 0, link_fd)
    return syscall("bpf", BPF_LINK_DETACH, ctypes.addressof(attr), ATTR_SIZE)


def obj_pin(fd: int, path: str) -> None:
    name = ctypes.create_string_buffer(path.encode())
    attr = _attr()
    struct.pack_into("<QI", attr, 0, ctypes.addressof(name), fd)
    _bpf(BPF_OBJ_PIN, attr, f"BPF_OBJ_PIN({path})")


def obj_get(path: str) -> int:
    name = ctypes.create_string_buffer(path.encode())
    attr = _attr()
    struct.pack_into("<Q", attr, 0, ctypes.addressof(name))
    return _bpf(BPF_OBJ_GET, attr, f"BPF_OBJ_GET({path})")


def obj_info(fd: int, size: int = 256) -> bytes:
    """BPF_OBJ_GET_INFO_BY_FD into a zeroed buffer; returns the bytes the kernel filled."""
    info = ctypes.create_string_buffer(size)
    attr = _attr()
    struct.pack_into("<IIQ", attr, 0, fd, size, ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr, "BPF_OBJ_GET_INFO_BY_FD")
    filled = struct.unpack_from("<I", attr, 4)[0]
    return info.raw[:filled]


@dataclass(frozen=True)
class LinkInfo:
    """The head of struct bpf_link_info plus its tracing member."""

    type: int
    id: int
    prog_id: int
    attach_type: int
    target_obj_id: int
    target_btf_id: int


def link_info(fd: int) -> LinkInfo:
    raw = obj_info(fd).ljust(28, b"\0")
    link_type, link_id, prog_id = struct.unpack_from("<III", raw, 0)
    attach_type, target_obj_id, target_btf_id = struct.unpack_from("<III", raw, 16)
    return LinkInfo(link_type, link_id, prog_id, attach_type, target_obj_id, target_btf_id)


def prog_info(fd: int) -> tuple[int, int]:
    """(prog_type, prog_id) from struct bpf_prog_info."""
    prog_type, prog_id = struct.unpack_from("<II", obj_info(fd), 0)
    return prog_type, prog_id


def fd_kind(fd: int) -> str:
    """'link', 'prog' or 'map', from the keys of /proc/self/fdinfo/FD.

    The anon inode name is no guide: the kernel calls a new link "bpf_link"
    (bpf_link_prime) but one reopened by BPF_OBJ_GET "bpf-link" (bpf_link_new_fd).
    """
    with open(f"/proc/self/fdinfo/{fd}") as f:
        keys = {line.split(":", 1)[0] for line in f}
    for key, kind in (("link_type", "link"), ("prog_type", "prog"), ("map_type", "map")):
        if key in keys:
            return kind
    return "other: " + os.readlink(f"/proc/self/fd/{fd}")


# --- maps -------------------------------------------------------------------------


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int, name: str = "klab") -> int:
    attr = _attr()
    struct.pack_into("<IIIII", attr, 0, map_type, key_size, value_size, max_entries, 0)
    struct.pack_into("16s", attr, 28, name.encode()[:15])
    return _bpf(BPF_MAP_CREATE, attr, "BPF_MAP_CREATE")


def map_lookup(map_fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value stored under key, or None when the kernel says ENOENT."""
    kbuf = ctypes.create_string_buffer(key, len(key))
    vbuf = ctypes.create_string_buffer(value_size)
    attr = _attr()
    struct.pack_into("<IIQQ", attr, 0, map_fd, 0, ctypes.addressof(kbuf), ctypes.addressof(vbuf))
    try:
        _bpf(BPF_MAP_LOOKUP_ELEM, attr, "BPF_MAP_LOOKUP_ELEM")
    except BpfError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise
    return vbuf.raw


def map_update(map_fd: int, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
    kbuf = ctypes.create_string_buffer(key, len(key))
    vbuf = ctypes.create_string_buffer(value, len(value))
    attr = _attr()
    struct.pack_into("<IIQQQ", attr, 0, map_fd, 0, ctypes.addressof(kbuf), ctypes.addressof(vbuf), flags)
    _bpf(BPF_MAP_UPDATE_ELEM, attr, "BPF_MAP_UPDATE_ELEM")


class Counters:
    """An ARRAY map of u64 counters, one slot per program that counts."""

    def __init__(self, slots: int = 8) -> None:
        self.slots = slots
        self.fd = map_create(BPF_MAP_TYPE_ARRAY, 4, 8, slots, "klab_counters")

    def __getitem__(self, slot: int) -> int:
        raw = map_lookup(self.fd, struct.pack("<I", slot), 8)
        if raw is None:
            raise BpfError(f"array slot {slot} missing", errno.ENOENT)
        return struct.unpack("<Q", raw)[0]

    def close(self) -> None:
        os.close(self.fd)
