"""Process lab for the landlock_ptrace suite: probes, helper processes and the expected-result model.

A scenario is P1 (the test process) plus helpers forked from it or from each
other. Helpers serve requests over pipes, one answer per request, so every step
is a round trip (no sleeps). Each probe runs one access that goes through
ptrace_may_access() and returns 0 or the errno, after checking that a success
really did what it says (the tracee stopped, the bytes read are the target's,
the fd obtained is the shared pipe). proc_status reads /proc/PID/status, which
no ptrace check guards (it must always succeed), and asks whether PID is
listed in a private proc instance mounted hidepid=ptraceable, whose listing
follows ptrace_may_access(PTRACE_MODE_READ_FSCREDS), Landlock's hook included
(ENOENT stands for "not listed"). Lab.expected() is the Landlock decision
AND the Yama decision for the running ptrace_scope (AND, since v6.15, the
CAP_PERFMON exception of mm_access()), so the same tests hold with or without
Yama, at any scope.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable

import _klab
import _landlock as ll
from _klab import Failure, Skip, errname, kernel_version

PTRACE_TRACEME = 0
PTRACE_ATTACH = 16
PTRACE_DETACH = 17
WALL = 0x40000000  # __WALL: wait for any tracee or child, whatever its exit signal
KCMP_FILE = 0
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PTRACER = 0x59616D61
PR_SET_PTRACER_ANY = ctypes.c_ulong(-1).value

YAMA_SYSCTL = "/proc/sys/kernel/yama/ptrace_scope"
HELPER_REPLY_TIMEOUT = 20.0
HELPER_IDLE_TIMEOUT = 60.0

_ptrace = _klab.libc["ptrace"]
_ptrace.restype = ctypes.c_long
_ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


def ptrace(request: int, pid: int) -> tuple[int, int]:
    """ptrace(request, pid, 0, 0) -> (ret, errno)."""
    ctypes.set_errno(0)
    ret = _ptrace(request, pid, None, None)
    return ret, (ctypes.get_errno() if ret == -1 else 0)


# --- what each check is and how it is denied ----------------------------------

# check -> errno on denial.
DENIAL_ERRNO: dict[str, int] = {
    "attach": errno.EPERM,
    "traceme": errno.EPERM,
    "proc_environ": errno.EACCES,
    "proc_mem": errno.EACCES,
    "proc_exe": errno.EACCES,
    "process_vm_readv": errno.EPERM,
    "pidfd_getfd": errno.EPERM,
    "kcmp": errno.EPERM,
    # /proc/PID/status itself is never denied (the probe fails the test if it is); what can be
    # denied is PID's entry in a hidepid=ptraceable proc instance: absent, so ENOENT.
    "proc_status": errno.ENOENT,
}
# Checks made with PTRACE_MODE_ATTACH: Yama only restricts these.
ATTACH_MODE = frozenset({"attach", "proc_mem", "process_vm_readv", "pidfd_getfd"})
# Checks that go through mm_access() in PTRACE_MODE_READ: since v6.15 ("mm,procfs: allow read-only
# remote mm access under CAP_PERFMON", kernel/fork.c may_access_mm()), perfmon_capable()
# (CAP_PERFMON or CAP_SYS_ADMIN) grants them when ptrace_may_access() fails, whatever any LSM said.
MM_READ = frozenset({"proc_environ"})
PERFMON_MM_READ_SINCE = (6, 15)
# Directed checks run by one process against another (traceme is separate).
PROBES = ("attach", "proc_environ", "proc_mem", "proc_exe", "process_vm_readv", "pidfd_getfd", "kcmp", "proc_status")


# --- Yama ---------------------------------------------------------------------


def yama_active() -> bool:
    """Yama is active when listed in securityfs; its sysctl only exists when it is."""
    try:
        with open("/sys/kernel/security/lsm") as f:
            return "yama" in f.read().strip().split(",")
    except OSError:
        return os.path.exists(YAMA_SYSCTL)


def yama_scope() -> int | None:
    """kernel.yama.ptrace_scope, or None when Yama is not active."""
    if not yama_active():
        return None
    with open(YAMA_SYSCTL) as f:
        return int(f.read().strip())


def set_yama_scope(scope: int) -> None:
    with open(YAMA_SYSCTL, "w") as f:
        f.write(f"{scope}\n")


def _yama_allows(
    scope: int | None, check: str, ancestor: bool, exception: bool, tracer_cap: bool, parent_cap: bool
) -> bool:
    """Yama's decision (security/yama/yama_lsm.c): attach-mode checks and TRACEME only."""
    if scope is None or scope == 0:
        return True
    if check == "traceme":
        # yama_ptrace_traceme: relational allows; scope 2 needs CAP_SYS_PTRACE in the parent.
        return scope == 1 or (scope == 2 and parent_cap)
    if check not in ATTACH_MODE:
        return True
    if scope == 1:
        return ancestor or exception or tracer_cap
    if scope == 2:
        return tracer_cap
    return False


