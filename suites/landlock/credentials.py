"""landlock: the domain survives every credential change.

A Landlock domain lives in the task's credentials (struct cred's security
blob). Every path that installs new credentials must carry it over:
prepare_creds() for the setuid family, capset, securebits and execve (the
cred_prepare hook), and KEYCTL_SESSION_TO_PARENT, which builds the parent's
new credentials from cred_alloc_blank() in the child and fills them in the
parent with security_transfer_creds() (the cred_transfer hook, missing
before "landlock: Don't lose track of restrictions on cred_transfer",
v6.10, backported to 6.1.y: without it the parent silently lost its domain).
Each test checks both sides after the change: the path the domain denies
stays denied, the one its rule grants stays granted, and the credential
change really happened.

Files are mode 0666 in a mode-0777 directory, so when a test leaves uid 0
only Landlock decides.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Callable

import _klab
import _landlock as ll
from _klab import Failure, expect, expect_eq, expect_errno, in_child

from landlock import suite
from landlock.accounts import (
    PR_GET_SECUREBITS,
    PR_SET_SECUREBITS,
    SECBIT_NOROOT,
    USER_GID,
    USER_GROUP2,
    USER_UID,
    become_user,
    parse_report,
    python_program,
    report_argv,
    shared_dir,
    status_ids,
    world_file,
)
from landlock.common import EACCES, _en, _nnp, _op, _open_close, _tmpdir

test = suite.test

KEYCTL_GET_KEYRING_ID = 0
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_SESSION_TO_PARENT = 18
KEY_SPEC_SESSION_KEYRING = -3


def _files(d: str) -> tuple[str, str]:
    """(denied, allowed): two world-writable files, the second in its own directory for the rule."""
    shared_dir(d)
    os.mkdir(f"{d}/allowed", 0o777)
    shared_dir(f"{d}/allowed")
    return world_file(f"{d}/denied"), world_file(f"{d}/allowed/f")


def _write_layer(allowed: str) -> None:
    """One layer handling WRITE_FILE that grants it beneath allowed's directory only."""
    ll.layer(fs=ll.ACCESS_FS_WRITE_FILE, paths=((os.path.dirname(allowed), ll.ACCESS_FS_WRITE_FILE),))


def _check_domain(denied: str, allowed: str, when: str) -> None:
    _op(f"{when}: write the denied file", EACCES, _open_close, denied, os.O_WRONLY)
    _op(f"{when}: write the file the rule grants", 0, _open_close, allowed, os.O_WRONLY)
    expect_eq(_nnp(), 1, f"{when}: no_new_privs")


def _libc_id_call(name: str, value: int) -> None:
    """setfsuid/setfsgid: no error return, so the caller checks /proc/thread-self/status."""
    getattr(_klab.libc, name)(value)


def _securebits() -> int:
    return _klab.libc.prctl(PR_GET_SECUREBITS, 0, 0, 0, 0)


def _set_securebits(bits: int) -> None:
    if _klab.libc.prctl(PR_SET_SECUREBITS, bits, 0, 0, 0) != 0:
        raise Failure(f"prctl(PR_SET_SECUREBITS, {bits:#x}): {_klab.errname(ctypes.get_errno())}")


_U, _G = USER_UID, USER_GID

# name -> (the call, run as root inside the domain; what must hold afterwards, as (got, want, what))
_CRED_CALLS: dict[str, tuple[Callable[[], object], Callable[[], tuple[object, object, str]]]] = {
    "setuid": (lambda: os.setuid(_U), lambda: (os.getresuid(), (_U, _U, _U), "getresuid()")),
    "setreuid": (lambda: os.setreuid(_U, _U), lambda: (os.getresuid(), (_U, _U, _U), "getresuid()")),
    "setresuid": (lambda: os.setresuid(_U, _U, 0), lambda: (os.getresuid(), (_U, _U, 0), "getresuid()")),
    "setfsuid": (lambda: _libc_id_call("setfsuid", _U), lambda: (status_ids("Uid"), [0, 0, 0, _U], "Uid: line")),
    "setgid": (lambda: os.setgid(_G), lambda: (os.getresgid(), (_G, _G, _G), "getresgid()")),
    "setregid": (lambda: os.setregid(_G, _G), lambda: (os.getresgid(), (_G, _G, _G), "getresgid()")),
    "setresgid": (lambda: os.setresgid(_G, _G, 0), lambda: (os.getresgid(), (_G, _G, 0), "getresgid()")),
    "setfsgid": (lambda: _libc_id_call("setfsgid", _G), lambda: (status_ids("Gid"), [0, 0, 0, _G], "Gid: line")),
    "setgroups": (
        lambda: os.setgroups([_G, USER_GROUP2]),
        lambda: (sorted(os.getgroups()), [_G, USER_GROUP2], "getgroups()"),
    ),
    "capset": (_klab.drop_caps, lambda: (_klab.get_caps(), (0, 0, 0), "capabilities (eff, prm, inh)")),
    "securebits": (
        lambda: _set_securebits(SECBIT_NOROOT),
        lambda: (_securebits() & SECBIT_NOROOT, SECBIT_NOROOT, "PR_GET_SECUREBITS & SECBIT_NOROOT"),
    ),
}


