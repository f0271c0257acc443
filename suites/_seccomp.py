"""ctypes binding for seccomp(2), a tiny classic-BPF assembler, and ptrace/notify helpers (stdlib only).

Everything arch-specific (syscall numbers, audit arch, register layout) comes from per-arch
tables keyed by os.uname().machine, so the tests themselves never branch on the arch.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import struct

import _klab
from _klab import Failure, Skip, errname, libc

# --- per-arch facts this module needs beyond _klab.ARCHES ----------------------
#
# "regs" says where the tracer finds the syscall number and the return value at a seccomp stop:
# (regset note type, struct format of that regset, index of the field). x86_64 keeps both in
# NT_PRSTATUS (struct user_regs_struct: rax at 10, orig_rax at 15); arm64 can only change the
# syscall number through NT_ARM_SYSTEM_CALL, and x0 (NT_PRSTATUS, struct user_pt_regs) holds the
# return value. "nr" holds syscall numbers that _klab.ARCHES lacks.
NT_PRSTATUS = 1
NT_ARM_SYSTEM_CALL = 0x404
_ARCH_EXTRA = {
    "x86_64": {
        "nr": {},
        "regs": {"syscall_nr": (NT_PRSTATUS, "27q", 15), "retval": (NT_PRSTATUS, "27q", 10)},
    },
    "aarch64": {
        "nr": {},
        "regs": {"syscall_nr": (NT_ARM_SYSTEM_CALL, "i", 0), "retval": (NT_PRSTATUS, "34q", 0)},
    },
}
EXTRA = _ARCH_EXTRA[_klab.MACHINE]
AUDIT_ARCH: int = _klab.ARCH["audit_arch"]


def nr(name: str) -> int:
    """Syscall number on this arch, from _klab's table or this module's."""
    return _klab.NR[name] if name in _klab.NR else EXTRA["nr"][name]


# --- uapi constants ------------------------------------------------------------------

SECCOMP_MODE_STRICT = 1
SECCOMP_MODE_FILTER = 2
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
PR_SET_DUMPABLE = 4

SECCOMP_SET_MODE_STRICT = 0
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
SECCOMP_GET_NOTIF_SIZES = 3

FLAG_TSYNC = 1 << 0
FLAG_LOG = 1 << 1
FLAG_SPEC_ALLOW = 1 << 2
FLAG_NEW_LISTENER = 1 << 3
FLAG_TSYNC_ESRCH = 1 << 4
FLAG_WAIT_KILLABLE_RECV = 1 << 5

RET_KILL_PROCESS = 0x80000000
RET_KILL_THREAD = 0x00000000
RET_TRAP = 0x00030000
RET_ERRNO = 0x00050000
RET_USER_NOTIF = 0x7FC00000
RET_TRACE = 0x7FF00000
RET_LOG = 0x7FFC0000
RET_ALLOW = 0x7FFF0000
RET_DATA = 0x0000FFFF
MAX_ERRNO = 4095

ACTIONS = {
    "kill_process": RET_KILL_PROCESS,
    "kill_thread": RET_KILL_THREAD,
    "trap": RET_TRAP,
    "errno": RET_ERRNO,
    "user_notif": RET_USER_NOTIF,
    "trace": RET_TRACE,
    "log": RET_LOG,
    "allow": RET_ALLOW,
}

BPF_MAXINSNS = 4096
MAX_INSNS_PER_PATH = 32768  # kernel/seccomp.c: (1 << 18) / sizeof(struct sock_filter)
FILTER_PENALTY = 4  # each already-attached filter counts len + 4 towards MAX_INSNS_PER_PATH

# classic BPF opcodes (include/uapi/linux/filter.h, bpf_common.h)
BPF_LD, BPF_LDX, BPF_ST, BPF_ALU, BPF_JMP, BPF_RET = 0x00, 0x01, 0x02, 0x04, 0x05, 0x06
BPF_W, BPF_H, BPF_B = 0x00, 0x08, 0x10
BPF_IMM, BPF_ABS, BPF_MEM, BPF_LEN = 0x00, 0x20, 0x60, 0x80
BPF_JA, BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
BPF_DIV = 0x30
BPF_K, BPF_X = 0x00, 0x08

# struct seccomp_data offsets
OFF_NR, OFF_ARCH, OFF_IP, OFF_ARGS = 0, 4, 8, 16
SECCOMP_DATA_SIZE = 64

# user notification ioctls: SECCOMP_IOC_MAGIC '!'
_IOC_WRITE, _IOC_READ = 1, 2


def _ioc(direction: int, nr_: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("!") << 8) | nr_


NOTIF_SIZE, RESP_SIZE, ADDFD_SIZE = 80, 24, 24
IOCTL_NOTIF_RECV = _ioc(_IOC_READ | _IOC_WRITE, 0, NOTIF_SIZE)
IOCTL_NOTIF_SEND = _ioc(_IOC_READ | _IOC_WRITE, 1, RESP_SIZE)
IOCTL_NOTIF_ID_VALID = _ioc(_IOC_WRITE, 2, 8)
IOCTL_NOTIF_ADDFD = _ioc(_IOC_WRITE, 3, ADDFD_SIZE)
IOCTL_NOTIF_SET_FLAGS = _ioc(_IOC_WRITE, 4, 8)  # 6.6+
USER_NOTIF_FLAG_CONTINUE = 1
USER_NOTIF_FD_SYNC_WAKE_UP = 1
ADDFD_FLAG_SETFD = 1 << 0
ADDFD_FLAG_SEND = 1 << 1

# ptrace
PTRACE_TRACEME = 0
PTRACE_CONT = 7
PTRACE_SYSCALL = 24
PTRACE_GETSIGINFO = 0x4202
PTRACE_SETOPTIONS = 0x4200
PTRACE_GETEVENTMSG = 0x4201
PTRACE_GETREGSET = 0x4204
PTRACE_SETREGSET = 0x4205
PTRACE_SECCOMP_GET_FILTER = 0x420C
PTRACE_SECCOMP_GET_METADATA = 0x420D
PTRACE_GET_SYSCALL_INFO = 0x420E
PTRACE_SET_SYSCALL_INFO = 0x4212  # 6.16+
PTRACE_SYSCALL_INFO_ENTRY, PTRACE_SYSCALL_INFO_EXIT, PTRACE_SYSCALL_INFO_SECCOMP = 1, 2, 3
PTRACE_O_TRACESYSGOOD = 1
PTRACE_O_TRACESECCOMP = 0x80
PTRACE_O_EXITKILL = 1 << 20
PTRACE_O_SUSPEND_SECCOMP = 1 << 21
PTRACE_EVENT_SECCOMP = 7

SYS_SECCOMP = 1  # si_code of a seccomp SIGSYS

# --- structures --------------------------------------------------------------------------


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.c_void_p)]


class SeccompData(ctypes.Structure):
    _fields_ = [
        ("nr", ctypes.c_int32),
        ("arch", ctypes.c_uint32),
        ("instruction_pointer", ctypes.c_uint64),
        ("args", ctypes.c_uint64 * 6),
    ]


class Notif(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("pid", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("data", SeccompData)]


class NotifResp(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint64), ("val", ctypes.c_int64), ("error", ctypes.c_int32), ("flags", ctypes.c_uint32)]


class NotifAddfd(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64),
        ("flags", ctypes.c_uint32),
        ("srcfd", ctypes.c_uint32),
        ("newfd", ctypes.c_uint32),
        ("newfd_flags", ctypes.c_uint32),
    ]


class SyscallInfo(ctypes.Structure):
    """struct ptrace_syscall_info; `nr` and `args` sit at the same offsets for entry and seccomp stops,
    `rval`/`is_error` (exit stops) overlay them. Until 6.16, reserved and flags were pad[3]."""

    _fields_ = [
        ("op", ctypes.c_uint8),
        ("reserved", ctypes.c_uint8),
        ("flags", ctypes.c_uint16),
        ("arch", ctypes.c_uint32),
        ("instruction_pointer", ctypes.c_uint64),
        ("stack_pointer", ctypes.c_uint64),
        ("nr", ctypes.c_int64),  # entry.nr / seccomp.nr, or exit.rval
        ("args", ctypes.c_uint64 * 6),  # args[0]'s low byte is exit.is_error at exit stops
        ("ret_data", ctypes.c_uint32),
        ("reserved2", ctypes.c_uint32),
    ]


class SeccompMetadata(ctypes.Structure):
    _fields_ = [("filter_off", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class NotifSizes(ctypes.Structure):
    _fields_ = [("notif", ctypes.c_uint16), ("resp", ctypes.c_uint16), ("data", ctypes.c_uint16)]


assert ctypes.sizeof(SockFilter) == 8
assert ctypes.sizeof(SeccompData) == SECCOMP_DATA_SIZE
assert ctypes.sizeof(Notif) == NOTIF_SIZE
assert ctypes.sizeof(NotifResp) == RESP_SIZE
assert ctypes.sizeof(NotifAddfd) == ADDFD_SIZE
assert ctypes.sizeof(SyscallInfo) == 88

Insn = tuple[int, int, int, int]  # (code, jt, jf, k)

# --- assembler -------------------------------------------------------------------------------


def stmt(code: int, k: int) -> Insn:
    return (code, 0, 0, k & 0xFFFFFFFF)


def jump(code: int, k: int, jt: int, jf: int) -> Insn:
    return (code, jt, jf, k & 0xFFFFFFFF)


def ret(action: int) -> Insn:
    return stmt(BPF_RET | BPF_K, action)


def load(offset: int) -> Insn:
    return stmt(BPF_LD | BPF_W | BPF_ABS, offset)


def arch_guard() -> list[Insn]:
    """Kill on a foreign audit arch: a filter's syscall numbers mean nothing on another arch."""
    return [load(OFF_ARCH), jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 1, 0), ret(RET_KILL_PROCESS)]


