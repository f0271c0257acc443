"""Guest-side test harness shared by every suite (stdlib only).

Runs inside the guest with the guest's own python3, and on a Linux host for
fast iteration. Each test runs in its own forked child: Landlock domains,
seccomp filters and capability drops are irreversible, so a test must never
leak its restrictions into the next one. Results stream out as KTAP version 1
(flushed per test, so a kernel crash still leaves the results before it) and
are written as JSON at the end.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import re
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# Per-arch facts the suites need: syscall numbers and seccomp audit arch.
# Same keys on every arch; add an arch by adding an entry.
ARCHES = {
    "x86_64": {
        "audit_arch": 0xC000003E,
        "nr": {
            "bpf": 321,
            "seccomp": 317,
            "getpid": 39,
            "gettid": 186,
            "getppid": 110,
            "kcmp": 312,
            "process_vm_readv": 310,
            "pidfd_open": 434,
            "pidfd_getfd": 438,
            "openat": 257,
            "close": 3,
            "dup": 32,
            "uname": 63,
            "getuid": 102,
            "getgid": 104,
            "capget": 125,
            "capset": 126,
            "prctl": 157,
            "tgkill": 234,
            "kill": 62,
            "write": 1,
            "read": 0,
            "getcwd": 79,
            "landlock_create_ruleset": 444,
            "landlock_add_rule": 445,
            "landlock_restrict_self": 446,
            "keyctl": 250,
            "add_key": 248,
            "unshare": 272,
            "setns": 308,
            "setresuid": 117,
            "setresgid": 119,
            "setgroups": 116,
            "pidfd_send_signal": 424,
            "clone3": 435,
            "execveat": 322,
            "memfd_create": 319,
            "mmap": 9,
            "mprotect": 10,
            "ioctl": 16,
            "fcntl": 72,
            "socket": 41,
            "connect": 42,
            "bind": 49,
            "sendto": 44,
            "ptrace": 101,
            "wait4": 61,
            "mount": 165,
            "umount2": 166,
            "perf_event_open": 298,
            "nanosleep": 35,
            "restart_syscall": 219,
            "getrandom": 318,
            "openat2": 437,
            "faccessat": 269,
            "mkdirat": 258,
            "unlinkat": 263,
            "getxattr": 191,
            "setxattr": 188,
            "sched_yield": 24,
            "getpgid": 121,
            "setpgid": 109,
            "getsid": 124,
            "setsid": 112,
        },
    },
    "aarch64": {
        "audit_arch": 0xC00000B7,
        "nr": {
            "bpf": 280,
            "seccomp": 277,
            "getpid": 172,
            "gettid": 178,
            "getppid": 173,
            "kcmp": 272,
            "process_vm_readv": 270,
            "pidfd_open": 434,
            "pidfd_getfd": 438,
            "openat": 56,
            "close": 57,
            "dup": 23,
            "uname": 160,
            "getuid": 174,
            "getgid": 176,
            "capget": 90,
            "capset": 91,
            "prctl": 167,
            "tgkill": 131,
            "kill": 129,
            "write": 64,
            "read": 63,
            "getcwd": 17,
            "landlock_create_ruleset": 444,
            "landlock_add_rule": 445,
            "landlock_restrict_self": 446,
            "keyctl": 219,
            "add_key": 217,
            "unshare": 97,
            "setns": 268,
            "setresuid": 147,
            "setresgid": 149,
            "setgroups": 159,
            "pidfd_send_signal": 424,
            "clone3": 435,
            "execveat": 281,
            "memfd_create": 279,
            "mmap": 222,
            "mprotect": 226,
            "ioctl": 29,
            "fcntl": 25,
            "socket": 198,
            "connect": 203,
            "bind": 200,
            "sendto": 206,
            "ptrace": 117,
            "wait4": 260,
            "mount": 40,
            "umount2": 39,
            "perf_event_open": 241,
            "nanosleep": 101,
            "restart_syscall": 128,
            "getrandom": 278,
            "openat2": 437,
            "faccessat": 48,
            "mkdirat": 34,
            "unlinkat": 35,
            "getxattr": 8,
            "setxattr": 5,
            "sched_yield": 124,
            "getpgid": 155,
            "setpgid": 154,
            "getsid": 156,
            "setsid": 157,
        },
    },
}

MACHINE = os.uname().machine
ARCH = ARCHES.get(MACHINE)
if ARCH is None:
    raise SystemExit(f"_klab: no syscall table for machine {MACHINE!r}; add it to ARCHES")
NR = ARCH["nr"]

# The one libc handle of every suite, with the prototypes ctypes cannot guess (pointers, 64-bit lengths).
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]


def kernel_version() -> tuple[int, int]:
    """(major, minor) of the running kernel: the suites gate on it where semantics changed between releases."""
    match = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


TEST_TIMEOUT = float(os.environ.get("KLAB_TEST_TIMEOUT", "60"))
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39


class Skip(Exception):
    """The kernel lacks what the test needs; the message says what."""


class Failure(AssertionError):
    """The kernel did something other than what the test pins down."""


def syscall(name: str, *args: int | ctypes._SimpleCData | ctypes.Array | None) -> tuple[int, int]:
    """Call a raw syscall by name; return (result, errno) without hiding either."""
    cargs = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(NR[name]), *cargs)
    err = ctypes.get_errno() if ret == -1 else 0
    return ret, err


def errname(err: int) -> str:
    """Symbolic name of an errno value (0 reads as 'success')."""
    if err == 0:
        return "success"
    return errno.errorcode.get(err, str(err))


def expect(cond: bool, message: str) -> None:
    if not cond:
        raise Failure(message)


def expect_eq(got: object, want: object, what: str) -> None:
    if got != want:
        raise Failure(f"{what}: expected {want!r}, got {got!r}")


def expect_errno(result: tuple[int, int], want: int, what: str) -> int:
    """Check a (ret, errno) pair: want 0 means success, else that exact errno."""
    ret, err = result
    if want == 0:
        if ret < 0:
            raise Failure(f"{what}: expected success, got {errname(err)} ({err})")
        return ret
    if ret != -1 or err != want:
        got = f"{errname(err)} ({err})" if ret == -1 else f"success (returned {ret})"
        raise Failure(f"{what}: expected {errname(want)} ({want}), got {got}")
    return ret


def oserror_errno(fn, *args, **kwargs) -> int:  # type: ignore[no-untyped-def]
    """Run a Python os call and return 0 on success or the errno it raised."""
    try:
        fn(*args, **kwargs)
    except OSError as exc:
        return exc.errno or -1
    return 0


def set_no_new_privs() -> None:
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise Failure(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {errname(ctypes.get_errno())}")


# --- capabilities ------------------------------------------------------------

CAP_SYS_ADMIN = 21
CAP_SYS_PTRACE = 19
CAP_BPF = 39
CAP_PERFMON = 38
CAP_SETPCAP = 8


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def get_caps() -> tuple[int, int, int]:
    """Return the (effective, permitted, inheritable) 64-bit capability sets."""
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    expect_errno(syscall("capget", ctypes.addressof(hdr), ctypes.addressof(data)), 0, "capget")
    fields = ("effective", "permitted", "inheritable")
    return tuple(getattr(data[0], f) | (getattr(data[1], f) << 32) for f in fields)  # type: ignore[return-value]


def drop_caps(*caps: int) -> None:
    """Drop capabilities from the effective, permitted and inheritable sets.

    With no argument, drop every capability. The kernel selftests do the same
    so that CAP_SYS_ADMIN/CAP_SYS_PTRACE do not bypass the checks under test.
    """
    eff, prm, inh = get_caps()
    mask = ~0 if not caps else sum(1 << c for c in caps)
    eff, prm, inh = eff & ~mask, prm & ~mask, inh & ~mask
    hdr = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        data[i].effective = (eff >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (prm >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inh >> (32 * i)) & 0xFFFFFFFF
    expect_errno(syscall("capset", ctypes.addressof(hdr), ctypes.addressof(data)), 0, "capset")


def has_cap(cap: int) -> bool:
    return bool(get_caps()[0] & (1 << cap))


def require_root() -> None:
    if os.geteuid() != 0:
        raise Skip("needs root (uid 0)")


# --- processes ---------------------------------------------------------------


def wait_status(pid: int, timeout: float = 20.0) -> int:
    """waitpid with a deadline; kills the child and fails when it hangs."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise Failure(f"child {pid} did not exit within {timeout:.0f}s")
        time.sleep(0.005)


