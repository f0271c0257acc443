"""seccomp: user notification edge cases (signals, dying parties, fd injection, pid namespaces, TSYNC).

The supervisor is the test process itself (its own filter only ever notifies getppid(MAGIC)); the
notifying callers are forked children that close their copy of the listener, so the test decides
who holds it. Every wait is on a pipe, the listener or the caller's /proc state, never a sleep.
"""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
import socket
import time

import _klab
import _seccomp as sc
from _klab import Failure, Skip, expect, expect_eq, expect_errno

from seccomp import suite
from seccomp.common import NOTIF_VALUE, deny, expect_allowed, parked_thread, target

test = suite.test

CLONE_NEWPID = 0x20000000
PR_SET_CHILD_SUBREAPER = 36


def _listen(flags: int = 0) -> int:
    _klab.set_no_new_privs()
    return sc.must_install(deny(sc.RET_USER_NOTIF), sc.FLAG_NEW_LISTENER | flags, "install with NEW_LISTENER")


def _spawn_caller(listener: int, before=None) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Fork a caller that drops its listener copy, runs before(), makes the target call, reports 'ret errno'."""

    def body(wfd: int) -> int:
        os.close(listener)
        if before is not None:
            before()
        ret, err = target()
        os.write(wfd, f"{ret} {err}".encode())
        return 0

    return _klab.fork_pipe(body)


def _caller_result(pid: int, rfd: int) -> tuple[str, str]:
    """(how the caller ended, what it reported)."""
    status = _klab.wait_status(pid)
    return sc.describe_status(status), _klab.read_pipe(rfd)[0].decode(errors="replace")


def _await(cond, what: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Poll a condition on another process's state until it holds; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise Failure(f"{what}: still not the case after {timeout:.0f}s")
        time.sleep(0.002)


def _handler_pipe(restart: bool) -> tuple[int, int, callable]:  # type: ignore[valid-type]
    """A pipe the caller's SIGUSR1 handler writes to the moment the kernel runs it, and the caller-side setup.

    Python's C-level handler writes the signal number to the wakeup fd at delivery, even while the
    interpreter is blocked in a ctypes syscall; siginterrupt(False) means SA_RESTART.
    """
    rfd, wfd = os.pipe()

    def setup() -> None:
        os.close(rfd)
        signal.signal(signal.SIGUSR1, lambda *_: None)
        signal.siginterrupt(signal.SIGUSR1, not restart)
        os.set_blocking(wfd, False)
        signal.set_wakeup_fd(wfd)

    return rfd, wfd, setup


def _handler_ran(rfd: int, timeout: float) -> bool:
    """Whether the caller's handler wrote to the pipe within `timeout` (EOF: the caller is gone, it did not)."""
    if not sc.wait_readable(rfd, timeout):
        return False
    seen = os.read(rfd, 16)
    if seen:
        expect_eq(seen, bytes([signal.SIGUSR1]), "signal numbers the caller's handler saw")
    return bool(seen)


@test
def notif_signal_withdraws_id_and_restart_notifies_again() -> None:
    """A signal to a caller whose notification was received interrupts the wait: the old id is gone
    (ID_VALID, SEND and ADDFD say ENOENT), and with SA_RESTART the call comes back as a new
    notification (new id, same caller and arguments) whose reply is what the caller finally gets."""
    sc.require_user_notif()
    fd = _listen()
    hrfd, hwfd, setup = _handler_pipe(restart=True)
    pid, rfd = _spawn_caller(fd, setup)
    os.close(hwfd)
    first = sc.notif_recv(fd)
    expect_eq(first.pid, pid, "notif.pid of the first notification")
    expect_eq(sc.poll_events(fd), select.POLLOUT, "listener poll events while the received call waits")
    os.kill(pid, signal.SIGUSR1)
    expect(_handler_ran(hrfd, 10), "the caller's SIGUSR1 handler did not run within 10s of the signal")
    expect_errno(sc.notif_id_valid(fd, first.id), errno.ENOENT, "ID_VALID of the interrupted notification")
    expect_errno(sc.notif_send(fd, first.id, val=1), errno.ENOENT, "SEND to the interrupted notification")
    expect_errno(sc.notif_addfd(fd, first.id, 0), errno.ENOENT, "ADDFD to the interrupted notification")
    second = sc.notif_recv(fd)
    expect(second.id != first.id, f"restarted call got the interrupted notification's id {first.id:#x} again")
    same = (second.pid, second.data.nr, tuple(second.data.args))
    expect_eq(same, (pid, first.data.nr, tuple(first.data.args)), "restarted notification (pid, nr, args)")
    expect_errno(sc.notif_send(fd, second.id, val=NOTIF_VALUE), 0, "SEND to the restarted notification")
    expect_eq(_caller_result(pid, rfd), ("exited 0", f"{NOTIF_VALUE} 0"), "caller (end, 'ret errno')")
    expect(not _handler_ran(hrfd, 0), "the caller's handler ran more than once")
    os.close(hrfd)


