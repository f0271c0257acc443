"""bpf_lsm: shared constants and helpers."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

import _bpf
import _klab
from _bpf import FN_GET_CURRENT_PID_TGID, FN_MAP_LOOKUP_ELEM, R0, R1, R2, R10, SIZE_DW, SIZE_W, Asm, BpfError
from _klab import Failure, Skip

NOT_ACTIVE = "bpf is not an active LSM (lsm= lacks bpf)"

LSM_LIST = "/sys/kernel/security/lsm"

BPFFS = "/sys/fs/bpf"

# Hooks used here and their parameter counts (include/linux/lsm_hook_defs.h).
# The counts are the same in v5.7, v6.1, v6.12, v7.2 and v7.3 (checked in
# those trees); types changed where a program reading the arguments sees it:
# bprm_committed_creds takes a const linux_binprm * in v6.12 (not in v6.1),
# and task_alloc's clone_flags is u64 in v7.2/v7.3 (unsigned long in v6.12:
# the same 64 bits on x86_64 and arm64). Other hooks did change arity: `bpf`
# has a fourth argument, bool kernel, in v6.18 and v7.3 (three in v6.12).
HOOK_ARGS = {
    "file_open": 1,
    "file_mprotect": 3,
    "bprm_check_security": 1,
    "task_alloc": 2,
    "ptrace_access_check": 2,
    "bprm_committed_creds": 1,
}

# Hooks for the verifier gates and the other tests; absent ones make only their test skip.
EXTRA_HOOKS = (
    "file_free_security",
    "inode_xattr_skipcap",
    "getprocattr",
    "file_receive",
    "file_permission",
    "file_alloc_security",
)

# Global kernel functions that are not LSM hooks, to attach an LSM program to.
NON_HOOK_FUNCS = ("vfs_read", "security_file_open", "do_sys_openat2")

_libc = _klab.libc

PROT_READ, PROT_WRITE = 1, 2

MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20

PTRACE_ATTACH, PTRACE_DETACH = 16, 17

PR_SET_PDEATHSIG = 1

BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY = 26, 24


# Structs whose members programs read through BTF-typed pointers (offsets by name, per kernel).
BTF_STRUCTS = ("vm_area_struct", "mm_struct", "task_struct", "linux_binprm", "file", "inode", "super_block")


def _resolve_btf() -> tuple[_bpf.Btf | None, str]:
    """Resolve every BTF id and struct the suite needs, once, in the runner process.

    The runner imports this module before forking the tests, so each test
    inherits the result: one pass over ~10^5 BTF types is cheap on a host but
    takes seconds under TCG.
    """
    if not os.path.exists(_bpf.BTF_PATH):
        return None, f"no {_bpf.BTF_PATH} (kernel built without CONFIG_DEBUG_INFO_BTF)"
    names = [f"bpf_lsm_{h}" for h in (*HOOK_ARGS, *EXTRA_HOOKS)] + list(NON_HOOK_FUNCS)
    try:
        return _bpf.Btf(names, BTF_STRUCTS), ""
    except (OSError, _bpf.BtfError) as exc:
        return None, f"cannot read vmlinux BTF: {exc}"


VMLINUX, BTF_ERROR = _resolve_btf()
BTF: dict[str, _bpf.BtfFunc] = VMLINUX.funcs if VMLINUX else {}


CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18


def private_mount(fstype: str, target: str) -> int:
    """Mount `fstype` on `target` in a mount namespace of the calling test process's own; 0 or the errno.

    For a guest or host that lacks the mount: the test's children forked
    after this see it too, nothing else does (tests running side by side
    never stack mounts on one shared path), and it goes away with the test
    process whatever happens.
    """
    ret, err = _klab.syscall("unshare", CLONE_NEWNS)
    if ret < 0:
        return err
    # Private first: with a shared / the new mount would propagate back into the parent namespace.
    for source, where, kind, flags in (
        (None, b"/", None, MS_REC | MS_PRIVATE),
        (fstype.encode(), target.encode(), fstype.encode(), 0),
    ):
        if _libc.mount(source, where, kind, flags, None) != 0:
            return ctypes.get_errno()
    return 0


def active_lsms() -> list[str] | None:
    """The active LSMs in call order, or None when securityfs cannot be read."""
    if not os.path.exists(LSM_LIST) and os.geteuid() == 0:
        private_mount("securityfs", "/sys/kernel/security")
    try:
        with open(LSM_LIST) as f:
            return [name for name in f.read().strip().split(",") if name]
    except OSError:
        return None


def hook_id(hook: str) -> int:
    """BTF id of bpf_lsm_<hook>; skips the test when the kernel lacks the hook."""
    func = BTF.get(f"bpf_lsm_{hook}")
    if func is None:
        raise Skip(f"bpf_lsm_{hook} is not in vmlinux BTF (hook absent or CONFIG_BPF_LSM off)")
    return func.type_id


def _load_refusal() -> str:
    """Why a trivial LSM program cannot be loaded here ('' when it can).

    A root process with CAP_BPF+CAP_PERFMON+CAP_SYS_ADMIN that gets EPERM for
    *every* BTF-attached program (LSM and fentry alike), before the verifier
    writes a log, is under a local policy (a BPF LSM program on the bpf hook,
    a vendor patch): nothing here can be tested. EPERM for LSM programs only
    is a kernel bug and is not excused.
    """
    try:
        os.close(_bpf.prog_load(Asm().ret(0).assemble(), hook_id("file_open")))
        return ""
    except BpfError as exc:
        if exc.errno != errno.EPERM or exc.log.strip():
            return ""
    fentry = BTF.get("vfs_read")
    if fentry is None:
        return ""
    try:
        prog = _bpf.prog_load(
            Asm().ret(0).assemble(), fentry.type_id, prog_type=BPF_PROG_TYPE_TRACING, attach_type=BPF_TRACE_FENTRY
        )
        os.close(prog)
        return ""
    except BpfError as exc:
        if exc.errno != errno.EPERM:
            return ""
    caps = all(_klab.has_cap(c) for c in (_klab.CAP_SYS_ADMIN, _klab.CAP_BPF, _klab.CAP_PERFMON))
    held = "holds" if caps else "lacks some of"
    return (
        f"this machine refuses every BTF-attached BPF program (LSM and fentry: EPERM before the verifier) "
        f"though the process {held} CAP_SYS_ADMIN/CAP_BPF/CAP_PERFMON: a local security policy forbids them"
    )


def require(*hooks: str) -> None:
    """Skip unless BPF LSM programs can run here and the hooks exist."""
    _klab.require_root()
    lsms = active_lsms()
    if lsms is not None and "bpf" not in lsms:
        raise Skip(NOT_ACTIVE)
    if BTF_ERROR:
        raise Skip(BTF_ERROR)
    for hook in ("file_open", *hooks):
        hook_id(hook)
    refusal = _load_refusal()
    if refusal:
        raise Skip(refusal)
    if lsms is None and not _counter_probe():
        raise Skip(f"{NOT_ACTIVE}: {LSM_LIST} unreadable and a file_open counter never ran")


def _counter_probe() -> bool:
    """Does a file_open program run at all? (Only used when the LSM list is unreadable.)"""
    counters = _bpf.Counters(1)
    prog = load("file_open", tgid_prog(os.getpid(), counters=counters))
    link = attach(prog)
    os.close(os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC))
    ran = counters[0] == 1
    for fd in (link, prog):
        os.close(fd)
    counters.close()
    return ran


def count_into(asm: Asm, counters: _bpf.Counters, slot: int) -> Asm:
    """Emit: counters[slot] += 1 (array lookup + atomic add)."""
    done = f"counted_{slot}"
    return (
        asm.st(SIZE_W, R10, -4, slot)
        .mov64(R2, R10)
        .alu64("add", R2, imm=-4)
        .ld_map_fd(R1, counters.fd)
        .call(FN_MAP_LOOKUP_ELEM)
        .jmp("jeq", R0, done, imm=0)
        .mov64(R1, imm=1)
        .atomic_add(SIZE_DW, R0, 0, R1)
        .label(done)
    )


def tgid_prog(tgid: int, verdict: int = 0, counters: _bpf.Counters | None = None, slot: int = 0) -> Asm:
    """Return `verdict` (and count) when the current tgid is `tgid`, else 0."""
    asm = Asm().call(FN_GET_CURRENT_PID_TGID).alu64("rsh", R0, imm=32).jmp("jne", R0, "other", imm=tgid)
    if counters is not None:
        count_into(asm, counters, slot)
    return asm.ret(verdict).label("other").ret(0)


def load(hook: str, asm: Asm, **kwargs: object) -> int:
    """Load an LSM program that must load; a refusal fails the test with the verifier log."""
    try:
        return _bpf.prog_load(asm.assemble(), hook_id(hook), **kwargs)  # type: ignore[arg-type]
    except BpfError as exc:
        _skip_if_no_trampoline(exc)
        raise Failure(f"loading a {hook} program: {exc}") from None


def try_load(hook_or_id: str | int, asm: Asm, **kwargs: object) -> tuple[int, str]:
    """Load expecting maybe a refusal: (0, '') on success (fd closed), else (errno, verifier log)."""
    btf_id = hook_or_id if isinstance(hook_or_id, int) else hook_id(hook_or_id)
    try:
        os.close(_bpf.prog_load(asm.assemble(), btf_id, **kwargs))  # type: ignore[arg-type]
    except BpfError as exc:
        return exc.errno, exc.log
    return 0, ""


def attach(prog_fd: int) -> int:
    """Attach via a link; arm64 kernels without BPF trampolines skip."""
    try:
        return _bpf.link_create(prog_fd)
    except BpfError as exc:
        _skip_if_no_trampoline(exc)
        raise Failure(f"attaching an LSM program: {exc}") from None


def _skip_if_no_trampoline(exc: BpfError) -> None:
    """arm64 has BPF trampolines only from v6.0 and with ftrace direct calls; without, ENOTSUPP/EOPNOTSUPP."""
    if exc.errno in (_bpf.ENOTSUPP, errno.EOPNOTSUPP) and _klab.MACHINE == "aarch64":
        raise Skip(
            f"no BPF trampoline on this arm64 kernel ({exc}): BPF LSM attach needs >= 6.0 with "
            "DYNAMIC_FTRACE_WITH_DIRECT_CALLS"
        ) from None


def enforce(hook: str, tgid: int, verdict: int, **kwargs: object) -> tuple[int, int]:
    """Load and attach a tgid-filtered program; returns (prog fd, link fd)."""
    prog = load(hook, tgid_prog(tgid, verdict), **kwargs)
    return prog, attach(prog)


def true_binary() -> str:
    for path in ("/bin/true", "/usr/bin/true"):
        if os.access(path, os.X_OK):
            return path
    raise Skip("no /bin/true to exec")


def read_counters(counters: _bpf.Counters, n: int) -> list[int]:
    return [counters[i] for i in range(n)]


def open_n(n: int, path: str = "/dev/null") -> None:
    for _ in range(n):
        os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))


def ctx_arg(asm: Asm, dst: int, ctx: int, index: int) -> Asm:
    """dst = the hook's argument `index` (the BTF context is an array of u64, one per argument; `ret` last)."""
    return asm.ldx(SIZE_DW, dst, ctx, 8 * index)


