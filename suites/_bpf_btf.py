"""Write small BTF blobs for BPF_BTF_LOAD (stdlib only).

Local storage maps (inode, task) refuse to exist without BTF for their key and
value (bpf_local_storage_map_alloc_check: btf_key_type_id and
btf_value_type_id must be set), and BPF_F_LOCK needs the kernel to find a
``struct bpf_spin_lock`` in the value's BTF. libbpf gets that BTF from clang;
here the few types a test needs are written by hand, in the format of
Documentation/bpf/btf.rst: a 24-byte header, the type section, the string
section (which starts with the empty string).
"""

from __future__ import annotations

import struct

import _bpf

BTF_MAGIC = 0xEB9F
KIND_INT, KIND_ARRAY, KIND_STRUCT = 1, 3, 4
BTF_INT_SIGNED = 1 << 0


class BtfBuilder:
    """Types are added in order and get ids 1, 2, ...; load() hands the blob to the kernel."""

    def __init__(self) -> None:
        self._types: list[bytes] = []
        self._strings = bytearray(b"\0")
        self._offsets: dict[str, int] = {"": 0}

    def _str(self, name: str) -> int:
        if name not in self._offsets:
            self._offsets[name] = len(self._strings)
            self._strings += name.encode() + b"\0"
        return self._offsets[name]

    def _add(self, blob: bytes) -> int:
        self._types.append(blob)
        return len(self._types)

    def int_type(self, name: str, size: int, signed: bool = False) -> int:
        """An INT of `size` bytes (all bits used, offset 0)."""
        info = KIND_INT << 24
        encoding = (BTF_INT_SIGNED if signed else 0) << 24 | size * 8
        return self._add(struct.pack("<IIII", self._str(name), info, size, encoding))

    def array(self, elem_type: int, index_type: int, nelems: int) -> int:
        return self._add(struct.pack("<IIIIII", 0, KIND_ARRAY << 24, 0, elem_type, index_type, nelems))

    def struct(self, name: str, size: int, members: list[tuple[str, int, int]]) -> int:
        """A STRUCT of `size` bytes; members are (name, type id, byte offset)."""
        head = struct.pack("<III", self._str(name), KIND_STRUCT << 24 | len(members), size)
        body = b"".join(struct.pack("<III", self._str(m), t, off * 8) for m, t, off in members)
        return self._add(head + body)

    def blob(self) -> bytes:
        types = b"".join(self._types)
        header = struct.pack("<HBBIIIII", BTF_MAGIC, 1, 0, 24, 0, len(types), len(types), len(self._strings))
        return header + types + bytes(self._strings)

    def load(self) -> int:
        return _bpf.btf_load(self.blob())


def storage_btf(value_size: int, spin_lock: bool = False) -> tuple[int, int, int]:
    """(btf fd, key type id, value type id) for a local storage map: key int, value a struct of `value_size` bytes.

    The value is ``struct klab_label { [struct bpf_spin_lock lock;] __u32 words[...]; }``;
    with spin_lock the lock is the first 4 bytes (the kernel finds it by the
    struct's name and size, btf_parse_fields()).
    """
    if value_size % 4 or value_size < (8 if spin_lock else 4):
        raise ValueError(f"value size {value_size}: a multiple of 4, room for the lock")
    btf = BtfBuilder()
    int_id = btf.int_type("int", 4, signed=True)
    u32 = btf.int_type("unsigned int", 4)
    members: list[tuple[str, int, int]] = []
    offset = 0
    if spin_lock:
        lock = btf.struct("bpf_spin_lock", 4, [("val", u32, 0)])
        members.append(("lock", lock, 0))
        offset = 4
    words = btf.array(u32, int_id, (value_size - offset) // 4)
    members.append(("words", words, offset))
    value = btf.struct("klab_label", value_size, members)
    return btf.load(), int_id, value