@test
def notif_signal_without_sa_restart_fails_call_with_eintr() -> None:
    """Without SA_RESTART the interrupted call returns EINTR and is not notified again."""
    sc.require_user_notif()
    fd = _listen()
    hrfd, hwfd, setup = _handler_pipe(restart=False)
    pid, rfd = _spawn_caller(fd, setup)
    os.close(hwfd)
    first = sc.notif_recv(fd)
    os.kill(pid, signal.SIGUSR1)
    expect_eq(_caller_result(pid, rfd), ("exited 0", f"-1 {errno.EINTR}"), "caller (end, 'ret errno')")
    expect(_handler_ran(hrfd, 0), "the caller's SIGUSR1 handler never ran")
    expect_errno(sc.notif_id_valid(fd, first.id), errno.ENOENT, "ID_VALID of the interrupted notification")
    expect_eq(sc.poll_events(fd), 0, "listener poll events after the caller is gone (a new notification?)")
    os.close(hrfd)


@test
def notif_caller_killed_mid_call_withdraws_its_id() -> None:
    """A caller SIGKILLed while its received notification waits takes the id with it: ID_VALID, SEND
    and ADDFD are ENOENT and the listener has nothing left to report."""
    sc.require_user_notif()
    fd = _listen()
    pid, rfd = _spawn_caller(fd)
    notif = sc.notif_recv(fd)
    expect_errno(sc.notif_id_valid(fd, notif.id), 0, "ID_VALID while the caller waits")
    os.kill(pid, signal.SIGKILL)
    expect_eq(_caller_result(pid, rfd), ("killed by SIGKILL", ""), "caller (end, report)")
    expect_errno(sc.notif_id_valid(fd, notif.id), errno.ENOENT, "ID_VALID after the caller died")
    expect_errno(sc.notif_send(fd, notif.id, val=1), errno.ENOENT, "SEND after the caller died")
    expect_errno(sc.notif_addfd(fd, notif.id, 0), errno.ENOENT, "ADDFD after the caller died")
    expect_eq(sc.poll_events(fd), 0, "listener poll events after the caller died")


def _spawn_supervisor(listener: int) -> tuple[int, int, int]:
    """Fork a supervisor that receives one notification, reports its id, then blocks until killed.

    Returns (pid, read end of its report pipe, write end of a pipe it blocks on).
    """
    block_r, block_w = os.pipe()

    def body(wfd: int) -> int:
        os.close(block_w)
        notif = sc.notif_recv(listener)
        os.write(wfd, f"{notif.id}\n".encode())
        os.read(block_r, 1)
        return 0

    pid, rfd = _klab.fork_pipe(body)
    os.close(block_r)
    return pid, rfd, block_w


def _supervisor_received(rfd: int) -> int:
    expect(sc.wait_readable(rfd, 10), "supervisor did not receive the notification within 10s")
    line = os.read(rfd, 64).decode()
    expect(line.endswith("\n"), f"supervisor's report: expected a notification id, got {line!r}")
    return int(line)