_LDX_SIZE = {1: _bpf.SIZE_B, 2: _bpf.SIZE_H, 4: SIZE_W, 8: SIZE_DW}


def load_field(asm: Asm, dst: int, src: int, struct_name: str, member: str) -> Asm:
    """dst = src->member, a BTF-typed load whose offset and size come from vmlinux BTF by name."""
    if VMLINUX is None:
        raise Skip(BTF_ERROR)
    try:
        field = VMLINUX.member(struct_name, member)
    except _bpf.BtfError as exc:
        raise Failure(f"vmlinux BTF: {exc}") from None
    if field.size not in _LDX_SIZE:
        raise Failure(f"{struct_name}.{member} is {field.size} bytes, not a scalar or pointer")
    return asm.ldx(_LDX_SIZE[field.size], dst, src, field.offset)


def store_into(asm: Asm, counters: _bpf.Counters, slot: int, reg: int) -> Asm:
    """Emit: counters[slot] = reg (reg must be callee-saved, R6-R9: the lookup clobbers R0-R5)."""
    done = f"stored_{slot}_{_next_label()}"
    return (
        asm.st(SIZE_W, R10, -4, slot)
        .mov64(R2, R10)
        .alu64("add", R2, imm=-4)
        .ld_map_fd(R1, counters.fd)
        .call(FN_MAP_LOOKUP_ELEM)
        .jmp("jeq", R0, done, imm=0)
        .stx(SIZE_DW, R0, 0, reg)
        .label(done)
    )


_label_counter = [0]


def _next_label() -> int:
    _label_counter[0] += 1
    return _label_counter[0]


def filter_tgid(asm: Asm, tgid: int, other: str = "other") -> Asm:
    """Emit: goto `other` unless the current tgid is `tgid` (clobbers R0-R5)."""
    return asm.call(FN_GET_CURRENT_PID_TGID).alu64("rsh", R0, imm=32).jmp("jne", R0, other, imm=tgid)


def errno_of(fn, *args: object) -> int:  # type: ignore[no-untyped-def]
    """Run a _bpf call; 0 when it succeeded (closing a returned fd), else its errno."""
    try:
        ret = fn(*args)
    except BpfError as exc:
        return exc.errno
    if isinstance(ret, int) and ret > 0:
        os.close(ret)
    return 0
