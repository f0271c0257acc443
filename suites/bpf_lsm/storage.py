"""bpf_lsm: LSM local storage, the labels a policy hangs on a task or an inode and decides on later.

Task and inode storage maps need BTF for their key and value (the loader
writes it: _bpf_btf.storage_btf). A label set on one object (by a program at
one hook, or from user space by pidfd or file fd) is what a program at
another hook sees for that object alone: not for another thread, another
process, another inode; deleting it or freeing the object ends it.
"""

from __future__ import annotations

import errno
import functools
import os
import struct
import tempfile

import _bpf
from _bpf import (
    BPF_ANY,
    BPF_EXIST,
    BPF_F_LOCK,
    BPF_F_NO_PREALLOC,
    BPF_LOCAL_STORAGE_GET_F_CREATE,
    BPF_NOEXIST,
    FN_GET_CURRENT_PID_TGID,
    FN_GET_CURRENT_TASK_BTF,
    FN_INODE_STORAGE_GET,
    FN_TASK_STORAGE_DELETE,
    FN_TASK_STORAGE_GET,
    R0,
    R1,
    R2,
    R3,
    R4,
    R6,
    R7,
    R8,
    SIZE_DW,
    Asm,
    BpfError,
)
from _bpf_btf import storage_btf
from _klab import expect_eq
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.audit import AuditLoop, load_slot, u64
from bpf_lsm.common import attach, ctx_arg, errno_of, filter_tgid, load, load_field, require, store_into

test = suite.test

LABEL = int.from_bytes(b"KLABTASK", "little")
VALUE_SIZE = 8

# Slots of the labelling program: what to do at the next mprotect, and what the helper answered.
MODE, ANSWER = 0, 1
MODE_LABEL, MODE_DELETE, MODE_BAD_FLAGS = 0, 1, 2


def storage_map(map_type: int, name: str) -> int:
    """A local storage map with an int key and an 8-byte struct value described in BTF."""
    btf, key_id, value_id = storage_btf(VALUE_SIZE)
    try:
        return _bpf.map_create(
            map_type,
            4,
            VALUE_SIZE,
            0,
            name,
            flags=BPF_F_NO_PREALLOC,
            btf_fd=btf,
            btf_key_type_id=key_id,
            btf_value_type_id=value_id,
        )
    finally:
        os.close(btf)


def _lookup(map_fd: int, key_fd: int) -> bytes | int:
    """The stored value for the object behind key_fd, or the errno (ENOENT: no label)."""
    try:
        value = _bpf.map_lookup(map_fd, struct.pack("<i", key_fd), VALUE_SIZE)
    except BpfError as exc:
        return exc.errno
    return errno.ENOENT if value is None else value


def _update(map_fd: int, key_fd: int, value: int, flags: int) -> int:
    return errno_of(_bpf.map_update, map_fd, struct.pack("<i", key_fd), struct.pack("<Q", value), flags)


def _delete(map_fd: int, key_fd: int) -> int:
    return errno_of(_bpf.map_delete, map_fd, struct.pack("<i", key_fd))


def _label_prog(tgid: int, tasks: int, counters: _bpf.Counters) -> Asm:
    """file_mprotect of `tgid`'s main thread: label the task (F_CREATE), delete its label, or get with a bad flag.

    Main thread only: a new thread's first malloc makes an arena and mprotects it, and must not label itself.

    counters[ANSWER] is the helper's answer: 1/0 for a pointer/NULL from get, the return of delete.
    """
    asm = Asm().call(FN_GET_CURRENT_PID_TGID).ld_imm64(R1, tgid << 32 | tgid).jmp("jne", R0, "other", src=R1)
    load_slot(asm, counters, MODE, R7, "other")
    asm.call(FN_GET_CURRENT_TASK_BTF).mov64(R6, R0)
    asm.jmp("jeq", R7, "delete", imm=MODE_DELETE)
    asm.ld_map_fd(R1, tasks).mov64(R2, R6).mov64(R3, imm=0).mov64(R4, imm=BPF_LOCAL_STORAGE_GET_F_CREATE)
    asm.jmp("jeq", R7, "get", imm=MODE_LABEL).mov64(R4, imm=2)
    asm.label("get").call(FN_TASK_STORAGE_GET).mov64(R8, imm=0).jmp("jeq", R0, "answer", imm=0)
    asm.mov64(R8, imm=1).ld_imm64(R1, LABEL).stx(SIZE_DW, R0, 0, R1).ja("answer")
    asm.label("delete").ld_map_fd(R1, tasks).mov64(R2, R6).call(FN_TASK_STORAGE_DELETE).mov64(R8, R0)
    asm.label("answer")
    store_into(asm, counters, ANSWER, R8)
    return asm.ret(0).label("other").ret(0)


