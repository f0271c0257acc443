"""bpf_lsm: the "precise helpers" KRSI gives a policy instead of raw kernel internals, with their exact output.

Each helper is called from an LSM program on the worker's own opens, and what
it wrote is compared with what the worker knows about itself (its pid and
tid, its real uid and gid, its comm, the path it opened); the verifier's
refusal where a helper is not for that program is pinned too (errno and the
log line), as the rest of the suite does for its gates.
"""

from __future__ import annotations

import errno
import os
import struct
import tempfile

import _bpf
from _bpf import (
    FN_BPRM_OPTS_SET,
    FN_D_PATH,
    FN_GET_CURRENT_COMM,
    FN_GET_CURRENT_PID_TGID,
    FN_GET_CURRENT_TASK_BTF,
    FN_GET_CURRENT_UID_GID,
    FN_MAP_LOOKUP_ELEM,
    FN_RINGBUF_RESERVE,
    FN_RINGBUF_SUBMIT,
    FN_SETSOCKOPT,
    R0,
    R1,
    R2,
    R3,
    R6,
    R7,
    R8,
    R9,
    R10,
    SIZE_DW,
    SIZE_W,
    Asm,
)
from _bpf_ring import RingBuf
from _klab import expect_eq, kernel_version
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.audit import AuditLoop, Exec, libc_path, load_slot, python_argv, u64
from bpf_lsm.common import VMLINUX, attach, ctx_arg, filter_tgid, load, load_field, require, store_into, try_load
from bpf_lsm.verifier import expect_refused

test = suite.test

CURRENT_SIZE = 64  # {pid_tgid, uid_gid, comm[16], comm4[8], task->pid, task->tgid, comm ret, comm4 ret}


def _current_prog(tgid: int, rb: RingBuf) -> Asm:
    """file_open: one record of what the bpf_get_current_* helpers say about the opening task."""
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid)
    asm.ld_map_fd(R1, rb.fd).mov64(R2, imm=CURRENT_SIZE).mov64(R3, imm=0).call(FN_RINGBUF_RESERVE)
    asm.jmp("jeq", R0, "other", imm=0).mov64(R9, R0)
    asm.call(FN_GET_CURRENT_PID_TGID).stx(SIZE_DW, R9, 0, R0)
    asm.call(FN_GET_CURRENT_UID_GID).stx(SIZE_DW, R9, 8, R0)
    asm.mov64(R1, R9).alu64("add", R1, imm=16).mov64(R2, imm=16).call(FN_GET_CURRENT_COMM).stx(SIZE_DW, R9, 48, R0)
    asm.st(SIZE_DW, R9, 32, 0)  # the 4-byte comm below writes 4 bytes of these 8: the rest must read 0
    asm.mov64(R1, R9).alu64("add", R1, imm=32).mov64(R2, imm=4).call(FN_GET_CURRENT_COMM).stx(SIZE_DW, R9, 56, R0)
    asm.call(FN_GET_CURRENT_TASK_BTF)
    load_field(asm, R1, R0, "task_struct", "pid").stx(SIZE_W, R9, 40, R1)
    load_field(asm, R1, R0, "task_struct", "tgid").stx(SIZE_W, R9, 44, R1)
    asm.mov64(R1, R9).mov64(R2, imm=0).call(FN_RINGBUF_SUBMIT)
    return asm.ret(0).label("other").ret(0)


def _current_record(tgid: int, tid: int, uid: int, gid: int, comm: str) -> bytes:
    name = comm.encode()
    return struct.pack("<QQ16s8sIIQQ", tgid << 32 | tid, gid << 32 | uid, name, name[:3], tid, tgid, 0, 0)


