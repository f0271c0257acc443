"""A forked helper process that does one thing at a time when asked, and answers the errno.

Programs, filters and domains under test target its tgid alone, so a test
never denies anything to the harness. Actions: open, mprotect, mmap,
mmap_shared, mmap_bytes, mprotect_at, stack_mprotect, exec, fork, clone, spawn
(a sleeping child to ptrace), ptrace, environ, proc_mem, drop_caps,
landlock_fs, landlock_ptrace. An action's argument is any JSON value. A suite
adds actions by subclassing WorkerLoop.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import sys
import time

import _klab
import _landlock
from _klab import Failure, errname, libc

PROT_READ, PROT_WRITE = 1, 2
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x01, 0x02, 0x20
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
PR_SET_PDEATHSIG = 1

# clone(2) is not in _klab.NR yet (asm-generic: 220; x86_64: 56).
_NR_CLONE = {"x86_64": 56, "aarch64": 220}


class Worker:
    """A forked process that performs one action per request and answers its errno.

    Programs filter on its tgid. Actions are the act_* methods of WorkerLoop
    (or of the subclass given as `loop`).
    """

    REPLACED = -1000  # exec succeeded: the worker became the new program

    def __init__(self, loop: type[WorkerLoop] | None = None) -> None:
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
                (loop or WorkerLoop)(req_r, res_w).run()
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

    def do(self, action: str, arg: object = "") -> int:
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


class WorkerLoop:
    """The worker's side: read a request, act, answer the errno."""

    def __init__(self, req: int, res: int) -> None:
        self.req, self.res = req, res
        self.tracee = 0  # the latest spawned child: ptrace/environ/proc_mem act on it by default
        self.tracees: list[int] = []
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
        for pid in self.tracees:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
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
        addr = libc.mmap(None, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return -2
        rc = libc.mprotect(addr, 4096, PROT_READ | PROT_WRITE)
        err = ctypes.get_errno() if rc != 0 else 0
        libc.munmap(addr, 4096)
        return err

    @staticmethod
    def act_mmap(pages: int) -> int:
        """Map `pages` anonymous read-only private pages; answers the address (kept mapped)."""
        addr = libc.mmap(None, 4096 * int(pages), PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return -2
        return int(addr)

    @staticmethod
    def act_mmap_shared(pages: int) -> int:
        """Map `pages` shared anonymous read-only pages (a shmem file of their own: the VMA never merges)."""
        addr = libc.mmap(None, 4096 * int(pages), PROT_READ, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return -2
        return int(addr)

    @staticmethod
    def act_mmap_bytes(data_hex: str) -> int:
        """Map a private read+write page holding these bytes (hex); answers its address."""
        data = bytes.fromhex(data_hex)
        addr = libc.mmap(None, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return -2
        ctypes.memmove(addr, data, len(data))
        return int(addr)

    @staticmethod
    def act_mprotect_at(arg: list[int]) -> int:
        """mprotect(addr, length, prot) with the caller's exact values."""
        addr, length, prot = arg
        ctypes.set_errno(0)
        rc = libc.mprotect(ctypes.c_void_p(addr), length, prot)
        return ctypes.get_errno() if rc != 0 else 0

    @staticmethod
    def act_stack_mprotect(_: object) -> int:
        """mprotect the lowest page of the [stack] mapping with the protection it has (read+write): a no-op."""
        with open("/proc/self/maps") as f:
            line = next((ln for ln in f if ln.rstrip().endswith("[stack]")), None)
        if line is None:
            return -5
        start = int(line.split("-", 1)[0], 16)
        ctypes.set_errno(0)
        rc = libc.mprotect(ctypes.c_void_p(start), 4096, PROT_READ | PROT_WRITE)
        return ctypes.get_errno() if rc != 0 else 0

    @staticmethod
    def act_clone(flags: int) -> int:
        """Raw clone(flags) without a new stack (fork-like); the child exits at once. Answers 0 or the errno."""
        ctypes.set_errno(0)
        pid = libc.syscall(ctypes.c_long(_NR_CLONE[_klab.MACHINE]), ctypes.c_ulong(flags), 0, 0, 0, 0)
        if pid == 0:
            os._exit(0)
        if pid < 0:
            return ctypes.get_errno()
        os.waitpid(pid, 0)
        return 0

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

    def act_spawn(self, _: object) -> int:
        """Fork a sleeping child (a ptrace target, the default one from now on); answers its pid."""
        pid = os.fork()
        if pid == 0:
            os.close(self.req)
            os.close(self.res)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # never outlive the worker
            while True:
                signal.pause()
        self.tracee = pid
        self.tracees.append(pid)
        return pid

    def act_ptrace(self, pid: object) -> int:
        """PTRACE_ATTACH a spawned child (default: the latest); on success wait for its stop and detach."""
        pid = int(pid) if pid else self.tracee
        ctypes.set_errno(0)
        if libc.ptrace(PTRACE_ATTACH, pid, None, None) != 0:
            return ctypes.get_errno()
        os.waitpid(pid, 0)
        libc.ptrace(PTRACE_DETACH, pid, None, None)
        return 0

    def act_environ(self, pid: object) -> int:
        """A PTRACE_MODE_READ check through procfs (mm_access), on a spawned child (default: the latest)."""
        return self.act_open(f"/proc/{int(pid) if pid else self.tracee}/environ")

    def act_proc_mem(self, pid: object) -> int:
        """A PTRACE_MODE_ATTACH check through procfs: open /proc/PID/mem of a spawned child."""
        return self.act_open(f"/proc/{int(pid) if pid else self.tracee}/mem")

    @staticmethod
    def act_drop_caps(caps: list[int]) -> int:
        """Drop these capabilities from the effective, permitted and inheritable sets."""
        try:
            _klab.drop_caps(*caps)
        except Failure:
            return -6
        return 0

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