def fork_pipe(body: Callable[[int], int], own_group: bool = False) -> tuple[int, int]:
    """Fork a child that runs body(write_fd) and exits with its result (103 if it raises).

    Returns (pid, read fd). The child never returns into the caller, whatever
    body does, and leaves with os._exit so no atexit handler or buffered
    output of the parent runs twice.
    """
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        code = 103
        try:
            if own_group:
                os.setpgid(0, 0)
            code = body(wfd)
        except BaseException:  # noqa: BLE001 - the child must never return into the harness
            os.write(wfd, f"E{traceback.format_exc()}".encode()[:65000])
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(wfd)
    return pid, rfd


def read_pipe(rfd: int, deadline: float | None = None) -> tuple[bytes, bool]:
    """Everything written to the pipe until EOF, and whether `deadline` (monotonic) cut it short; closes rfd."""
    chunks = []
    try:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return b"".join(chunks), True
            if not select.select([rfd], [], [], left)[0]:
                continue
            chunk = os.read(rfd, 65536)
            if not chunk:
                return b"".join(chunks), False
            chunks.append(chunk)
    finally:
        os.close(rfd)


def in_child(fn: Callable[..., object], *args: object) -> int:
    """Run fn(*args) in a forked child; return its exit code (fn's int result).

    A Failure or Skip raised in the child is carried back over a pipe and
    re-raised in the caller with the child's message, so assertions can live
    on either side of the fork.
    """

    def body(wfd: int) -> int:
        try:
            res = fn(*args)
        except Failure as exc:
            os.write(wfd, f"F{exc}".encode()[:65000])
            return 101
        except Skip as exc:
            os.write(wfd, f"S{exc}".encode()[:65000])
            return 102
        return int(res) if isinstance(res, int) else 0

    pid, rfd = fork_pipe(body)
    try:
        status = wait_status(pid)
    finally:
        msg = read_pipe(rfd)[0].decode(errors="replace")
    if os.WIFSIGNALED(status):
        raise Failure(f"child died of signal {signal.Signals(os.WTERMSIG(status)).name}")
    code = os.WEXITSTATUS(status)
    if code == 101 and msg.startswith("F"):
        raise Failure(f"in child: {msg[1:]}")
    if code == 102 and msg.startswith("S"):
        raise Skip(msg[1:])
    if code == 103 and msg.startswith("E"):
        raise Failure(f"child raised: {msg[1:].strip().splitlines()[-1]}")
    return code