@suite.test
def helpers_current_task_pid_tgid_uid_gid_comm_and_task_btf() -> None:
    """bpf_get_current_pid_tgid is tgid << 32 | tid, uid_gid the *real* gid << 32 | uid, comm the thread's.

    Three opens by the worker: from its main thread (tid == tgid), from a
    second thread with its own comm (low half the tid, the comm the thread's),
    and after setresuid/setresgid with real, effective and saved ids all
    different (the real ones are reported). bpf_get_current_comm pads the
    16-byte buffer with NULs and truncates a 4-byte one to 3 characters and a
    NUL; bpf_get_current_task_btf's pid and tgid agree with the first helper.
    """
    require()
    rb = RingBuf()
    with Worker(AuditLoop) as target:
        prog = load("file_open", _current_prog(target.pid, rb))
        link = attach(prog)
        expect_result(target.do("comm", "klab-helpers-w1"), 0, "prctl(PR_SET_NAME) in the worker")
        expect_result(target.do("open", "/dev/null"), 0, "open from the main thread")
        want = [_current_record(target.pid, target.pid, 0, 0, "klab-helpers-w1")]
        expect_eq(rb.consume(), want, "record of the main thread's open (root)")
        tid = target.do("thread_open", ["/dev/null", "klab-thread-2"])
        expect_eq(tid != target.pid and tid > 0, True, f"the second thread's open (answer {tid}: its tid)")
        want = [_current_record(target.pid, tid, 0, 0, "klab-thread-2")]
        expect_eq(rb.consume(), want, "record of the second thread's open")
        expect_result(target.do("setids", [1000, 1001, 1002, 2000, 2001, 2002]), 0, "setresuid/setresgid")
        expect_result(target.do("open", "/dev/null"), 0, "open as uid 1000/1001/1002, gid 2000/2001/2002")
        want = [_current_record(target.pid, target.pid, 1000, 2000, "klab-helpers-w1")]
        expect_eq(rb.consume(), want, "record after setresuid (real ids)")
        os.close(link)
        os.close(prog)
    expect_eq(rb.consume(), [], "records of other processes")
    rb.close()


D_PATH_BUF = 248


def _value_ptr(asm: Asm, map_fd: int, dst: int, missing: str) -> Asm:
    """Emit: dst = &map[0] (an ARRAY map's value); clobbers R0-R5."""
    asm.st(SIZE_W, R10, -4, 0).mov64(R2, R10).alu64("add", R2, imm=-4).ld_map_fd(R1, map_fd)
    return asm.call(FN_MAP_LOOKUP_ELEM).jmp("jeq", R0, missing, imm=0).mov64(dst, R0)


def _d_path_prog(tgid: int, out_fd: int) -> Asm:
    """file_open: out[0] = {bpf_d_path(&file->f_path, buf, 248) return, buf}."""
    if VMLINUX is None:
        raise AssertionError("require() checked vmlinux BTF")
    f_path = VMLINUX.member("file", "f_path").offset
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid)
    _value_ptr(asm, out_fd, R9, "other")
    ctx_arg(asm, R1, R6, 0).alu64("add", R1, imm=f_path)
    asm.mov64(R2, R9).alu64("add", R2, imm=8).mov64(R3, imm=D_PATH_BUF).call(FN_D_PATH).stx(SIZE_DW, R9, 0, R0)
    return asm.ret(0).label("other").ret(0)


@suite.test
def helpers_d_path_names_the_opened_file_and_only_on_allowed_hooks() -> None:
    """bpf_d_path on file_open returns the length with the NUL and writes the absolute path the worker opened.

    A relative open through a symlinked directory still gives the resolved
    path (d_path walks the dentries, not the string the caller passed). The
    helper is allowed only for LSM hooks in the sleepable set
    (bpf_d_path_allowed): on file_mprotect the verifier says "helper call is
    not allowed in probe" (EINVAL).
    """
    require("file_mprotect")
    out = _bpf.map_create(_bpf.BPF_MAP_TYPE_ARRAY, 4, 8 + D_PATH_BUF, 1, "klab_dpath")
    with tempfile.TemporaryDirectory(prefix="klab-dpath-") as tmp, Worker(AuditLoop) as target:
        real = os.path.realpath(tmp)
        os.mkdir(os.path.join(real, "dir"))
        path = os.path.join(real, "dir", "audited-file")
        open(path, "w").close()
        os.symlink(os.path.join(real, "dir"), os.path.join(real, "link"))
        prog = load("file_open", _d_path_prog(target.pid, out))
        link = attach(prog)
        for opened in (path, os.path.join(real, "link", "audited-file")):
            expect_result(target.do("open", opened), 0, f"open {opened}")
            value = _bpf.map_lookup(out, struct.pack("<I", 0), 8 + D_PATH_BUF) or b""
            ret = struct.unpack_from("<q", value, 0)[0]
            want = path.encode() + b"\0"
            expect_eq((ret, value[8 : 8 + max(ret, 0)]), (len(want), want), f"bpf_d_path (return, buffer) for {opened}")
        os.close(link)
        os.close(prog)
    os.close(out)
    refused = Asm().mov64(R6, R1).mov64(R1, R10).alu64("add", R1, imm=-16).mov64(R2, R10)
    refused.alu64("add", R2, imm=-8).mov64(R3, imm=8).call(FN_D_PATH).ret(0)
    expect_refused(
        try_load("file_mprotect", refused),
        errno.EINVAL,
        "helper call is not allowed in probe",
        "bpf_d_path on file_mprotect",
    )


