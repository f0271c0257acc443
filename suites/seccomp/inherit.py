"""seccomp: inheritance."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading

import _klab
import _seccomp as sc
from _klab import expect_eq, expect_errno

from seccomp import suite
from seccomp.common import MAGIC, deny, expect_allowed, parked_thread, target

test = suite.test


@suite.test
def proc_status_reports_mode_and_count() -> None:
    """/proc/PID/status says Seccomp: 2 and counts filters (Seccomp_filters, 5.9+); PR_GET_SECCOMP is 2."""
    sc.require_filter_mode()
    sc.require_no_inherited_filters()
    expect_eq(_klab.syscall("prctl", sc.PR_GET_SECCOMP, 0, 0, 0, 0), (0, 0), "PR_GET_SECCOMP before any filter")
    _klab.set_no_new_privs()
    for _ in range(3):
        sc.must_install(deny(sc.RET_ERRNO | 1))
    status = sc.proc_status()
    expect_eq(status.get("Seccomp"), "2", "Seccomp field")
    if "Seccomp_filters" in status:
        expect_eq(status["Seccomp_filters"], "3", "Seccomp_filters field")
    expect_eq(_klab.syscall("prctl", sc.PR_GET_SECCOMP, 0, 0, 0, 0), (2, 0), "PR_GET_SECCOMP")


@suite.test
def fork_inherits_and_child_cannot_loosen() -> None:
    """A forked child inherits the filter; adding ALLOW, LOG or TRACE filters cannot loosen it; a
    child's own ERRNO filter wins the tie (newest), and none of it reaches the parent."""
    sc.require_action("log")
    sc.require_no_inherited_filters()
    _klab.set_no_new_privs()
    sc.must_install(deny(sc.RET_ERRNO | errno.E2BIG))

    def child() -> None:
        expect_errno(target(), errno.E2BIG, "child: inherited filter")
        for action in (sc.RET_ALLOW, sc.RET_LOG, sc.RET_TRACE | 1):
            sc.must_install(deny(action), what=f"child adds filter {action:#x} for the target call")
        for action in (sc.RET_ALLOW, sc.RET_LOG):
            sc.must_install([sc.ret(action)], what=f"child adds return-only filter {action:#x}")
        expect_errno(target(), errno.E2BIG, "child: after adding ALLOW/LOG/TRACE filters")
        sc.must_install(deny(sc.RET_ERRNO | errno.EXDEV))
        expect_errno(target(), errno.EXDEV, "child: after adding its own ERRNO(EXDEV) filter")
        count = sc.filter_count()
        if count is not None:
            expect_eq(count, 7, "child's Seccomp_filters (1 inherited + 6 own)")

    _klab.in_child(child)
    expect_errno(target(), errno.E2BIG, "parent after the child's filters")
    count = sc.filter_count()
    if count is not None:
        expect_eq(count, 1, "parent's Seccomp_filters")


_EXEC_PROBE = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
ret = libc.syscall(ctypes.c_long(int(sys.argv[1])), ctypes.c_long(int(sys.argv[2])))
err = ctypes.get_errno() if ret == -1 else 0
fields = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
print(ret, err, fields["Seccomp"].strip(), fields.get("Seccomp_filters", "-").strip())
"""


@suite.test
def filters_survive_execve() -> None:
    """After execve the new program runs under the same filters (and in filter mode)."""
    sc.require_filter_mode()
    sc.require_no_inherited_filters()
    _klab.set_no_new_privs()
    sc.must_install(deny(sc.RET_ERRNO | errno.E2BIG))
    sc.must_install(sc.rules(("getppid", sc.RET_ERRNO | errno.EXDEV, MAGIC + 1)))
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", _EXEC_PROBE, str(sc.nr("getppid")), str(MAGIC)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    expect_eq(out.returncode, 0, f"exec'd probe exit status (stderr: {out.stderr.strip()[-300:]})")
    ret, err, mode, count = out.stdout.split()
    expect_eq((int(ret), int(err)), (-1, errno.E2BIG), "exec'd program's target call (ret, errno)")
    expect_eq(mode, "2", "exec'd program's Seccomp field")
    if count != "-":
        expect_eq(count, "2", "exec'd program's Seccomp_filters")


def _thread_call(results: dict[str, tuple[int, int]], key: str, go: threading.Event) -> threading.Thread:
    def run() -> None:
        go.wait(10)
        results[key] = target()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@suite.test
def filter_reaches_only_threads_created_after() -> None:
    """Without TSYNC, a filter binds the caller and threads it creates later, not existing threads."""
    sc.require_filter_mode()
    _klab.set_no_new_privs()
    results: dict[str, tuple[int, int]] = {}
    go = threading.Event()
    before = _thread_call(results, "before", go)
    sc.must_install(deny(sc.RET_ERRNO | errno.E2BIG))
    after = _thread_call(results, "after", go)
    go.set()
    before.join(10)
    after.join(10)
    expect_allowed(results["before"], "thread created before the filter")
    expect_errno(results["after"], errno.E2BIG, "thread created after the filter")
    expect_errno(target(), errno.E2BIG, "the installing thread")


@suite.test
def tsync_applies_filter_and_nnp_to_all_threads() -> None:
    """TSYNC installs the filter on every thread at once and carries no_new_privs along."""
    sc.require_flag(sc.FLAG_TSYNC, "SECCOMP_FILTER_FLAG_TSYNC")
    tid, release, box = parked_thread()
    expect_eq(sc.proc_status(tid=tid).get("NoNewPrivs"), "0", "sibling NoNewPrivs before")
    _klab.set_no_new_privs()  # the caller only: prctl is per-thread
    expect_eq(sc.install(deny(sc.RET_ERRNO | errno.E2BIG), sc.FLAG_TSYNC), (0, 0), "TSYNC install (ret, errno)")
    status = sc.proc_status(tid=tid)
    expect_eq(status.get("Seccomp"), "2", "sibling Seccomp after TSYNC")
    expect_eq(status.get("NoNewPrivs"), "1", "sibling NoNewPrivs after TSYNC")
    if "Seccomp_filters" in status:
        expect_eq(status["Seccomp_filters"], "1", "sibling Seccomp_filters after TSYNC")
    release.set()
    box["thread"].join(10)  # type: ignore[union-attr]
    expect_errno(box["call"], errno.E2BIG, "sibling's target call after TSYNC")  # type: ignore[arg-type]


@suite.test
def tsync_fails_naming_diverged_thread() -> None:
    """TSYNC fails when a sibling has its own filter: it returns that thread's TID and installs nothing."""
    sc.require_flag(sc.FLAG_TSYNC, "SECCOMP_FILTER_FLAG_TSYNC")
    _klab.set_no_new_privs()
    tid, release, box = parked_thread(lambda: sc.install(deny(sc.RET_ERRNO | errno.EXDEV)))
    expect_eq(box["setup"], (0, 0), "sibling installs its own filter (ret, errno)")
    got = sc.install(deny(sc.RET_ERRNO | errno.E2BIG), sc.FLAG_TSYNC)
    expect_eq(got, (tid, 0), "TSYNC install with a diverged sibling (ret = its TID, errno)")
    expect_eq(sc.proc_status().get("Seccomp"), "0", "caller's Seccomp after the failed TSYNC")
    expect_allowed(target(), "caller's target call after the failed TSYNC")
    release.set()
    box["thread"].join(10)  # type: ignore[union-attr]
    expect_errno(box["call"], errno.EXDEV, "sibling keeps only its own filter")  # type: ignore[arg-type]


