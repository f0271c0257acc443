"""landlock: audit records of denials and domains, and the logging flags of restrict_self (ABI 7).

The test process becomes the audit daemon (_audit.AuditLog) and sandboxes
forked children. A denial that is logged shows as an AUDIT_LANDLOCK_ACCESS
record naming the youngest layer that denied it (domain=ID) and the blocker;
the first logged denial of a domain adds an AUDIT_LANDLOCK_DOMAIN
"status=allocated" record with the creator's pid, and a domain that was
logged gets a "status=deallocated" record with its denial count when its
last user goes away.

Absence is proven with a barrier: after the denial that must not be logged,
a fresh domain makes a denial that is, and the records are read up to it
(kauditd delivers in order). Each test owns a fresh /tmp directory, so
records are selected by path, pid or domain ID, never by arrival alone.

Every test here runs alone: the audit daemon role is one pid for the whole
machine (a second AuditLog waits for it, then fails), audit_disabled_*
switches audit off for everyone, and an absence proven by the barrier holds
only when no other test can be the one that sees, or swallows, a record.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import threading
from collections.abc import Callable

import _klab
import _landlock as ll
from _audit import AUDIT_LANDLOCK_ACCESS, AUDIT_LANDLOCK_DOMAIN, AuditLog, Record
from _klab import Failure, expect, expect_eq, expect_errno, in_child

from landlock import suite
from landlock.common import EACCES, _op, _open_close, _tmpdir, _touch

test = suite.test

LANDLOCK_TYPES = {AUDIT_LANDLOCK_ACCESS, AUDIT_LANDLOCK_DOMAIN}
SAME_EXEC_OFF = ll.LANDLOCK_RESTRICT_SELF_LOG_SAME_EXEC_OFF
NEW_EXEC_ON = ll.LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON
SUBDOMAINS_OFF = ll.LANDLOCK_RESTRICT_SELF_LOG_SUBDOMAINS_OFF

_markers = itertools.count()

# --- selecting records -----------------------------------------------------------


def _access(records: list[Record], path: str) -> list[Record]:
    """The AUDIT_LANDLOCK_ACCESS records of denials on `path`."""
    return [r for r in records if r.type == AUDIT_LANDLOCK_ACCESS and r.fields.get("path") == path]


def _allocated(records: list[Record], domain: int) -> list[Record]:
    return [
        r
        for r in records
        if r.type == AUDIT_LANDLOCK_DOMAIN
        and r.fields.get("status") == "allocated"
        and _id(r.fields.get("domain", "")) == domain
    ]


def _id(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        return -1


def _one_denial(records: list[Record], path: str, blockers: str) -> int:
    """The single ACCESS record on `path`: check its blockers, return its domain ID."""
    found = _access(records, path)
    expect_eq(len(found), 1, f"number of AUDIT_LANDLOCK_ACCESS records for {path} ({found})")
    expect_eq(found[0].fields.get("blockers"), blockers, f"blockers of the denial on {path}")
    domain = _id(found[0].fields.get("domain", ""))
    expect(domain > 0, f"denial on {path}: domain field is not a non-zero hex ID: {found[0].text!r}")
    return domain


def _no_denial(records: list[Record], path: str) -> None:
    found = _access(records, path)
    expect_eq(found, [], f"AUDIT_LANDLOCK_ACCESS records for {path} (the denial must not be logged)")


def _untrusted(text: str) -> str:
    """How audit_log_untrustedstring() writes `text`, as Record.fields reads it back.

    Quoted (the quotes dropped by Record) unless it holds a '"', a space, a control or a non-ASCII
    byte: then hex-encoded, upper case.
    """
    raw = text.encode()
    if any(c == 0x22 or c < 0x21 or c > 0x7E for c in raw):
        return raw.hex().upper()
    return text


def _creator_fields(pid: int) -> dict[str, str]:
    """pid, uid, exe and comm as the allocation record of a domain created by `pid` carries them.

    Every creator in these tests is a forked, not exec'd, child of this process whose calling thread
    is its main thread: its exe, comm and uid are this process's. domain.c's get_current_details()
    takes them at restrict_self time: "details->pid = get_pid(task_tgid(current));" (the process,
    not the calling thread), the uid in the initial user namespace, the calling thread's comm.
    """
    with open("/proc/self/comm") as f:
        comm = f.read().rstrip("\n")
    exe = os.readlink("/proc/self/exe")
    return {"pid": str(pid), "uid": str(os.getuid()), "exe": _untrusted(exe), "comm": _untrusted(comm)}


def _check_allocated(records: list[Record], domain: int, pid: int, racing: int = 1) -> None:
    """The allocation record of `domain`, created by `pid`, enforcing: every field pinned.

    audit.c's log_domain() writes it after a logged denial unless the domain is already marked
    logged, and marks it only once the record is written ("There may be race condition leading to
    logging of the same domain several times but that is OK."; domain.h: "it is still possible to
    have several domain records of the same domain"). So denials made one after the other give
    exactly one record; `racing` first denials made at once give one to `racing` records, each
    complete and identical.
    """
    found = _allocated(records, domain)
    if racing == 1:
        expect_eq(len(found), 1, f"number of 'status=allocated' records for domain {domain:x} ({found})")
    else:
        what = f"number of 'status=allocated' records for domain {domain:x}, at most one per racing denial"
        expect(1 <= len(found) <= racing, f"{what}: expected 1 to {racing}, got {len(found)} ({found})")
    want = {"domain": f"{domain:x}", "status": "allocated", "mode": "enforcing", **_creator_fields(pid)}
    for record in found:
        expect_eq(record.fields, want, f"fields of the allocation record of domain {domain:x} ({record.text!r})")


def _barrier(log: AuditLog, root: str) -> list[Record]:
    """A denial that is logged, from a fresh domain; returns every Landlock record up to and including it."""
    marker = _touch(os.path.join(root, f"marker-{next(_markers)}"))

    def deny() -> None:
        ll.layer(fs=ll.ACCESS_FS_WRITE_FILE)
        _op("barrier: write marker", EACCES, _open_close, marker, os.O_WRONLY)

    in_child(deny)
    got = log.wait_for(lambda r: r.type == AUDIT_LANDLOCK_ACCESS and r.fields.get("path") == marker, LANDLOCK_TYPES)
    if not _access(got, marker):
        raise Failure(f"the barrier denial on {marker} was not logged within 10 s (is audit working?)")
    return got


def _deallocated(log: AuditLog, domain: int, seen: list[Record]) -> Record:
    """The deallocation record of `domain`, among `seen` or still to come (creds are freed asynchronously)."""

    def match(r: Record) -> bool:
        return (
            r.type == AUDIT_LANDLOCK_DOMAIN
            and r.fields.get("status") == "deallocated"
            and _id(r.fields.get("domain", "")) == domain
        )

    found = [r for r in seen if match(r)]
    if not found:
        found = [r for r in log.wait_for(match, {AUDIT_LANDLOCK_DOMAIN}) if match(r)]
    if len(found) != 1:
        raise Failure(f"expected one 'status=deallocated' record for domain {domain:x}, got {found}")
    return found[0]


def _run(fn: Callable[..., object], *args: object) -> int:
    """in_child(fn, *args), returning the child's pid (the creator pid the domain records name)."""
    r, w = os.pipe()

    def body() -> object:
        os.close(r)
        os.write(w, str(os.getpid()).encode())
        os.close(w)
        return fn(*args)

    try:
        in_child(body)
    finally:
        os.close(w)
        pid = int(os.read(r, 32) or b"0")
        os.close(r)
    return pid


def _start(fn: Callable[[], object]) -> tuple[int, int]:
    """Fork a child running fn without waiting for it: (pid, pipe for its failure message)."""

    def body(wfd: int) -> int:
        try:
            fn()
        except Failure as exc:
            os.write(wfd, f"{exc}".encode()[:65000])
            return 101
        return 0

    return _klab.fork_pipe(body)


def _join(child: tuple[int, int]) -> None:
    """Wait for a child of _start; its failure becomes ours."""
    status = _klab.wait_status(child[0])
    msg = _klab.read_pipe(child[1])[0].decode(errors="replace")
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        raise Failure(f"in child: {msg.strip() or f'wait status {status:#x}'}")


def _deny_write(path: str, what: str = "write") -> None:
    _op(f"{what} {path}", EACCES, _open_close, path, os.O_WRONLY)


# --- tests ---------------------------------------------------------------------------


@test(alone=True)
def audit_denial_names_domain_blocker_and_creator() -> None:
    """ABI 7: one ACCESS record per denial (domain, blocker, path), one allocation record, one deallocation."""
    ll.require_abi(7)
    with _tmpdir() as d, AuditLog() as log:
        f, g = _touch(f"{d}/f"), _touch(f"{d}/g")

        def body() -> None:
            ll.layer(fs=ll.ACCESS_FS_WRITE_FILE)
            _deny_write(f)
            _op(f"read {f} (READ_FILE not handled)", 0, _open_close, f, os.O_RDONLY)
            _deny_write(g)

        pid = _run(body)
        records = _barrier(log, d)
        domain = _one_denial(records, f, "fs.write_file")
        expect_eq(_one_denial(records, g, "fs.write_file"), domain, f"domain of the second denial ({g})")
        _check_allocated(records, domain, pid)
        dealloc = _deallocated(log, domain, records)
        expect_eq(dealloc.fields.get("denials"), "2", f"denial count of domain {domain:x} at deallocation")


@test(alone=True)
def audit_stacked_layers_name_the_youngest_denier() -> None:
    """ABI 7: with two layers, a denial names the youngest layer that denies it, and the younger ID is greater."""
    ll.require_abi(7)
    with _tmpdir() as d, AuditLog() as log:
        a, b = _touch(f"{d}/a"), _touch(f"{d}/b")
        write = ll.ACCESS_FS_WRITE_FILE

        def body() -> None:
            ll.layer(fs=write, paths=((a, write),))  # outer: denies b
            ll.layer(fs=write, paths=((b, write),))  # inner: denies a
            _deny_write(a)
            _deny_write(b)

        pid = _run(body)
        records = _barrier(log, d)
        inner, outer = _one_denial(records, a, "fs.write_file"), _one_denial(records, b, "fs.write_file")
        expect(inner > outer, f"inner layer's domain ID {inner:x} must be greater than the outer one's {outer:x}")
        _check_allocated(records, inner, pid)
        _check_allocated(records, outer, pid)


@test(alone=True)
def audit_same_exec_off_silences_the_creator() -> None:
    """ABI 7: LOG_SAME_EXEC_OFF: denials of the creating program (and its forks) are not logged; others are."""
    ll.require_abi(7)
    with _tmpdir() as d, AuditLog() as log:
        f, g = _touch(f"{d}/f"), _touch(f"{d}/g")

        def body(path: str, flags: int) -> None:
            ll.layer(fs=ll.ACCESS_FS_WRITE_FILE, flags=flags)
            _deny_write(path)
            in_child(_deny_write, path, "forked child: write")

        _run(body, f, SAME_EXEC_OFF)
        _run(body, g, 0)
        records = _barrier(log, d)
        _no_denial(records, f)
        expect_eq(len(_access(records, g)), 2, f"ACCESS records for {g} without the flag (creator and its fork)")


_EXEC_DENY = ': > "$1"'  # sh opens $1 for writing: the denial happens in the new program


@test(alone=True)
def audit_exec_flags_select_which_program_is_logged() -> None:
    """ABI 7: by default only the creating program is logged; NEW_EXEC_ON adds programs it execs."""
    ll.require_abi(7)
    sh = "/bin/sh"
    cases = (
        (0, True, False),
        (NEW_EXEC_ON, True, True),
        (SAME_EXEC_OFF | NEW_EXEC_ON, False, True),
        (SAME_EXEC_OFF, False, False),
    )
    with _tmpdir() as d, AuditLog() as log:

        def body(flags: int, before: str, after: str) -> None:
            ll.layer(fs=ll.ACCESS_FS_WRITE_FILE, flags=flags)
            _deny_write(before, "before execve: write")
            proc = subprocess.run([sh, "-c", _EXEC_DENY, "sh", after], capture_output=True, timeout=30, check=False)
            expect(proc.returncode != 0, f"exec'd sh wrote {after} in a domain that handles WRITE_FILE")
            expect("ermission denied" in proc.stderr.decode(), f"exec'd sh: {proc.stderr.decode()!r}")

        paths = []
        for i, (flags, *_) in enumerate(cases):
            before, after = _touch(f"{d}/before-{i}"), _touch(f"{d}/after-{i}")
            _run(body, flags, before, after)
            paths.append((before, after))
        records = _barrier(log, d)
        for (flags, want_before, want_after), (before, after) in zip(cases, paths, strict=True):
            for path, want, when in ((before, want_before, "before"), (after, want_after, "after")):
                got = len(_access(records, path))
                expect_eq(got, int(want), f"ACCESS records for the denial {when} execve with flags {flags:#x}")


@test(alone=True)
def audit_log_subdomains_off_mutes_nested_domains_only() -> None:
    """ABI 7: LOG_SUBDOMAINS_OFF leaves its own domain logged and mutes domains created later, also across fork."""
    ll.require_abi(7)
    with _tmpdir() as d, AuditLog() as log:
        a, b, c = _touch(f"{d}/a"), _touch(f"{d}/b"), _touch(f"{d}/c")
        write = ll.ACCESS_FS_WRITE_FILE

        def nested() -> None:
            ll.layer(fs=write, paths=((b, write),))  # nested: denies a and c, allows b
            _deny_write(a)  # nested layer is the youngest denier: muted

        def body() -> None:
            ll.layer(fs=write, paths=((a, write), (c, write)), flags=SUBDOMAINS_OFF)  # outer: denies b
            in_child(nested)
            ll.layer(fs=write, paths=((b, write), (a, write)))  # nested in this process: denies c
            _deny_write(b)  # outer layer is the youngest denier: logged
            _deny_write(c)  # muted

        pid = _run(body)
        records = _barrier(log, d)
        _no_denial(records, a)
        _no_denial(records, c)
        outer = _one_denial(records, b, "fs.write_file")
        _check_allocated(records, outer, pid)
        allocs = [r for r in records if r.type == AUDIT_LANDLOCK_DOMAIN and r.fields.get("pid") == str(pid)]
        expect_eq(len(allocs), 1, f"allocation records of domains created by pid {pid} (only the outer one)")


@test(alone=True)
def audit_log_subdomains_off_without_a_ruleset() -> None:
    """ABI 7: restrict_self(-1, LOG_SUBDOMAINS_OFF) mutes every later domain; without it the same domain is logged."""
    ll.require_abi(7)
    with _tmpdir() as d, AuditLog() as log:
        muted, logged = _touch(f"{d}/muted"), _touch(f"{d}/logged")

        def body(path: str, mute: bool) -> None:
            _klab.set_no_new_privs()
            if mute:
                expect_errno(ll.restrict_self(-1, SUBDOMAINS_OFF), 0, "restrict_self(-1, LOG_SUBDOMAINS_OFF)")
            ll.layer(fs=ll.ACCESS_FS_WRITE_FILE)
            _deny_write(path)
            in_child(lambda: (ll.layer(fs=ll.ACCESS_FS_WRITE_FILE), _deny_write(path, "nested: write")))

        _run(body, muted, True)
        _run(body, logged, False)
        records = _barrier(log, d)
        _no_denial(records, muted)
        expect_eq(len(_access(records, logged)), 2, f"ACCESS records for {logged} (two domains, both logged)")


@test(alone=True)
def audit_disabled_denials_still_count() -> None:
    """ABI 7: with audit disabled nothing is logged, not even with a daemon, but the domain counts the denial."""
    ll.require_abi(7)
    with _tmpdir() as d, AuditLog() as log:
        unlogged, logged = _touch(f"{d}/unlogged"), _touch(f"{d}/logged")
        step_r, step_w = os.pipe()
        done_r, done_w = os.pipe()

        def body() -> None:
            ll.layer(fs=ll.ACCESS_FS_WRITE_FILE)
            _deny_write(unlogged)
            os.write(done_w, b"1")
            expect_eq(os.read(step_r, 1), b"2", "go-ahead from the test process")
            _deny_write(logged)

        log.set_enabled(0)
        try:
            child = _start(body)
            expect_eq(os.read(done_r, 1), b"1", "first denial done")
        finally:
            log.set_enabled(1)
        os.write(step_w, b"2")
        _join(child)
        records = _barrier(log, d)
        _no_denial(records, unlogged)
        domain = _one_denial(records, logged, "fs.write_file")
        _check_allocated(records, domain, child[0])
        dealloc = _deallocated(log, domain, records)
        expect_eq(dealloc.fields.get("denials"), "2", "denials of the domain (one while audit was disabled)")


class _Parked:
    """A thread started now (it exists when the constructor returns) that runs `fn` once released.

    join() waits for it and re-raises what `fn` raised, so a sibling's failed check fails the test
    with its own message.
    """

    def __init__(self, fn: Callable[[], object], go: threading.Event | threading.Barrier | None = None) -> None:
        self._go = go if go is not None else threading.Event()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], object]) -> None:
        self._go.wait()
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by join() in the main thread
            self._errors.append(exc)

    def release(self) -> None:
        assert isinstance(self._go, threading.Event)
        self._go.set()

    def join(self) -> None:
        self._thread.join(_klab.TEST_TIMEOUT)
        expect(not self._thread.is_alive(), f"thread {self._thread.native_id} still runs")
        if self._errors:
            raise self._errors[0]