@test
def notif_supervisor_killed_mid_call() -> None:
    """A supervisor SIGKILLed between RECV and SEND: while another process still holds the listener
    the call keeps waiting and that holder can answer it; once the last holder is gone the pending
    call fails with ENOSYS."""
    sc.require_user_notif()
    fd = _listen()
    sup, sup_rfd, sup_block = _spawn_supervisor(fd)
    pid, rfd = _spawn_caller(fd)
    notif_id = _supervisor_received(sup_rfd)
    os.kill(sup, signal.SIGKILL)
    expect_eq(sc.describe_status(_klab.wait_status(sup)), "killed by SIGKILL", "first supervisor")
    expect_errno(sc.notif_id_valid(fd, notif_id), 0, "ID_VALID from the surviving holder")
    expect_eq(sc.poll_events(fd), select.POLLOUT, "listener poll events (received, unanswered)")
    expect_errno(sc.notif_send(fd, notif_id, val=NOTIF_VALUE), 0, "SEND from the surviving holder")
    expect_eq(_caller_result(pid, rfd), ("exited 0", f"{NOTIF_VALUE} 0"), "first caller (end, 'ret errno')")
    for end in (sup_rfd, sup_block):
        os.close(end)

    sup, sup_rfd, sup_block = _spawn_supervisor(fd)
    pid, rfd = _spawn_caller(fd)
    os.close(fd)  # the second supervisor is now the only holder
    _supervisor_received(sup_rfd)
    os.kill(sup, signal.SIGKILL)
    expect_eq(sc.describe_status(_klab.wait_status(sup)), "killed by SIGKILL", "second supervisor")
    result = _caller_result(pid, rfd)
    expect_eq(result, ("exited 0", f"-1 {errno.ENOSYS}"), "second caller after the last holder died (end, report)")
    for end in (sup_rfd, sup_block):
        os.close(end)


@test
def notif_listener_hangs_up_once_filtered_tasks_are_gone() -> None:
    """POLLHUP on the listener (5.8+) comes when the last task using the filter is reaped, not when
    the installer exits while a child it forked still runs under the filter; RECV then says ENOENT
    at once (6.6+; before, it blocked)."""
    sc.require_user_notif()
    _klab.libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)  # the orphaned grandchild is reaped here
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    go_child_r, go_child_w = os.pipe()
    go_grand_r, go_grand_w = os.pipe()

    def installer(wfd: int) -> int:
        ours.close()
        fd = _listen()
        grand = os.fork()
        if grand == 0:
            os.close(wfd)  # the test reads the installer's pipe to its end
            os.read(go_grand_r, 1)
            os._exit(0)
        socket.send_fds(theirs, [str(grand).encode()], [fd])
        os.read(go_child_r, 1)
        return 0

    pid, rfd = _klab.fork_pipe(installer)
    theirs.close()
    msg, fds, _, _ = socket.recv_fds(ours, 64, 1)
    expect_eq(len(fds), 1, "listener fds passed over SCM_RIGHTS")
    grand, listener = int(msg), fds[0]
    expect_eq(sc.poll_events(listener), 0, "listener poll events while installer and grandchild run")
    os.write(go_child_w, b"x")
    expect_eq(_caller_result(pid, rfd), ("exited 0", ""), "installer")
    expect_eq(sc.poll_events(listener), 0, "listener poll events after the installer was reaped (grandchild runs)")
    os.write(go_grand_w, b"x")
    expect_eq(sc.describe_status(_klab.wait_status(grand)), "exited 0", "grandchild (reaped by this subreaper)")
    expect_eq(sc.poll_events(listener, 5.0) & select.POLLHUP, select.POLLHUP, "POLLHUP once no task uses the filter")
    if _klab.kernel_version() >= (6, 6):  # recv_wait_event() checks filter users since 6.6
        expect_errno(sc.ioctl(listener, sc.IOCTL_NOTIF_RECV, sc.Notif()), errno.ENOENT, "RECV on the unused filter")
    for end in (go_child_r, go_child_w, go_grand_r, go_grand_w, listener):
        os.close(end)


MEMFD_NAME = "klab-seccomp-addfd"
ADDFD_FD = 901  # an fd number asked for with SETFD


def _memfd_fds() -> list[int]:
    """This process's fds that point at a memfd named MEMFD_NAME."""
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith(f"/memfd:{MEMFD_NAME}"):
                found.append(int(name))
        except OSError:
            pass
    return sorted(found)


def _spawn_fd_caller(listener: int, calls: int = 1) -> tuple[int, int]:
    """A caller making `calls` target calls, then reporting each result and its memfd fds."""

    def body(wfd: int) -> int:
        os.close(listener)
        results = [target() for _ in range(calls)]
        fds = ",".join(str(n) for n in _memfd_fds())
        os.write(wfd, (" ".join(f"{r}/{e}" for r, e in results) + f" fds={fds}").encode())
        return 0

    return _klab.fork_pipe(body)


