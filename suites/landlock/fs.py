"""landlock: filesystem access rights, one test per right."""

from __future__ import annotations

import ctypes
import os
import socket
import stat
import subprocess
from collections.abc import Callable

import _klab
import _landlock as ll
from _klab import Skip, errname, expect_eq, in_child

from landlock import suite
from landlock.common import EACCES, EPERM, EXDEV, _en, _mkdirs, _no_rules, _op, _open_close, _tmpdir, _touch

test = suite.test


def _unix_bind(path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)


def _mknod(path: str, kind: int, dev: tuple[int, int]) -> None:
    os.mknod(path, kind | 0o600, os.makedev(*dev))


def _creat(path: str) -> None:
    _open_close(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)


_FS_OPS: tuple[tuple[str, int, int, Callable[[str], None], int], ...] = (
    # (name, right, min ABI, operation inside directory d, errno when denied)
    ("write_file", ll.ACCESS_FS_WRITE_FILE, 1, lambda d: _open_close(f"{d}/f", os.O_WRONLY), EACCES),
    ("read_file", ll.ACCESS_FS_READ_FILE, 1, lambda d: _open_close(f"{d}/f", os.O_RDONLY), EACCES),
    ("read_dir", ll.ACCESS_FS_READ_DIR, 1, lambda d: _open_close(d, os.O_RDONLY | os.O_DIRECTORY), EACCES),
    ("remove_dir", ll.ACCESS_FS_REMOVE_DIR, 1, lambda d: os.rmdir(f"{d}/empty"), EACCES),
    ("remove_file", ll.ACCESS_FS_REMOVE_FILE, 1, lambda d: os.unlink(f"{d}/f"), EACCES),
    ("make_char", ll.ACCESS_FS_MAKE_CHAR, 1, lambda d: _mknod(f"{d}/c", stat.S_IFCHR, (1, 3)), EACCES),
    ("make_dir", ll.ACCESS_FS_MAKE_DIR, 1, lambda d: os.mkdir(f"{d}/newdir"), EACCES),
    ("make_reg", ll.ACCESS_FS_MAKE_REG, 1, lambda d: _creat(f"{d}/new"), EACCES),
    ("make_sock", ll.ACCESS_FS_MAKE_SOCK, 1, lambda d: _unix_bind(f"{d}/sock"), EACCES),
    ("make_fifo", ll.ACCESS_FS_MAKE_FIFO, 1, lambda d: os.mkfifo(f"{d}/fifo"), EACCES),
    ("make_block", ll.ACCESS_FS_MAKE_BLOCK, 1, lambda d: _mknod(f"{d}/b", stat.S_IFBLK, (7, 0)), EACCES),
    ("make_sym", ll.ACCESS_FS_MAKE_SYM, 1, lambda d: os.symlink("f", f"{d}/sym"), EACCES),
    ("refer", ll.ACCESS_FS_REFER, 2, lambda d: os.rename(f"{d}/f", f"{d}/empty/f"), EXDEV),
    ("truncate", ll.ACCESS_FS_TRUNCATE, 3, lambda d: os.truncate(f"{d}/f", 0), EACCES),
)


def _fs_right(name: str, right: int, since: int, op: Callable[[str], None], denied: int) -> Callable[[], None]:
    def run() -> None:
        """Everything handled; d_allow grants all, d_deny all but this right: exact errno on each side."""
        abi = ll.require_abi(since)
        everything = ll.fs_access_all(abi)
        with _tmpdir() as d:
            allow, deny = _mkdirs(d, "allow", "deny")
            for x in (allow, deny):
                _touch(f"{x}/f")
                os.mkdir(f"{x}/empty")

            def body() -> None:
                ll.layer(fs=everything, paths=((allow, everything), (deny, everything & ~right)))
                _op(f"{name} where every right is granted", 0, op, allow)
                _op(f"{name} where only {name} is missing", denied, op, deny)

            in_child(body)

    return run


for _name, _right, _since, _fn, _denied in _FS_OPS:
    suite.add(f"fs_right_{_name}", _fs_right(_name, _right, _since, _fn, _denied))