def match_rule(syscall_nr: int, action: int, arg0: int | None = None) -> list[Insn]:
    """`if nr == syscall_nr [and args[0] == arg0 (all 64 bits)]: return action`, else fall through."""
    if arg0 is None:
        return [load(OFF_NR), jump(BPF_JMP | BPF_JEQ | BPF_K, syscall_nr, 0, 1), ret(action)]
    lo, hi = arg0 & 0xFFFFFFFF, (arg0 >> 32) & 0xFFFFFFFF
    return [
        load(OFF_NR),
        jump(BPF_JMP | BPF_JEQ | BPF_K, syscall_nr, 0, 5),
        load(OFF_ARGS),  # little endian on both arches: low word first
        jump(BPF_JMP | BPF_JEQ | BPF_K, lo, 0, 3),
        load(OFF_ARGS + 4),
        jump(BPF_JMP | BPF_JEQ | BPF_K, hi, 0, 1),
        ret(action),
    ]


def rules(*rules_: tuple[str | int, int] | tuple[str | int, int, int], default: int = RET_ALLOW) -> list[Insn]:
    """A filter: arch guard, then (syscall name or number, action[, args[0]]) rules in order, then `default`."""
    prog = arch_guard()
    for rule in rules_:
        name, action = rule[0], rule[1]
        number = nr(name) if isinstance(name, str) else name
        prog += match_rule(number, action, rule[2] if len(rule) > 2 else None)  # type: ignore[misc]
    return prog + [ret(default)]


