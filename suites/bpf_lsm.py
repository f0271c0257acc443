"""BPF LSM (KRSI) suite: BPF programs attached to LSM hooks, loaded by _bpf.py.

Every program filters on one tgid (a helper process the test forks), so a test
never denies anything to the harness, the rest of the guest or the host. Each
deny test checks the denied side (exact errno, which process) and the allowed
side (another process, and the same process before attach or after detach).

Gates: `bpf` must be in /sys/kernel/security/lsm (else LSM programs load and
attach but never run: the canary fails and every other test skips), vmlinux
BTF must be present, and on arm64 the kernel must have BPF trampolines.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import re
import resource
import select
import signal
import sys
import time

import _bpf
import _klab
import _landlock
from _bpf import FN_GET_CURRENT_PID_TGID, FN_MAP_LOOKUP_ELEM, R0, R1, R2, R10, SIZE_DW, SIZE_W, Asm, BpfError
from _klab import Failure, Skip, errname, expect, expect_eq

suite = _klab.Suite("bpf_lsm")

NOT_ACTIVE = "bpf is not an active LSM (lsm= lacks bpf)"
LSM_LIST = "/sys/kernel/security/lsm"
BPFFS = "/sys/fs/bpf"

# Hooks used here and their parameter counts (include/linux/lsm_hook_defs.h,
# unchanged from v5.7 to v6.18).
HOOK_ARGS = {
    "file_open": 1,
    "file_mprotect": 3,
    "bprm_check_security": 1,
    "task_alloc": 2,
    "ptrace_access_check": 2,
    "bprm_committed_creds": 1,
}
# Hooks for the verifier gates; absent ones make only their test skip.
EXTRA_HOOKS = ("file_free_security", "inode_xattr_skipcap", "getprocattr")
# Global kernel functions that are not LSM hooks, to attach an LSM program to.
NON_HOOK_FUNCS = ("vfs_read", "security_file_open", "do_sys_openat2")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]

PROT_READ, PROT_WRITE = 1, 2
MAP_PRIVATE, MAP_ANONYMOUS = 0x02, 0x20
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
PR_SET_PDEATHSIG = 1
BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY = 26, 24


def _resolve_btf() -> tuple[dict[str, _bpf.BtfFunc], str]:
    """Resolve every BTF id the suite needs, once, in the runner process.

    The runner imports this module before forking the tests, so each test
    inherits the result: one pass over ~10^5 BTF types is cheap on a host but
    takes seconds under TCG.
    """
    if not os.path.exists(_bpf.BTF_PATH):
        return {}, f"no {_bpf.BTF_PATH} (kernel built without CONFIG_DEBUG_INFO_BTF)"
    names = [f"bpf_lsm_{h}" for h in (*HOOK_ARGS, *EXTRA_HOOKS)] + list(NON_HOOK_FUNCS)
    try:
        return _bpf.btf_find_funcs(names), ""
    except (OSError, _bpf.BtfError) as exc:
        return {}, f"cannot read vmlinux BTF: {exc}"


BTF, BTF_ERROR = _resolve_btf()


# --- environment and gates ---------------------------------------------------


def _mount(source: str, target: str, fstype: str) -> int:
    """mount(2) through libc; returns 0 or the errno."""
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), 0, None) != 0:
        return ctypes.get_errno()
    return 0


def active_lsms() -> list[str] | None:
    """The active LSMs in call order, or None when securityfs cannot be read."""
    if not os.path.exists(LSM_LIST) and os.geteuid() == 0:
        _mount("securityfs", "/sys/kernel/security", "securityfs")
    try:
        with open(LSM_LIST) as f:
            return [name for name in f.read().strip().split(",") if name]
    except OSError:
        return None


def kernel_version() -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


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


# --- programs ------------------------------------------------------------------


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


# --- a helper process to act as the target --------------------------------------


class Worker:
    """A forked process that performs one action per request and answers its errno.

    Programs filter on its tgid. Actions: open, mprotect, exec, fork, spawn (a
    sleeping child to ptrace), ptrace, environ, landlock_fs, landlock_ptrace.
    """

    REPLACED = -1000  # exec succeeded: the worker became the new program

    def __init__(self) -> None:
        req_r, req_w = os.pipe()
        res_r, res_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:  # everything in the child is inside this: it must never return into the harness
                _close_all_but(req_r, res_w)
                os.write(res_w, b"ready\n")
                _WorkerLoop(req_r, res_w).run()
            except BaseException:  # noqa: BLE001
                code = 1
            os._exit(code)
        os.close(req_r)
        os.close(res_w)
        self.pid, self._req, self._res = pid, req_w, res_r
        self._buf = b""
        self.status: int | None = None
        # Programs are attached only once the worker is set up and idle: from
        # then on it does nothing (no open, no fork) but what it is asked.
        try:
            ready = self._readline(10.0)
        except Failure:
            ready = None
        if ready != b"ready":
            self.close()
            raise Failure(f"worker {pid} failed to start (answered {ready!r})")

    def do(self, action: str, arg: str = "") -> int:
        """Run an action in the worker; returns 0, an errno, or REPLACED."""
        if self.status is not None:
            raise Failure(f"worker {self.pid} is gone, cannot {action}")
        os.write(self._req, (json.dumps([action, arg]) + "\n").encode())
        line = self._readline(10.0)
        if line is None:
            self.status = _klab.wait_status(self.pid)
            if action == "exec" and os.WIFEXITED(self.status) and os.WEXITSTATUS(self.status) == 0:
                return self.REPLACED
            raise Failure(f"worker {self.pid} died during {action}({arg}): status {self.status:#x}")
        return int(line)

    def _readline(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._res], [], [], left)[0]:
                raise Failure(f"worker {self.pid} did not answer within {timeout:.0f}s")
            chunk = os.read(self._res, 4096)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def close(self) -> None:
        """EOF on its request pipe makes the worker reap its tracee and exit; SIGKILL if it lingers."""
        for fd in (self._req, self._res):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.status is None:
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                done, status = os.waitpid(self.pid, os.WNOHANG)
                if done:
                    self.status = status
                    return
                time.sleep(0.002)
            os.kill(self.pid, signal.SIGKILL)
            self.status = _klab.wait_status(self.pid)

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_all_but(*keep: int) -> None:
    """Close every inherited fd but `keep` (and stdio) without opening anything.

    A worker or its tracee must not hold the harness's verdict pipe (the
    harness would wait for EOF until the timeout) nor the test's BPF fds.
    """
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, limit if limit != resource.RLIM_INFINITY else 1 << 16)


class _WorkerLoop:
    """The worker's side: read a request, act, answer the errno."""

    def __init__(self, req: int, res: int) -> None:
        self.req, self.res = req, res
        self.tracee = 0
        self.buf = b""

    def run(self) -> None:
        while True:
            while b"\n" not in self.buf:
                chunk = os.read(self.req, 4096)
                if not chunk:
                    self._reap()
                    return
                self.buf += chunk
            line, self.buf = self.buf.split(b"\n", 1)
            action, arg = json.loads(line)
            result = getattr(self, f"act_{action}")(arg)
            os.write(self.res, f"{result}\n".encode())

    def _reap(self) -> None:
        if self.tracee:
            try:
                os.kill(self.tracee, signal.SIGKILL)
                os.waitpid(self.tracee, 0)
            except OSError:
                pass

    @staticmethod
    def act_open(path: str) -> int:
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        except OSError as exc:
            return exc.errno or -1
        return 0

    @staticmethod
    def act_mprotect(_: str) -> int:
        addr = _libc.mmap(None, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return -2
        rc = _libc.mprotect(addr, 4096, PROT_READ | PROT_WRITE)
        err = ctypes.get_errno() if rc != 0 else 0
        _libc.munmap(addr, 4096)
        return err

    @staticmethod
    def act_exec(path: str) -> int:
        try:
            os.execv(path, [path])
        except OSError as exc:
            return exc.errno or -1
        return -3  # unreachable

    @staticmethod
    def act_fork(_: str) -> int:
        try:
            pid = os.fork()
        except OSError as exc:
            return exc.errno or -1
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        return 0

    def act_spawn(self, _: str) -> int:
        """Fork a sleeping child (the ptrace target); answers its pid."""
        pid = os.fork()
        if pid == 0:
            os.close(self.req)
            os.close(self.res)
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # never outlive the worker
            while True:
                signal.pause()
        self.tracee = pid
        return pid

    def act_ptrace(self, _: str) -> int:
        """PTRACE_ATTACH the spawned child; on success wait for its stop and detach."""
        ctypes.set_errno(0)
        if _libc.ptrace(PTRACE_ATTACH, self.tracee, None, None) != 0:
            return ctypes.get_errno()
        os.waitpid(self.tracee, 0)
        _libc.ptrace(PTRACE_DETACH, self.tracee, None, None)
        return 0

    def act_environ(self, _: str) -> int:
        """A PTRACE_MODE_READ check through procfs."""
        return self.act_open(f"/proc/{self.tracee}/environ")

    @staticmethod
    def act_landlock_fs(path: str) -> int:
        """Allow reading only `path` (handle READ_FILE)."""
        try:
            _landlock.sandbox(fs=_landlock.ACCESS_FS_READ_FILE, paths=((path, _landlock.ACCESS_FS_READ_FILE),))
        except Failure:
            return -4
        return 0

    @staticmethod
    def act_landlock_ptrace(_: str) -> int:
        """Enter a Landlock domain (any domain scopes ptrace)."""
        try:
            _landlock.sandbox(fs=_landlock.ACCESS_FS_MAKE_CHAR)
        except Failure:
            return -4
        return 0


def expect_result(got: int, want: int, what: str) -> None:
    """Compare a worker answer (0 or errno) with the wanted one, naming both."""
    if got != want:
        name = {Worker.REPLACED: "success (exec replaced the process)"}.get(got, errname(got) if got >= 0 else str(got))
        raise Failure(f"{what}: expected {errname(want)} ({want}), got {name} ({got})")


def expect_eventually(worker: Worker, action: str, arg: str, want: int, what: str, timeout: float = 5.0) -> None:
    """Poll until the worker's action gives `want` (for releases the kernel defers), else fail."""
    deadline = time.monotonic() + timeout
    while (got := worker.do(action, arg)) != want and time.monotonic() < deadline:
        time.sleep(0.01)
    expect_result(got, want, f"{what} (polled {timeout:.0f}s)")


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


# --- preconditions and canary ------------------------------------------------


@suite.test
def btf_resolves_lsm_hooks() -> None:
    """vmlinux BTF has a FUNC bpf_lsm_<hook> with the hook's parameter count for every hook used."""
    if BTF_ERROR:
        raise Skip(BTF_ERROR)
    for hook, nargs in HOOK_ARGS.items():
        func = BTF.get(f"bpf_lsm_{hook}")
        expect(func is not None, f"bpf_lsm_{hook}: expected a FUNC in vmlinux BTF, found none (CONFIG_BPF_LSM off?)")
        expect_eq(func.nr_args, nargs, f"bpf_lsm_{hook} FUNC_PROTO parameter count")  # type: ignore[union-attr]
    ids = [BTF[f"bpf_lsm_{h}"].type_id for h in HOOK_ARGS]
    expect_eq(len(set(ids)), len(ids), "distinct BTF ids for distinct hooks")


@suite.test
def canary_counts_file_open() -> None:
    """A file_open counter for our own tgid counts exactly our opens, not another process's.

    If this fails, no other result of the suite means anything: with `bpf`
    missing from the active LSM list programs load and attach but never run.
    """
    _klab.require_root()
    lsms = active_lsms()
    if lsms is not None and "bpf" not in lsms:
        raise Failure(
            f"bpf is not in the active LSM list ({','.join(lsms)}): BPF LSM programs would load and attach "
            "but never run; boot with lsm=...,bpf (CONFIG_LSM)"
        )
    if BTF_ERROR:
        raise Failure(f"BPF LSM programs cannot be loaded: {BTF_ERROR}")
    if "bpf_lsm_file_open" not in BTF:
        raise Failure("bpf_lsm_file_open is not in vmlinux BTF: CONFIG_BPF_LSM is off")
    refusal = _load_refusal()
    if refusal:
        raise Skip(refusal)
    counters = _bpf.Counters(2)
    with Worker() as other:
        mine = load("file_open", tgid_prog(os.getpid(), counters=counters, slot=0))
        theirs = load("file_open", tgid_prog(other.pid, counters=counters, slot=1))
        links = [attach(mine), attach(theirs)]
        expect_eq(read_counters(counters, 2), [0, 0], "counters right after attach (no open yet)")
        for _ in range(3):
            expect_result(other.do("open", "/dev/null"), 0, "open by the other process")
        got = read_counters(counters, 2)
        if got == [0, 0]:
            where = "the LSM list is unreadable" if lsms is None else f"active LSMs: {','.join(lsms)}"
            raise Failure(f"file_open programs attached but never ran (3 opens, counters {got}); {where}")
        expect_eq(got, [0, 3], "[own tgid, other tgid] counters after the other process opened 3 files")
        open_n(5)
        expect_eq(read_counters(counters, 2), [5, 3], "[own tgid, other tgid] counters after we opened 5 files")
        for fd in links:
            os.close(fd)


# --- deny on several hooks -------------------------------------------------------


def _deny_hook(hook: str, action: str, arg: str = "", setup: str = "") -> None:
    """-EPERM for one worker on `hook`: its `action` fails with EPERM; a bystander's does not.

    Before attach the target succeeds; after the link fd is closed it succeeds
    again (exec checks that last, since success replaces the worker).
    """
    require(hook)
    with Worker() as target, Worker() as bystander:
        for w in (target, bystander):
            if setup:
                w.do(setup)
        if action != "exec":
            expect_result(target.do(action, arg), 0, f"{action} by the target before attach")
        prog, link = enforce(hook, target.pid, -errno.EPERM)
        expect_result(target.do(action, arg), errno.EPERM, f"{action} by the target tgid under a {hook} deny program")
        want_other = Worker.REPLACED if action == "exec" else 0
        expect_result(bystander.do(action, arg), want_other, f"{action} by another process under the same program")
        os.close(link)
        want = Worker.REPLACED if action == "exec" else 0
        expect_result(target.do(action, arg), want, f"{action} by the target after closing the link fd")
        os.close(prog)


@suite.test
def deny_file_open() -> None:
    """file_open returning -EPERM makes open(2) fail with EPERM for that tgid only."""
    _deny_hook("file_open", "open", "/dev/null")


@suite.test
def deny_file_mprotect() -> None:
    """file_mprotect returning -EPERM makes mprotect(2) fail with EPERM for that tgid only."""
    _deny_hook("file_mprotect", "mprotect")


@suite.test
def deny_exec_bprm_check_security() -> None:
    """bprm_check_security returning -EPERM makes execve(2) fail with EPERM; the caller survives."""
    path = true_binary()
    _deny_hook("bprm_check_security", "exec", path)


@suite.test
def deny_fork_task_alloc() -> None:
    """task_alloc returning -EPERM makes fork(2) fail with EPERM in that tgid only."""
    _deny_hook("task_alloc", "fork")


@suite.test
def deny_ptrace_access_check() -> None:
    """ptrace_access_check returning -EPERM: PTRACE_ATTACH fails with EPERM for that tracer only."""
    _deny_hook("ptrace_access_check", "ptrace", setup="spawn")


@suite.test
def ptrace_deny_reads_as_eacces_in_procfs() -> None:
    """A ptrace_access_check denial (-ENOKEY) surfaces as EACCES for ptrace-mode procfs opens.

    mm_access() turns the failed ptrace_may_access() into EACCES whatever the
    LSM returned, while PTRACE_ATTACH passes the LSM's errno through.
    """
    require("ptrace_access_check")
    with Worker() as target:
        target.do("spawn")
        expect_result(target.do("environ"), 0, "reading the child's /proc/PID/environ before attach")
        prog, link = enforce("ptrace_access_check", target.pid, -errno.ENOKEY)
        expect_result(target.do("environ"), errno.EACCES, "reading /proc/PID/environ under a -ENOKEY program")
        expect_result(target.do("ptrace"), errno.ENOKEY, "PTRACE_ATTACH under a -ENOKEY program")
        os.close(link)
        os.close(prog)


# --- detach semantics ------------------------------------------------------------


@suite.test
def closing_link_fd_detaches_prog_fd_does_not_hold() -> None:
    """Closing the link fd detaches at once even while the prog fd stays open; re-linking re-enforces."""
    require()
    with Worker() as target:
        prog, link = enforce("file_open", target.pid, -errno.EPERM)
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open while linked")
        os.close(link)
        expect_result(target.do("open", "/dev/null"), 0, "open after the link fd closed (prog fd still open)")
        link = attach(prog)
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open after linking the same prog again")
        os.close(prog)
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open after closing the prog fd (link holds it)")
        os.close(link)
        expect_result(target.do("open", "/dev/null"), 0, "open after the last link fd closed")


@suite.test
def link_detach_is_eopnotsupp() -> None:
    """BPF_LINK_DETACH on an LSM (tracing) link gives EOPNOTSUPP and leaves it enforcing."""
    require()
    with Worker() as target:
        prog, link = enforce("file_open", target.pid, -errno.EPERM)
        _klab.expect_errno(_bpf.link_detach(link), errno.EOPNOTSUPP, "BPF_LINK_DETACH on an LSM link")
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open after the refused BPF_LINK_DETACH")
        os.close(link)
        os.close(prog)


@suite.test
def raw_tracepoint_open_attaches_lsm() -> None:
    """BPF_RAW_TRACEPOINT_OPEN with a NULL name (the pre-LINK_CREATE way) attaches an LSM program too."""
    require()
    with Worker() as target:
        prog = load("file_open", tgid_prog(target.pid, -errno.EPERM))
        try:
            link = _bpf.raw_tracepoint_open(prog)
        except BpfError as exc:
            _skip_if_no_trampoline(exc)
            raise Failure(f"BPF_RAW_TRACEPOINT_OPEN of an LSM program: {exc}") from None
        expect_eq(_bpf.fd_kind(link), "link", "what BPF_RAW_TRACEPOINT_OPEN returned")
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open under a raw_tracepoint_open link")
        os.close(link)
        expect_result(target.do("open", "/dev/null"), 0, "open after closing that link")
        os.close(prog)


def bpffs_dir() -> str:
    """/sys/fs/bpf as a mounted bpffs (mounted here if needed)."""
    with open("/proc/self/mounts") as f:
        if any(line.split()[1:3] == [BPFFS, "bpf"] for line in f):
            return BPFFS
    err = _mount("bpf", BPFFS, "bpf")
    if err:
        raise Skip(f"no bpffs at {BPFFS} and mounting one failed: {errname(err)}")
    return BPFFS


def pin_path(tag: str) -> str:
    return os.path.join(bpffs_dir(), f"klab_bpf_lsm_{tag}_{os.getpid()}_{time.monotonic_ns()}")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@suite.test
def pinned_link_outlives_loader() -> None:
    """A pinned link keeps enforcing after the loader exited; unlinking the pin detaches it."""
    require()
    path = pin_path("link")
    try:
        with Worker() as target:

            def loader() -> int:
                _, link = enforce("file_open", target.pid, -errno.EPERM)
                _bpf.obj_pin(link, path)
                return 0  # exiting closes every fd it had

            expect_eq(_klab.in_child(loader), 0, "loader exit code")
            expect_result(target.do("open", "/dev/null"), errno.EPERM, "open after the loader exited (pin holds)")
            fd = _bpf.obj_get(path)
            expect_eq(_bpf.fd_kind(fd), "link", "BPF_OBJ_GET on the pinned link")
            expect_eq(_bpf.link_info(fd).type, _bpf.BPF_LINK_TYPE_TRACING, "bpf_link_info.type of the pinned link")
            os.close(fd)
            expect_result(target.do("open", "/dev/null"), errno.EPERM, "open after closing the BPF_OBJ_GET fd")
            os.unlink(path)
            # bpffs drops the pinned object's reference in ->free_inode, which runs
            # after an RCU grace period: detach on unlink is deferred, not immediate.
            expect_eventually(target, "open", "/dev/null", 0, "open after unlinking the pin")
    finally:
        _unlink_quietly(path)


@suite.test
def obj_get_pin_returns_link_info() -> None:
    """BPF_OBJ_GET on a pinned link gives a tracing link of our prog on the hook; a pinned prog alone never enforces."""
    require()
    link_path, prog_path = pin_path("info_link"), pin_path("info_prog")
    try:
        with Worker() as target:
            prog, link = enforce("file_open", target.pid, -errno.EPERM)
            prog_type, prog_id = _bpf.prog_info(prog)
            expect_eq(prog_type, _bpf.BPF_PROG_TYPE_LSM, "bpf_prog_info.type of the loaded prog")
            _bpf.obj_pin(link, link_path)
            _bpf.obj_pin(prog, prog_path)
            os.close(link)
            got = _bpf.obj_get(link_path)
            info = _bpf.link_info(got)
            expect_eq(_bpf.fd_kind(got), "link", "fdinfo kind of BPF_OBJ_GET(link pin)")
            expect_eq(info.type, _bpf.BPF_LINK_TYPE_TRACING, "bpf_link_info.type")
            expect_eq(info.prog_id, prog_id, "bpf_link_info.prog_id")
            expect_eq(info.attach_type, _bpf.BPF_LSM_MAC, "bpf_link_info.tracing.attach_type")
            # tracing.target_{obj,btf}_id are filled in from v6.0 on (older kernels leave them 0).
            if kernel_version() >= (6, 0) or info.target_btf_id:
                expect_eq(info.target_btf_id, hook_id("file_open"), "bpf_link_info.tracing.target_btf_id")
            os.close(got)
            os.unlink(link_path)  # the detach is RCU-deferred (bpffs ->free_inode)
            expect_eventually(target, "open", "/dev/null", 0, "open with only the prog pinned (no link)")
            pinned_prog = _bpf.obj_get(prog_path)
            expect_eq(_bpf.fd_kind(pinned_prog), "prog", "fdinfo kind of BPF_OBJ_GET(prog pin)")
            expect_eq(_bpf.prog_info(pinned_prog), (_bpf.BPF_PROG_TYPE_LSM, prog_id), "(type, id) of the pinned prog")
            os.close(pinned_prog)
            os.close(prog)
    finally:
        _unlink_quietly(link_path)
        _unlink_quietly(prog_path)


# --- several programs on one hook --------------------------------------------------


@suite.test
def several_programs_all_run() -> None:
    """Three counters on file_open for our tgid each see every one of our opens."""
    require()
    counters = _bpf.Counters(3)
    progs = [load("file_open", tgid_prog(os.getpid(), counters=counters, slot=i)) for i in range(3)]
    links = [attach(p) for p in progs]
    open_n(4)
    expect_eq(read_counters(counters, 3), [4, 4, 4], "each of three counters after 4 opens")
    for fd in links + progs:
        os.close(fd)


def _deny_among_counters(deny_first: bool) -> None:
    """One -EPERM program among counters denies its target whatever the attach order."""
    require()
    counters = _bpf.Counters(2)
    with Worker() as target, Worker() as bystander:
        deny = load("file_open", tgid_prog(target.pid, -errno.EPERM))
        count = [load("file_open", tgid_prog(bystander.pid, counters=counters, slot=i)) for i in range(2)]
        order = [deny, *count] if deny_first else [*count, deny]
        links = [attach(p) for p in order]
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open by the denied tgid")
        for _ in range(3):
            expect_result(bystander.do("open", "/dev/null"), 0, "open by the counted bystander")
        expect_eq(read_counters(counters, 2), [3, 3], "both counters after the bystander's 3 opens")
        os.close(links[order.index(deny)])
        expect_result(target.do("open", "/dev/null"), 0, "open after closing only the deny link")
        for fd in [fd for fd, p in zip(links, order, strict=True) if p != deny] + order:
            os.close(fd)


suite.add("deny_verdict_deny_attached_first", lambda: _deny_among_counters(True))
suite.add("deny_verdict_deny_attached_last", lambda: _deny_among_counters(False))


# --- verifier and attach gates -----------------------------------------------------


def expect_refused(result: tuple[int, str], err: int, needle: str, what: str) -> None:
    got, log = result
    if got != err:
        raise Failure(f"{what}: expected {errname(err)} ({err}), got {errname(got)} ({got}); log: {log.strip()[-300:]}")
    expect(needle in log, f"{what}: expected the verifier log to mention {needle!r}, got: {log.strip()[-300:]!r}")


@suite.test
def verifier_requires_gpl_license() -> None:
    """LSM programs need a GPL-compatible license: 'Proprietary' is EINVAL, 'Dual BSD/GPL' loads."""
    require()
    ok = Asm().ret(0)
    expect_eq(try_load("file_open", ok, license="GPL"), (0, ""), "(errno, log) loading with license GPL")
    expect_eq(try_load("file_open", ok, license="Dual BSD/GPL"), (0, ""), "(errno, log) with license Dual BSD/GPL")
    expect_refused(try_load("file_open", ok, license="Proprietary"), errno.EINVAL, "GPL", "license Proprietary")


@suite.test
def verifier_rejects_non_hook_attach_target() -> None:
    """attach_btf_id must name a bpf_lsm_* hook FUNC: another FUNC, a FUNC_PROTO or 0 are EINVAL."""
    require()
    other = next((BTF[n] for n in NON_HOOK_FUNCS if n in BTF), None)
    if other is None:
        raise Skip(f"none of {', '.join(NON_HOOK_FUNCS)} in vmlinux BTF")
    ok = Asm().ret(0)
    expect_refused(try_load(other.type_id, ok), errno.EINVAL, other.name, f"LSM program on FUNC {other.name}")
    proto = BTF["bpf_lsm_file_open"].proto_id
    expect_refused(try_load(proto, ok), errno.EINVAL, "is not a function", "LSM program on a FUNC_PROTO id")
    expect_refused(try_load(0, ok), errno.EINVAL, "btf_id", "LSM program without attach_btf_id")


@suite.test
def verifier_rejects_sleepable_on_non_sleepable_hook() -> None:
    """BPF_F_SLEEPABLE is refused on file_mprotect (not in sleepable_lsm_hooks) and accepted on file_open."""
    require("file_mprotect")
    ok = Asm().ret(0)
    expect_eq(try_load("file_open", ok, sleepable=True), (0, ""), "(errno, log) sleepable on file_open")
    expect_refused(
        try_load("file_mprotect", ok, sleepable=True), errno.EINVAL, "is not sleepable", "sleepable on file_mprotect"
    )


# bpf_lsm_get_retval_range() and its use in check_return_code() came with
# "bpf, lsm: Add check for BPF LSM return value" (Xu Kuohai, merged for v6.12;
# selftests progs/verifier_lsm.c); before v6.12 any LSM return value loads.
RETVAL_CHECK_SINCE = (6, 12)


def _require_retval_check() -> None:
    if kernel_version() < RETVAL_CHECK_SINCE:
        raise Skip(
            "LSM return-value range checks landed in v6.12 ('bpf, lsm: Add check for BPF LSM return value'); "
            f"kernel {os.uname().release} accepts any return value"
        )


@suite.test
def verifier_enforces_errno_return_range() -> None:
    """An int hook's program must return 0 or -4095..-1: 1, 4096 and -4096 are EINVAL (v6.12+)."""
    require("file_mprotect")
    _require_retval_check()
    for value in (0, -1, -errno.EPERM, -4095):
        expect_eq(try_load("file_mprotect", Asm().ret(value)), (0, ""), f"(errno, log) returning {value}")
    for value in (1, 4096, -4096):
        expect_refused(
            try_load("file_mprotect", Asm().ret(value)),
            errno.EINVAL,
            f"smin={value} smax={value} should have been in [-4095, 0]",
            f"file_mprotect program returning {value}",
        )


@suite.test
def verifier_enforces_bool_return_range() -> None:
    """A bool hook (inode_xattr_skipcap) accepts 0 and 1 and refuses 2 and -1 (v6.12+)."""
    require("inode_xattr_skipcap")
    _require_retval_check()
    for value in (0, 1):
        expect_eq(try_load("inode_xattr_skipcap", Asm().ret(value)), (0, ""), f"(errno, log) returning {value}")
    for value in (2, -1):
        expect_refused(
            try_load("inode_xattr_skipcap", Asm().ret(value)),
            errno.EINVAL,
            "should have been in [0, 1]",
            f"inode_xattr_skipcap program returning {value}",
        )


@suite.test
def verifier_void_hook_takes_any_return() -> None:
    """A void hook (file_free_security) has no return range: 4096 loads on every kernel."""
    require("file_free_security")
    expect_eq(try_load("file_free_security", Asm().ret(4096)), (0, ""), "(errno, log) returning 4096 from a void hook")


@suite.test
def verifier_rejects_disabled_hook() -> None:
    """getprocattr is on bpf_lsm_disabled_hooks (v6.12+, 'bpf, lsm: Add disabled BPF LSM hook list'): EINVAL."""
    require("getprocattr")
    if kernel_version() < (6, 12):
        raise Skip(f"the disabled-hook list landed in v6.12; kernel {os.uname().release} lets getprocattr load")
    expect_refused(try_load("getprocattr", Asm().ret(0)), errno.EINVAL, "disabled hook", "LSM program on getprocattr")


# --- sleepable programs ------------------------------------------------------------


@suite.test
def sleepable_file_open_denies() -> None:
    """A BPF_F_SLEEPABLE program on file_open runs and denies its tgid only."""
    require()
    with Worker() as target, Worker() as bystander:
        prog, link = enforce("file_open", target.pid, -errno.EPERM, sleepable=True)
        expect_result(target.do("open", "/dev/null"), errno.EPERM, "open under a sleepable deny program")
        expect_result(bystander.do("open", "/dev/null"), 0, "open by another process")
        os.close(link)
        os.close(prog)


@suite.test
def sleepable_bprm_committed_creds_counts_exec() -> None:
    """A sleepable counter on bprm_committed_creds (void hook) sees exactly one exec of its tgid."""
    require("bprm_committed_creds")
    path = true_binary()
    counters = _bpf.Counters(1)
    with Worker() as target:
        prog = load("bprm_committed_creds", tgid_prog(target.pid, counters=counters), sleepable=True)
        link = attach(prog)
        expect_eq(counters[0], 0, "counter before the exec")
        expect_result(target.do("exec", path), Worker.REPLACED, "exec under a counting program")
        expect_eq(counters[0], 1, "bprm_committed_creds count after one successful exec of that tgid")
        os.close(link)
        os.close(prog)


# --- stacking with Landlock ---------------------------------------------------------


def _require_landlock() -> None:
    _landlock.require_abi(1)


def _order(lsms: list[str] | None) -> str:
    """Which of landlock and bpf runs first (the LSM list is in call order)."""
    if lsms is None or "landlock" not in lsms or "bpf" not in lsms:
        raise Skip("cannot tell the landlock/bpf call order from the LSM list")
    return "landlock" if lsms.index("landlock") < lsms.index("bpf") else "bpf"


@suite.test
def landlock_same_domain_bpf_still_denies_ptrace() -> None:
    """Inside one Landlock domain ptrace is allowed by Landlock, yet a BPF -ENOKEY still denies it."""
    require("ptrace_access_check")
    _require_landlock()
    with Worker() as tracer:
        expect_result(tracer.do("landlock_ptrace"), 0, "entering a Landlock domain")
        tracer.do("spawn")  # the tracee inherits the tracer's domain
        expect_result(tracer.do("ptrace"), 0, "PTRACE_ATTACH within one Landlock domain, no BPF program")
        prog, link = enforce("ptrace_access_check", tracer.pid, -errno.ENOKEY)
        expect_result(tracer.do("ptrace"), errno.ENOKEY, "PTRACE_ATTACH within one domain under BPF -ENOKEY")
        os.close(link)
        expect_result(tracer.do("ptrace"), 0, "PTRACE_ATTACH within one domain after the BPF link closed")
        os.close(prog)


@suite.test
def landlock_denial_not_overridden_by_bpf_allow() -> None:
    """A BPF program returning 0 cannot undo Landlock's EPERM; with landlock first it is not even consulted."""
    require("ptrace_access_check")
    _require_landlock()
    first = _order(active_lsms())
    counters = _bpf.Counters(1)
    with Worker() as tracer:
        tracer.do("spawn")  # the tracee stays outside the tracer's future domain
        prog = load("ptrace_access_check", tgid_prog(tracer.pid, 0, counters=counters))
        link = attach(prog)
        expect_result(tracer.do("ptrace"), 0, "PTRACE_ATTACH before Landlock, BPF allowing")
        expect_eq(counters[0], 1, "BPF ptrace_access_check calls after one allowed attach")
        expect_result(tracer.do("landlock_ptrace"), 0, "entering a Landlock domain")
        expect_result(tracer.do("ptrace"), errno.EPERM, "PTRACE_ATTACH out of the domain, BPF returning 0")
        want = 1 if first == "landlock" else 2
        expect_eq(counters[0], want, f"BPF ptrace_access_check calls ({first} runs first, stops at a denial)")
        os.close(link)
        os.close(prog)


@suite.test
def first_denying_lsm_decides_errno() -> None:
    """Landlock (EPERM) and BPF (-ENOKEY) both deny: the errno is that of whichever LSM runs first."""
    require("ptrace_access_check")
    _require_landlock()
    first = _order(active_lsms())
    with Worker() as tracer:
        tracer.do("spawn")
        prog, link = enforce("ptrace_access_check", tracer.pid, -errno.ENOKEY)
        expect_result(tracer.do("ptrace"), errno.ENOKEY, "PTRACE_ATTACH with only BPF denying")
        expect_result(tracer.do("landlock_ptrace"), 0, "entering a Landlock domain")
        want = errno.EPERM if first == "landlock" else errno.ENOKEY
        expect_result(tracer.do("ptrace"), want, f"PTRACE_ATTACH with both denying ({first} runs first)")
        os.close(link)
        expect_result(tracer.do("ptrace"), errno.EPERM, "PTRACE_ATTACH with only Landlock denying")
        os.close(prog)


@suite.test
def landlock_fs_and_bpf_file_open() -> None:
    """file_open: where Landlock allows, BPF's -ENOKEY decides; where Landlock denies, its EACCES wins if first."""
    require()
    _require_landlock()
    first = _order(active_lsms())
    denied = os.path.abspath(_klab.__file__)
    with Worker() as target:
        expect_result(target.do("landlock_fs", "/dev/null"), 0, "Landlock: READ_FILE allowed on /dev/null only")
        expect_result(target.do("open", "/dev/null"), 0, "open of the allowed file, no BPF program")
        expect_result(target.do("open", denied), errno.EACCES, f"open of {denied} outside the rule, no BPF program")
        prog, link = enforce("file_open", target.pid, -errno.ENOKEY)
        expect_result(target.do("open", "/dev/null"), errno.ENOKEY, "open Landlock allows, BPF -ENOKEY")
        want = errno.EACCES if first == "landlock" else errno.ENOKEY
        expect_result(target.do("open", denied), want, f"open both deny ({first} runs first)")
        os.close(link)
        os.close(prog)
