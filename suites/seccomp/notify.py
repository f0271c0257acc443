"""seccomp: user notification."""

from __future__ import annotations

import errno
import fcntl
import os
import threading

import _klab
import _seccomp as sc
from _klab import Skip, expect, expect_eq, expect_errno

from seccomp import suite
from seccomp.common import MAGIC, NOTIF_VALUE, deny, expect_allowed, target

test = suite.test


def _listen(action: int = sc.RET_USER_NOTIF) -> int:
    _klab.set_no_new_privs()
    return sc.must_install(deny(action), sc.FLAG_NEW_LISTENER, "install with NEW_LISTENER")


def _call_in_thread(*args: int) -> tuple[threading.Thread, dict[str, object]]:
    box: dict[str, object] = {}
    started = threading.Event()

    def run() -> None:
        box["tid"] = threading.get_native_id()
        started.set()
        box["ret"] = target(*args)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    return thread, box


def _finish(thread: threading.Thread, box: dict[str, object]) -> tuple[int, int]:
    thread.join(10)
    expect(not thread.is_alive(), "the notifying thread is still blocked 10s after the reply")
    return box["ret"]  # type: ignore[return-value]


@suite.test
def notif_sizes_match_uapi() -> None:
    """SECCOMP_GET_NOTIF_SIZES: struct seccomp_notif 80, seccomp_notif_resp 24, seccomp_data 64 bytes."""
    sc.require_user_notif()
    expect_eq(sc.notif_sizes()[0], (sc.NOTIF_SIZE, sc.RESP_SIZE, sc.SECCOMP_DATA_SIZE), "notif sizes")


@suite.test
def notif_recv_reports_call_and_reply_errno() -> None:
    """The supervisor sees the caller's TID, nr, arch and args; the id is valid until answered; an
    error reply becomes the caller's errno; the answered id is then ENOENT for ID_VALID and SEND."""
    sc.require_user_notif()
    fd = _listen()
    expect(fd >= 0, f"NEW_LISTENER returned fd {fd}")
    args = (MAGIC, 2, 3, 0xFFFF_FFFF_FFFF_FFFF, 5, 6)
    thread, box = _call_in_thread(*args[1:])
    notif = sc.notif_recv(fd)
    expect_eq(notif.pid, box["tid"], "notif.pid (the calling thread's TID)")
    expect_eq(notif.flags, 0, "notif.flags")
    expect_eq(notif.data.nr, sc.nr("getppid"), "notif.data.nr")
    expect_eq(notif.data.arch, sc.AUDIT_ARCH, "notif.data.arch")
    expect_eq(tuple(notif.data.args), args, "notif.data.args")
    expect_errno(sc.notif_id_valid(fd, notif.id), 0, "ID_VALID while the call waits")
    expect_errno(sc.notif_id_valid(fd, notif.id + 1), errno.ENOENT, "ID_VALID of an id never issued")
    expect_errno(sc.notif_send(fd, notif.id, error=-errno.EXDEV), 0, "SEND error=-EXDEV")
    expect_errno(_finish(thread, box), errno.EXDEV, "caller's result")
    expect_errno(sc.notif_id_valid(fd, notif.id), errno.ENOENT, "ID_VALID after the reply")
    expect_errno(sc.notif_send(fd, notif.id, val=1), errno.ENOENT, "second SEND for the same id")


@suite.test
def notif_reply_value() -> None:
    """A reply with error 0 returns its val to the caller as the syscall result, without running it."""
    sc.require_user_notif()
    fd = _listen()
    thread, box = _call_in_thread()
    notif = sc.notif_recv(fd)
    expect_errno(sc.notif_send(fd, notif.id, val=NOTIF_VALUE), 0, "SEND val")
    expect_eq(_finish(thread, box), (NOTIF_VALUE, 0), "caller's result (ret, errno)")


@suite.test
def notif_continue_runs_the_call() -> None:
    """SECCOMP_USER_NOTIF_FLAG_CONTINUE (5.5+) lets the call run for real; combined with an error or
    a value it is EINVAL and the call keeps waiting."""
    sc.require_user_notif()
    fd = _listen()
    thread, box = _call_in_thread()
    notif = sc.notif_recv(fd)
    bad = sc.notif_send(fd, notif.id, error=-errno.EPERM, flags=sc.USER_NOTIF_FLAG_CONTINUE)
    expect_errno(bad, errno.EINVAL, "SEND CONTINUE with an error")
    expect_errno(sc.notif_id_valid(fd, notif.id), 0, "ID_VALID after the refused reply")
    got = sc.notif_send(fd, notif.id, flags=sc.USER_NOTIF_FLAG_CONTINUE)
    if got[1] == errno.EINVAL:
        sc.notif_send(fd, notif.id, val=0)
        _finish(thread, box)
        raise Skip("kernel lacks SECCOMP_USER_NOTIF_FLAG_CONTINUE (5.5+)")
    expect_errno(got, 0, "SEND CONTINUE")
    expect_allowed(_finish(thread, box), "caller's result after CONTINUE")


