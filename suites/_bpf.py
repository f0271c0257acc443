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

import array
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
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_BTF_LOAD = 18
BPF_LINK_CREATE = 28
BPF_LINK_UPDATE = 29
BPF_LINK_GET_FD_BY_ID = 30
BPF_LINK_DETACH = 34

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PROG_ARRAY = 3
BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4
BPF_MAP_TYPE_RINGBUF = 27
BPF_MAP_TYPE_INODE_STORAGE = 28
BPF_MAP_TYPE_TASK_STORAGE = 29
BPF_PROG_TYPE_LSM = 29
BPF_LSM_MAC = 27
BPF_LSM_CGROUP = 43
BPF_LINK_TYPE_TRACING = 2
BPF_LINK_TYPE_CGROUP = 3
BPF_F_SLEEPABLE = 1 << 4
BPF_F_ALLOW_MULTI = 1 << 1
BPF_F_REPLACE = 1 << 2
BPF_F_QUERY_EFFECTIVE = 1 << 0
BPF_F_RDONLY = 1 << 3  # BPF_OBJ_GET file_flags
BPF_PSEUDO_MAP_FD = 1
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_EXIST = 2
BPF_F_LOCK = 4
BPF_F_NO_PREALLOC = 1  # map_flags; local storage maps must have it
BPF_LOCAL_STORAGE_GET_F_CREATE = 1

# Kernel-internal errno that bpf() leaks for "no trampoline on this arch".
ENOTSUPP = 524

# Helper ids (enum bpf_func_id).
FN_MAP_LOOKUP_ELEM = 1
FN_MAP_UPDATE_ELEM = 2
FN_MAP_DELETE_ELEM = 3
FN_TAIL_CALL = 12
FN_GET_CURRENT_PID_TGID = 14
FN_GET_CURRENT_UID_GID = 15
FN_GET_CURRENT_COMM = 16
FN_PERF_EVENT_OUTPUT = 25
FN_SETSOCKOPT = 49
FN_PROBE_READ_USER = 112
FN_PROBE_READ_KERNEL_STR = 115
FN_RINGBUF_OUTPUT = 130
FN_RINGBUF_RESERVE = 131
FN_RINGBUF_SUBMIT = 132
FN_RINGBUF_DISCARD = 133
FN_RINGBUF_QUERY = 134
FN_INODE_STORAGE_GET = 145
FN_D_PATH = 147
FN_COPY_FROM_USER = 148  # might sleep: sleepable programs only
FN_TASK_STORAGE_GET = 156
FN_TASK_STORAGE_DELETE = 157
FN_GET_CURRENT_TASK_BTF = 158
FN_BPRM_OPTS_SET = 159
FN_GET_RETVAL = 186  # cgroup programs (BPF_LSM_CGROUP among them)
FN_SET_RETVAL = 187

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
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 8, 9, 10, 11
KIND_FUNC = 12
KIND_FUNC_PROTO = 13
KIND_FLOAT, KIND_TYPE_TAG, KIND_ENUM64 = 16, 18, 19

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


@dataclass(frozen=True)
class BtfMember:
    """Where a struct member lives: byte offset from the start of the outer struct, and its size in bytes."""

    offset: int
    size: int


class BtfError(Exception):
    """The BTF blob is missing or malformed."""