class Program:
    """A sock_fprog with its instruction array kept alive."""

    def __init__(self, insns: list[Insn], length: int | None = None) -> None:
        self.array = (SockFilter * max(len(insns), 1))(*[SockFilter(*i) for i in insns])
        self.fprog = SockFprog(len(insns) if length is None else length, ctypes.addressof(self.array))

    @property
    def ptr(self) -> int:
        return ctypes.addressof(self.fprog)


# --- system calls ------------------------------------------------------------------------------


def seccomp(op: int, flags: int, arg: int | ctypes.Structure | None) -> tuple[int, int]:
    """Raw seccomp(2); arg is an address, a structure (passed by address) or None."""
    addr = ctypes.addressof(arg) if isinstance(arg, ctypes.Structure) else (arg or 0)
    return _klab.syscall("seccomp", op, flags, addr)


def install(insns: list[Insn], flags: int = 0) -> tuple[int, int]:
    """seccomp(SECCOMP_SET_MODE_FILTER, flags, prog) -> (ret, errno); ret is a listener fd or a TID."""
    prog = Program(insns)  # keep it alive across the call
    return seccomp(SECCOMP_SET_MODE_FILTER, flags, prog.ptr)


def install_prctl(insns: list[Insn]) -> tuple[int, int]:
    """The older entry point: prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog)."""
    prog = Program(insns)
    return _klab.syscall("prctl", PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog.ptr, 0, 0)


