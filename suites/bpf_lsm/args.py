"""bpf_lsm: programs that decide on their hook's arguments, read through the BTF context.

The context of an LSM program is the hook's arguments as an array of u64.
Pointer arguments are BTF-typed: the verifier lets the program load their
members (offsets found by name in vmlinux BTF, as CO-RE would). Each program
here records what it saw into an array map and denies only for one exact
combination of arguments, so a kernel that marshals the trampoline's
arguments wrongly, or hands the program another hook's context, decides (or
records) something else and fails. Every program still filters on the
worker's tgid first.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile

import _bpf
import _klab
from _bpf import R0, R1, R6, R7, R8, R9, Asm
from _klab import expect, expect_eq
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.common import (
    attach,
    ctx_arg,
    filter_tgid,
    load,
    load_field,
    read_counters,
    require,
    store_into,
    true_binary,
)

test = suite.test

PAGE = 4096
PROT_READ, PROT_WRITE = 1, 2
CLONE_FS, CLONE_FILES = 0x200, 0x400
SIGCHLD = 17
# include/linux/ptrace.h
PTRACE_MODE_READ, PTRACE_MODE_ATTACH, PTRACE_MODE_FSCREDS, PTRACE_MODE_REALCREDS = 0x01, 0x02, 0x08, 0x10


def _mprotect_prog(tgid: int, counters: _bpf.Counters, addr: int, length: int) -> Asm:
    """file_mprotect(vma, reqprot, prot): -EACCES on the stack VMA, -EPERM for RW on [addr, addr+length).

    Records [vm_start, vm_end, reqprot, prot, calls]. The stack test is the
    kernel's own progs/lsm.c: vma->vm_start <= vma->vm_mm->start_stack <= vma->vm_end.
    """
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid, "allow")
    ctx_arg(asm, R7, R6, 0)  # struct vm_area_struct *vma
    ctx_arg(asm, R8, R6, 1)  # unsigned long reqprot
    ctx_arg(asm, R9, R6, 2)  # unsigned long prot
    load_field(asm, R6, R7, "vm_area_struct", "vm_start")
    store_into(asm, counters, 0, R6)
    load_field(asm, R6, R7, "vm_area_struct", "vm_end")
    store_into(asm, counters, 1, R6)
    store_into(asm, counters, 2, R8)
    store_into(asm, counters, 3, R9)
    asm.mov64(R6, imm=1)
    store_into(asm, counters, 4, R6)  # a marker: the program ran for this tgid
    # The stack VMA: vm_start <= vm_mm->start_stack <= vm_end.
    load_field(asm, R6, R7, "vm_area_struct", "vm_mm")
    asm.jmp("jeq", R6, "not_stack", imm=0)
    load_field(asm, R6, R6, "mm_struct", "start_stack")
    load_field(asm, R1, R7, "vm_area_struct", "vm_start")
    asm.jmp("jgt", R1, "not_stack", src=R6)
    load_field(asm, R1, R7, "vm_area_struct", "vm_end")
    asm.jmp("jlt", R1, "not_stack", src=R6)
    asm.ret(-errno.EACCES).label("not_stack")
    # The test's mapping, asked to become read+write, with prot as requested.
    load_field(asm, R1, R7, "vm_area_struct", "vm_start")
    asm.ld_imm64(R0, addr).jmp("jne", R1, "allow", src=R0)
    load_field(asm, R1, R7, "vm_area_struct", "vm_end")
    asm.ld_imm64(R0, addr + length).jmp("jne", R1, "allow", src=R0)
    asm.jmp("jne", R8, "allow", imm=PROT_READ | PROT_WRITE).jmp("jne", R9, "allow", imm=PROT_READ | PROT_WRITE)
    return asm.ret(-errno.EPERM).label("allow").ret(0)


@suite.test
def file_mprotect_decides_on_vma_and_requested_prot() -> None:
    """file_mprotect sees the whole VMA (not the range) and the caller's protections: only the exact match is denied.

    A 3-page shared anonymous mapping (its own shmem file: it never merges
    with a neighbour) at A; mprotect(A+1 page, 1 page, ...) reaches the hook
    with vma = [A, A+3 pages). RW is denied there (EPERM), R is not; RW on
    another mapping is not; the stack VMA (vm_mm->start_stack) is EACCES.
    """
    require("file_mprotect")
    counters = _bpf.Counters(5)
    with Worker() as target:
        expect_result(target.do("stack_mprotect"), 0, "mprotect of the stack page (RW, unchanged) before attach")
        addr = target.do("mmap_shared", 3)
        other = target.do("mmap", 1)
        expect(addr > 0 and other > 0, f"worker mmaps: {addr}, {other}")
        length = 3 * PAGE
        prog = load("file_mprotect", _mprotect_prog(target.pid, counters, addr, length))
        link = attach(prog)
        rw = PROT_READ | PROT_WRITE
        expect_result(target.do("mprotect_at", [addr + PAGE, PAGE, PROT_READ]), 0, "mprotect(R) inside the mapping")
        seen = read_counters(counters, 5)
        expect_eq(seen, [addr, addr + length, PROT_READ, PROT_READ, 1], "[vm_start, vm_end, reqprot, prot, ran]")
        expect_result(target.do("mprotect_at", [addr + PAGE, PAGE, rw]), errno.EPERM, "mprotect(RW) inside it")
        expect_eq(read_counters(counters, 4), [addr, addr + length, rw, rw], "[vm_start, vm_end, reqprot, prot]")
        expect_result(target.do("mprotect_at", [other, PAGE, rw]), 0, "mprotect(RW) of another mapping")
        expect_eq(read_counters(counters, 4), [other, other + PAGE, rw, rw], "[vm_start, vm_end, reqprot, prot]")
        expect_result(target.do("stack_mprotect"), errno.EACCES, "mprotect of the stack page (vm_mm->start_stack)")
        os.close(link)
        expect_result(target.do("mprotect_at", [addr + PAGE, PAGE, rw]), 0, "mprotect(RW) after the link closed")
        os.close(prog)


def _ptrace_prog(tgid: int, counters: _bpf.Counters, attach_denied: int, read_denied: int) -> Asm:
    """ptrace_access_check(child, mode): -ENOKEY for ATTACH on one child and for READ on another.

    Records [mode, child->tgid, calls]. mode is an unsigned int: only its low 32 bits are the argument.
    """
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid, "allow")
    ctx_arg(asm, R7, R6, 0)  # struct task_struct *child
    ctx_arg(asm, R8, R6, 1)  # unsigned int mode
    asm.alu32("mov", R8, R8)  # zero-extend: the upper half of the slot is not part of the argument
    load_field(asm, R9, R7, "task_struct", "tgid")
    store_into(asm, counters, 0, R8)
    store_into(asm, counters, 1, R9)
    asm.mov64(R6, imm=1)
    store_into(asm, counters, 2, R6)
    asm.jmp32("jne", R9, "not_attach_target", imm=attach_denied)
    asm.jmp("jset", R8, "deny", imm=PTRACE_MODE_ATTACH).ja("allow")
    asm.label("not_attach_target").jmp32("jne", R9, "allow", imm=read_denied)
    asm.jmp("jset", R8, "allow", imm=PTRACE_MODE_ATTACH).jmp("jset", R8, "deny", imm=PTRACE_MODE_READ).ja("allow")
    return asm.label("deny").ret(-errno.ENOKEY).label("allow").ret(0)


@suite.test
def ptrace_access_check_decides_on_child_and_mode() -> None:
    """ptrace_access_check sees the target task and the access mode the operation asks for.

    Child A: ATTACH denied, READ allowed; child B: the reverse. PTRACE_ATTACH
    asks PTRACE_MODE_ATTACH_REALCREDS, /proc/PID/environ PTRACE_MODE_READ_FSCREDS.
    The tracer drops CAP_PERFMON/CAP_SYS_ADMIN so that procfs reads follow the LSM (v6.15+).
    """
    require("ptrace_access_check")
    counters = _bpf.Counters(3)
    attach_mode = PTRACE_MODE_ATTACH | PTRACE_MODE_REALCREDS
    read_mode = PTRACE_MODE_READ | PTRACE_MODE_FSCREDS
    with Worker() as tracer:
        child_a, child_b = tracer.do("spawn"), tracer.do("spawn")
        expect_result(tracer.do("drop_caps", [_klab.CAP_PERFMON, _klab.CAP_SYS_ADMIN]), 0, "dropping perfmon caps")
        prog = load("ptrace_access_check", _ptrace_prog(tracer.pid, counters, child_a, child_b))
        link = attach(prog)
        cases = (
            ("ptrace", child_a, errno.ENOKEY, attach_mode, "PTRACE_ATTACH of A (ATTACH denied on A)"),
            ("environ", child_a, 0, read_mode, "reading A's environ (READ allowed on A)"),
            ("ptrace", child_b, 0, attach_mode, "PTRACE_ATTACH of B (ATTACH allowed on B)"),
            ("environ", child_b, errno.EACCES, read_mode, "reading B's environ (READ denied on B: EACCES)"),
        )
        for action, child, want, mode, what in cases:
            expect_result(tracer.do(action, child), want, what)
            expect_eq(read_counters(counters, 2), [mode, child], f"[mode, child->tgid] the program saw for {what}")
        os.close(link)
        expect_result(tracer.do("ptrace", child_a), 0, "PTRACE_ATTACH of A after the link closed")
        os.close(prog)


def _task_alloc_prog(tgid: int, counters: _bpf.Counters, denied_flags: int) -> Asm:
    """task_alloc(task, clone_flags): -EPERM when clone_flags is exactly `denied_flags`. Records [flags, ran].

    The exit signal (CSIGNAL) of clone(2) is not part of the hook's clone_flags.
    """
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid, "allow")
    ctx_arg(asm, R8, R6, 1)  # unsigned long (u64 in v7.x) clone_flags
    store_into(asm, counters, 0, R8)
    asm.mov64(R7, imm=1)
    store_into(asm, counters, 1, R7)
    asm.ld_imm64(R0, denied_flags).jmp("jne", R8, "allow", src=R0)
    return asm.ret(-errno.EPERM).label("allow").ret(0)


@suite.test
def task_alloc_decides_on_clone_flags() -> None:
    """task_alloc sees the caller's clone flags (without the exit signal): CLONE_FILES is denied, CLONE_FS is not."""
    require("task_alloc")
    counters = _bpf.Counters(2)
    with Worker() as target:
        prog = load("task_alloc", _task_alloc_prog(target.pid, counters, CLONE_FILES))
        link = attach(prog)
        expect_result(target.do("clone", CLONE_FS | SIGCHLD), 0, "clone(CLONE_FS|SIGCHLD)")
        expect_eq(read_counters(counters, 2), [CLONE_FS, 1], "[clone_flags, ran] for clone(CLONE_FS|SIGCHLD)")
        expect_result(target.do("clone", CLONE_FILES | SIGCHLD), errno.EPERM, "clone(CLONE_FILES|SIGCHLD)")
        expect_eq(counters[0], CLONE_FILES, "clone_flags the program saw for clone(CLONE_FILES|SIGCHLD)")
        expect_result(target.do("fork"), 0, "fork() (other clone flags)")
        expect(counters[0] != CLONE_FILES, "clone_flags for fork(): expected anything but CLONE_FILES")
        os.close(link)
        expect_result(target.do("clone", CLONE_FILES | SIGCHLD), 0, "clone(CLONE_FILES|SIGCHLD) after the link closed")
        os.close(prog)


