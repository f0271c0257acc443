"""landlock: LANDLOCK_ADD_RULE_QUIET and the ruleset's quiet_* fields (ABI 10, Linux 7.2).

A layer's denial is not logged when the layer is the youngest one denying,
every right it denies is in its quiet_access_fs/net mask, and the object (or
a parent directory) has a quiet rule in that layer; quiet_scoped silences a
scope's denials outright. The access is still denied, and still counted in
the domain's denials. Because only the youngest denying layer decides, a
sandboxed program cannot hide a denial that an outer layer makes and its
own layer would have allowed.
"""

from __future__ import annotations

import errno
import os
import socket

import _landlock as ll
from _audit import AUDIT_LANDLOCK_ACCESS, AuditLog, Record
from _klab import expect_eq, expect_errno, in_child

from landlock import suite
from landlock.audit_log import (
    _barrier,
    _check_allocated,
    _deallocated,
    _deny_write,
    _id,
    _no_denial,
    _one_denial,
    _run,
)
from landlock.common import EACCES, EINVAL, EPERM, _op, _open_close, _tmpdir, _touch
from landlock.net import _ensure_lo_up, _free_ports

test = suite.test

QUIET = ll.LANDLOCK_ADD_RULE_QUIET
READ, WRITE = ll.ACCESS_FS_READ_FILE, ll.ACCESS_FS_WRITE_FILE
BIND_TCP = ll.ACCESS_NET_BIND_TCP


def _attr(**fields: int) -> ll.RulesetAttr:
    return ll.RulesetAttr(**fields)


@test
def quiet_fields_and_flag_validation() -> None:
    """ABI 10: quiet masks must be subsets of the handled ones; QUIET needs a quiet mask of the rule's kind."""
    ll.require_abi(10)
    size = ll.RULESET_ATTR_SIZE_V10
    bad = (
        ("quiet_access_fs outside handled", _attr(handled_access_fs=READ, quiet_access_fs=WRITE)),
        ("quiet_access_fs bit 63", _attr(handled_access_fs=READ, quiet_access_fs=1 << 63)),
        ("quiet_access_net outside handled", _attr(handled_access_fs=READ, quiet_access_net=BIND_TCP)),
        ("quiet_scoped outside scoped", _attr(handled_access_fs=READ, quiet_scoped=ll.SCOPE_SIGNAL)),
    )
    for what, attr in bad:
        expect_errno(ll.create_ruleset(attr, size), EINVAL, what)
    good = _attr(handled_access_fs=READ, handled_access_net=BIND_TCP, scoped=ll.SCOPE_SIGNAL)
    good.quiet_access_fs, good.quiet_access_net, good.quiet_scoped = READ, BIND_TCP, ll.SCOPE_SIGNAL
    os.close(expect_errno(ll.create_ruleset(good, size), 0, "every quiet mask equal to its handled mask"))
    # A 24-byte attr ends before the quiet fields: they read as zero.
    os.close(expect_errno(ll.create_ruleset(good, ll.RULESET_ATTR_SIZE_V6), 0, "same attr, 24 bytes"))

    beneath, port = ll.LANDLOCK_RULE_PATH_BENEATH, ll.LANDLOCK_RULE_NET_PORT
    loud = ll.ruleset(fs=READ, net=BIND_TCP)
    fs_quiet = ll.ruleset(fs=READ, net=BIND_TCP, quiet_fs=READ)
    net_quiet = ll.ruleset(fs=READ, net=BIND_TCP, quiet_net=BIND_TCP)
    # The "useless QUIET" check comes after the access checks and before the parent fd is looked at.
    expect_errno(ll.add_rule(loud, beneath, ll.PathBeneathAttr(READ, -1), QUIET), EINVAL, "QUIET, no quiet_access_fs")
    expect_errno(ll.add_rule(net_quiet, beneath, ll.PathBeneathAttr(READ, -1), QUIET), EINVAL, "QUIET path, net quiet")
    expect_errno(ll.add_rule(fs_quiet, beneath, ll.PathBeneathAttr(READ, -1), QUIET), errno.EBADF, "QUIET, fd -1")
    expect_errno(ll.add_rule(fs_quiet, beneath, ll.PathBeneathAttr(WRITE, -1), QUIET), EINVAL, "QUIET, unhandled")
    expect_errno(ll.add_rule(fs_quiet, port, ll.NetPortAttr(BIND_TCP, 80), QUIET), EINVAL, "QUIET port, fs quiet")
    expect_errno(ll.add_rule(net_quiet, port, ll.NetPortAttr(BIND_TCP, 65536), QUIET), EINVAL, "QUIET port 65536")
    expect_errno(ll.add_rule(net_quiet, port, ll.NetPortAttr(BIND_TCP, 80), QUIET), 0, "QUIET port 80")
    # A quiet rule may grant nothing: it only holds the flag. Without QUIET that is still ENOMSG.
    expect_errno(ll.add_path_rule(fs_quiet, "/tmp", 0), errno.ENOMSG, "allowed_access 0 without QUIET")
    fd = os.open("/tmp", os.O_PATH)
    expect_errno(ll.add_rule(fs_quiet, beneath, ll.PathBeneathAttr(0, fd), QUIET), 0, "allowed_access 0 with QUIET")
    expect_errno(ll.add_rule(net_quiet, port, ll.NetPortAttr(0, 81), QUIET), 0, "port 81, allowed_access 0, QUIET")
    expect_errno(ll.add_rule(net_quiet, port, ll.NetPortAttr(0, 82)), errno.ENOMSG, "port 82, allowed_access 0")
    os.close(fd)