def must_install(insns: list[Insn], flags: int = 0, what: str = "install filter") -> int:
    return _klab.expect_errno(install(insns, flags), 0, what)


def call(name: str, *args: int) -> tuple[int, int]:
    """Raw syscall by name (this module's table included) -> (ret, errno)."""
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr(name)), *[ctypes.c_long(a) for a in args])
    return r, (ctypes.get_errno() if r == -1 else 0)


def action_avail(action: int) -> tuple[int, int]:
    value = ctypes.c_uint32(action)
    return seccomp(SECCOMP_GET_ACTION_AVAIL, 0, ctypes.addressof(value))


def notif_sizes() -> tuple[tuple[int, int, int] | None, int]:
    sizes = NotifSizes()
    r, err = seccomp(SECCOMP_GET_NOTIF_SIZES, 0, sizes)
    return ((sizes.notif, sizes.resp, sizes.data) if r == 0 else None), err


# --- feature gates (probes, never version strings) ----------------------------------------------


def require_filter_mode() -> None:
    """SKIP unless the kernel has seccomp filter mode.

    seccomp(SET_MODE_FILTER, 0, NULL) copies the program header first, so EFAULT means filter mode
    is there; ENOSYS means no CONFIG_SECCOMP, EINVAL no CONFIG_SECCOMP_FILTER.
    """
    r, err = seccomp(SECCOMP_SET_MODE_FILTER, 0, None)
    if err == errno.ENOSYS:
        raise Skip("kernel built without CONFIG_SECCOMP (seccomp(2) is ENOSYS)")
    if err == errno.EINVAL:
        raise Skip("kernel built without CONFIG_SECCOMP_FILTER (SECCOMP_SET_MODE_FILTER is EINVAL)")
    if err != errno.EFAULT:
        raise Failure(f"probe seccomp(SET_MODE_FILTER, 0, NULL): expected EFAULT (14), got {errname(err)} ({err})")


def require_action(name: str) -> None:
    require_filter_mode()
    r, err = action_avail(ACTIONS[name])
    if err == errno.EINVAL:
        raise Skip(f"needs SECCOMP_GET_ACTION_AVAIL to probe action {name} (kernel 4.14+)")
    if err == errno.EOPNOTSUPP:
        raise Skip(f"kernel lacks seccomp action {name} (SECCOMP_GET_ACTION_AVAIL: EOPNOTSUPP)")
    _klab.expect_errno((r, err), 0, f"SECCOMP_GET_ACTION_AVAIL({name})")


def require_flag(flag: int, name: str) -> None:
    """Unknown filter flags are EINVAL before the program is read; known ones then hit EFAULT on NULL."""
    require_filter_mode()
    _, err = seccomp(SECCOMP_SET_MODE_FILTER, flag, None)
    if err == errno.EINVAL:
        raise Skip(f"kernel lacks seccomp filter flag {name} (EINVAL)")
    if err != errno.EFAULT:
        raise Failure(f"probe seccomp(SET_MODE_FILTER, {name}, NULL): expected EFAULT, got {errname(err)} ({err})")