@suite.test
def helpers_refused_where_an_lsm_program_must_not_have_them() -> None:
    """The verifier names the helper an LSM program may not call: EINVAL with 'unknown func'; a wrong type EACCES.

    bpf_setsockopt is for BPF_LSM_CGROUP programs only ("unknown func
    bpf_setsockopt#49" for BPF_LSM_MAC on 6.1; 6.12 and later word it "program of
    this type cannot use helper bpf_setsockopt#49"); bpf_bprm_opts_set given the struct
    file of file_open instead of a linux_binprm is refused by type.
    """
    require()
    prog = Asm().mov64(R6, R1).call(FN_SETSOCKOPT).ret(0)
    reason = "unknown func" if kernel_version() < (6, 12) else "program of this type cannot use helper"
    expect_refused(try_load("file_open", prog), errno.EINVAL, f"{reason} bpf_setsockopt#49", "bpf_setsockopt (MAC)")
    wrong = ctx_arg(Asm(), R1, R1, 0).mov64(R2, imm=1).call(FN_BPRM_OPTS_SET).ret(0)
    expect_refused(
        try_load("file_open", wrong), errno.EACCES, "but linux_binprm is expected", "bpf_bprm_opts_set(struct file *)"
    )


BPF_F_BPRM_SECUREEXEC = 1
AT_SECURE = 23
OPTS_FLAGS, OPTS_RET = 0, 1

PROBE = (
    "import ctypes, json, os; libc = ctypes.CDLL(None); libc.getauxval.restype = ctypes.c_ulong; "
    "print(json.dumps({'secure': libc.getauxval(23), 'preload': os.environ.get('LD_PRELOAD')}), flush=True)"
)


def _opts_prog(tgid: int, counters: _bpf.Counters) -> Asm:
    """bprm_check_security: counters[RET] = bpf_bprm_opts_set(bprm, counters[FLAGS])."""
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid)
    load_slot(asm, counters, OPTS_FLAGS, R7, "other")
    ctx_arg(asm, R1, R6, 0).mov64(R2, R7).call(FN_BPRM_OPTS_SET).mov64(R8, R0)
    store_into(asm, counters, OPTS_RET, R8)
    return asm.ret(0).label("other").ret(0)


@suite.test
def helpers_bprm_opts_set_secureexec_is_what_the_new_program_sees() -> None:
    """bpf_bprm_opts_set(bprm, BPF_F_BPRM_SECUREEXEC) on bprm_check_security: the new program runs with AT_SECURE.

    The exec'd python reads getauxval(AT_SECURE) = 1 and finds LD_PRELOAD
    removed by ld.so's secure mode; flags 0 leave AT_SECURE 0 and LD_PRELOAD
    in place; an unknown flag (2) is -EINVAL and changes nothing.
    """
    require("bprm_check_security")
    libc = libc_path()
    for flags, want_ret, want in (
        (BPF_F_BPRM_SECUREEXEC, 0, {"secure": 1, "preload": None}),
        (0, 0, {"secure": 0, "preload": libc}),
        (2, u64(-errno.EINVAL), {"secure": 0, "preload": libc}),
    ):
        counters = _bpf.Counters(2)
        counters[OPTS_FLAGS], counters[OPTS_RET] = flags, 7
        with Exec(python_argv(PROBE), {"LD_PRELOAD": libc}) as child:
            prog = load("bprm_check_security", _opts_prog(child.pid, counters))
            link = attach(prog)
            child.go()
            seen = child.json_line()
            expect_eq(child.finish(), 0, f"exit status of the exec'd python (opts flags {flags})")
            os.close(link)
            os.close(prog)
        expect_eq(counters[OPTS_RET], want_ret, f"bpf_bprm_opts_set return for flags {flags}")
        expect_eq(seen, want, f"what the new program observed (opts flags {flags})")
        counters.close()