def _kernel_dev(st_dev: int) -> int:
    """The kernel's dev_t (MKDEV: major << 20 | minor) for a stat() st_dev."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def _bprm_prog(tgid: int, counters: _bpf.Counters, ino: int, dev: int) -> Asm:
    """bprm_check_security(bprm): -EPERM when bprm->file is inode `ino` on device `dev`. Records [i_ino, s_dev]."""
    asm = Asm().mov64(R6, R1)
    filter_tgid(asm, tgid, "allow")
    ctx_arg(asm, R7, R6, 0)  # struct linux_binprm *bprm
    load_field(asm, R7, R7, "linux_binprm", "file")
    load_field(asm, R7, R7, "file", "f_inode")
    load_field(asm, R8, R7, "inode", "i_ino")
    load_field(asm, R9, R7, "inode", "i_sb")
    load_field(asm, R9, R9, "super_block", "s_dev")
    store_into(asm, counters, 0, R8)
    store_into(asm, counters, 1, R9)
    asm.ld_imm64(R0, ino).jmp("jne", R8, "allow", src=R0)
    asm.jmp32("jne", R9, "allow", imm=dev - (1 << 32) if dev >= 1 << 31 else dev)
    return asm.ret(-errno.EPERM).label("allow").ret(0)


@suite.test
def bprm_check_security_decides_on_executed_file() -> None:
    """bprm_check_security reads bprm->file->f_inode: exec of that inode is EPERM, of a copy of it is not.

    The copy (same bytes, another inode on the /tmp tmpfs) shows that the
    program decides on the file being executed, not on its content.
    """
    require("bprm_check_security")
    path = true_binary()
    st = os.stat(path)
    counters = _bpf.Counters(2)
    with tempfile.TemporaryDirectory(prefix="klab-bpf-lsm-") as tmp:
        copy = os.path.join(tmp, "true")
        shutil.copy(path, copy)
        os.chmod(copy, 0o755)
        copy_st = os.stat(copy)
        with Worker() as target:
            prog = load("bprm_check_security", _bprm_prog(target.pid, counters, st.st_ino, _kernel_dev(st.st_dev)))
            link = attach(prog)
            expect_result(target.do("exec", path), errno.EPERM, f"exec of {path} (the denied inode)")
            expect_eq(read_counters(counters, 2), [st.st_ino, _kernel_dev(st.st_dev)], f"[i_ino, s_dev] for {path}")
            expect_result(target.do("exec", copy), Worker.REPLACED, f"exec of {copy}, a copy of it (another inode)")
            seen = read_counters(counters, 2)
            expect_eq(seen, [copy_st.st_ino, _kernel_dev(copy_st.st_dev)], f"[i_ino, s_dev] for {copy}")
            os.close(link)
            os.close(prog)