def require_user_notif() -> None:
    require_action("user_notif")
    require_flag(FLAG_NEW_LISTENER, "SECCOMP_FILTER_FLAG_NEW_LISTENER")
    sizes, err = notif_sizes()
    if sizes is None:
        raise Skip(f"kernel lacks SECCOMP_GET_NOTIF_SIZES ({errname(err)})")


# --- /proc status ------------------------------------------------------------------------------


def proc_status(tid: int | None = None, pid: int | None = None) -> dict[str, str]:
    """Fields of /proc/PID/status (or /proc/self/task/TID/status)."""
    path = f"/proc/self/task/{tid}/status" if tid is not None else f"/proc/{pid or 'self'}/status"
    out: dict[str, str] = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def filter_count(tid: int | None = None, pid: int | None = None) -> int | None:
    """Seccomp_filters from /proc status, or None where the kernel lacks that field (before 5.9)."""
    value = proc_status(tid, pid).get("Seccomp_filters")
    return int(value) if value is not None else None


def require_no_inherited_filters() -> None:
    """Tests that count instructions or filters exactly need a clean starting chain."""
    mode = proc_status().get("Seccomp", "0")
    if mode != "0":
        raise Skip(f"the test runner is already confined by seccomp (Seccomp: {mode}): exact counts impossible")


# --- processes -----------------------------------------------------------------------------


def no_core() -> None:
    """A child about to die of SIGSYS must not leave core dumps or run a core_pattern helper."""
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def fork_status(fn, *args) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    """Run fn(wfd, *args) in a forked child; return (raw wait status, bytes it wrote to wfd).

    For tests where the child is expected to die of a signal (in_child turns that into a failure).
    The child exits 0 when fn returns, 103 when it raises (its traceback then comes back as a Failure).
    """

    def body(wfd: int) -> int:
        no_core()
        fn(wfd, *args)
        return 0

    pid, rfd = _klab.fork_pipe(body)
    try:
        status = _klab.wait_status(pid)
    finally:
        data = _klab.read_pipe(rfd)[0]
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 103 and data.startswith(b"E"):
        raise Failure(f"in child: {data[1:].decode(errors='replace').strip().splitlines()[-1]}")
    return status, data


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    if os.WIFEXITED(status):
        return f"exited {os.WEXITSTATUS(status)}"
    return f"status {status:#x}"


def expect_killed_by(status: int, sig: int, what: str) -> None:
    if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == sig):
        raise Failure(f"{what}: expected death by {signal.Signals(sig).name}, got {describe_status(status)}")


# --- SIGSYS handler with siginfo (ctypes sigaction) --------------------------------------------


class _SigAction(ctypes.Structure):
    # glibc's struct sigaction, identical on x86_64 and aarch64
    _fields_ = [
        ("sa_sigaction", ctypes.c_void_p),
        ("sa_mask", ctypes.c_uint64 * 16),
        ("sa_flags", ctypes.c_int),
        ("sa_restorer", ctypes.c_void_p),
    ]


SA_SIGINFO = 4
_HANDLER_T = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
# siginfo_t on 64-bit: si_signo 0, si_errno 4, si_code 8; _sigsys: _call_addr 16, _syscall 24, _arch 28
_SIGINFO_FMT = "iii4xQiI"
SIGSYS_SEEN: list[dict[str, int]] = []


def _on_sigsys(signo: int, info: int, _uctx: int) -> None:
    raw = ctypes.string_at(info, struct.calcsize(_SIGINFO_FMT))
    s_signo, s_errno, s_code, addr, sysno, arch = struct.unpack(_SIGINFO_FMT, raw)
    SIGSYS_SEEN.append(
        {"signo": s_signo, "errno": s_errno, "code": s_code, "call_addr": addr, "syscall": sysno, "arch": arch}
    )