def _cred_call_test(name: str) -> Callable[[], None]:
    change, changed = _CRED_CALLS[name]

    def run() -> None:
        _klab.require_root()
        ll.require_abi(1)
        with _tmpdir() as d:
            denied, allowed = _files(d)

            def body() -> None:
                _write_layer(allowed)
                _check_domain(denied, allowed, f"before {name}")
                change()
                got, want, what = changed()
                expect_eq(got, want, f"{what} after {name}")
                _check_domain(denied, allowed, f"after {name}")

            in_child(body)

    run.__doc__ = f"{name}() installs new credentials (prepare_creds): the domain goes with them, whole."
    return run


for _name in _CRED_CALLS:
    suite.add(f"domain_survives_{_name}", _cred_call_test(_name))


def _exec_from_thread(restrict_thread: bool, denied: str, allowed: str) -> dict:
    """Fork a process whose non-leader thread calls execve; return what the new program reports.

    restrict_thread: the exec'ing thread restricts itself first (the leader stays unrestricted);
    otherwise the leader restricts itself after starting the thread, which stays unrestricted.
    """
    program = python_program()
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        code = 100
        try:
            os.close(rfd)
            os.dup2(wfd, 1)
            gate = threading.Event()

            def thread() -> None:
                if restrict_thread:
                    _write_layer(allowed)
                else:
                    gate.wait(10)
                os.execv(program, report_argv(program, denied, allowed))

            t = threading.Thread(target=thread, daemon=True)
            t.start()
            if not restrict_thread:
                _write_layer(allowed)
                gate.set()
            t.join(20)  # execve by the thread ends this thread too
        finally:
            os._exit(code)
    os.close(wfd)
    out, _ = _klab.read_pipe(rfd)
    status = _klab.wait_status(pid)
    expect(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"exec'd program: wait status {status:#x}")
    if not out:
        raise Failure(f"the exec'd program reported nothing (wait status {status:#x})")
    report = parse_report(out.decode())
    expect_eq(report["pid"], pid, "pid of the exec'd program (de_thread gives it the leader's pid)")
    return report


@test
def domain_survives_execve_from_a_thread() -> None:
    """A restricted non-leader thread calls execve: the new program (the whole process) is in its domain.

    Only that thread was restricted (no TSYNC); de_thread() makes it the leader and the program runs with
    its credentials: the denied write stays EACCES, the granted one works, no_new_privs is set.
    """
    ll.require_abi(1)
    with _tmpdir() as d:
        denied, allowed = _files(d)
        report = _exec_from_thread(True, denied, allowed)
        expect_eq([_en(e) for e in report["write"]], [_en(EACCES), _en(0)], "exec'd program: [denied, allowed]")
        expect_eq(report["nnp"], 1, "exec'd program: NoNewPrivs")


@test
def execve_from_an_unrestricted_thread_has_no_domain() -> None:
    """The leader restricts itself, another thread (not restricted) calls execve: the program is unrestricted.

    Credentials, and with them the domain, are per thread: execve keeps the calling thread's, not the leader's.
    """
    ll.require_abi(1)
    with _tmpdir() as d:
        denied, allowed = _files(d)
        report = _exec_from_thread(False, denied, allowed)
        expect_eq([_en(e) for e in report["write"]], [_en(0), _en(0)], "exec'd program: [denied, allowed]")
        expect_eq(report["nnp"], 0, "exec'd program: NoNewPrivs (the leader's flag is not the thread's)")