def _addfd_payload(notif_id: int, srcfd: int, newfd: int = 0, flags: int = 0, newfd_flags: int = 0) -> bytes:
    return bytes(sc.NotifAddfd(notif_id, flags, srcfd, newfd, newfd_flags))


@test
def notif_addfd_rejects_bad_requests() -> None:
    """SECCOMP_IOCTL_NOTIF_ADDFD refuses: a notification not yet received (EINPROGRESS), unknown
    flags, newfd_flags other than O_CLOEXEC, newfd without SETFD (EINVAL), a closed srcfd (EBADF),
    a struct smaller than its first version (EINVAL), a bigger one with non-zero tail (E2BIG); a
    bigger one with a zero tail works. Refused requests install nothing in the caller."""
    sc.require_user_notif()
    fd = _listen()
    pid, rfd = _spawn_fd_caller(fd, calls=2)
    src = os.memfd_create(MEMFD_NAME)
    closed = os.dup(src)
    os.close(closed)
    first = sc.notif_recv(fd)
    expect_errno(sc.notif_send(fd, first.id, val=NOTIF_VALUE), 0, "SEND to the first call")
    _await(lambda: sc.poll_events(fd) & select.POLLIN, "second call pending on the listener")
    pending = first.id + 1  # ids count up by one per notification
    expect_errno(sc.notif_addfd(fd, pending, src), errno.EINPROGRESS, "ADDFD before RECV of the notification")
    notif = sc.notif_recv(fd)
    expect_eq(notif.id, pending, "id of the second notification")
    bad = {
        "flags 1<<2": (sc.notif_addfd(fd, notif.id, src, flags=1 << 2), errno.EINVAL),
        "flags 0xff": (sc.notif_addfd(fd, notif.id, src, flags=0xFF), errno.EINVAL),
        "newfd_flags O_NONBLOCK": (sc.notif_addfd(fd, notif.id, src, newfd_flags=os.O_NONBLOCK), errno.EINVAL),
        "newfd 50 without SETFD": (sc.notif_addfd(fd, notif.id, src, newfd=50), errno.EINVAL),
        "closed srcfd": (sc.notif_addfd(fd, notif.id, closed), errno.EBADF),
        "16-byte struct": (sc.notif_addfd_sized(fd, 16, _addfd_payload(notif.id, src)), errno.EINVAL),
        "32-byte struct, non-zero tail": (
            sc.notif_addfd_sized(fd, 32, _addfd_payload(notif.id, src) + b"\x01"),
            errno.E2BIG,
        ),
    }
    for what, (got, want) in bad.items():
        expect_errno(got, want, f"ADDFD with {what}")
    added = expect_errno(sc.notif_addfd_sized(fd, 32, _addfd_payload(notif.id, src)), 0, "ADDFD, zero-tailed 32 bytes")
    expect_errno(sc.notif_send(fd, notif.id, val=NOTIF_VALUE), 0, "SEND to the second call")
    result = _caller_result(pid, rfd)
    want = f"{NOTIF_VALUE}/0 {NOTIF_VALUE}/0 fds={added}"
    expect_eq(result, ("exited 0", want), "caller (end, 'results fds=its memfd fds')")
    expect_errno(sc.notif_addfd(fd, notif.id, src), errno.ENOENT, "ADDFD after the call returned")
    os.close(src)


@test
def notif_addfd_send_answers_with_the_new_fd() -> None:
    """ADDFD_FLAG_SEND (5.14+) installs the fd and answers the call with its number in one step; with
    SETFD it lands at the asked number, with O_CLOEXEC if asked; the id is then answered (ENOENT)."""
    sc.require_user_notif()
    fd = _listen()
    pid, rfd = _spawn_fd_caller(fd, calls=2)
    src = os.memfd_create(MEMFD_NAME)
    notif = sc.notif_recv(fd)
    first = expect_errno(sc.notif_addfd(fd, notif.id, src, flags=sc.ADDFD_FLAG_SEND), 0, "ADDFD SEND")
    notif2 = sc.notif_recv(fd)
    flags = sc.ADDFD_FLAG_SEND | sc.ADDFD_FLAG_SETFD
    got = sc.notif_addfd(fd, notif2.id, src, newfd=ADDFD_FD, flags=flags, newfd_flags=os.O_CLOEXEC)
    expect_eq(got, (ADDFD_FD, 0), f"ADDFD SEND|SETFD newfd={ADDFD_FD} (ret, errno)")
    result = _caller_result(pid, rfd)
    expect_eq(result, ("exited 0", f"{first}/0 {ADDFD_FD}/0 fds={first},{ADDFD_FD}"), "caller (end, report)")
    for notif_id in (notif.id, notif2.id):
        expect_errno(sc.notif_send(fd, notif_id, val=1), errno.ENOENT, "SEND to a call answered by ADDFD SEND")
    os.close(src)