_HANDLER = _HANDLER_T(_on_sigsys)


def install_sigsys_handler() -> None:
    """sigaction(SIGSYS, {SA_SIGINFO, handler}) through libc, so the handler sees the siginfo."""
    act = _SigAction()
    act.sa_sigaction = ctypes.cast(_HANDLER, ctypes.c_void_p).value
    act.sa_flags = SA_SIGINFO
    ctypes.set_errno(0)
    if libc.sigaction(signal.SIGSYS, ctypes.byref(act), None) != 0:
        raise Failure(f"sigaction(SIGSYS): {errname(ctypes.get_errno())}")


# --- user notification ------------------------------------------------------------------------

libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
libc.ioctl.restype = ctypes.c_int


def ioctl(fd: int, request: int, arg: ctypes.Structure | ctypes._SimpleCData) -> tuple[int, int]:
    ctypes.set_errno(0)
    r = libc.ioctl(fd, request, ctypes.addressof(arg))
    return r, (ctypes.get_errno() if r == -1 else 0)


def wait_readable(fd: int, timeout: float = 5.0) -> bool:
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)


def notif_recv(fd: int, timeout: float = 5.0) -> Notif:
    """Wait for one notification and receive it; fails the test on timeout or error."""
    if not wait_readable(fd, timeout):
        raise Failure(f"listener: expected a notification within {timeout:.0f}s, got none")
    req = Notif()
    _klab.expect_errno(ioctl(fd, IOCTL_NOTIF_RECV, req), 0, "SECCOMP_IOCTL_NOTIF_RECV")
    return req


def notif_send(fd: int, notif_id: int, val: int = 0, error: int = 0, flags: int = 0) -> tuple[int, int]:
    return ioctl(fd, IOCTL_NOTIF_SEND, NotifResp(notif_id, val, error, flags))


def notif_addfd(
    fd: int, notif_id: int, srcfd: int, newfd: int = 0, flags: int = 0, newfd_flags: int = 0
) -> tuple[int, int]:
    """SECCOMP_IOCTL_NOTIF_ADDFD: install srcfd into the waiting caller's fd table; returns its number there."""
    return ioctl(fd, IOCTL_NOTIF_ADDFD, NotifAddfd(notif_id, flags, srcfd, newfd, newfd_flags))


def notif_id_valid(fd: int, notif_id: int) -> tuple[int, int]:
    return ioctl(fd, IOCTL_NOTIF_ID_VALID, ctypes.c_uint64(notif_id))


# --- ptrace ----------------------------------------------------------------------------------------

libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def ptrace(request: int, pid: int, addr: int = 0, data: int = 0) -> tuple[int, int]:
    ctypes.set_errno(0)
    r = libc.ptrace(request, pid, addr, data)
    return r, (ctypes.get_errno() if r == -1 else 0)


def event_msg(pid: int) -> int:
    value = ctypes.c_ulong()
    _klab.expect_errno(ptrace(PTRACE_GETEVENTMSG, pid, 0, ctypes.addressof(value)), 0, "PTRACE_GETEVENTMSG")
    return value.value


def _regset(pid: int, which: str) -> tuple[int, str, int, ctypes.Array]:
    note, fmt, index = EXTRA["regs"][which]
    buf = ctypes.create_string_buffer(struct.calcsize(fmt))
    iov = _Iovec(ctypes.addressof(buf), len(buf))
    _klab.expect_errno(ptrace(PTRACE_GETREGSET, pid, note, ctypes.addressof(iov)), 0, f"PTRACE_GETREGSET({which})")
    return note, fmt, index, buf


def get_reg(pid: int, which: str) -> int:
    """'syscall_nr' or 'retval' of a stopped tracee, through the per-arch regset table."""
    _, fmt, index, buf = _regset(pid, which)
    return struct.unpack(fmt, buf.raw)[index]