@test(alone=True)
def audit_tsync_siblings_share_the_callers_domain() -> None:
    """ABI 8: after TSYNC every thread's denial names the same domain, allocated once by the process.

    The siblings exist before restrict_self and deny one after the other, each once the previous
    one is joined, the caller last: after the first logged denial the domain is marked logged, so
    exactly one allocation record. (Racing first denials may each write one: next test.)
    """
    ll.require_abi(8)
    with _tmpdir() as d, AuditLog() as log:
        paths = [_touch(f"{d}/t{i}") for i in range(4)]

        def body() -> None:
            siblings = [_Parked(lambda p=p: _deny_write(p, "sibling: write")) for p in paths[1:]]
            ll.layer(fs=ll.ACCESS_FS_WRITE_FILE, flags=ll.LANDLOCK_RESTRICT_SELF_TSYNC)
            for sibling in siblings:
                sibling.release()
                sibling.join()
            _deny_write(paths[0], "caller: write")

        pid = _run(body)
        records = _barrier(log, d)
        domains = {_one_denial(records, p, "fs.write_file") for p in paths}
        expect_eq(len(domains), 1, f"domain IDs of the caller's and its siblings' denials ({domains})")
        domain = domains.pop()
        _check_allocated(records, domain, pid)
        dealloc = _deallocated(log, domain, records)
        expect_eq(dealloc.fields.get("denials"), str(len(paths)), f"denials of domain {domain:x} (one per thread)")


