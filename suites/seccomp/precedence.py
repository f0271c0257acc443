"""seccomp: precedence."""

from __future__ import annotations

import errno
import os
import signal
import threading
import time

import _klab
import _seccomp as sc
from _klab import expect, expect_eq

from seccomp import suite
from seccomp.common import NOTIF_VALUE, TRACE_DATA, TRAP_DATA, deny, target

# Most restrictive first. LOG and ALLOW differ only in the audit log, so that one pair is not observable.
PRECEDENCE = ("kill_process", "kill_thread", "trap", "errno", "user_notif", "trace", "log", "allow")

ERRNO_DATA = errno.E2BIG


def _verdict(name: str) -> int:
    data = {"trap": TRAP_DATA, "errno": ERRNO_DATA, "trace": TRACE_DATA}.get(name, 0)
    return sc.ACTIONS[name] | data


def _expected_outcome(name: str) -> str:
    return {
        "kill_process": "process_killed",
        "kill_thread": "thread_killed",
        "trap": f"trap:{TRAP_DATA}",
        "errno": f"errno:{ERRNO_DATA}",
        "user_notif": f"value:{NOTIF_VALUE}",
        "trace": f"errno:{errno.ENOSYS}",
        "log": "allowed",
        "allow": "allowed",
    }[name]


def _observe_child(wfd: int, names: tuple[str, ...]) -> None:
    """Install one filter per action (oldest first), make the target call from a thread, report."""
    _klab.set_no_new_privs()
    sc.install_sigsys_handler()
    ppid = os.getppid()
    listener = None
    for name in names:
        flags = sc.FLAG_NEW_LISTENER if name == "user_notif" else 0
        fd = sc.must_install(deny(_verdict(name)), flags, f"install {name} filter")
        listener = fd if flags else listener
    result: dict[str, object] = {}
    started, done = threading.Event(), threading.Event()

    def call() -> None:
        result["tid"] = threading.get_native_id()
        started.set()
        result["ret"] = target()
        done.set()

    threading.Thread(target=call, daemon=True).start()
    started.wait(5)
    task = f"/proc/self/task/{result['tid']}"
    deadline = time.monotonic() + 10
    outcome = "hang"
    while time.monotonic() < deadline:
        if done.is_set():
            ret, err = result["ret"]  # type: ignore[misc]
            outcome = f"errno:{err}" if ret == -1 else "allowed" if ret == ppid else f"value:{ret}"
            break
        if not os.path.exists(task) and not done.is_set():  # done is set before a normal thread exit
            outcome = "thread_killed"
            break
        if listener is not None and sc.wait_readable(listener, 0.002):
            notif = sc.notif_recv(listener)
            sc.notif_send(listener, notif.id, val=NOTIF_VALUE)
        else:
            time.sleep(0.002)
    if sc.SIGSYS_SEEN:
        outcome = f"trap:{sc.SIGSYS_SEEN[0]['errno']}"
    os.write(wfd, outcome.encode())


def observe(*names: str) -> str:
    """What the target call met under these filters (installed in this order, oldest first)."""
    status, data = sc.fork_status(_observe_child, names)
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS:
        return "process_killed"
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return f"child {sc.describe_status(status)}"
    return data.decode()


def _require_all_actions() -> None:
    for name in PRECEDENCE:
        sc.require_action(name)
    sc.require_user_notif()


def _action_alone(name: str) -> callable:  # type: ignore[valid-type]
    def test() -> None:
        sc.require_action(name)
        if name == "user_notif":
            sc.require_user_notif()
        expect_eq(observe(name), _expected_outcome(name), f"target call under a lone {name} filter")

    test.__doc__ = f"A lone {name} filter gives its own observable outcome (the baseline for precedence)."
    return test


def _precedence(strong: str) -> callable:  # type: ignore[valid-type]
    def test() -> None:
        _require_all_actions()
        weaker = PRECEDENCE[PRECEDENCE.index(strong) + 1 :]
        bad = []
        for weak in weaker:
            if {strong, weak} == {"log", "allow"}:
                continue
            for order in ((weak, strong), (strong, weak)):
                got = observe(*order)
                if got != _expected_outcome(strong):
                    bad.append(f"installed {' then '.join(order)}: got {got}")
        expect(
            not bad,
            f"{strong} must win over every weaker action in either order, expected "
            f"{_expected_outcome(strong)}: " + "; ".join(bad),
        )

    test.__doc__ = f"{strong} beats every less restrictive action, whichever filter is newer."
    return test


for _name in PRECEDENCE:
    suite.add(f"action_{_name}_alone", _action_alone(_name))

for _name in PRECEDENCE[:-2]:
    suite.add(f"precedence_{_name}_wins", _precedence(_name))
