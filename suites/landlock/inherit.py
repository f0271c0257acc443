"""landlock: domain inheritance."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable

import _klab
import _landlock as ll
from _klab import expect_eq, expect_errno, in_child, oserror_errno

from landlock import suite
from landlock.common import EACCES, _en, _nnp, _no_rules, _op, _open_close, _thread_result, _tmpdir, _touch

test = suite.test


@test
def fork_inherits_domain_parent_unrestricted() -> None:
    """Children forked after restrict_self are restricted; the parent and earlier children are not."""
    ll.require_abi(1)
    with _tmpdir() as d:
        f = _touch(os.path.join(d, "f"))

        def restricted() -> None:
            go_r, go_w = os.pipe()
            earlier = os.fork()
            if earlier == 0:
                os.read(go_r, 1)
                os._exit(oserror_errno(_open_close, f, os.O_RDONLY))
            _no_rules(fs=ll.ACCESS_FS_READ_FILE)
            _op("restricted process: read f", EACCES, _open_close, f, os.O_RDONLY)
            got = in_child(lambda: oserror_errno(_open_close, f, os.O_RDONLY))
            expect_eq(_en(got), _en(EACCES), "grandchild forked after restrict_self: read f")
            os.write(go_w, b"g")
            status = _klab.wait_status(earlier)
            expect_eq(_en(os.WEXITSTATUS(status)), _en(0), "child forked before restrict_self: read f")

        in_child(restricted)
        _op("unrestricted parent: read f", 0, _open_close, f, os.O_RDONLY)


@test
def later_layers_do_not_propagate() -> None:
    """Domains are append-only per task: a parent's later layer never reaches an already-forked child."""
    ll.require_abi(1)
    with _tmpdir() as d:
        fa, fb = _touch(f"{d}/a"), _touch(f"{d}/b")

        def everything_but(f: str) -> tuple[tuple[str, int], ...]:
            return tuple((p, ll.ACCESS_FS_READ_FILE) for p in (fa, fb) if p != f)

        def parent() -> None:
            ll.layer(fs=ll.ACCESS_FS_READ_FILE, paths=everything_but(fa))
            go_r, go_w = os.pipe()
            child = os.fork()
            if child == 0:
                os.read(go_r, 1)
                a, b = (oserror_errno(_open_close, p, os.O_RDONLY) for p in (fa, fb))
                os._exit(0 if (a, b) == (EACCES, 0) else 100 + a + b)
            ll.layer(fs=ll.ACCESS_FS_READ_FILE, paths=everything_but(fb))
            os.write(go_w, b"g")
            _op("parent after its second layer: read a", EACCES, _open_close, fa, os.O_RDONLY)
            _op("parent after its second layer: read b", EACCES, _open_close, fb, os.O_RDONLY)
            status = _klab.wait_status(child)
            expect_eq(os.WEXITSTATUS(status), 0, "child forked between the layers: exit 0 means (a: EACCES, b: ok)")

        in_child(parent)
        _op("unrestricted grandparent: read b", 0, _open_close, fb, os.O_RDONLY)


_EXEC_CHECK = """
import os, sys
try:
    os.close(os.open(sys.argv[1], os.O_WRONLY))
    err = 0
except OSError as exc:
    err = exc.errno
nnp = [l.split()[1] for l in open('/proc/self/status') if l.startswith('NoNewPrivs:')][0]
print(err, nnp)
"""


@test
def domain_and_nnp_survive_execve() -> None:
    """After execve the new program is still in the domain and still has no_new_privs."""
    ll.require_abi(1)
    with _tmpdir() as d:
        f = _touch(os.path.join(d, "f"))

        def restricted() -> None:
            _no_rules(fs=ll.ACCESS_FS_WRITE_FILE)
            proc = subprocess.run(
                [sys.executable, "-I", "-B", "-S", "-c", _EXEC_CHECK, f], capture_output=True, timeout=30, check=False
            )
            expect_eq(proc.returncode, 0, f"exec'd python exit status (stderr: {proc.stderr.decode()[-300:]!r})")
            expect_eq(proc.stdout.decode().split(), [str(EACCES), "1"], "exec'd program: [write errno, NoNewPrivs]")

        in_child(restricted)
        _op("unrestricted parent: write f", 0, _open_close, f, os.O_WRONLY)


def _write_probe(path: str) -> Callable[[], tuple[int, int]]:
    """In the calling thread: (errno of opening path for writing, NoNewPrivs)."""
    return lambda: (oserror_errno(_open_close, path, os.O_WRONLY), _nnp())


@test
def threads_restrict_self_is_per_thread() -> None:
    """Without TSYNC only the calling thread (and threads it creates later) is restricted."""
    ll.require_abi(1)
    with _tmpdir() as d:
        f = _touch(os.path.join(d, "f"))

        def body() -> None:
            gate = threading.Event()
            before, before_out = _thread_result(_write_probe(f), gate)
            _no_rules(fs=ll.ACCESS_FS_WRITE_FILE)
            _op("main thread after restrict_self: write f", EACCES, _open_close, f, os.O_WRONLY)
            after, after_out = _thread_result(_write_probe(f))
            gate.set()
            before.join(10)
            after.join(10)
            expect_eq(before_out, [(0, 0)], "thread created before restrict_self: [(write errno, nnp)]")
            expect_eq(after_out, [(EACCES, 1)], "thread created after restrict_self: [(write errno, nnp)]")

        in_child(body)


