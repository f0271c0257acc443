"""landlock: privilege boundaries, run as a real non-root account.

- landlock_restrict_self() and seccomp(SET_MODE_FILTER) without
  no_new_privs need CAP_SYS_ADMIN in the caller's own user namespace
  (ns_capable(current_user_ns(), ...)): a non-root account gets EPERM and
  EACCES, and after unshare(CLONE_NEWUSER) (where it holds every
  capability) both succeed, still without no_new_privs, and restrict.
- A domain persists across unshare(CLONE_NEWUSER): the namespace's full
  capability set lifts nothing (Landlock has no capability bypass), and its
  mount(2) denial holds even where the namespace would allow the mount.
- execve of a setuid-root program: under no_new_privs (which an unprivileged
  restrict_self requires) the setuid bit is ignored and the program runs
  with the caller's ids, no capabilities and the domain; a domain enforced
  by a privileged caller without no_new_privs lets the program become root
  with every capability, yet the domain still binds it.

The setuid program is a root-owned 04755 copy of python3 on a private
tmpfs (see accounts.py); each setuid test first shows, unrestricted, that
the bit is honoured there.
"""

from __future__ import annotations

import errno
import os

import _klab
import _landlock as ll
import _seccomp as sc
from _klab import expect, expect_eq, expect_errno, in_child

from landlock import suite
from landlock.accounts import (
    CLONE_NEWNS,
    CLONE_NEWUSER,
    USER_UID,
    become_user,
    mount_errno,
    private_tmp,
    python_program,
    run_report,
    setuid_copy,
    shared_dir,
    unshare,
    world_file,
)
from landlock.common import EACCES, EPERM, _en, _nnp, _op, _open_close, _tmpdir

test = suite.test


def _files(d: str) -> tuple[str, str]:
    """(denied, allowed): world-writable files; the second sits in its own directory for the rule."""
    shared_dir(d)
    os.mkdir(f"{d}/allowed")
    shared_dir(f"{d}/allowed")
    return world_file(f"{d}/denied"), world_file(f"{d}/allowed/f")


def _write_ruleset(allowed: str) -> int:
    rs = ll.ruleset(fs=ll.ACCESS_FS_WRITE_FILE)
    ll.allow_path(rs, os.path.dirname(allowed), ll.ACCESS_FS_WRITE_FILE)
    return rs


def _check_domain(denied: str, allowed: str, when: str) -> None:
    _op(f"{when}: write the denied file", EACCES, _open_close, denied, os.O_WRONLY)
    _op(f"{when}: write the file the rule grants", 0, _open_close, allowed, os.O_WRONLY)


def _full_caps_in_own_userns(when: str) -> None:
    eff = _klab.get_caps()[0]
    expect(eff & (1 << _klab.CAP_SYS_ADMIN), f"{when}: CAP_SYS_ADMIN in the new user namespace (CapEff {eff:#x})")


@test
def userns_admin_may_restrict_self_without_nnp() -> None:
    """A non-root account: restrict_self without no_new_privs is EPERM; in its own user namespace it works.

    There it holds CAP_SYS_ADMIN (in that namespace), so no no_new_privs is needed nor set, and the domain
    binds: the denied write is EACCES, the granted one works.
    """
    ll.require_abi(1)
    with _tmpdir() as d:
        denied, allowed = _files(d)

        def body() -> None:
            become_user()
            rs = _write_ruleset(allowed)
            expect_eq(_nnp(), 0, "no_new_privs of the account")
            expect_errno(ll.restrict_self(rs), EPERM, "restrict_self as a non-root account without no_new_privs")
            _op("after the refused restrict_self: write the denied file", 0, _open_close, denied, os.O_WRONLY)
            unshare(CLONE_NEWUSER, "unshare(CLONE_NEWUSER) as the account")
            _full_caps_in_own_userns("after unshare(CLONE_NEWUSER)")
            expect_errno(ll.restrict_self(rs), 0, "restrict_self in its own user namespace without no_new_privs")
            expect_eq(_nnp(), 0, "no_new_privs after restrict_self by a namespace admin (never set implicitly)")
            _check_domain(denied, allowed, "namespace admin's domain")

        in_child(body)


@test
def userns_admin_may_install_seccomp_without_nnp() -> None:
    """Same boundary for seccomp: EACCES for the account, success in its own user namespace (no no_new_privs)."""
    sc.require_filter_mode()
    prog = sc.rules(("getppid", sc.RET_ERRNO | errno.E2BIG))

    def body() -> None:
        become_user()
        expect_errno(sc.install(prog), EACCES, "seccomp filter as a non-root account without no_new_privs")
        expect_eq(_klab.syscall("getppid")[0], os.getppid(), "getppid() with no filter installed")
        unshare(CLONE_NEWUSER, "unshare(CLONE_NEWUSER) as the account")
        _full_caps_in_own_userns("after unshare(CLONE_NEWUSER)")
        expect_errno(sc.install(prog), 0, "seccomp filter in its own user namespace without no_new_privs")
        expect_eq(_nnp(), 0, "no_new_privs after the filter (never set implicitly)")
        expect_errno(_klab.syscall("getppid"), errno.E2BIG, "getppid() under the filter")

    in_child(body)


