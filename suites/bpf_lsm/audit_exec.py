"""bpf_lsm: the KRSI design's own audit example, an exec policy that logs who ran what with which environment.

Two programs on the exec path of one process write one record each to a ring
buffer: bprm_check_security (still the old program: its comm, the filename
the kernel was asked for) and bprm_committed_creds (the new program's comm,
the new creds, and the argument and environment strings read from the new
mm's stack at bprm->p, where the LD_PRELOAD a policy watches for is). Every
field is pinned; an exec by any other process leaves nothing.
"""

from __future__ import annotations

import os
import struct

import _bpf
from _bpf import (
    FN_GET_CURRENT_COMM,
    FN_GET_CURRENT_PID_TGID,
    FN_GET_CURRENT_UID_GID,
    FN_PROBE_READ_KERNEL_STR,
    FN_PROBE_READ_USER,
    FN_RINGBUF_RESERVE,
    FN_RINGBUF_SUBMIT,
    R0,
    R1,
    R2,
    R3,
    R6,
    R7,
    R8,
    R9,
    SIZE_DW,
    SIZE_W,
    Asm,
)
from _bpf_ring import PAGE, RingBuf
from _klab import expect_eq

from bpf_lsm import suite
from bpf_lsm.audit import Exec, become, cstr, libc_path, load_slot
from bpf_lsm.common import attach, ctx_arg, filter_tgid, load, load_field, require, true_binary

test = suite.test

# struct exec_record { u32 hook, n; u64 pid_tgid, uid_gid; char comm[16]; u32 argc, envc; char data[208]; }
RECORD = struct.Struct("<IIQQ16sII208s")
DATA_OFF, DATA_MAX = 48, 208
HOOK_CHECK, HOOK_COMMITTED = 1, 2
STRINGS_LEN = 0  # counters slot: how many bytes of strings the committed program reads at bprm->p


def _exec_prog(hook: int, tgid: int, rb: RingBuf, counters: _bpf.Counters) -> Asm:
    """One record per exec by `tgid`; data is the filename (check) or the strings at bprm->p (committed)."""
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid)
    ctx_arg(asm, R7, R6, 0)
    if hook == HOOK_COMMITTED:
        load_slot(asm, counters, STRINGS_LEN, R8, "other")
        asm.jmp("jgt", R8, "other", imm=DATA_MAX).jmp("jeq", R8, "other", imm=0)
    asm.ld_map_fd(R1, rb.fd).mov64(R2, imm=RECORD.size).mov64(R3, imm=0).call(FN_RINGBUF_RESERVE)
    asm.jmp("jeq", R0, "other", imm=0).mov64(R9, R0).st(SIZE_W, R9, 0, hook)
    asm.call(FN_GET_CURRENT_PID_TGID).stx(SIZE_DW, R9, 8, R0)
    asm.call(FN_GET_CURRENT_UID_GID).stx(SIZE_DW, R9, 16, R0)
    asm.mov64(R1, R9).alu64("add", R1, imm=24).mov64(R2, imm=16).call(FN_GET_CURRENT_COMM)
    load_field(asm, R1, R7, "linux_binprm", "argc").stx(SIZE_W, R9, 40, R1)
    load_field(asm, R1, R7, "linux_binprm", "envc").stx(SIZE_W, R9, 44, R1)
    asm.mov64(R1, R9).alu64("add", R1, imm=DATA_OFF)
    if hook == HOOK_CHECK:
        load_field(asm, R3, R7, "linux_binprm", "filename")
        asm.mov64(R2, imm=DATA_MAX).call(FN_PROBE_READ_KERNEL_STR)
    else:
        load_field(asm, R3, R7, "linux_binprm", "p")
        asm.mov64(R2, R8).call(FN_PROBE_READ_USER)
    asm.stx(SIZE_W, R9, 4, R0).mov64(R1, R9).mov64(R2, imm=0).call(FN_RINGBUF_SUBMIT)
    return asm.ret(0).label("other").ret(0)


def _comm_of(pid: int) -> str:
    with open(f"/proc/{pid}/comm") as f:
        return f.read().rstrip("\n")


def _strings(argv: list[str], env: dict[str, str]) -> bytes:
    """The argument then environment strings as execve copies them to the new stack, each NUL-terminated."""
    return b"".join(s.encode() + b"\0" for s in (*argv, *(f"{k}={v}" for k, v in env.items())))


@suite.test
def audit_exec_records_who_ran_what_with_which_environment() -> None:
    """One execve of /bin/true as uid 1000, gid 1001 with LD_PRELOAD set: exactly two records, in hook order.

    bprm_check_security: hook 1, pid_tgid and uid_gid of the child, the comm
    it had before exec, argc 2, envc 2, the filename (n is the string's length
    with its NUL). bprm_committed_creds: hook 2, the same ids, comm "true" (set
    by begin_new_exec before the creds are committed), n 0 (the read
    succeeded) and the strings: argv then env, LD_PRELOAD=<libc> among them.
    A second process's exec under the same programs leaves no record.
    """
    require("bprm_check_security", "bprm_committed_creds")
    true = true_binary()
    argv = [true, "klab-audit"]
    env = {"LD_PRELOAD": libc_path(), "KLAB_AUDIT": "exec-example"}
    strings = _strings(argv, env)
    counters = _bpf.Counters(1)
    counters[STRINGS_LEN] = len(strings)
    rb = RingBuf(4 * PAGE)
    with Exec(argv, env, become((1000, 1000, 1000, 1001, 1001, 1001))) as child, Exec(argv, env) as bystander:
        progs = [
            load("bprm_check_security", _exec_prog(HOOK_CHECK, child.pid, rb, counters)),
            load("bprm_committed_creds", _exec_prog(HOOK_COMMITTED, child.pid, rb, counters)),
        ]
        links = [attach(p) for p in progs]
        comm_before = _comm_of(child.pid)
        bystander.go()
        expect_eq(bystander.finish(), 0, "exit status of the bystander's /bin/true")
        expect_eq(rb.consume(), [], "records after another process's exec")
        child.go()
        expect_eq(child.finish(), 0, "exit status of the audited /bin/true")
        got = [RECORD.unpack(r) for r in rb.consume()]
        for fd in (*links, *progs):
            os.close(fd)
    ids = (child.pid << 32 | child.pid, 1001 << 32 | 1000)
    expect_eq(len(got), 2, f"records of the audited exec (got hooks {[r[0] for r in got]})")
    check, committed = got
    name = true.encode() + b"\0"
    expect_eq(
        (check[0], check[1], check[2:4], cstr(check[4]), check[5:7], check[7][: check[1]]),
        (HOOK_CHECK, len(name), ids, comm_before, (2, 2), name),
        "bprm_check_security record (hook, n, ids, comm, argc/envc, filename)",
    )
    expect_eq(check[4], comm_before.encode().ljust(16, b"\0"), "bprm_check_security comm, NUL-padded")
    expect_eq(
        (committed[0], committed[1], committed[2:4], committed[4], committed[5:7], committed[7][: len(strings)]),
        (HOOK_COMMITTED, 0, ids, b"true".ljust(16, b"\0"), (2, 2), strings),
        "bprm_committed_creds record (hook, n, ids, comm, argc/envc, strings)",
    )
    envp = committed[7][len(_strings(argv, {})) : len(strings)].split(b"\0")[:-1]
    expect_eq(
        [e for e in envp if e.startswith(b"LD_PRELOAD=")],
        [f"LD_PRELOAD={env['LD_PRELOAD']}".encode()],
        "LD_PRELOAD as the policy reads it",
    )
    rb.close()
    counters.close()