# --- KEYCTL_SESSION_TO_PARENT: the cred_transfer path --------------------------------------


def _keyctl(*args: int) -> tuple[int, int]:
    return _klab.syscall("keyctl", *args)


def _join_session_keyring(what: str) -> int:
    return expect_errno(_keyctl(KEYCTL_JOIN_SESSION_KEYRING, 0), 0, f"{what}: KEYCTL_JOIN_SESSION_KEYRING(NULL)")


def _session_keyring() -> int:
    return expect_errno(_keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0), 0, "session keyring id")


def _session_to_parent(child_setup: Callable[[], None]) -> None:
    """Fork a child that runs child_setup, joins a new session keyring and installs it on this process.

    Checks that the transfer really happened (this process now has the child's session keyring): the
    parent's new credentials were built by cred_alloc_blank() + security_transfer_creds().
    """

    def child(wfd: int) -> int:
        child_setup()
        keyring = _join_session_keyring("child")
        expect_errno(_keyctl(KEYCTL_SESSION_TO_PARENT), 0, "child: KEYCTL_SESSION_TO_PARENT")
        os.write(wfd, f"K{keyring}".encode())
        return 0

    def body(wfd: int) -> int:
        try:
            return child(wfd)
        except Failure as exc:
            os.write(wfd, f"F{exc}".encode())
            return 101

    pid, rfd = _klab.fork_pipe(body)
    msg = _klab.read_pipe(rfd)[0].decode(errors="replace")
    status = _klab.wait_status(pid)
    if not msg.startswith("K"):
        raise Failure(f"in child: {msg[1:] or f'no answer (wait status {status:#x})'}")
    expect(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, f"child: wait status {status:#x}")
    # The keyring change is a task_work run when this process last returned to user space.
    expect_eq(_session_keyring(), int(msg[1:]), "parent's session keyring after KEYCTL_SESSION_TO_PARENT")


@test
def keyctl_session_to_parent_keeps_parents_domain() -> None:
    """A non-root parent in domain A; its child adds layer B and installs a session keyring on the parent.

    The parent's new credentials must still hold A (its denied write stays EACCES) and must not hold B (the
    write only B denies works): the cred_transfer hook copies the parent's own domain, nothing else.
    """
    ll.require_abi(1)
    with _tmpdir() as d:
        fa, fb = world_file(f"{shared_dir(d)}/a"), world_file(f"{d}/b")

        def parent() -> None:
            become_user()
            _join_session_keyring("parent")  # the parent's keyring must belong to the same uid
            ll.layer(fs=ll.ACCESS_FS_WRITE_FILE, paths=((fb, ll.ACCESS_FS_WRITE_FILE),))  # A denies a

            def child_layer() -> None:
                ll.layer(fs=ll.ACCESS_FS_WRITE_FILE, paths=((fa, ll.ACCESS_FS_WRITE_FILE),))  # B denies b
                _op("child (A+B): write a", EACCES, _open_close, fa, os.O_WRONLY)
                _op("child (A+B): write b", EACCES, _open_close, fb, os.O_WRONLY)

            _session_to_parent(child_layer)
            _op("parent after the transfer: write a (A must stay)", EACCES, _open_close, fa, os.O_WRONLY)
            _op("parent after the transfer: write b (B must not come)", 0, _open_close, fb, os.O_WRONLY)
            expect_eq(_nnp(), 1, "parent's no_new_privs after the transfer")

        in_child(parent)


@test
def keyctl_session_to_parent_gives_no_domain() -> None:
    """A restricted child installs a session keyring on its unrestricted non-root parent: no domain comes with it."""
    ll.require_abi(1)
    with _tmpdir() as d:
        f = world_file(f"{shared_dir(d)}/f")

        def parent() -> None:
            become_user()
            _join_session_keyring("parent")

            def child_layer() -> None:
                ll.layer(fs=ll.ACCESS_FS_WRITE_FILE)
                _op("restricted child: write f", EACCES, _open_close, f, os.O_WRONLY)

            _session_to_parent(child_layer)
            _op("parent after the transfer: write f", 0, _open_close, f, os.O_WRONLY)
            expect_eq(_nnp(), 0, "parent's no_new_privs after the transfer (a task flag, never transferred)")

        in_child(parent)