def _deny_labelled_task_prog(tasks: int) -> Asm:
    """file_open of any task: -EPERM when its storage holds LABEL; get without F_CREATE (never creates)."""
    asm = Asm().call(FN_GET_CURRENT_TASK_BTF).ld_map_fd(R1, tasks).mov64(R2, R0).mov64(R3, imm=0).mov64(R4, imm=0)
    asm.call(FN_TASK_STORAGE_GET).jmp("jeq", R0, "allow", imm=0).ldx(SIZE_DW, R1, R0, 0)
    asm.ld_imm64(R2, LABEL).jmp("jne", R1, "allow", src=R2)
    return asm.ret(-errno.EPERM).label("allow").ret(0)


@suite.test
def task_storage_label_set_at_one_hook_decides_at_another_for_that_task_only() -> None:
    """A label set on the worker's task at file_mprotect makes file_open deny it (EPERM), and nothing else.

    Before: both workers open, neither has storage (lookup by pidfd ENOENT:
    the deciding program's get without F_CREATE creates nothing). After the
    label: the worker's opens are EPERM, its other thread's and the other
    worker's are not, and the other worker still has no storage. get with an
    unknown flag (2) returns NULL even for a labelled task; delete returns 0,
    then -ENOENT; the worker opens again. A label on an exited, reaped task
    is gone: lookup by its pidfd is ENOENT.
    """
    require("file_mprotect")
    tasks = storage_map(_bpf.BPF_MAP_TYPE_TASK_STORAGE, "klab_task_lbl")
    counters = _bpf.Counters(2)
    with Worker(AuditLoop) as target, Worker(AuditLoop) as other:
        fds = {"worker": os.pidfd_open(target.pid), "other worker": os.pidfd_open(other.pid)}
        progs = [
            load("file_mprotect", _label_prog(target.pid, tasks, counters)),
            load("file_open", _deny_labelled_task_prog(tasks)),
        ]
        links = [attach(p) for p in progs]
        for who, w in (("worker", target), ("other worker", other)):
            expect_result(w.do("open", "/dev/null"), 0, f"open by the {who} before any label")
            expect_eq(_lookup(tasks, fds[who]), errno.ENOENT, f"storage of the {who} before any label")
        expect_result(target.do("mprotect"), 0, "mprotect by the worker (the labelling hook)")
        expect_eq(counters[ANSWER], 1, "bpf_task_storage_get(F_CREATE) gave storage")
        expect_eq(_lookup(tasks, fds["worker"]), struct.pack("<Q", LABEL), "the worker's label, by pidfd")
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open by the labelled worker")
        tid = target.do("thread_open", ["/dev/null", "klab-unlabelled"])
        expect_eq(tid > 0, True, f"open by the labelled worker's second thread (answer {tid}: its tid, or -errno)")
        expect_result(other.do("open", "/dev/null"), 0, "open by the other worker")
        expect_eq(_lookup(tasks, fds["other worker"]), errno.ENOENT, "storage of the other worker after the label")
        counters[MODE] = MODE_BAD_FLAGS
        expect_result(target.do("mprotect"), 0, "mprotect (get with flags 2)")
        expect_eq(counters[ANSWER], 0, "bpf_task_storage_get with unknown flag 2 on a labelled task (NULL)")
        counters[MODE] = MODE_DELETE
        expect_result(target.do("mprotect"), 0, "mprotect (delete)")
        expect_eq(counters[ANSWER], 0, "bpf_task_storage_delete of the label")
        expect_result(target.do("mprotect"), 0, "mprotect (delete again)")
        expect_eq(counters[ANSWER], u64(-errno.ENOENT), "bpf_task_storage_delete with no label")
        expect_result(target.do("open", "/dev/null"), 0, "open by the worker after its label was deleted")
        counters[MODE] = MODE_LABEL
        expect_result(target.do("mprotect"), 0, "mprotect (label again)")
        expect_eq(_lookup(tasks, fds["worker"]), struct.pack("<Q", LABEL), "the worker's label, set again")
        for fd in links + progs:
            os.close(fd)
    expect_eq(_lookup(tasks, fds["worker"]), errno.ENOENT, "storage of the worker once it exited and was reaped")
    for fd in fds.values():
        os.close(fd)
    counters.close()
    os.close(tasks)


