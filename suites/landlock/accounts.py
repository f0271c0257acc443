"""landlock: a real non-root account, a private /tmp and setuid programs (helpers, no tests).

Tests about unprivileged callers run as USER_UID:USER_GID (supplementary group
USER_GROUP2), set with setgroups/setresgid/setresuid in a child, not as root
with capabilities dropped: the kernel then sees a real unprivileged
credential (no CAP_SETUID/CAP_SYS_ADMIN anywhere, a uid that owns nothing).

Setuid programs: the x86_64 guests boot the host's / over 9p read-only and
mount tmpfs on /tmp (without nosuid); arm64 guests boot an ext4 image. Rather
than rely on either, private_tmp() unshares the mount namespace, makes every
mount private and mounts a fresh tmpfs on /tmp with no nosuid flag, so a
root-owned copy of python3 with mode 04755 made there is honoured as setuid
on every kernel and root filesystem, and nothing leaks out of the test's
namespace. The copy is Debian's /usr/bin/python3 (statically linked against
libpython, its stdlib found through the compiled-in /usr prefix), readable
and executable by the non-root account, unlike a Python under /root.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys

import _klab
from _klab import Failure, expect_eq

USER_UID = 4242
USER_GID = 4242
USER_GROUP2 = 4243

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

# PR_SET_SECUREBITS / PR_GET_SECUREBITS and the bit used by the credential tests.
PR_GET_SECUREBITS = 27
PR_SET_SECUREBITS = 28
SECBIT_NOROOT = 1 << 0

# What an exec'd program reports on stdout, as "key=value" words (no json: the import costs a
# second under TCG): pid, real/effective/saved uid, CapEff, CapBnd, NoNewPrivs, then the errno of
# opening each argv path for writing (0: success).
REPORT = r"""
import os, sys
def open_errno(path):
    try:
        os.close(os.open(path, os.O_WRONLY))
    except OSError as exc:
        return exc.errno
    return 0
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
words = ["pid=%d" % os.getpid(), "resuid=%d,%d,%d" % os.getresuid()]
words += ["capeff=%d" % int(status["CapEff"], 16), "capbnd=%d" % int(status["CapBnd"], 16)]
words += ["nnp=%d" % int(status["NoNewPrivs"]), "write=" + ",".join(str(open_errno(p)) for p in sys.argv[1:])]
print(" ".join(words))
"""


def python_program() -> str:
    """A python3 every account can execute (Debian's, not a per-user install under /root)."""
    for candidate in ("/usr/bin/python3", sys.executable):
        if os.path.exists(candidate):
            return os.path.realpath(candidate)
    raise Failure("no python3 executable found (/usr/bin/python3 or sys.executable)")


def report_argv(program: str, *paths: str) -> list[str]:
    return [program, "-I", "-S", "-B", "-c", REPORT, *paths]


def run_report(program: str, *paths: str) -> dict:
    """Exec `program` (a python3) with the REPORT script in a child; return what it printed."""
    proc = subprocess.run(report_argv(program, *paths), capture_output=True, timeout=30, check=False, cwd="/")
    if proc.returncode != 0:
        raise Failure(f"exec'd {program}: exit status {proc.returncode}, stderr {proc.stderr.decode()[-300:]!r}")
    return parse_report(proc.stdout.decode())


def parse_report(text: str) -> dict:
    """REPORT's words as {"pid": int, "resuid": [int, int, int], "capeff": int, "capbnd": int, "nnp": int,
    "write": [errno per path]}."""
    try:
        fields = dict(word.split("=", 1) for word in text.split())
        report: dict = {k: int(fields[k]) for k in ("pid", "capeff", "capbnd", "nnp")}
        report["resuid"] = [int(x) for x in fields["resuid"].split(",")]
        report["write"] = [int(x) for x in fields["write"].split(",") if x]
    except (KeyError, ValueError) as exc:
        raise Failure(f"unreadable report from the exec'd program: {text[-300:]!r}") from exc
    return report


def become_user() -> None:
    """Become USER_UID:USER_GID with its own groups; root's capabilities go with setresuid."""
    os.setgroups([USER_GID, USER_GROUP2])
    os.setresgid(USER_GID, USER_GID, USER_GID)
    os.setresuid(USER_UID, USER_UID, USER_UID)
    expect_eq(os.getresuid(), (USER_UID,) * 3, "getresuid() after setresuid")
    expect_eq(sorted(os.getgroups()), [USER_GID, USER_GROUP2], "getgroups() after setgroups")
    eff, prm, _inh = _klab.get_caps()
    expect_eq((eff, prm), (0, 0), "(effective, permitted) capabilities after leaving uid 0")


def status_ids(field: str) -> list[int]:
    """The four ids (real, effective, saved, fs) of the Uid: or Gid: line of /proc/thread-self/status."""
    with open("/proc/thread-self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return [int(x) for x in line.split()[1:5]]
    raise Failure(f"no {field} line in /proc/thread-self/status")


def unshare(flags: int, what: str) -> None:
    _klab.expect_errno(_klab.syscall("unshare", flags), 0, what)


def _mount(source: bytes | None, target: bytes, fstype: bytes | None, flags: int, data: bytes | None) -> int:
    ctypes.set_errno(0)
    ret = _klab.libc.mount(source, target, fstype, flags, data)
    return 0 if ret == 0 else ctypes.get_errno()


def mount_errno(target: str, fstype: str = "tmpfs", data: str | None = None) -> int:
    """mount(2) a fresh instance of fstype on target: 0 or the errno."""
    return _mount(fstype.encode(), target.encode(), fstype.encode(), 0, data.encode() if data else None)


def private_tmp() -> None:
    """Own mount namespace, every mount private, a fresh suid-honouring tmpfs on /tmp (needs root)."""
    _klab.require_root()
    unshare(CLONE_NEWNS, "unshare(CLONE_NEWNS)")
    err = _mount(None, b"/", None, MS_REC | MS_PRIVATE, None)
    expect_eq(_klab.errname(err), "success", "mount(/, MS_REC|MS_PRIVATE)")
    expect_eq(_klab.errname(mount_errno("/tmp", data="mode=1777")), "success", "mount tmpfs on /tmp (no nosuid)")


def setuid_copy(program: str, directory: str = "/tmp") -> str:
    """A root-owned mode-04755 copy of program in directory (a private_tmp() tmpfs)."""
    path = os.path.join(directory, "klab-setuid-" + os.path.basename(program))
    shutil.copyfile(program, path)
    os.chown(path, 0, 0)
    os.chmod(path, 0o4755)
    return path


def shared_dir(path: str) -> str:
    """Make a root-made directory usable by the account: traversable and writable by all (sticky off)."""
    os.chmod(path, 0o777)
    return path


def world_file(path: str) -> str:
    """Create (or reuse) a file every account may read and write, so only Landlock decides."""
    with open(path, "ab"):
        pass
    os.chmod(path, 0o666)
    return path