@test(alone=True)
def audit_racing_first_denials_may_repeat_the_allocation_record() -> None:
    """ABI 7: threads of one domain making its first denials at once: every denial is logged with the
    domain, the allocation record comes once or up to once per thread, every copy complete and
    identical (domain.h: "it is still possible to have several domain records of the same domain"),
    and the one deallocation record counts every denial.
    """
    ll.require_abi(7)
    with _tmpdir() as d, AuditLog() as log:
        paths = [_touch(f"{d}/t{i}") for i in range(4)]

        def body() -> None:
            ll.layer(fs=ll.ACCESS_FS_WRITE_FILE)  # threads started later share the domain
            start = threading.Barrier(len(paths))
            threads = [_Parked(lambda p=p: _deny_write(p, "racing thread: write"), start) for p in paths]
            for thread in threads:
                thread.join()

        pid = _run(body)
        records = _barrier(log, d)
        domains = {_one_denial(records, p, "fs.write_file") for p in paths}
        expect_eq(len(domains), 1, f"domain IDs of the racing threads' denials ({domains})")
        domain = domains.pop()
        _check_allocated(records, domain, pid, racing=len(paths))
        dealloc = _deallocated(log, domain, records)
        expect_eq(dealloc.fields.get("denials"), str(len(paths)), f"denials of domain {domain:x} (one per thread)")