@suite.test
def task_storage_map_operations_from_user_space_by_pidfd() -> None:
    """Update, lookup and delete by pidfd with every flag: the errnos the map gives, and what a program sees.

    Creation needs BTF, BPF_F_NO_PREALLOC and max_entries 0 (EINVAL
    otherwise). BPF_EXIST on no label is ENOENT, BPF_NOEXIST on one EEXIST,
    BPF_F_LOCK on a value without a bpf_spin_lock EINVAL, an unknown flag
    EINVAL; a key that is an fd but not a pidfd is EBADF; delete twice is
    ENOENT; get_next_key is not supported (ENOTSUPP, 524). A label written
    from user space denies the worker's opens exactly as one set by a program.
    """
    require()
    ts = _bpf.BPF_MAP_TYPE_TASK_STORAGE
    btf, key_id, value_id = storage_btf(VALUE_SIZE)
    for what, kwargs, entries in (
        ("without BTF", {"flags": BPF_F_NO_PREALLOC}, 0),
        ("without BPF_F_NO_PREALLOC", {"btf_fd": btf, "btf_key_type_id": key_id, "btf_value_type_id": value_id}, 0),
        (
            "with max_entries 1",
            {"flags": BPF_F_NO_PREALLOC, "btf_fd": btf, "btf_key_type_id": key_id, "btf_value_type_id": value_id},
            1,
        ),
    ):
        got = errno_of(functools.partial(_bpf.map_create, ts, 4, VALUE_SIZE, entries, "klab_bad", **kwargs))
        expect_eq(got, errno.EINVAL, f"creating a task storage map {what}")
    os.close(btf)
    tasks = storage_map(ts, "klab_task_ops")
    with Worker(AuditLoop) as target, open("/dev/null", "rb") as notpid:
        fd = os.pidfd_open(target.pid)
        prog = load("file_open", _deny_labelled_task_prog(tasks))
        link = attach(prog)
        for step, got, want in (
            ("update BPF_EXIST, no label", lambda: _update(tasks, fd, LABEL, BPF_EXIST), errno.ENOENT),
            (
                "update BPF_F_LOCK (no spin lock in the value)",
                lambda: _update(tasks, fd, LABEL, BPF_F_LOCK),
                errno.EINVAL,
            ),
            ("update with unknown flag 8", lambda: _update(tasks, fd, LABEL, 8), errno.EINVAL),
            ("update keyed by a non-pidfd fd", lambda: _update(tasks, notpid.fileno(), LABEL, BPF_ANY), errno.EBADF),
            ("lookup keyed by a non-pidfd fd", lambda: _lookup(tasks, notpid.fileno()), errno.EBADF),
            ("lookup, no label", lambda: _lookup(tasks, fd), errno.ENOENT),
            ("delete, no label", lambda: _delete(tasks, fd), errno.ENOENT),
            ("update BPF_NOEXIST, no label", lambda: _update(tasks, fd, LABEL, BPF_NOEXIST), 0),
            ("update BPF_NOEXIST, labelled", lambda: _update(tasks, fd, LABEL, BPF_NOEXIST), errno.EEXIST),
            ("lookup, labelled", lambda: _lookup(tasks, fd), struct.pack("<Q", LABEL)),
            ("open by the labelled worker", lambda: target.do("open", "/dev/null"), errno.EPERM),
            ("update BPF_EXIST to 0, labelled", lambda: _update(tasks, fd, 0, BPF_EXIST), 0),
            ("open by the worker labelled 0", lambda: target.do("open", "/dev/null"), 0),
            ("update BPF_ANY to LABEL", lambda: _update(tasks, fd, LABEL, BPF_ANY), 0),
            ("open by the worker labelled again", lambda: target.do("open", "/dev/null"), errno.EPERM),
            ("get_next_key", lambda: errno_of(_bpf.map_get_next_key, tasks, None, 4), _bpf.ENOTSUPP),
            ("delete, labelled", lambda: _delete(tasks, fd), 0),
            ("delete again", lambda: _delete(tasks, fd), errno.ENOENT),
            ("open by the worker after the delete", lambda: target.do("open", "/dev/null"), 0),
        ):
            expect_eq(got(), want, step)
        os.close(link)
        os.close(prog)
        os.close(fd)
    os.close(tasks)


INODE_LABEL = int.from_bytes(b"KLABINOD", "little")
SEEN = int.from_bytes(b"KLABSEEN", "little")
MARK = 0  # counters slot: 1 makes the marking program label the inodes the worker opens


