"""bpf_lsm: what the audit-side tests share: a worker with more actions, an exec'd child, record-building asm.

The KRSI design (RFC "Kernel Runtime Security Instrumentation", 2019) has two
halves: MAC (a program denies) and audit (a program sends records to user
space). The audit tests pin every field of each record, which process it
names and which hook sent it; a process the policy is not about must produce
nothing.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable

import _bpf
import _klab
from _bpf import FN_MAP_LOOKUP_ELEM, R0, R1, R2, R10, SIZE_DW, SIZE_W, Asm
from _klab import Failure, libc
from _worker import WorkerLoop, _close_all_but

PR_SET_NAME = 15


class AuditLoop(WorkerLoop):
    """Worker actions for the audit and helper tests (see _worker.WorkerLoop)."""

    @staticmethod
    def act_comm(name: str) -> int:
        """prctl(PR_SET_NAME): the comm of the calling thread."""
        buf = ctypes.create_string_buffer(name.encode())
        return 0 if libc.prctl(PR_SET_NAME, ctypes.addressof(buf), 0, 0, 0) == 0 else ctypes.get_errno()

    @staticmethod
    def act_setids(ids: list[int]) -> int:
        """setgroups([]), setresgid, setresuid: arg [ruid, euid, suid, rgid, egid, sgid]."""
        try:
            os.setgroups([])
            os.setresgid(*ids[3:6])
            os.setresuid(*ids[0:3])
        except OSError as exc:
            return exc.errno or -1
        return 0

    @staticmethod
    def act_pin(cpu: int) -> int:
        """Run on this CPU only."""
        try:
            os.sched_setaffinity(0, {int(cpu)})
        except OSError as exc:
            return exc.errno or -1
        return 0

    @staticmethod
    def act_unlink(path: str) -> int:
        return _klab.oserror_errno(os.unlink, path)

    @classmethod
    def act_thread_open(cls, arg: list[str]) -> int:
        """A new thread named arg[1] opens arg[0]; answers its tid, or -errno when the open failed."""
        path, comm = arg
        out: list[int] = []

        def body() -> None:
            cls.act_comm(comm)
            err = cls.act_open(path)
            out.append(-err if err else threading.get_native_id())

        thread = threading.Thread(target=body)
        thread.start()
        thread.join()
        return out[0]


class Exec:
    """A forked child that execve()s argv with env once told to; its stdout is a pipe, its stdin another.

    It sleeps in read(2) until go(), so programs can be attached for its pid
    first; `setup` (set ids, ...) runs in it before that. Its stderr goes to
    /dev/null (ld.so and python warnings are not what is tested). The exec'd
    program may block reading stdin: finish() closes it.
    """

    def __init__(self, argv: list[str], env: dict[str, str], setup: Callable[[], None] | None = None) -> None:
        go_r, go_w = os.pipe()
        out_r, out_w = os.pipe()
        in_r, in_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                null = os.open("/dev/null", os.O_WRONLY)
                os.dup2(in_r, 0)
                os.dup2(out_w, 1)
                os.dup2(null, 2)
                _close_all_but(go_r)
                if setup is not None:
                    setup()
                os.read(go_r, 1)
                os.execve(argv[0], argv, env)
            except BaseException:  # noqa: BLE001 - never return into the harness
                pass
            os._exit(127)
        for fd in (go_r, out_w, in_r):
            os.close(fd)
        self.pid, self._go, self._out, self._in = pid, go_w, out_r, in_w
        self._buf = b""
        self.status: int | None = None

    def go(self) -> None:
        os.write(self._go, b"x")
        os.close(self._go)

    def readline(self, timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out], [], [], left)[0]:
                raise Failure(f"exec'd child {self.pid} wrote no line within {timeout:.0f}s")
            chunk = os.read(self._out, 4096)
            if not chunk:
                raise Failure(f"exec'd child {self.pid} closed its stdout without a line (got {self._buf!r})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def json_line(self) -> object:
        return json.loads(self.readline())

    def finish(self, timeout: float = 20.0) -> int:
        """Close its stdin, reap it; returns the exit code (-signal when killed)."""
        if self._in >= 0:
            os.close(self._in)
            self._in = -1
        if self.status is None:
            self.status = _klab.wait_status(self.pid, timeout)
        return os.WEXITSTATUS(self.status) if os.WIFEXITED(self.status) else -os.WTERMSIG(self.status)

    def close(self) -> None:
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.finish()
        for fd in (self._out, self._go):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Exec:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def become(ids: tuple[int, int, int, int, int, int]) -> Callable[[], None]:
    """A setup step for Exec: (ruid, euid, suid, rgid, egid, sgid)."""

    def setup() -> None:
        if AuditLoop.act_setids(list(ids)) != 0:
            raise Failure(f"setresuid/setresgid{ids} failed")

    return setup


def python_argv(code: str) -> list[str]:
    """This python, without site (-S, fewer files to open under TCG) and environment (-E), running code."""
    return [sys.executable, "-S", "-E", "-c", code]


def libc_path() -> str:
    """The libc this process runs with (a library LD_PRELOAD may name without changing anything)."""
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if "/libc.so" in path or "/libc-" in path:
                return path
    raise Failure("no libc in /proc/self/maps")


# --- asm -------------------------------------------------------------------------


def slot_ptr(asm: Asm, counters: _bpf.Counters, slot: int, dst: int, missing: str) -> Asm:
    """Emit: dst = &counters[slot] (goto `missing` if the lookup fails). Clobbers R0-R5."""
    asm.st(SIZE_W, R10, -4, slot).mov64(R2, R10).alu64("add", R2, imm=-4).ld_map_fd(R1, counters.fd)
    return asm.call(FN_MAP_LOOKUP_ELEM).jmp("jeq", R0, missing, imm=0).mov64(dst, R0)


def load_slot(asm: Asm, counters: _bpf.Counters, slot: int, dst: int, missing: str) -> Asm:
    """Emit: dst = counters[slot] (a setting the test wrote)."""
    return slot_ptr(asm, counters, slot, dst, missing).ldx(SIZE_DW, dst, dst, 0)


def next_seq(asm: Asm, counters: _bpf.Counters, slot: int, dst: int, tmp: int, missing: str) -> Asm:
    """Emit: dst = counters[slot]++ (one worker runs the program at a time: no atomics needed). tmp is clobbered."""
    slot_ptr(asm, counters, slot, tmp, missing)
    return asm.ldx(SIZE_DW, dst, tmp, 0).mov64(R1, dst).alu64("add", R1, imm=1).stx(SIZE_DW, tmp, 0, R1)


def cstr(raw: bytes) -> str:
    """A NUL-terminated string from a fixed-size field."""
    return raw.split(b"\0", 1)[0].decode(errors="replace")


def u64(value: int) -> int:
    """A (negative) int as the u64 a program stored."""
    return value & ((1 << 64) - 1)