@test
def domain_persists_across_unshare_user() -> None:
    """A restricted account unshares its user (and mount) namespace: every capability there, no escape.

    The denied write stays EACCES; mounting a tmpfs, which the namespace allows (shown by an unrestricted
    sibling), is EPERM in a domain that handles filesystem rights; a further layer still stacks.
    """
    ll.require_abi(1)
    with _tmpdir() as d:
        denied, allowed = _files(d)
        target = os.path.dirname(allowed)

        def unrestricted() -> None:
            become_user()
            unshare(CLONE_NEWUSER | CLONE_NEWNS, "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
            expect_eq(_en(mount_errno(target)), _en(0), "unrestricted: mount tmpfs in its own namespaces")

        def restricted() -> None:
            become_user()
            ll.enforce(_write_ruleset(allowed))
            unshare(CLONE_NEWUSER | CLONE_NEWNS, "unshare(CLONE_NEWUSER|CLONE_NEWNS) in a domain")
            _full_caps_in_own_userns("restricted, after unshare")
            _check_domain(denied, allowed, "in the new user namespace")
            expect_eq(_en(mount_errno(target)), _en(EPERM), "restricted: mount tmpfs in its own namespaces")
            ll.layer(fs=ll.ACCESS_FS_WRITE_FILE)
            _op("one more layer in the namespace: write the granted file", EACCES, _open_close, allowed, os.O_WRONLY)

        in_child(unrestricted)
        in_child(restricted)


def _setuid_program() -> tuple[str, str]:
    """In a private mount namespace: (a setuid-root python3 copy, a world-writable file), both on tmpfs."""
    private_tmp()
    program = setuid_copy(python_program())
    return program, world_file("/tmp/klab-target")


def _expect_setuid_honoured(program: str, target: str) -> None:
    """Unrestricted control: the account running the copy becomes euid 0, so the bit is honoured here."""

    def control() -> None:
        become_user()
        report = run_report(program, target)
        expect_eq(report["resuid"], [USER_UID, 0, 0], "unrestricted account running the setuid copy: resuid")
        expect_eq([_en(e) for e in report["write"]], [_en(0)], "unrestricted setuid program: write the target")

    in_child(control)


@test
def setuid_exec_under_nnp_gains_nothing() -> None:
    """A restricted account (no_new_privs + domain) runs a setuid-root program: same ids, no capabilities.

    no_new_privs makes execve ignore the setuid bit; the program keeps no_new_privs and the domain (its write
    to the target is EACCES).
    """
    _klab.require_root()
    ll.require_abi(1)

    def body() -> None:
        program, target = _setuid_program()
        _expect_setuid_honoured(program, target)
        become_user()
        ll.layer(fs=ll.ACCESS_FS_WRITE_FILE)
        report = run_report(program, target)
        expect_eq(report["resuid"], [USER_UID] * 3, "restricted account running the setuid copy: resuid")
        expect_eq(report["capeff"], 0, "restricted setuid program: CapEff")
        expect_eq(report["nnp"], 1, "restricted setuid program: NoNewPrivs")
        expect_eq([_en(e) for e in report["write"]], [_en(EACCES)], "restricted setuid program: write the target")

    in_child(body)


@test
def setuid_exec_without_nnp_keeps_the_domain() -> None:
    """Root restricts itself without no_new_privs, becomes the account, runs a setuid-root program.

    The program does become root with every capability (nothing forbade it), and is still in the domain:
    its write to the target is EACCES. Landlock has no capability bypass.
    """
    _klab.require_root()
    ll.require_abi(1)

    def body() -> None:
        program, target = _setuid_program()
        _expect_setuid_honoured(program, target)
        expect_errno(ll.restrict_self(ll.ruleset(fs=ll.ACCESS_FS_WRITE_FILE)), 0, "restrict_self as root, no nnp")
        expect_eq(_nnp(), 0, "no_new_privs after a CAP_SYS_ADMIN restrict_self")
        become_user()
        _op("account in root's domain: write the target", EACCES, _open_close, target, os.O_WRONLY)
        report = run_report(program, target)
        expect_eq(report["resuid"], [USER_UID, 0, 0], "setuid program in the domain: resuid")
        expect(report["capbnd"] != 0, "setuid program in the domain: a non-empty bounding set")
        expect_eq(report["capeff"], report["capbnd"], "setuid program in the domain: CapEff (the whole CapBnd)")
        expect_eq(report["nnp"], 0, "setuid program in the domain: NoNewPrivs")
        expect_eq([_en(e) for e in report["write"]], [_en(EACCES)], "setuid-root program in the domain: write")

    in_child(body)