@test
def notif_addfd_obeys_callers_rlimit_nofile() -> None:
    """The fd is allocated in the caller under the caller's RLIMIT_NOFILE: with a soft limit of 0,
    ADDFD and ADDFD SEND are EMFILE and SETFD is EBADF, the call stays pending (a failed SEND is not
    an answer); with the limit restored the same requests work."""
    sc.require_user_notif()
    fd = _listen()
    pid, rfd = _spawn_fd_caller(fd)
    src = os.memfd_create(MEMFD_NAME)
    notif = sc.notif_recv(fd)
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (0, hard))
    expect_errno(sc.notif_addfd(fd, notif.id, src), errno.EMFILE, "ADDFD under RLIMIT_NOFILE 0")
    expect_errno(sc.notif_addfd(fd, notif.id, src, flags=sc.ADDFD_FLAG_SEND), errno.EMFILE, "ADDFD SEND, limit 0")
    expect_errno(sc.notif_id_valid(fd, notif.id), 0, "ID_VALID after the failed ADDFD SEND")
    setfd = sc.notif_addfd(fd, notif.id, src, newfd=100, flags=sc.ADDFD_FLAG_SETFD)
    expect_errno(setfd, errno.EBADF, "ADDFD SETFD newfd=100 under RLIMIT_NOFILE 0")
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
    expect_eq(sc.notif_addfd(fd, notif.id, src, newfd=100, flags=sc.ADDFD_FLAG_SETFD), (100, 0), "SETFD 100, restored")
    added = expect_errno(sc.notif_addfd(fd, notif.id, src, flags=sc.ADDFD_FLAG_SEND), 0, "ADDFD SEND, restored")
    fds = ",".join(str(n) for n in sorted((added, 100)))
    expect_eq(_caller_result(pid, rfd), ("exited 0", f"{added}/0 fds={fds}"), "caller (end, report)")
    os.close(src)


def _require_wait_killable_recv() -> None:
    sc.require_user_notif()
    major, minor = _klab.kernel_version()
    if (major, minor) < (6, 0):
        raise Skip(f"SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV landed in v6.0; kernel {major}.{minor} lacks it")


@test
def notif_wait_killable_recv_defers_signals_once_received() -> None:
    """SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (6.0+, only with NEW_LISTENER): after RECV a non-fatal
    signal no longer interrupts the call: the caller sleeps killable (D) with the signal pending, the
    id stays valid, the reply is what it gets (no restart), and only then does its handler run."""
    _require_wait_killable_recv()
    _klab.set_no_new_privs()
    alone = sc.install(deny(sc.RET_USER_NOTIF), sc.FLAG_WAIT_KILLABLE_RECV)
    expect_errno(alone, errno.EINVAL, "WAIT_KILLABLE_RECV without NEW_LISTENER")
    fd = _listen(sc.FLAG_WAIT_KILLABLE_RECV)
    hrfd, hwfd, setup = _handler_pipe(restart=True)
    pid, rfd = _spawn_caller(fd, setup)
    os.close(hwfd)
    notif = sc.notif_recv(fd)
    os.kill(pid, signal.SIGUSR1)

    def settled() -> bool:
        if sc.wait_readable(hrfd, 0):
            raise Failure("the caller's SIGUSR1 handler ran while its received notification was pending")
        return sc.proc_stat_state(pid) == "D"

    _await(settled, "caller in killable sleep (state D) after the signal")
    sigusr1 = 1 << (signal.SIGUSR1 - 1)
    expect_eq(sc.pending_signals(pid) & sigusr1, sigusr1, "SIGUSR1 pending on the waiting caller")
    expect_errno(sc.notif_id_valid(fd, notif.id), 0, "ID_VALID after the signal")
    expect_errno(sc.notif_send(fd, notif.id, val=NOTIF_VALUE), 0, "SEND after the signal")
    expect_eq(_caller_result(pid, rfd), ("exited 0", f"{NOTIF_VALUE} 0"), "caller (end, 'ret errno')")
    expect(_handler_ran(hrfd, 0), "the caller's SIGUSR1 handler never ran after the reply")
    expect_eq(sc.poll_events(fd), 0, "listener poll events after the caller is gone (a restarted call?)")
    os.close(hrfd)