# --- suites and tests ----------------------------------------------------------


class Suite:
    """A named, ordered list of tests; names are stable (the bisect driver selects by them).

    A suite built with parallel=True lets its tests run beside each other on
    the guest's CPUs; a test that changes or reads machine-wide state (a
    sysctl, the audit netlink, a globally attached BPF program, a mount over a
    shared path) registers with alone=True and runs with nothing beside it.
    A suite that does not say parallel=True runs every test alone.

    A test that writes a sysctl names it in restores=(path, ...) (and so runs
    alone): the harness reads it before the test and writes it back after,
    however the test ended. A test killed at its deadline cannot restore it
    itself, and every later test of the boot would run under its value.
    """

    def __init__(self, name: str, parallel: bool = False) -> None:
        self.name = name
        self.parallel = parallel
        self.tests: list[tuple[str, object]] = []
        self._alone: set[str] = set()
        self._restores: dict[str, tuple[str, ...]] = {}

    def test(self, fn=None, *, alone: bool = False, restores: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
        """Register fn as a test: `@suite.test`, or `@suite.test(alone=True)` for one that needs the machine."""

        def register(f):  # type: ignore[no-untyped-def]
            self.add(f.__name__, f, alone=alone, restores=restores)
            return f

        return register if fn is None else register(fn)

    def add(self, name: str, fn, alone: bool = False, restores: tuple[str, ...] = ()) -> None:  # type: ignore[no-untyped-def]
        """Register a generated test (e.g. one per variant of a matrix)."""
        self.tests.append((name, fn))
        if alone or restores:
            self._alone.add(name)
        if restores:
            self._restores[name] = restores

    def runs_alone(self, name: str) -> bool:
        return not self.parallel or name in self._alone

    def restores(self, name: str) -> tuple[str, ...]:
        return self._restores.get(name, ())


@dataclass(frozen=True)
class _Planned:
    """A selected test as the scheduler sees it."""

    fn: Callable[[], object]
    alone: bool
    restores: tuple[str, ...] = ()


def _read_settings(paths: tuple[str, ...]) -> dict[str, str]:
    """The settings' values now; one this kernel lacks (Yama not built in) is left out."""
    values = {}
    for path in paths:
        try:
            with open(path) as f:
                values[path] = f.read()
        except FileNotFoundError:
            continue
    return values


def _put_back(saved: dict[str, str]) -> list[str]:
    """Write back every setting that differs from `saved`; one line per setting the test left changed."""
    left = []
    for path, value in saved.items():
        with open(path) as f:
            now = f.read()
        if now == value:
            continue
        try:
            with open(path, "w") as f:
                f.write(value)
            left.append(f"{path} left at {now.strip()!r} (was {value.strip()!r}): restored")
        except OSError as exc:
            left.append(f"{path} left at {now.strip()!r} (was {value.strip()!r}): cannot restore it: {exc}")
    return left


# Read ends of the verdict pipes of the tests running now: a test forked beside them closes its copies.
_harness_fds: set[int] = set()


class _Attempt:
    """One run of one test: a forked child in its own process group, its verdict coming back over a pipe."""

    def __init__(self, fn: Callable[[], object], restores: tuple[str, ...] = ()) -> None:
        self.start = time.monotonic()
        self.deadline = self.start + TEST_TIMEOUT
        self.chunks: list[bytes] = []
        self.saved = _read_settings(restores)

        def body(wfd: int) -> int:
            for fd in _harness_fds:
                os.close(fd)
            test_pid = os.getpid()
            verdict: dict = {"status": "PASS", "reason": ""}
            try:
                fn()
            except Skip as exc:
                verdict = {"status": "SKIP", "reason": str(exc)}
            except Failure as exc:
                verdict = {"status": "FAIL", "reason": str(exc)}
            except BaseException as exc:  # noqa: BLE001
                verdict = {"status": "ERROR", "reason": f"{type(exc).__name__}: {exc}", "log": traceback.format_exc()}
            # A grandchild the test forked that returns out of fn() lands here too: only the test process speaks.
            if os.getpid() == test_pid:
                os.write(wfd, json.dumps(verdict).encode())
            return 0

        self.pid, self.rfd = fork_pipe(body, own_group=True)
        _harness_fds.add(self.rfd)

    def read(self) -> bool:
        """Take what the pipe holds; True at end of file (the test process and its children are done with it)."""
        chunk = os.read(self.rfd, 65536)
        self.chunks.append(chunk)
        return not chunk

    def finish(self, timed_out: bool) -> dict:
        """Reap the test and every process it left in its group; its verdict, with the duration."""
        _harness_fds.discard(self.rfd)
        os.close(self.rfd)
        if timed_out:
            for target in (-self.pid, self.pid):
                try:
                    os.kill(target, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        _, status = os.waitpid(self.pid, 0)
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        verdict = self._verdict(timed_out, status)
        left = _put_back(self.saved)
        if left and verdict["status"] in ("PASS", "SKIP"):
            verdict = {"status": "ERROR", "reason": "; ".join(left)}
        elif left:
            verdict["reason"] = f"{verdict['reason']}; {'; '.join(left)}"
        verdict["duration"] = time.monotonic() - self.start
        return verdict

    def _verdict(self, timed_out: bool, status: int) -> dict:
        data = b"".join(self.chunks)
        if timed_out:
            return {"status": "FAIL", "reason": f"timed out after {TEST_TIMEOUT:.0f}s"}
        if not data:
            how = (
                f"signal {signal.Signals(os.WTERMSIG(status)).name}"
                if os.WIFSIGNALED(status)
                else f"exit {os.WEXITSTATUS(status)}"
            )
            return {"status": "ERROR", "reason": f"test process died without a verdict ({how})"}
        try:
            verdict, _ = json.JSONDecoder().raw_decode(data.decode(errors="replace"))
        except ValueError:
            verdict = {"status": "ERROR", "reason": "the test process sent an unreadable verdict"}
        return verdict


def _combine(runs: list[dict]) -> dict:
    """One record for a test run several times: the same outcome every time is that outcome, mixed is FLAKY."""
    if len(runs) == 1:
        return runs[0]
    statuses = [r["status"] for r in runs]
    failures = [r for r in runs if r["status"] in ("FAIL", "ERROR")]
    if len(set(statuses)) == 1:
        rec = dict(failures[0] if failures else runs[-1])
    else:
        passed = statuses.count("PASS")
        first = failures[0] if failures else next(r for r in runs if r["status"] != "PASS")
        reason = f"passed {passed} of {len(runs)} runs; {first['status']}: {first.get('reason', '')}"
        rec = {"status": "FLAKY", "reason": reason, "log": first.get("log", "")}
    rec["runs"] = statuses
    rec["duration"] = sum(r["duration"] for r in runs)
    return rec


def _results_in_order(tests: list[_Planned], jobs: int, repeat: int) -> Iterator[dict]:
    """Run the tests, up to `jobs` at once, each `repeat` times in a row; yield the records in list order.

    Tests start in list order. One that runs alone waits until nothing runs
    and holds the machine until its last run ends; the next test waits for it.
    A record is yielded as soon as it and every record before it are done, so
    the KTAP stream stays in order and still shows progress while tests run.
    """
    running: dict[int, tuple[int, _Attempt]] = {}  # pipe fd -> (test index, attempt)
    runs: dict[int, list[dict]] = {}
    done: dict[int, dict] = {}
    next_start = next_yield = 0
    while next_yield < len(tests):
        while next_start < len(tests) and len(running) < jobs and not any(tests[i].alone for i, _ in running.values()):
            planned = tests[next_start]
            if planned.alone and running:
                break
            attempt = _Attempt(planned.fn, planned.restores)
            running[attempt.rfd] = (next_start, attempt)
            runs[next_start] = []
            next_start += 1
        if running:
            wait = max(0.0, min(a.deadline for _, a in running.values()) - time.monotonic())
            ready = set(select.select(list(running), [], [], wait)[0])
            now = time.monotonic()
            for fd, (index, attempt) in list(running.items()):
                ended = fd in ready and attempt.read()
                if not ended and now < attempt.deadline:
                    continue
                del running[fd]
                runs[index].append(attempt.finish(timed_out=not ended))
                if len(runs[index]) < repeat:
                    again = _Attempt(tests[index].fn, tests[index].restores)
                    running[again.rfd] = (index, again)
                else:
                    done[index] = _combine(runs.pop(index))
        while next_yield in done:
            yield done.pop(next_yield)
            next_yield += 1


def _ktap_escape(text: str) -> str:
    return " ".join(text.split()).replace("#", "\\#")


def _selected(full: str, patterns: list[str]) -> bool:
    return not patterns or any(p in full for p in patterns)


def run_suites(suites: list[Suite], patterns: list[str], out=sys.stdout, repeat: int = 1, jobs: int = 1) -> list[dict]:  # type: ignore[no-untyped-def]
    """Run the selected tests (each `repeat` times, `jobs` at once), streaming nested KTAP; a record per test."""
    chosen = [(s, [(n, f) for n, f in s.tests if _selected(f"{s.name}.{n}", patterns)]) for s in suites]
    chosen = [(s, t) for s, t in chosen if t]
    records: list[dict] = []
    flat = [
        _Planned(fn, suite.runs_alone(name), suite.restores(name))  # type: ignore[arg-type]
        for suite, tests in chosen
        for name, fn in tests
    ]
    results = _results_in_order(flat, jobs, repeat)

    def emit(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    emit("KTAP version 1")
    emit(f"1..{len(chosen)}")
    for si, (suite, tests) in enumerate(chosen, 1):
        emit("    KTAP version 1")
        emit(f"    # Subtest: {suite.name}")
        emit(f"    1..{len(tests)}")
        counts = {"PASS": 0, "FAIL": 0, "SKIP": 0, "ERROR": 0, "FLAKY": 0}
        for ti, (name, _) in enumerate(tests, 1):
            rec = next(results)
            rec.update(suite=suite.name, name=name)
            records.append(rec)
            counts[rec["status"]] += 1
            reason = _ktap_escape(rec.get("reason", ""))
            if rec["status"] == "PASS":
                emit(f"    ok {ti} {name}")
            elif rec["status"] == "SKIP":
                emit(f"    ok {ti} {name} # SKIP {reason}")
            else:
                for line in rec.get("log", "").splitlines():
                    emit(f"    # {line}")
                emit(f"    # {rec['status']}: {reason}")
                emit(f"    not ok {ti} {name}")
        failed = counts["FAIL"] + counts["ERROR"] + counts["FLAKY"]
        flaky = f" flaky:{counts['FLAKY']}" if counts["FLAKY"] else ""
        emit(
            f"    # {suite.name}: pass:{counts['PASS']} fail:{counts['FAIL']} "
            f"skip:{counts['SKIP']} error:{counts['ERROR']}{flaky}"
        )
        if failed:
            emit(f"not ok {si} {suite.name}")
        elif counts["SKIP"] == len(tests):
            emit(f"ok {si} {suite.name} # SKIP all tests skipped")
        else:
            emit(f"ok {si} {suite.name}")
    return records