@test(alone=True)  # the audit daemon role is machine-wide (see audit_log)
def quiet_rule_silences_only_quiet_rights_beneath_it() -> None:
    """ABI 10: a quiet rule on a directory silences denials beneath it of quiet rights only; all are counted."""
    ll.require_abi(10)
    with _tmpdir() as d, AuditLog() as log:
        for sub in ("q/sub", "sticky", "loud"):
            os.makedirs(f"{d}/{sub}")
        w, r, rw = _touch(f"{d}/q/sub/w"), _touch(f"{d}/q/sub/r"), _touch(f"{d}/q/sub/rw")
        sticky, loud = _touch(f"{d}/sticky/w"), _touch(f"{d}/loud/w")

        def body() -> None:
            fd = ll.ruleset(fs=READ | WRITE, quiet_fs=WRITE)
            ll.allow_path(fd, f"{d}/q", 0, QUIET)
            ll.allow_path(fd, f"{d}/sticky", READ, QUIET)
            ll.allow_path(fd, f"{d}/sticky", READ)  # a later rule without QUIET does not clear the flag
            ll.enforce(fd)
            _deny_write(w)
            _op(f"read {r}", EACCES, _open_close, r, os.O_RDONLY)
            _op(f"read-write {rw}", EACCES, _open_close, rw, os.O_RDWR)
            _deny_write(sticky)
            _op(f"read {sticky} (granted)", 0, _open_close, sticky, os.O_RDONLY)
            _deny_write(loud)

        pid = _run(body)
        records = _barrier(log, d)
        _no_denial(records, w)
        _no_denial(records, sticky)
        domain = _one_denial(records, r, "fs.read_file")
        expect_eq(_one_denial(records, rw, "fs.write_file,fs.read_file"), domain, f"domain of the denial on {rw}")
        expect_eq(_one_denial(records, loud, "fs.write_file"), domain, f"domain of the denial on {loud}")
        _check_allocated(records, domain, pid)
        dealloc = _deallocated(log, domain, records)
        expect_eq(dealloc.fields.get("denials"), "5", f"denials counted by domain {domain:x} (3 logged, 2 quiet)")