@test
def notif_wait_killable_recv_signal_before_recv_still_interrupts() -> None:
    """With WAIT_KILLABLE_RECV a signal before RECV still interrupts the call (its handler runs while
    the call is pending); with SA_RESTART the call is notified again and gets the reply."""
    _require_wait_killable_recv()
    fd = _listen(sc.FLAG_WAIT_KILLABLE_RECV)
    hrfd, hwfd, setup = _handler_pipe(restart=True)
    pid, rfd = _spawn_caller(fd, setup)
    os.close(hwfd)
    _await(lambda: sc.poll_events(fd) & select.POLLIN, "caller's notification pending on the listener")
    os.kill(pid, signal.SIGUSR1)
    expect(_handler_ran(hrfd, 10), "the caller's handler did not run: a signal before RECV must interrupt")
    notif = sc.notif_recv(fd)
    expect_eq(notif.pid, pid, "notif.pid of the restarted call")
    expect_errno(sc.notif_send(fd, notif.id, val=NOTIF_VALUE), 0, "SEND to the restarted call")
    expect_eq(_caller_result(pid, rfd), ("exited 0", f"{NOTIF_VALUE} 0"), "caller (end, 'ret errno')")
    os.close(hrfd)


@test
def notif_wait_killable_recv_fatal_signal_still_kills() -> None:
    """With WAIT_KILLABLE_RECV a fatal signal (SIGTERM, default action) after RECV kills the caller;
    its id is then gone."""
    _require_wait_killable_recv()
    fd = _listen(sc.FLAG_WAIT_KILLABLE_RECV)
    pid, rfd = _spawn_caller(fd)
    notif = sc.notif_recv(fd)
    os.kill(pid, signal.SIGTERM)
    expect_eq(_caller_result(pid, rfd), ("killed by SIGTERM", ""), "caller (end, report)")
    expect_errno(sc.notif_id_valid(fd, notif.id), errno.ENOENT, "ID_VALID after the caller was killed")


def _in_new_pid_ns() -> None:
    """unshare(CLONE_NEWPID): this process's next child is pid 1 of a new namespace."""
    expect_errno(_klab.syscall("unshare", CLONE_NEWPID), 0, "unshare(CLONE_NEWPID)")


@test
def notif_pid_translated_across_pid_namespaces() -> None:
    """notif.pid is the caller's pid in the pid namespace of the supervisor that receives it: the
    outer pid for a supervisor in the parent namespace, 1 for one inside the caller's new namespace
    (where the caller is init), 0 for one in a sibling namespace, which cannot see the caller."""
    sc.require_user_notif()
    fd = _listen()
    go_sibling_r, go_sibling_w = os.pipe()
    go_inner_r, go_inner_w = os.pipe()
    took_r, took_w = os.pipe()

    def sibling_supervisor(wfd: int) -> int:
        _in_new_pid_ns()
        pid, rfd = _klab.fork_pipe(lambda w: _supervise_once(w, fd, go_sibling_r))
        os.write(wfd, _klab.read_pipe(rfd)[0])
        return 0 if os.WIFEXITED(_klab.wait_status(pid)) else 1

    sib, sib_rfd = _klab.fork_pipe(sibling_supervisor)
    _in_new_pid_ns()

    def caller(wfd: int) -> int:
        inner, inner_rfd = _klab.fork_pipe(lambda w: _supervise_once(w, fd, go_inner_r, took_w))
        os.close(fd)
        results = [target() for _ in range(3)]
        report = _klab.read_pipe(inner_rfd)[0].decode()
        _klab.wait_status(inner)
        os.write(wfd, f"{os.getpid()} {results} inner={report}".encode())
        return 0

    pid, rfd = _klab.fork_pipe(caller)
    outer = sc.notif_recv(fd)
    expect_errno(sc.notif_send(fd, outer.id, val=NOTIF_VALUE), 0, "SEND from the outer supervisor")
    os.write(go_inner_w, b"x")  # the second call goes to the supervisor inside the caller's namespace
    expect(sc.wait_readable(took_r, 10), "the supervisor inside the caller's namespace received nothing in 10s")
    os.write(go_sibling_w, b"x")  # the third (not yet made: RECV only takes unreceived ones) to the sibling
    end, report = _caller_result(pid, rfd)
    sibling = _klab.read_pipe(sib_rfd)[0].decode()
    expect_eq(sc.describe_status(_klab.wait_status(sib)), "exited 0", "sibling-namespace helper")
    expect_eq(outer.pid, pid, "notif.pid seen from the parent namespace (the caller's outer pid)")
    results = [(NOTIF_VALUE, 0)] * 3
    expect_eq((end, report), ("exited 0", f"1 {results} inner=pid=1"), "caller (end, 'its pid results inner=...')")
    expect_eq(sibling, "pid=0", "notif.pid seen from a sibling namespace")
    for end_fd in (go_sibling_r, go_sibling_w, go_inner_r, go_inner_w, took_r, took_w):
        os.close(end_fd)