@suite.test
def notif_dead_supervisor_fails_call_with_enosys() -> None:
    """When the supervisor dies after receiving (its listener fd closes), the waiting call gets ENOSYS;
    so does a later call with no listener left."""
    sc.require_user_notif()
    fd = _listen()
    sup = os.fork()
    if sup == 0:
        try:
            notif = sc.notif_recv(fd, 10)
            os._exit(0 if notif.data.nr == sc.nr("getppid") else 2)
        except BaseException:  # noqa: BLE001
            os._exit(3)
    os.close(fd)
    r = target()
    status = _klab.wait_status(sup)
    expect_eq(sc.describe_status(status), "exited 0", "supervisor (received the notification, then died)")
    expect_errno(r, errno.ENOSYS, "call pending when the supervisor died")
    expect_errno(target(), errno.ENOSYS, "call after the listener is gone")


ADDFD_TARGET = 900  # fd number the supervisor asks for in the caller's table


def _addfd_caller(wfd: int, listener: int) -> None:
    """The notifying process: make the call, then report the result and what fd ADDFD_TARGET is."""
    os.close(listener)
    ret, err = target()
    try:
        st = os.fstat(ADDFD_TARGET)
        cloexec = bool(fcntl.fcntl(ADDFD_TARGET, fcntl.F_GETFD) & fcntl.FD_CLOEXEC)
        seen = f"{st.st_ino} {int(cloexec)}"
    except OSError as exc:
        seen = f"errno {exc.errno}"
    os.write(wfd, f"{ret} {err} {seen}".encode())


@suite.test
def notif_addfd_installs_fd_in_caller() -> None:
    """SECCOMP_IOCTL_NOTIF_ADDFD (5.9+) puts the supervisor's file into the caller's fd table (at the
    requested number with SETFD, with the requested O_CLOEXEC), not into the supervisor's own."""
    sc.require_user_notif()
    fd = _listen()
    src = os.memfd_create("klab-seccomp-addfd")
    ino = os.fstat(src).st_ino
    rfd, wfd = os.pipe()
    caller = os.fork()
    if caller == 0:
        os.close(rfd)
        try:
            _addfd_caller(wfd, fd)
        finally:
            os._exit(0)
    os.close(wfd)
    try:
        notif = sc.notif_recv(fd)
        got = sc.notif_addfd(fd, notif.id, src, ADDFD_TARGET, sc.ADDFD_FLAG_SETFD, os.O_CLOEXEC)
        if got[1] in (errno.EINVAL, errno.ENOTTY) and sc.notif_addfd(fd, notif.id, src)[1] in (
            errno.EINVAL,
            errno.ENOTTY,
        ):
            sc.notif_send(fd, notif.id, val=0)
            raise Skip("kernel lacks SECCOMP_IOCTL_NOTIF_ADDFD (5.9+)")
        expect_eq(got, (ADDFD_TARGET, 0), "ADDFD with SETFD (fd number in the caller, errno)")
        expect_errno(sc.notif_addfd(fd, notif.id + 1, src), errno.ENOENT, "ADDFD for an id never issued")
        expect_errno(sc.notif_send(fd, notif.id, val=NOTIF_VALUE), 0, "SEND val")
        status = _klab.wait_status(caller)
        data = os.read(rfd, 4096).decode()
    finally:
        os.close(rfd)
    expect_eq(sc.describe_status(status), "exited 0", "caller exit")
    expect_eq(data, f"{NOTIF_VALUE} 0 {ino} 1", "caller: 'result errno inode-of-fd-900 cloexec'")
    expect(not os.path.exists(f"/proc/self/fd/{ADDFD_TARGET}"), "supervisor's own fd table got the fd")


@suite.test
def notif_without_listener_is_enosys() -> None:
    """A USER_NOTIF verdict from a filter installed without NEW_LISTENER fails the call with ENOSYS."""
    sc.require_user_notif()
    _klab.set_no_new_privs()
    sc.must_install(deny(sc.RET_USER_NOTIF))
    expect_errno(target(), errno.ENOSYS, "target call under USER_NOTIF, no listener")


@suite.test
def notif_second_listener_is_ebusy() -> None:
    """Only one listener per filter chain: a second NEW_LISTENER is EBUSY, also in a forked child."""
    sc.require_user_notif()
    _listen()
    expect_errno(sc.install(deny(sc.RET_USER_NOTIF), sc.FLAG_NEW_LISTENER), errno.EBUSY, "second NEW_LISTENER")

    def child() -> None:
        r = sc.install(deny(sc.RET_USER_NOTIF), sc.FLAG_NEW_LISTENER)
        expect_errno(r, errno.EBUSY, "NEW_LISTENER in a child inheriting a listener")

    _klab.in_child(child)