class Btf:
    """vmlinux BTF, read in one pass: the FUNC and STRUCT types asked for by name, and every type's position.

    Only the names asked for are indexed (vmlinux BTF has ~10^5 types and this
    runs under TCG too); positions of all types are kept so that member lookups
    can follow anonymous structs/unions and typedefs afterwards without a
    second pass. The verifier checks BTF-typed loads against the member layout,
    so the programs of the suite find offsets here by name, never hard-coded.
    """

    def __init__(self, funcs: list[str] | set[str], structs: list[str] | set[str] = (), path: str = BTF_PATH) -> None:
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
        self.path = path
        self._blob = blob
        self._strs = strs_start
        strings = blob[strs_start : strs_start + str_len]
        want_funcs = _string_offsets(strings, funcs)
        want_structs = _string_offsets(strings, structs)
        found_funcs: dict[int, tuple[str, int]] = {}
        self.structs: dict[str, int] = {}
        self._pos = array.array("I", [0])  # type id 0 is void
        protos: dict[int, int] = {}
        unpack = struct.Struct("<III").unpack_from
        pos, end, type_id = types_start, types_start + type_len, 1
        positions = self._pos
        while pos < end:
            positions.append(pos)
            name_off, info, size_or_type = unpack(blob, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            if kind == KIND_FUNC and name_off in want_funcs:
                found_funcs[type_id] = (want_funcs[name_off], size_or_type)
            elif kind == KIND_FUNC_PROTO:
                protos[type_id] = vlen
            elif kind == KIND_STRUCT and name_off in want_structs and vlen:
                self.structs.setdefault(want_structs[name_off], type_id)
            trailer = _KIND_TRAILER.get(kind)
            if trailer is None:
                raise BtfError(f"{path}: type {type_id} has unknown kind {kind} at offset {pos - types_start}")
            pos += 12 + trailer[0] + trailer[1] * vlen
            type_id += 1
        if pos != end:
            raise BtfError(f"{path}: type section ends at {pos - types_start}, header says {type_len}")
        self.funcs = {
            name: BtfFunc(name, tid, proto, protos[proto])
            for tid, (name, proto) in sorted(found_funcs.items())
            if proto in protos
        }

    def _type(self, type_id: int) -> tuple[int, int, int, int, int]:
        """(kind, vlen, kind_flag, size_or_type, position) of a type id."""
        if not 0 < type_id < len(self._pos):
            raise BtfError(f"{self.path}: type id {type_id} out of range")
        pos = self._pos[type_id]
        _name, info, size_or_type = struct.unpack_from("<III", self._blob, pos)
        return (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, size_or_type, pos

    def _name(self, name_off: int) -> str:
        end = self._blob.index(b"\0", self._strs + name_off)
        return self._blob[self._strs + name_off : end].decode()

    def _resolve(self, type_id: int) -> int:
        """Skip typedef/volatile/const/restrict/type_tag to the underlying type id."""
        while True:
            kind, _vlen, _kflag, target, _pos = self._type(type_id)
            if kind not in (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG):
                return type_id
            type_id = target

    def _size(self, type_id: int) -> int:
        kind, _vlen, _kflag, size_or_type, pos = self._type(self._resolve(type_id))
        if kind == KIND_PTR:
            return 8
        if kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_FLOAT):
            return size_or_type
        if kind == KIND_ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", self._blob, pos + 12)
            return self._size(elem) * nelems
        raise BtfError(f"{self.path}: type {type_id} (kind {kind}) has no size")

    def _find_member(self, type_id: int, name: str) -> tuple[int, int] | None:
        """(bit offset, member type id) of `name` in a struct/union, looking inside anonymous members."""
        kind, vlen, kflag, _size, pos = self._type(self._resolve(type_id))
        if kind not in (KIND_STRUCT, KIND_UNION):
            raise BtfError(f"{self.path}: type {type_id} is kind {kind}, not a struct or union")
        for i in range(vlen):
            name_off, member_type, offset = struct.unpack_from("<III", self._blob, pos + 12 + 12 * i)
            bits = offset & 0xFFFFFF if kflag else offset
            if name_off and self._name(name_off) == name:
                return bits, member_type
            if not name_off:  # anonymous struct/union: its members belong to the outer one
                inner = self._find_member(member_type, name)
                if inner is not None:
                    return bits + inner[0], inner[1]
        return None

    def member(self, struct_name: str, member: str) -> BtfMember:
        """Byte offset and size of struct_name.member (anonymous structs/unions looked through)."""
        if struct_name not in self.structs:
            raise BtfError(f"{self.path}: struct {struct_name} not found (was it asked for?)")
        found = self._find_member(self.structs[struct_name], member)
        if found is None:
            raise BtfError(f"{self.path}: struct {struct_name} has no member {member}")
        bits, member_type = found
        if bits % 8:
            raise BtfError(f"{self.path}: {struct_name}.{member} is a bitfield")
        return BtfMember(bits // 8, self._size(member_type))


def btf_find_funcs(names: list[str] | set[str], path: str = BTF_PATH) -> dict[str, BtfFunc]:
    """Find the FUNC types named `names` in one pass over the BTF type section.

    Missing names are simply absent from the result.
    """
    return Btf(names, path=path).funcs


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

    def jmp32(self, op: str, dst: int, target: str, src: int | None = None, imm: int = 0) -> Asm:
        """if (u32/s32) dst op src/imm goto target: compares the low 32 bits only (int arguments)."""
        mode = _SRC_K if src is None else _SRC_X
        self._slots.append((_JMP32 | JMP_OPS[op] | mode, dst, src or 0, imm, target))
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


def link_create(prog_fd: int, attach_type: int = BPF_LSM_MAC, target_fd: int = 0) -> int:
    """Attach a program through BPF_LINK_CREATE; return the link fd.

    For LSM (BPF_LSM_MAC) programs, kernels whose link_create() does not know
    tracing/LSM programs answer EINVAL; BPF_RAW_TRACEPOINT_OPEN with a NULL
    name is the older way to get the same tracing link. Other attach types
    (BPF_LSM_CGROUP: target_fd is the cgroup) have no fallback.
    """
    attr = _attr()
    struct.pack_into("<IIII", attr, 0, prog_fd, target_fd, attach_type, 0)
    try:
        return _bpf(BPF_LINK_CREATE, attr, "BPF_LINK_CREATE")
    except BpfError as exc:
        if exc.errno != errno.EINVAL or attach_type != BPF_LSM_MAC:
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


def obj_get(path: str, file_flags: int = 0) -> int:
    name = ctypes.create_string_buffer(path.encode())
    attr = _attr()
    struct.pack_into("<QII", attr, 0, ctypes.addressof(name), 0, file_flags)
    return _bpf(BPF_OBJ_GET, attr, f"BPF_OBJ_GET({path})")


def prog_get_fd_by_id(prog_id: int) -> int:
    attr = _attr()
    struct.pack_into("<I", attr, 0, prog_id)
    return _bpf(BPF_PROG_GET_FD_BY_ID, attr, f"BPF_PROG_GET_FD_BY_ID({prog_id})")


def link_get_fd_by_id(link_id: int) -> int:
    attr = _attr()
    struct.pack_into("<I", attr, 0, link_id)
    return _bpf(BPF_LINK_GET_FD_BY_ID, attr, f"BPF_LINK_GET_FD_BY_ID({link_id})")


# --- cgroup attachment (BPF_LSM_CGROUP) -------------------------------------------


def prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0, replace_fd: int = 0) -> None:
    """BPF_PROG_ATTACH (legacy cgroup attach; replace_fd is used with BPF_F_REPLACE)."""
    attr = _attr()
    struct.pack_into("<IIIII", attr, 0, target_fd, prog_fd, attach_type, flags, replace_fd)
    _bpf(BPF_PROG_ATTACH, attr, "BPF_PROG_ATTACH")


def prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    attr = _attr()
    struct.pack_into("<III", attr, 0, target_fd, prog_fd, attach_type)
    _bpf(BPF_PROG_DETACH, attr, "BPF_PROG_DETACH")


def prog_query(target_fd: int, attach_type: int, query_flags: int = 0, max_ids: int = 16) -> list[int]:
    """BPF_PROG_QUERY: the ids of the programs attached (or effective, with BPF_F_QUERY_EFFECTIVE).

    BPF_LSM_CGROUP queries that ask for ids must pass a prog_attach_flags
    buffer too (the kernel answers EINVAL otherwise); effective queries must not.
    """
    ids = (ctypes.c_uint32 * max_ids)()
    flags = (ctypes.c_uint32 * max_ids)()
    effective = bool(query_flags & BPF_F_QUERY_EFFECTIVE)
    attr = _attr()
    struct.pack_into("<IIIIQI", attr, 0, target_fd, attach_type, query_flags, 0, ctypes.addressof(ids), max_ids)
    struct.pack_into("<Q", attr, 32, 0 if effective else ctypes.addressof(flags))
    _bpf(BPF_PROG_QUERY, attr, "BPF_PROG_QUERY")
    count = struct.unpack_from("<I", attr, 24)[0]
    return list(ids[: min(count, max_ids)])


def link_update(link_fd: int, new_prog_fd: int, old_prog_fd: int | None = None) -> None:
    """BPF_LINK_UPDATE; with old_prog_fd, BPF_F_REPLACE (the link must still hold that program)."""
    attr = _attr()
    flags = 0 if old_prog_fd is None else BPF_F_REPLACE
    struct.pack_into("<IIII", attr, 0, link_fd, new_prog_fd, flags, old_prog_fd or 0)
    _bpf(BPF_LINK_UPDATE, attr, "BPF_LINK_UPDATE")


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


def cgroup_link_info(fd: int) -> tuple[int, int, int, int]:
    """(link type, prog_id, cgroup_id, attach_type) of a cgroup link; cgroup_id is 0 once auto-detached."""
    raw = obj_info(fd).ljust(28, b"\0")
    link_type, _link_id, prog_id = struct.unpack_from("<III", raw, 0)
    cgroup_id, attach_type = struct.unpack_from("<QI", raw, 16)
    return link_type, prog_id, cgroup_id, attach_type


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


def map_create(
    map_type: int,
    key_size: int,
    value_size: int,
    max_entries: int,
    name: str = "klab",
    *,
    flags: int = 0,
    btf_fd: int = 0,
    btf_key_type_id: int = 0,
    btf_value_type_id: int = 0,
) -> int:
    """BPF_MAP_CREATE; the BTF ids describe key and value in the blob btf_fd (local storage maps need them)."""
    attr = _attr()
    struct.pack_into("<IIIII", attr, 0, map_type, key_size, value_size, max_entries, flags)
    struct.pack_into("16s", attr, 28, name.encode()[:15])
    struct.pack_into("<III", attr, 48, btf_fd, btf_key_type_id, btf_value_type_id)
    return _bpf(BPF_MAP_CREATE, attr, "BPF_MAP_CREATE")


def map_lookup(map_fd: int, key: bytes, value_size: int, flags: int = 0) -> bytes | None:
    """The value stored under key, or None when the kernel says ENOENT (flags: BPF_F_LOCK)."""
    kbuf = ctypes.create_string_buffer(key, len(key))
    vbuf = ctypes.create_string_buffer(value_size)
    attr = _attr()
    struct.pack_into("<IIQQQ", attr, 0, map_fd, 0, ctypes.addressof(kbuf), ctypes.addressof(vbuf), flags)
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


def map_delete(map_fd: int, key: bytes) -> None:
    kbuf = ctypes.create_string_buffer(key, len(key))
    attr = _attr()
    struct.pack_into("<IIQ", attr, 0, map_fd, 0, ctypes.addressof(kbuf))
    _bpf(BPF_MAP_DELETE_ELEM, attr, "BPF_MAP_DELETE_ELEM")


def map_get_next_key(map_fd: int, key: bytes | None, key_size: int) -> bytes:
    kbuf = ctypes.create_string_buffer(key or b"", max(len(key or b""), 1))
    nbuf = ctypes.create_string_buffer(key_size)
    attr = _attr()
    struct.pack_into("<IIQQ", attr, 0, map_fd, 0, ctypes.addressof(kbuf) if key else 0, ctypes.addressof(nbuf))
    _bpf(BPF_MAP_GET_NEXT_KEY, attr, "BPF_MAP_GET_NEXT_KEY")
    return nbuf.raw


def btf_load(blob: bytes) -> int:
    """BPF_BTF_LOAD a BTF blob (see _bpf_btf.BtfBuilder); BpfError carries the kernel's BTF log."""
    data = ctypes.create_string_buffer(blob, len(blob))
    log = ctypes.create_string_buffer(1 << 16)
    attr = _attr()
    struct.pack_into("<QQIII", attr, 0, ctypes.addressof(data), ctypes.addressof(log), len(blob), 1 << 16, 1)
    ret, err = syscall("bpf", BPF_BTF_LOAD, ctypes.addressof(attr), ATTR_SIZE)
    if ret < 0:
        raise BpfError("BPF_BTF_LOAD", err, log.value.decode(errors="replace"))
    return ret


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

    def __setitem__(self, slot: int, value: int) -> None:
        map_update(self.fd, struct.pack("<I", slot), struct.pack("<Q", value & ((1 << 64) - 1)))

    def close(self) -> None:
        os.close(self.fd)