def _deny_labelled_inode_prog(inodes: int) -> Asm:
    """file_open of any task: -EACCES when the file's inode storage holds INODE_LABEL."""
    asm = Asm()
    ctx_arg(asm, R1, R1, 0)
    load_field(asm, R2, R1, "file", "f_inode")
    asm.ld_map_fd(R1, inodes).mov64(R3, imm=0).mov64(R4, imm=0).call(FN_INODE_STORAGE_GET)
    asm.jmp("jeq", R0, "allow", imm=0).ldx(SIZE_DW, R1, R0, 0).ld_imm64(R2, INODE_LABEL).jmp("jne", R1, "allow", src=R2)
    return asm.ret(-errno.EACCES).label("allow").ret(0)


def _mark_inode_prog(tgid: int, inodes: int, counters: _bpf.Counters) -> Asm:
    """file_open of `tgid` while counters[MARK] is 1: the inode's storage (F_CREATE) becomes SEEN."""
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid)
    load_slot(asm, counters, MARK, R7, "other")
    asm.jmp("jeq", R7, "other", imm=0)
    ctx_arg(asm, R1, R6, 0)
    load_field(asm, R2, R1, "file", "f_inode")
    asm.ld_map_fd(R1, inodes).mov64(R3, imm=0).mov64(R4, imm=BPF_LOCAL_STORAGE_GET_F_CREATE).call(FN_INODE_STORAGE_GET)
    asm.jmp("jeq", R0, "other", imm=0).ld_imm64(R1, SEEN).stx(SIZE_DW, R0, 0, R1)
    return asm.ret(0).label("other").ret(0)


@suite.test
def inode_storage_label_belongs_to_the_inode_not_the_name_or_the_process() -> None:
    """A label written by fd on file a denies every open of that inode (EACCES), by any process and any name.

    A hard link of a is denied too, b is not and has no storage; the
    harness's own open of a is denied (the label is the object's). Delete
    lifts it. A program's label (F_CREATE at file_open) is visible from user
    space by fd; once its file is unlinked and closed, a new file has none.
    Lookup keyed by a closed fd is EBADF.
    """
    require()
    inodes = storage_map(_bpf.BPF_MAP_TYPE_INODE_STORAGE, "klab_inode_lbl")
    counters = _bpf.Counters(1)
    with tempfile.TemporaryDirectory(prefix="klab-inode-") as tmp, Worker(AuditLoop) as target:
        a, a2, b, c, d = (os.path.join(tmp, n) for n in ("a", "a-link", "b", "c", "d"))
        for path in (a, b, c):
            open(path, "w").close()
        os.link(a, a2)
        progs = [
            load("file_open", _deny_labelled_inode_prog(inodes)),
            load("file_open", _mark_inode_prog(target.pid, inodes, counters)),
        ]
        links = [attach(p) for p in progs]
        fa, fb = os.open(a, os.O_RDONLY), os.open(b, os.O_RDONLY)
        expect_eq(_update(inodes, fa, INODE_LABEL, BPF_NOEXIST), 0, "label a by fd (BPF_NOEXIST)")
        expect_eq(_lookup(inodes, fa), struct.pack("<Q", INODE_LABEL), "a's label, by fd")
        for path, want in ((a, errno.EACCES), (a2, errno.EACCES), (b, 0)):
            expect_result(target.do("open", path), want, f"open {os.path.basename(path)} by the worker")
        expect_eq(_klab_open_errno(a), errno.EACCES, "open a by the harness (the label is the inode's)")
        expect_eq(_lookup(inodes, fb), errno.ENOENT, "b's storage")
        expect_eq(_delete(inodes, fa), 0, "delete a's label")
        expect_result(target.do("open", a2), 0, "open a's hard link after the delete")
        counters[MARK] = 1
        expect_result(target.do("open", c), 0, "open c (marked by the program)")
        counters[MARK] = 0
        fc = os.open(c, os.O_RDONLY)
        expect_eq(_lookup(inodes, fc), struct.pack("<Q", SEEN), "c's label set by the program, by fd")
        os.close(fc)
        os.unlink(c)
        open(d, "w").close()
        fd = os.open(d, os.O_RDONLY)
        expect_eq(_lookup(inodes, fd), errno.ENOENT, "storage of a new file after c was freed")
        os.close(fd)
        expect_eq(_lookup(inodes, fd), errno.EBADF, "lookup keyed by a closed fd")
        for f in (fa, fb, *links, *progs):
            os.close(f)
    counters.close()
    os.close(inodes)


def _klab_open_errno(path: str) -> int:
    try:
        os.close(os.open(path, os.O_RDONLY))
    except OSError as exc:
        return exc.errno or -1
    return 0