def _supervise_once(wfd: int, listener: int, go: int, took: int | None = None) -> int:
    """Wait for the go byte, receive one notification (say so on `took`), report 'pid=N', answer it."""
    os.read(go, 1)
    notif = sc.notif_recv(listener)
    if took is not None:
        os.write(took, b"x")
    os.write(wfd, f"pid={notif.pid}".encode())
    expect_errno(sc.notif_send(listener, notif.id, val=NOTIF_VALUE), 0, "SEND")
    return 0


@test
def notif_listener_with_tsync_reaches_sibling_threads() -> None:
    """NEW_LISTENER with TSYNC (allowed with TSYNC_ESRCH, 5.7+) returns a listener fd, not a TID; the
    filter is on every thread, and a sibling's call is notified with the sibling's TID."""
    sc.require_flag(sc.FLAG_TSYNC_ESRCH, "SECCOMP_FILTER_FLAG_TSYNC_ESRCH")
    sc.require_user_notif()
    tid, release, box = parked_thread()
    _klab.set_no_new_privs()
    flags = sc.FLAG_NEW_LISTENER | sc.FLAG_TSYNC | sc.FLAG_TSYNC_ESRCH
    fd = sc.must_install(deny(sc.RET_USER_NOTIF), flags, "install with NEW_LISTENER|TSYNC|TSYNC_ESRCH")
    expect_eq(os.readlink(f"/proc/self/fd/{fd}"), "anon_inode:seccomp notify", f"what fd {fd} is")
    expect_eq(sc.proc_status(tid=tid).get("Seccomp"), "2", "sibling's Seccomp after TSYNC")
    release.set()
    notif = sc.notif_recv(fd)
    expect_eq(notif.pid, tid, "notif.pid (the sibling thread's TID)")
    expect_errno(sc.notif_send(fd, notif.id, val=NOTIF_VALUE), 0, "SEND")
    box["thread"].join(10)  # type: ignore[union-attr]
    expect_eq(box.get("call"), (NOTIF_VALUE, 0), "sibling's target call (ret, errno)")


@test
def notif_listener_tsync_failure_is_esrch_without_fd() -> None:
    """With a sibling on its own filter, NEW_LISTENER|TSYNC|TSYNC_ESRCH fails with ESRCH and leaves
    nothing behind: no fd allocated, no filter on the caller."""
    sc.require_flag(sc.FLAG_TSYNC_ESRCH, "SECCOMP_FILTER_FLAG_TSYNC_ESRCH")
    sc.require_user_notif()
    _klab.set_no_new_privs()
    _, release, box = parked_thread(lambda: sc.install(deny(sc.RET_ERRNO | errno.EXDEV)))
    expect_eq(box["setup"], (0, 0), "sibling installs its own filter (ret, errno)")
    free = os.dup(0)
    os.close(free)
    flags = sc.FLAG_NEW_LISTENER | sc.FLAG_TSYNC | sc.FLAG_TSYNC_ESRCH
    expect_errno(sc.install(deny(sc.RET_USER_NOTIF), flags), errno.ESRCH, "NEW_LISTENER|TSYNC|TSYNC_ESRCH")
    after = os.dup(0)
    os.close(after)
    expect_eq(after, free, "lowest free fd after the failed install (a leaked listener?)")
    expect_eq(sc.proc_status().get("Seccomp"), "0", "caller's Seccomp after the failed install")
    expect_allowed(target(), "caller's target call after the failed install")
    release.set()