@test(alone=True)
def audit_log_subdomains_off_tsync_reaches_siblings() -> None:
    """ABI 8: restrict_self(-1, LOG_SUBDOMAINS_OFF | TSYNC) mutes domains a sibling thread creates later."""
    ll.require_abi(8)
    with _tmpdir() as d, AuditLog() as log:
        muted, logged = _touch(f"{d}/muted"), _touch(f"{d}/logged")

        def body(path: str, flags: int) -> None:
            _klab.set_no_new_privs()
            ready, go = threading.Event(), threading.Event()
            out: list[BaseException] = []

            def sibling() -> None:
                ready.set()
                go.wait(10)
                try:
                    ll.layer(fs=ll.ACCESS_FS_WRITE_FILE)
                    _deny_write(path, "sibling: write")
                except BaseException as exc:  # noqa: BLE001 - carried back to the main thread
                    out.append(exc)

            t = threading.Thread(target=sibling)
            t.start()
            ready.wait(10)
            expect_errno(ll.restrict_self(-1, flags), 0, f"restrict_self(-1, {flags:#x})")
            go.set()
            t.join(10)
            if out:
                raise out[0]

        _run(body, muted, SUBDOMAINS_OFF | ll.LANDLOCK_RESTRICT_SELF_TSYNC)
        _run(body, logged, SUBDOMAINS_OFF)
        records = _barrier(log, d)
        _no_denial(records, muted)
        expect_eq(len(_access(records, logged)), 1, "ACCESS records of the sibling when only the caller muted")