@test
def fs_execute_right() -> None:
    """EXECUTE is checked at execve on the program; the same script runs from a granted directory."""
    ll.require_abi(1)
    with _tmpdir() as d:
        allow, deny = _mkdirs(d, "allow", "deny")
        scripts = []
        for x in (allow, deny):
            scripts.append(_touch(f"{x}/run.sh", b"#!/bin/sh\nexit 7\n"))
            os.chmod(scripts[-1], 0o755)
        if subprocess.run([scripts[0]], check=False).returncode != 7:
            raise Skip("cannot execute scripts under /tmp here (noexec?)")
        system = tuple(
            (p, ll.ACCESS_FS_EXECUTE) for p in ("/usr", "/bin", "/lib", "/lib64", "/sbin") if os.path.exists(p)
        )

        def body() -> None:
            ll.layer(fs=ll.ACCESS_FS_EXECUTE, paths=(*system, (allow, ll.ACCESS_FS_EXECUTE)))
            expect_eq(subprocess.run([scripts[0]], check=False).returncode, 7, "exit status of allow/run.sh")
            _op("execve deny/run.sh", EACCES, subprocess.run, [scripts[1]])
            _op("read deny/run.sh (READ_FILE not handled)", 0, _open_close, scripts[1], os.O_RDONLY)

        in_child(body)


@test
def fs_rule_on_single_file() -> None:
    """A rule on a file grants that file only, not its siblings or its directory."""
    ll.require_abi(1)
    with _tmpdir() as d:
        f, g = _touch(f"{d}/f"), _touch(f"{d}/g")

        def body() -> None:
            ll.layer(fs=ll.ACCESS_FS_READ_FILE | ll.ACCESS_FS_READ_DIR, paths=((f, ll.ACCESS_FS_READ_FILE),))
            _op("read f (rule on f)", 0, _open_close, f, os.O_RDONLY)
            _op("read g (sibling)", EACCES, _open_close, g, os.O_RDONLY)
            _op("list d", EACCES, _open_close, d, os.O_DIRECTORY)

        in_child(body)


@test
def fs_unrestricted_operations() -> None:
    """O_PATH opens, stat and fds opened before restrict_self are not access-checked."""
    ll.require_abi(1)
    with _tmpdir() as d:
        f = _touch(f"{d}/f")

        def body() -> None:
            early = os.open(f, os.O_RDWR)
            _no_rules(fs=ll.fs_access_all(ll.require_abi(1)))
            _op("open O_RDONLY", EACCES, _open_close, f, os.O_RDONLY)
            _op("open O_PATH", 0, _open_close, f, os.O_PATH)
            _op("stat", 0, os.stat, f)
            _op("write on an fd opened before restrict_self", 0, os.pwrite, early, b"x", 0)
            expect_eq(os.pread(early, 1, 0), b"x", "read back through the early fd")

        in_child(body)


def _private_mount_ns() -> None:
    """unshare(CLONE_NEWNS) and make / private, so test mounts never reach the host."""
    libc = _klab.libc
    libc.unshare.argtypes = [ctypes.c_int]
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
    if libc.unshare(0x00020000) != 0:
        raise Skip(f"unshare(CLONE_NEWNS) failed: {errname(ctypes.get_errno())}")
    if libc.mount(None, b"/", None, 0x4000 | 0x40000, None) != 0:  # MS_REC | MS_PRIVATE
        raise Skip(f"making / private failed: {errname(ctypes.get_errno())}")


def _mount_errnos(target: str) -> tuple[str, str]:
    """(mount tmpfs on target, make target private): each 'success' or the errno name."""
    libc = _klab.libc
    ctypes.set_errno(0)
    ret = libc.mount(b"none", target.encode(), b"tmpfs", 0, None)
    first = _en(0 if ret == 0 else ctypes.get_errno())
    ctypes.set_errno(0)
    ret = libc.mount(None, b"/", None, 0x4000 | 0x40000, None)
    return first, _en(0 if ret == 0 else ctypes.get_errno())


@test
def fs_domain_denies_mount() -> None:
    """mount(2) (new mounts and propagation changes) is EPERM in a domain handling fs rights, root or not."""
    abi = ll.require_abi(1)
    with _tmpdir() as d:

        def run(restrict: Callable[[], None] | None) -> tuple[str, str]:
            _private_mount_ns()
            if restrict is not None:
                restrict()
            return _mount_errnos(d)

        def check(restrict: Callable[[], None] | None, want: int, what: str) -> None:
            got = in_child(lambda: expect_eq(run(restrict), (_en(want), _en(want)), what))
            expect_eq(got, 0, what)

        check(None, 0, "unrestricted (mount tmpfs, make / private)")
        check(lambda: ll.layer(fs=ll.ACCESS_FS_MAKE_BLOCK), EPERM, "fs domain (mount tmpfs, make / private)")
        if abi >= 4:
            check(lambda: ll.layer(net=ll.ACCESS_NET_BIND_TCP), 0, "network-only domain (mount, make private)")