def _landlock_allows(tracer: tuple[str, ...], tracee: tuple[str, ...]) -> bool:
    """Landlock: the tracer's layers must be a prefix of (ancestor of or equal to) the tracee's."""
    return tracee[: len(tracer)] == tracer


# --- probes: each returns 0 or the errno, and checks what a success returned ---


def _read_status_field(pid: int, field: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    raise Failure(f"/proc/{pid}/status has no {field} line")


def _wait_stop(pid: int, timeout: float = 10.0) -> int:
    """Wait for a tracee (child or not) to stop; never kills it, unlike _klab.wait_status."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG | WALL)
        if done:
            return status
        if time.monotonic() > deadline:
            raise Failure(f"tracee {pid} did not stop within {timeout:.0f}s")
        select.select([], [], [], 0.002)


def _detach(pid: int, what: str) -> None:
    _klab.expect_errno(ptrace(PTRACE_DETACH, pid), 0, f"PTRACE_DETACH after {what}")


def _probe_attach(pid: int, lab: Lab) -> int:
    ret, err = ptrace(PTRACE_ATTACH, pid)
    if ret != 0:
        return err
    try:
        status = _wait_stop(pid)
        _klab.expect(
            os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP,
            f"PTRACE_ATTACH {pid}: expected a SIGSTOP stop, got wait status {status:#x}",
        )
        _klab.expect_eq(_read_status_field(pid, "TracerPid"), str(os.getpid()), f"TracerPid of {pid} after attach")
    finally:
        _detach(pid, f"PTRACE_ATTACH {pid}")
    return 0


def probe_open(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        return exc.errno or -1
    os.close(fd)
    return 0


def _probe_exe(pid: int, lab: Lab) -> int:
    try:
        target = os.readlink(f"/proc/{pid}/exe")
    except OSError as exc:
        return exc.errno or -1
    _klab.expect_eq(target, os.readlink("/proc/self/exe"), f"/proc/{pid}/exe (same forked interpreter)")
    return 0


def _probe_status(pid: int, lab: Lab) -> int:
    """/proc/PID/status (no ptrace check: must be readable), then PID's entry in the hidepid=ptraceable instance.

    The listing (readdir) is asked rather than a path lookup: readdir filters each pid afresh, while a
    lookup may meet a dentry cached by an earlier, allowed access and fail with EPERM instead of ENOENT.
    """
    try:
        got = _read_status_field(pid, "Pid")
    except OSError as exc:
        raise Failure(
            f"/proc/{pid}/status (no ptrace check): expected success, got {errname(exc.errno or 0)} ({exc.errno})"
        ) from exc
    _klab.expect_eq(got, str(pid), f"Pid field of /proc/{pid}/status")
    if lab.hidden_proc is None:
        raise Failure("proc_status needs a lab made with hidden_proc=True (the hidepid=ptraceable instance)")
    if str(pid) not in os.listdir(lab.hidden_proc):
        return errno.ENOENT
    with open(f"{lab.hidden_proc}/{pid}/status") as f:
        fields = [line.split(":", 1)[1].strip() for line in f if line.startswith("Pid:")]
    _klab.expect_eq(fields, [str(pid)], f"Pid field of {lab.hidden_proc}/{pid}/status (listed, so readable)")
    return 0


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def _probe_vm_readv(pid: int, lab: Lab) -> int:
    size = ctypes.sizeof(lab.marker)
    local = ctypes.create_string_buffer(size)
    liov = _Iovec(ctypes.addressof(local), size)
    riov = _Iovec(ctypes.addressof(lab.marker), size)
    ret, err = _klab.syscall("process_vm_readv", pid, ctypes.addressof(liov), 1, ctypes.addressof(riov), 1, 0)
    if ret < 0:
        if err == errno.ENOSYS:
            raise Skip("process_vm_readv is not built (CONFIG_CROSS_MEMORY_ATTACH off): ENOSYS")
        return err
    _klab.expect_eq(ret, size, f"process_vm_readv({pid}) byte count")
    _klab.expect_eq(local.value, _marker_for(pid), f"process_vm_readv({pid}) content (the target's own marker)")
    return 0


def _probe_getfd(pid: int, lab: Lab) -> int:
    pidfd, err = _klab.syscall("pidfd_open", pid, 0)
    if pidfd < 0:
        if err == errno.ENOSYS:
            raise Skip("pidfd_open is not available: ENOSYS")
        raise Failure(f"pidfd_open({pid}): expected success (not a ptrace check), got {errname(err)}")
    try:
        fd, err = _klab.syscall("pidfd_getfd", pidfd, lab.token_r, 0)
        if fd < 0:
            if err == errno.ENOSYS:
                raise Skip("pidfd_getfd is not available: ENOSYS")
            return err
        try:
            _klab.expect_eq(
                os.fstat(fd).st_ino, os.fstat(lab.token_r).st_ino, f"pidfd_getfd({pid}) inode (the shared pipe)"
            )
        finally:
            os.close(fd)
    finally:
        os.close(pidfd)
    return 0


def _probe_kcmp(pid: int, lab: Lab) -> int:
    ret, err = _klab.syscall("kcmp", os.getpid(), pid, KCMP_FILE, lab.token_r, lab.token_r)
    if ret < 0:
        if err == errno.ENOSYS:
            raise Skip("kcmp is not built (CONFIG_KCMP / CONFIG_CHECKPOINT_RESTORE off): ENOSYS")
        return err
    _klab.expect_eq(ret, 0, f"kcmp(KCMP_FILE) with {pid} on the inherited pipe (0 = same file)")
    return 0


_PROBE_FNS: dict[str, Callable[[int, Lab], int]] = {
    "attach": _probe_attach,
    "proc_environ": lambda pid, lab: probe_open(f"/proc/{pid}/environ"),
    "proc_mem": lambda pid, lab: probe_open(f"/proc/{pid}/mem"),
    "proc_exe": _probe_exe,
    "process_vm_readv": _probe_vm_readv,
    "pidfd_getfd": _probe_getfd,
    "kcmp": _probe_kcmp,
    "proc_status": _probe_status,
}


def _marker_for(pid: int) -> bytes:
    return f"klab-{pid}".encode()


def require_check(check: str) -> None:
    """Skip when the kernel lacks what a check needs (probed on the calling process itself)."""
    if check in ("proc_environ", "proc_mem", "proc_exe", "proc_status") and not os.path.exists("/proc/self/environ"):
        raise Skip("/proc is not mounted")
    if check == "proc_status":
        hidepid = _proc_hidepid()
        if hidepid:
            raise Skip(f"/proc is mounted with hidepid={hidepid}: /proc/PID then follows ptrace access")
    token = os.pipe()
    try:
        if check == "kcmp":
            ret, err = _klab.syscall("kcmp", os.getpid(), os.getpid(), KCMP_FILE, token[0], token[0])
            if ret < 0 and err == errno.ENOSYS:
                raise Skip("kcmp is not built (CONFIG_KCMP / CONFIG_CHECKPOINT_RESTORE off): ENOSYS")
        elif check == "process_vm_readv":
            ret, err = _klab.syscall("process_vm_readv", os.getpid(), 0, 0, 0, 0, 0)
            if ret < 0 and err == errno.ENOSYS:
                raise Skip("process_vm_readv is not built (CONFIG_CROSS_MEMORY_ATTACH off): ENOSYS")
        elif check == "pidfd_getfd":
            ret, err = _klab.syscall("pidfd_getfd", -1, 0, 0)
            if ret < 0 and err == errno.ENOSYS:
                raise Skip("pidfd_getfd is not available (kernel older than 5.6): ENOSYS")
    finally:
        os.close(token[0])
        os.close(token[1])


def _proc_hidepid() -> str:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == "/proc" and " - proc " in line:
                for opt in line.split(" - ", 1)[1].split()[-1].split(","):
                    if opt.startswith("hidepid=") and opt[8:] not in ("0", "off"):
                        return opt[8:]
    return ""


# --- domains -------------------------------------------------------------------


def restrict(kind: str, lab: Lab) -> None:
    """Add one Landlock layer of the given kind to the calling process."""
    if kind == "fs":
        # What the kernel selftest uses: handles only MAKE_BLOCK, so /proc stays readable.
        ll.require_abi(1)
        ll.sandbox(fs=ll.ACCESS_FS_MAKE_BLOCK)
    elif kind == "fs_all_allowed":
        abi = ll.require_abi(1)
        ll.sandbox(fs=ll.fs_access_all(abi), paths=(("/", ll.fs_access_all(abi)),))
    elif kind == "net":
        ll.require_abi(4)
        ll.sandbox(net=ll.ACCESS_NET_BIND_TCP)
    elif kind == "scope_signal":
        ll.require_abi(6)
        ll.sandbox(scoped=ll.SCOPE_SIGNAL)
    elif kind == "scope_unix":
        ll.require_abi(6)
        ll.sandbox(scoped=ll.SCOPE_ABSTRACT_UNIX_SOCKET)
    elif kind == "shared":
        # The same ruleset fd, inherited from P1: each restrict_self still makes a new domain.
        _klab.set_no_new_privs()
        _klab.expect_errno(ll.restrict_self(lab.shared_ruleset), 0, "landlock_restrict_self(shared ruleset)")
    else:
        raise ValueError(kind)


def require_kind(kind: str) -> None:
    need = {"net": 4, "scope_signal": 6, "scope_unix": 6}.get(kind, 1)
    ll.require_abi(need)


# --- a proc instance that lists only ptrace-readable pids ----------------------------

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
HIDDEN_PROC = "/tmp/hidden-proc"


def _mount(source: bytes | None, target: bytes, fstype: bytes | None, flags: int, data: bytes | None) -> None:
    ctypes.set_errno(0)
    if _klab.libc.mount(source, target, fstype, flags, data) != 0:
        err = ctypes.get_errno()
        raise Failure(f"mount({target.decode()}, {fstype}, {data}): expected success, got {errname(err)} ({err})")


def mount_hidden_proc() -> str:
    """In a new, private mount namespace: tmpfs on /tmp and a proc instance (hidepid=ptraceable) below it.

    hidepid=ptraceable (Linux 5.8+) makes proc_pid_readdir() and lookups skip every pid the reader may not
    ptrace_may_access(PTRACE_MODE_READ_FSCREDS), with no gid= exemption; each mount is its own instance
    with its own options. Nothing reaches the host: the namespace dies with the lab's processes.
    """
    _klab.require_root()
    _klab.expect_errno(_klab.syscall("unshare", CLONE_NEWNS), 0, "unshare(CLONE_NEWNS)")
    _mount(None, b"/", None, MS_REC | MS_PRIVATE, None)
    _mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755")
    os.mkdir(HIDDEN_PROC)
    _mount(b"proc", HIDDEN_PROC.encode(), b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"hidepid=ptraceable")
    return HIDDEN_PROC


# --- the process lab -------------------------------------------------------------

_Pipes = tuple[int, int, int, int]  # cmd_r, cmd_w, rep_r, rep_w


class Node:
    """A process of the scenario: "p1" is the test process itself, the others are helpers."""

    def __init__(self, name: str, parent: Node | None, pipes: _Pipes | None = None) -> None:
        self.name = name
        self.parent = parent
        self.pid = os.getpid() if parent is None else 0
        self.layers: tuple[str, ...] = parent.layers if parent is not None else ()
        self.reaped = parent is None
        self.cmd_r, self.cmd_w, self.rep_r, self.rep_w = pipes or (-1, -1, -1, -1)

    def is_ancestor_of(self, other: Node) -> bool:
        walker = other.parent
        while walker is not None:
            if walker is self:
                return True
            walker = walker.parent
        return False


class Lab:
    """P1 plus helper processes, and the model of what each may do to the others.

    Everything the helpers share is made before the first fork: the pipes of
    every helper (so a grandchild's pipes reach P1), a pipe every process holds
    at the same fd number (for pidfd_getfd and kcmp), and a buffer at the same
    address that each process fills with its own pid (for process_vm_readv).
    """

    def __init__(self, names: tuple[str, ...] = ("p2",), drop_caps: bool = True, hidden_proc: bool = False) -> None:
        self.scope = yama_scope()
        # Mounted before capabilities go (it needs CAP_SYS_ADMIN) and before any helper exists.
        self.hidden_proc = mount_hidden_proc() if hidden_proc else None
        if drop_caps:
            # Like the selftest: no capability may help the capability LSM or Yama.
            _klab.drop_caps()
        self.has_cap = _klab.has_cap(_klab.CAP_SYS_PTRACE)
        # perfmon_capable() (checked in the tracer; every process of a lab has the same capabilities).
        self.perfmon = _klab.has_cap(_klab.CAP_PERFMON) or _klab.has_cap(_klab.CAP_SYS_ADMIN)
        if _klab.libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise Failure(f"prctl(PR_SET_CHILD_SUBREAPER): {errname(ctypes.get_errno())}")
        self.token_r, self.token_w = os.pipe()
        self.marker = ctypes.create_string_buffer(32)
        self.marker.value = _marker_for(os.getpid())
        self.shared_ruleset = -1
        self.p1 = Node("p1", None)
        self.nodes: dict[str, Node] = {"p1": self.p1}
        self.pipes: dict[str, _Pipes] = {name: os.pipe() + os.pipe() for name in names}
        self.exceptions: dict[str, str] = {}  # Yama PR_SET_PTRACER: tracee -> tracer name, or "any"
        self.errors: list[str] = []
        self._layer_count = 0

    # -- lifecycle --

    def spawn(self, name: str, parent: str = "p1") -> Node:
        """Fork helper `name` from `parent` (P1 itself or another helper) and wait until it serves."""
        par = self.nodes[parent]
        node = Node(name, par, self.pipes[name])
        self.nodes[name] = node
        node.pid = fork_helper(self, node) if par is self.p1 else int(self.call(par, "spawn", name))
        _klab.expect_eq(self._reply(node, "start-up"), "ready", f"helper {name} start-up")
        return node

    def finish(self) -> None:
        """Stop helpers cleanly (deepest first) and check that P1's own children exited with 0."""
        for node in reversed(list(self.nodes.values())):
            if node.reaped:
                continue
            self.call(node, "exit")
            if node.parent is self.p1:
                status = _klab.wait_status(node.pid)
                _klab.expect(
                    os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0,
                    f"helper {node.name}: expected exit status 0, got wait status {status:#x}",
                )
            node.reaped = True

    def kill(self) -> None:
        """Kill and reap whatever is left; P1 is the subreaper of orphaned grandchildren."""
        left = [n for n in self.nodes.values() if not n.reaped and n.pid]
        for node in reversed(left):
            try:
                os.kill(node.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG | WALL)
            except ChildProcessError:
                return
            if not pid:
                select.select([], [], [], 0.002)

    # -- requests to helpers --

    def call(self, node: Node, *words: str) -> str:
        """Send one request to a helper and return its answer (its Failure/Skip are re-raised here)."""
        cmd = " ".join(words)
        os.write(node.cmd_w, cmd.encode())
        return self._reply(node, cmd)

    def _reply(self, node: Node, what: str) -> str:
        ready, _, _ = select.select([node.rep_r], [], [], HELPER_REPLY_TIMEOUT)
        if not ready:
            raise Failure(f"helper {node.name} did not answer {what!r} within {HELPER_REPLY_TIMEOUT:.0f}s")
        msg = os.read(node.rep_r, 65536).decode(errors="replace")
        kind, body = msg[:1], msg[1:]
        if kind == "R":
            return body
        if kind == "S":
            raise Skip(body)
        if kind == "F":
            raise Failure(f"in {node.name}: {body}")
        raise Failure(f"helper {node.name} broke on {what!r}: {body or 'no answer'}")

    # -- actions; each keeps the model in step --

    def restrict(self, name: str, kind: str = "fs") -> None:
        """Add a Landlock layer to one process."""
        node = self.nodes[name]
        if node is self.p1:
            restrict(kind, self)
        else:
            self.call(node, "restrict", kind)
        self._layer_count += 1
        node.layers = node.layers + (f"{name}.{self._layer_count}",)

    def make_shared_ruleset(self) -> None:
        """A ruleset fd every later helper inherits (see restrict kind "shared")."""
        self.shared_ruleset = ll.ruleset(fs=ll.ACCESS_FS_MAKE_BLOCK)

    def set_ptracer(self, tracer: str | None) -> None:
        """P1 names its Yama ptracer with PR_SET_PTRACER (None: PR_SET_PTRACER_ANY)."""
        arg = PR_SET_PTRACER_ANY if tracer is None else self.nodes[tracer].pid
        if _klab.libc.prctl(PR_SET_PTRACER, arg, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise Failure(f"prctl(PR_SET_PTRACER, {tracer or 'ANY'}): expected success, got {errname(err)}")
        self.exceptions["p1"] = tracer or "any"

    def probe(self, tracer: str, check: str, tracee: str) -> int:
        """Run one check from `tracer` against `tracee`; 0 or the errno."""
        node, target = self.nodes[tracer], self.nodes[tracee]
        if node is self.p1:
            return _PROBE_FNS[check](target.pid, self)
        return int(self.call(node, "probe", check, str(target.pid)))

    def traceme(self, tracee: str) -> int:
        """A child of P1 asks to be traced by P1; P1 checks the outcome from its side too."""
        node = self.nodes[tracee]
        if node.parent is not self.p1:
            raise ValueError("PTRACE_TRACEME is only probed for children of P1")
        err = int(self.call(node, "traceme"))
        if err:
            got = _read_status_field(node.pid, "TracerPid")
            _klab.expect_eq(got, "0", f"TracerPid of {tracee} after a denied PTRACE_TRACEME")
            _klab.expect_errno(ptrace(PTRACE_DETACH, node.pid), errno.ESRCH, f"PTRACE_DETACH of untraced {tracee}")
            return err
        status = _wait_stop(node.pid)
        try:
            _klab.expect(
                os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGSTOP,
                f"after PTRACE_TRACEME: expected {tracee} in a SIGSTOP stop, got wait status {status:#x}",
            )
            got = _read_status_field(node.pid, "TracerPid")
            _klab.expect_eq(got, str(os.getpid()), f"TracerPid of {tracee} after PTRACE_TRACEME")
        finally:
            _detach(node.pid, f"PTRACE_TRACEME of {tracee}")
        return 0

    # -- the model --

    def expected(self, tracer: str, check: str, tracee: str) -> int:
        """The Landlock decision AND the Yama decision, as an errno (0: allowed)."""
        t, e = self.nodes[tracer], self.nodes[tracee]
        denial = DENIAL_ERRNO[check]
        if check in MM_READ and self.perfmon and kernel_version() >= PERFMON_MM_READ_SINCE:
            return 0
        named = self.exceptions.get(tracee)
        exception = named == "any" or (named is not None and (named == tracer or self.nodes[named].is_ancestor_of(t)))
        yama = _yama_allows(self.scope, check, t.is_ancestor_of(e), exception, self.has_cap, self.has_cap)
        return 0 if yama and _landlock_allows(t.layers, e.layers) else denial

    def verify(self, tracer: str, check: str, tracee: str) -> None:
        """Probe and compare with the model; mismatches are collected and raised by run_lab()."""
        got = self.traceme(tracee) if check == "traceme" else self.probe(tracer, check, tracee)
        want = self.expected(tracer, check, tracee)
        if got != want:
            what = "PTRACE_TRACEME" if check == "traceme" else check
            t, e = self.nodes[tracer], self.nodes[tracee]
            self.errors.append(
                f"{what} {tracer}->{tracee} (tracer layers {list(t.layers)}, tracee layers {list(e.layers)}, "
                f"yama scope {self.scope}): expected {errname(want)} ({want}), got {errname(got)} ({got})"
            )


def fork_helper(lab: Lab, node: Node) -> int:
    """Fork a helper that serves `node`'s requests until told to exit."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            _serve(lab, node)
        except BaseException:  # noqa: BLE001 - a helper must never return into the harness
            code = 3
        os._exit(code)
    return pid


def _serve(lab: Lab, me: Node) -> None:
    """Helper loop: one request in, one answer out ("R" value, "F"/"S" message, "E" crash)."""
    lab.marker.value = _marker_for(os.getpid())
    children: list[int] = []
    os.write(me.rep_w, b"Rready")
    while True:
        ready, _, _ = select.select([me.cmd_r], [], [], HELPER_IDLE_TIMEOUT)
        if not ready:
            return
        words = os.read(me.cmd_r, 4096).decode().split()
        stop_after = False
        try:
            if words[0] == "exit":
                for pid in children:
                    os.waitpid(pid, 0)
                os.write(me.rep_w, b"R0")
                return
            if words[0] == "restrict":
                restrict(words[1], lab)
                answer = "0"
            elif words[0] == "probe":
                answer = str(_PROBE_FNS[words[1]](int(words[2]), lab))
            elif words[0] == "traceme":
                _, err = ptrace(PTRACE_TRACEME, 0)
                answer, stop_after = str(err), err == 0
            elif words[0] == "spawn":
                pid = fork_helper(lab, Node(words[1], me, lab.pipes[words[1]]))
                children.append(pid)
                answer = str(pid)
            else:
                raise ValueError(f"unknown request {words!r}")
            msg = "R" + answer
        except Failure as exc:
            msg = f"F{exc}"
        except Skip as exc:
            msg = f"S{exc}"
        except BaseException:  # noqa: BLE001 - reported to P1, which fails the test
            msg = "E" + traceback.format_exc().strip().splitlines()[-1]
        os.write(me.rep_w, msg.encode()[:60000])
        if stop_after:
            # P1 traces this helper now: stop so that P1 sees it and detaches.
            os.kill(os.getpid(), signal.SIGSTOP)


def run_lab(
    body: Callable[[Lab], None], names: tuple[str, ...] = ("p2",), drop_caps: bool = True, hidden_proc: bool = False
) -> None:
    """Run a scenario in this process; helpers are always killed and reaped; mismatches fail the test.

    hidden_proc: mount the hidepid=ptraceable proc instance the proc_status check needs (needs root).
    """
    lab = Lab(names, drop_caps, hidden_proc)
    try:
        body(lab)
        lab.finish()
    finally:
        lab.kill()
    if lab.errors:
        raise Failure("; ".join(lab.errors))


def available(checks: tuple[str, ...]) -> list[str]:
    """The checks this kernel supports (for tests that combine several)."""
    out = []
    for check in checks:
        try:
            require_check(check)
        except Skip:
            continue
        out.append(check)
    return out