@test(alone=True)  # the audit daemon role is machine-wide (see audit_log)
def quiet_cannot_hide_an_outer_layers_denial() -> None:
    """ABI 10: a quiet rule in a layer that allows the access leaves the outer layer's denial logged."""
    ll.require_abi(10)
    with _tmpdir() as d, AuditLog() as log:
        hidden, shown = _touch(f"{d}/hidden"), _touch(f"{d}/shown")

        def inner(path: str, allowed: int) -> None:
            # The sandboxed program's own layer: quiet on the file, granting `allowed`.
            ll.layer(fs=WRITE, quiet_fs=WRITE, quiet_paths=((path, allowed),))
            _deny_write(path)

        def body() -> None:
            ll.layer(fs=WRITE)  # the supervisor's layer: denies every write
            in_child(inner, hidden, 0)  # the inner layer denies too and is the youngest: quiet
            in_child(inner, shown, WRITE)  # the inner layer allows: the outer layer decides, logged

        pid = _run(body)
        records = _barrier(log, d)
        _no_denial(records, hidden)
        outer = _one_denial(records, shown, "fs.write_file")
        _check_allocated(records, outer, pid)


def _bind_tcp(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))


def _net_denials(records: list[Record], port: int) -> list[Record]:
    return [r for r in records if r.type == AUDIT_LANDLOCK_ACCESS and r.fields.get("src") == str(port)]


@test(alone=True)  # the audit daemon role is machine-wide (see audit_log)
def quiet_port_rule_silences_its_port() -> None:
    """ABI 10: quiet_access_net with a quiet port rule silences that port's denials; other ports stay logged."""
    ll.require_abi(10)
    _ensure_lo_up()
    quiet, loud = _free_ports(2)
    with _tmpdir() as d, AuditLog() as log:

        def body() -> None:
            ll.layer(net=BIND_TCP, quiet_net=BIND_TCP, quiet_ports=((quiet, 0),))
            _op(f"bind TCP {quiet} (quiet rule)", EACCES, _bind_tcp, quiet)
            _op(f"bind TCP {loud}", EACCES, _bind_tcp, loud)

        pid = _run(body)
        records = _barrier(log, d)
        expect_eq(_net_denials(records, quiet), [], f"ACCESS records for bind({quiet})")
        found = _net_denials(records, loud)
        expect_eq([r.fields.get("blockers") for r in found], ["net.bind_tcp"], f"blockers logged for bind({loud})")
        _check_allocated(records, _id(found[0].fields["domain"]), pid)


@test(alone=True)  # the audit daemon role is machine-wide (see audit_log)
def quiet_scoped_silences_one_scope() -> None:
    """ABI 10: quiet_scoped=SIGNAL silences signal scope denials but not abstract socket ones, and not other layers'."""
    ll.require_abi(10)
    name = f"\0klab-landlock-quiet-{os.getpid()}".encode()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(name)
    server.listen(8)
    scopes = ll.SCOPE_SIGNAL | ll.SCOPE_ABSTRACT_UNIX_SOCKET
    target = os.getpid()
    with _tmpdir() as d, AuditLog() as log:

        def body(quiet: int) -> None:
            ll.layer(scoped=scopes, quiet_scoped=quiet)
            _op(f"kill({target}, 0) out of the domain", EPERM, os.kill, target, 0)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                _op("connect to an abstract socket out of the domain", EPERM, c.connect, name)

        quiet_pid = _run(body, ll.SCOPE_SIGNAL)
        loud_pid = _run(body, 0)
        records = _barrier(log, d)
        server.close()
        access = [r for r in records if r.type == AUDIT_LANDLOCK_ACCESS]
        signals = [
            r for r in access if r.fields.get("blockers") == "scope.signal" and r.fields.get("opid") == str(target)
        ]
        sockets = [r for r in access if r.fields.get("blockers") == "scope.abstract_unix_socket"]
        sockets = [r for r in sockets if r.fields.get("path") == name.hex().upper()]
        expect_eq(len(signals), 1, f"signal denials logged ({signals})")
        expect_eq(len(sockets), 2, f"abstract socket denials logged ({sockets})")
        loud = _id(signals[0].fields["domain"])
        _check_allocated(records, loud, loud_pid)
        others = {_id(r.fields["domain"]) for r in sockets} - {loud}
        expect_eq(len(others), 1, f"domains of the socket denials besides the loud one ({others})")
        _check_allocated(records, others.pop(), quiet_pid)