@test
def tsync_restricts_existing_threads() -> None:
    """ABI 8: TSYNC puts sibling threads in the domain and sets their no_new_privs."""
    ll.require_abi(8)
    with _tmpdir() as d:
        f = _touch(os.path.join(d, "f"))

        def body() -> None:
            _klab.drop_caps()
            gate = threading.Event()
            before, before_out = _thread_result(_write_probe(f), gate)
            _no_rules_flags(ll.ACCESS_FS_WRITE_FILE, ll.LANDLOCK_RESTRICT_SELF_TSYNC)
            gate.set()
            before.join(10)
            expect_eq(before_out, [(EACCES, 1)], "pre-existing thread after TSYNC: [(write errno, nnp)]")

        in_child(body)


@test
def tsync_resyncs_diverged_threads() -> None:
    """ABI 8: after a plain restrict_self diverged the threads, TSYNC still succeeds and syncs them."""
    ll.require_abi(8)
    with _tmpdir() as d:
        f = _touch(os.path.join(d, "f"))

        def body() -> None:
            gate = threading.Event()
            before, before_out = _thread_result(_write_probe(f), gate)
            _klab.set_no_new_privs()
            rs = ll.ruleset(fs=ll.ACCESS_FS_WRITE_FILE)
            expect_errno(ll.restrict_self(rs), 0, "plain restrict_self (threads diverge)")
            expect_errno(ll.restrict_self(rs, ll.LANDLOCK_RESTRICT_SELF_TSYNC), 0, "restrict_self TSYNC")
            gate.set()
            before.join(10)
            expect_eq(before_out, [(EACCES, 1)], "diverged thread after TSYNC: [(write errno, nnp)]")

        in_child(body)


def _no_rules_flags(fs: int, flags: int) -> None:
    ll.layer(fs=fs, flags=flags)


@test
def tsync_overrides_sibling_domains() -> None:
    """ABI 8: TSYNC replaces a sibling's own, different domain by the caller's: the sibling's extra layer is gone."""
    ll.require_abi(8)
    with _tmpdir() as d:
        f1, f2 = _touch(f"{d}/f1"), _touch(f"{d}/f2")
        write = ll.ACCESS_FS_WRITE_FILE

        def body() -> None:
            _klab.set_no_new_privs()
            restricted, go = threading.Event(), threading.Event()
            out: list = []

            def sibling() -> None:
                fd = ll.ruleset(fs=write)
                ll.allow_path(fd, f1, write)
                expect_errno(ll.restrict_self(fd), 0, "sibling: its own layer (denies f2)")
                out.append(("before", _write_probe(f1)()[0], _write_probe(f2)()[0]))
                restricted.set()
                go.wait(10)
                out.append(("after", _write_probe(f1)()[0], _write_probe(f2)()[0]))

            t = threading.Thread(target=sibling, daemon=True)
            t.start()
            restricted.wait(10)
            ll.layer(fs=write, paths=((f2, write),), flags=ll.LANDLOCK_RESTRICT_SELF_TSYNC)  # denies f1
            go.set()
            t.join(10)
            _op("caller after TSYNC: write f1", EACCES, _open_close, f1, os.O_WRONLY)
            _op("caller after TSYNC: write f2", 0, _open_close, f2, os.O_WRONLY)
            expect_eq(out, [("before", 0, EACCES), ("after", EACCES, 0)], "sibling: (when, write f1, write f2)")

        in_child(body)


@test
def tsync_reaches_threads_blocked_in_syscalls() -> None:
    """ABI 8: threads asleep in read() are restricted too (and their read completes normally afterwards)."""
    ll.require_abi(8)
    with _tmpdir() as d:
        f = _touch(f"{d}/f")

        def body() -> None:
            _klab.drop_caps()
            pipes = [os.pipe() for _ in range(4)]
            results: list = []

            def blocked(rfd: int) -> None:
                data = os.read(rfd, 1)  # asleep here while the caller enforces
                results.append((data, *_write_probe(f)()))

            threads = [threading.Thread(target=blocked, args=(r,), daemon=True) for r, _ in pipes]
            for t in threads:
                t.start()
            ll.layer(fs=ll.ACCESS_FS_WRITE_FILE, flags=ll.LANDLOCK_RESTRICT_SELF_TSYNC)
            for _, w in pipes:
                os.write(w, b"!")
            for t in threads:
                t.join(10)
            expect_eq(results, [(b"!", EACCES, 1)] * 4, "blocked threads: [(read data, write errno, nnp)]")

        in_child(body)


@test
def tsync_without_nnp_leaves_siblings_nnp_unset() -> None:
    """ABI 8: TSYNC propagates no_new_privs only if the caller has it: via CAP_SYS_ADMIN siblings stay without."""
    ll.require_abi(8)
    with _tmpdir() as d:
        f = _touch(f"{d}/f")

        def body() -> None:
            gate = threading.Event()
            before, before_out = _thread_result(_write_probe(f), gate)
            rs = ll.ruleset(fs=ll.ACCESS_FS_WRITE_FILE)
            expect_errno(ll.restrict_self(rs, ll.LANDLOCK_RESTRICT_SELF_TSYNC), 0, "TSYNC with CAP_SYS_ADMIN, no nnp")
            gate.set()
            before.join(10)
            expect_eq(_write_probe(f)(), (EACCES, 0), "caller: (write errno, nnp)")
            expect_eq(before_out, [(EACCES, 0)], "sibling: [(write errno, nnp)]")

        in_child(body)