@test(alone=True)
def audit_tsync_overrides_a_siblings_log_subdomains_off() -> None:
    """ABI 8: TSYNC copies the caller's logging state too: a sibling's own LOG_SUBDOMAINS_OFF is undone."""
    ll.require_abi(8)
    with _tmpdir() as d, AuditLog() as log:
        undone, kept = _touch(f"{d}/undone"), _touch(f"{d}/kept")

        def body(path: str, caller_flags: int) -> None:
            _klab.set_no_new_privs()
            muted, go = threading.Event(), threading.Event()
            out: list[BaseException] = []

            def sibling() -> None:
                try:
                    expect_errno(ll.restrict_self(-1, SUBDOMAINS_OFF), 0, "sibling: restrict_self(-1, SUBDOMAINS_OFF)")
                    muted.set()
                    go.wait(10)
                    ll.layer(fs=ll.ACCESS_FS_WRITE_FILE)
                    _deny_write(path, "sibling: write")
                except BaseException as exc:  # noqa: BLE001 - carried back to the main thread
                    out.append(exc)
                    muted.set()

            t = threading.Thread(target=sibling)
            t.start()
            muted.wait(10)
            ll.layer(fs=ll.ACCESS_FS_MAKE_BLOCK, flags=caller_flags)  # handles no write
            go.set()
            t.join(10)
            if out:
                raise out[0]

        _run(body, undone, ll.LANDLOCK_RESTRICT_SELF_TSYNC)
        _run(body, kept, 0)
        records = _barrier(log, d)
        expect_eq(len(_access(records, undone)), 1, "sibling's denial after the caller's TSYNC (its mute undone)")
        _no_denial(records, kept)