def set_reg(pid: int, which: str, value: int) -> None:
    note, fmt, index, buf = _regset(pid, which)
    fields = list(struct.unpack(fmt, buf.raw))
    fields[index] = value
    buf.raw = struct.pack(fmt, *fields)
    iov = _Iovec(ctypes.addressof(buf), len(buf))
    _klab.expect_errno(ptrace(PTRACE_SETREGSET, pid, note, ctypes.addressof(iov)), 0, f"PTRACE_SETREGSET({which})")


def spawn_traced(fn, *args, before_stop=None) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Fork a child that runs before_stop(), PTRACE_TRACEMEs, stops, then runs fn(wfd, *args), exits 0.

    Returns (pid, read end of the child's result pipe). The child is left in its SIGSTOP.
    """

    def body(wfd: int) -> int:
        no_core()
        if before_stop is not None:
            before_stop()
        if ptrace(PTRACE_TRACEME, 0)[0] != 0:
            return 3
        os.kill(os.getpid(), signal.SIGSTOP)
        fn(wfd, *args)
        return 0

    pid, rfd = _klab.fork_pipe(body)
    status = _klab.wait_status(pid)
    if not (os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP):
        raise Failure(f"traced child: expected its initial SIGSTOP, got {describe_status(status)}")
    return pid, rfd


def serve_tracee(pid: int, rfd: int, on_seccomp) -> tuple[int, bytes, list[int]]:  # type: ignore[no-untyped-def]
    """Resume a stopped tracee and serve its seccomp stops with on_seccomp(pid, msg) until it exits.

    The caller sets the ptrace options first. Returns (exit status, the child's pipe output, the
    PTRACE_GETEVENTMSG values seen at PTRACE_EVENT_SECCOMP stops).
    """
    _klab.expect_errno(ptrace(PTRACE_CONT, pid, 0, 0), 0, "PTRACE_CONT")
    messages: list[int] = []
    while True:
        status = _klab.wait_status(pid)
        if not os.WIFSTOPPED(status):
            break
        sig = os.WSTOPSIG(status)
        deliver = 0
        if sig == signal.SIGTRAP and (status >> 16) == PTRACE_EVENT_SECCOMP:
            msg = event_msg(pid)
            messages.append(msg)
            on_seccomp(pid, msg)
        elif sig != signal.SIGTRAP:
            deliver = sig
        _klab.expect_errno(ptrace(PTRACE_CONT, pid, 0, deliver), 0, "PTRACE_CONT")
    data = _klab.read_pipe(rfd)[0]
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 103 and data.startswith(b"E"):
        raise Failure(f"in traced child: {data[1:].decode(errors='replace').strip().splitlines()[-1]}")
    return status, data, messages


def kill_tracee(pid: int, rfd: int) -> None:
    """Tear down a tracee the test is done with."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    os.close(rfd)


def syscall_info(pid: int) -> SyscallInfo:
    """PTRACE_GET_SYSCALL_INFO (5.3+) of a tracee in a syscall or seccomp stop; op 0 elsewhere."""
    info = SyscallInfo()
    got = ptrace(PTRACE_GET_SYSCALL_INFO, pid, ctypes.sizeof(info), ctypes.addressof(info))
    _klab.expect_errno(got, 0, "PTRACE_GET_SYSCALL_INFO")
    return info


def set_syscall_info(pid: int, info: SyscallInfo) -> tuple[int, int]:
    """PTRACE_SET_SYSCALL_INFO (6.16+): change the syscall number and arguments at an entry or seccomp stop."""
    return ptrace(PTRACE_SET_SYSCALL_INFO, pid, ctypes.sizeof(info), ctypes.addressof(info))


def seccomp_metadata(pid: int, index: int, size: int = ctypes.sizeof(SeccompMetadata)) -> tuple[tuple[int, int], int]:
    """PTRACE_SECCOMP_GET_METADATA for filter `index` (0 = oldest): ((ret, errno), flags)."""
    md = SeccompMetadata(index, 0xFFFF)
    return ptrace(PTRACE_SECCOMP_GET_METADATA, pid, size, ctypes.addressof(md)), md.flags


def is_syscall_stop(status: int) -> bool:
    """A PTRACE_O_TRACESYSGOOD syscall-entry or syscall-exit stop."""
    return os.WIFSTOPPED(status) and os.WSTOPSIG(status) == (signal.SIGTRAP | 0x80)


def is_seccomp_stop(status: int) -> bool:
    return os.WIFSTOPPED(status) and (status >> 8) == (signal.SIGTRAP | (PTRACE_EVENT_SECCOMP << 8))


def serve_syscalls(pid: int, rfd: int, on_stop, on_signal=None) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    """Drive a stopped tracee with PTRACE_SYSCALL until it exits.

    The caller sets the ptrace options first (PTRACE_O_TRACESYSGOOD at least). At every syscall stop,
    and at seccomp stops when PTRACE_O_TRACESECCOMP is set, on_stop(pid, syscall_info(pid)) runs before
    the tracee resumes. At a signal-delivery stop the signal is delivered, or what on_signal(pid, sig)
    returns instead (0 suppresses it). Returns (exit status, the child's pipe output).
    """
    deliver = 0
    while True:
        _klab.expect_errno(ptrace(PTRACE_SYSCALL, pid, 0, deliver), 0, "PTRACE_SYSCALL")
        status = _klab.wait_status(pid)
        if not os.WIFSTOPPED(status):
            break
        deliver = 0
        if is_syscall_stop(status) or is_seccomp_stop(status):
            on_stop(pid, syscall_info(pid))
        elif os.WSTOPSIG(status) != signal.SIGTRAP:
            deliver = os.WSTOPSIG(status)
            if on_signal is not None:
                deliver = on_signal(pid, deliver)
    data = _klab.read_pipe(rfd)[0]
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 103 and data.startswith(b"E"):
        raise Failure(f"in traced child: {data[1:].decode(errors='replace').strip().splitlines()[-1]}")
    return status, data


# --- more user notification ------------------------------------------------------------------


def notif_addfd_sized(fd: int, size: int, payload: bytes) -> tuple[int, int]:
    """SECCOMP_IOCTL_NOTIF_ADDFD with the struct size in the ioctl number set to `size` (extensible struct)."""
    buf = ctypes.create_string_buffer(payload, max(size, len(payload)))
    ctypes.set_errno(0)
    r = libc.ioctl(fd, _ioc(_IOC_WRITE, 3, size), ctypes.addressof(buf))
    return r, (ctypes.get_errno() if r == -1 else 0)


def notif_set_flags(fd: int, flags: int) -> tuple[int, int]:
    """SECCOMP_IOCTL_NOTIF_SET_FLAGS (6.6+); the flags travel as the ioctl argument itself, not a pointer."""
    ctypes.set_errno(0)
    r = libc.ioctl(fd, IOCTL_NOTIF_SET_FLAGS, flags)
    return r, (ctypes.get_errno() if r == -1 else 0)


def poll_events(fd: int, timeout: float = 0.0) -> int:
    """The poll(2) revents of fd (POLLIN: a notification to receive; POLLOUT: one received and not yet
    answered; POLLHUP: no task uses the filter any more), waiting up to `timeout` for any."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLOUT | select.POLLHUP)
    events = poller.poll(int(timeout * 1000))
    return events[0][1] if events else 0


def proc_stat_state(pid: int) -> str:
    """The one-letter scheduler state of /proc/PID/stat (S interruptible, D uninterruptible or killable...)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def pending_signals(pid: int) -> int:
    """Signals pending on the process (ShdPnd) or its main thread (SigPnd), as a mask (bit n-1 = signal n)."""
    status = proc_status(pid=pid)
    return int(status.get("ShdPnd", "0"), 16) | int(status.get("SigPnd", "0"), 16)