@suite.test
def tsync_esrch_flag_reports_esrch() -> None:
    """With TSYNC_ESRCH (5.7+) the same failure is ESRCH instead of a TID; TSYNC plus NEW_LISTENER
    needs it (EINVAL without)."""
    sc.require_flag(sc.FLAG_TSYNC, "SECCOMP_FILTER_FLAG_TSYNC")
    sc.require_flag(sc.FLAG_TSYNC_ESRCH, "SECCOMP_FILTER_FLAG_TSYNC_ESRCH")
    sc.require_flag(sc.FLAG_NEW_LISTENER, "SECCOMP_FILTER_FLAG_NEW_LISTENER")
    _klab.set_no_new_privs()
    both = sc.FLAG_TSYNC | sc.FLAG_NEW_LISTENER
    expect_errno(sc.install(deny(sc.RET_USER_NOTIF), both), errno.EINVAL, "TSYNC|NEW_LISTENER without TSYNC_ESRCH")
    _, release, box = parked_thread(lambda: sc.install(deny(sc.RET_ERRNO | errno.EXDEV)))
    expect_eq(box["setup"], (0, 0), "sibling installs its own filter (ret, errno)")
    got = sc.install(deny(sc.RET_ERRNO | errno.E2BIG), sc.FLAG_TSYNC | sc.FLAG_TSYNC_ESRCH)
    expect_errno(got, errno.ESRCH, "TSYNC|TSYNC_ESRCH with a diverged sibling")
    release.set()


@suite.test
def parent_filter_after_fork_misses_existing_child() -> None:
    """A filter binds its task and the tasks that task creates afterwards, processes as well as
    threads: one the parent installs after fork, even with TSYNC (threads only), misses the child
    already forked and whatever that child forks later; a child forked after it is bound."""
    sc.require_flag(sc.FLAG_TSYNC, "SECCOMP_FILTER_FLAG_TSYNC")
    sc.require_no_inherited_filters()
    go_r, go_w = os.pipe()

    def early(wfd: int) -> int:
        os.read(go_r, 1)
        grandchild = os.fork()
        if grandchild == 0:
            os.close(wfd)
            ret, err = target()
            os._exit(0 if (ret, err) == (os.getppid(), 0) else 1)
        mine = target()
        status = _klab.wait_status(grandchild)
        os.write(wfd, f"{mine} {sc.proc_status().get('Seccomp')} {status}".encode())
        return 0

    pid, rfd = _klab.fork_pipe(early)
    _klab.set_no_new_privs()
    expect_eq(sc.install(deny(sc.RET_ERRNO | errno.E2BIG), sc.FLAG_TSYNC), (0, 0), "parent's TSYNC install")
    os.write(go_w, b"x")
    status = _klab.wait_status(pid)
    report = _klab.read_pipe(rfd)[0].decode(errors="replace")
    expect_eq(status, 0, f"early child's wait status (report {report!r})")
    want = f"{(os.getpid(), 0)} 0 0"
    expect_eq(report, want, "early child: 'its target call, its Seccomp field, its own child's wait status'")
    expect_errno(target(), errno.E2BIG, "parent's target call")

    def late() -> None:
        expect_eq(sc.proc_status().get("Seccomp"), "2", "late child's Seccomp field")
        expect_errno(target(), errno.E2BIG, "late child's target call")

    _klab.in_child(late)
    for end in (go_r, go_w):
        os.close(end)
