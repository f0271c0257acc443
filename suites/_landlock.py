"""Thin ctypes binding over the Landlock syscalls (stdlib only).

Every call returns the raw (ret, errno) pair: the suites are about the exact
kernel behaviour, so nothing here retries, translates or hides an error.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os

from _klab import Failure, Skip, errname, expect_errno, kernel_version, set_no_new_privs, syscall

LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_CREATE_RULESET_ERRATA = 1 << 1
LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_RULE_NET_PORT = 2

# restrict_self flags (ABI 7: logging; ABI 8: TSYNC; ABI 11: NO_NEW_PRIVS)
LANDLOCK_RESTRICT_SELF_LOG_SAME_EXEC_OFF = 1 << 0
LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON = 1 << 1
LANDLOCK_RESTRICT_SELF_LOG_SUBDOMAINS_OFF = 1 << 2
LANDLOCK_RESTRICT_SELF_TSYNC = 1 << 3
LANDLOCK_RESTRICT_SELF_NO_NEW_PRIVS = 1 << 4

# add_rule flags (ABI 10): mark the rule's object "quiet" for the ruleset's quiet_* rights.
LANDLOCK_ADD_RULE_QUIET = 1 << 0

# Filesystem access rights, with the ABI that introduced each.
ACCESS_FS_EXECUTE = 1 << 0
ACCESS_FS_WRITE_FILE = 1 << 1
ACCESS_FS_READ_FILE = 1 << 2
ACCESS_FS_READ_DIR = 1 << 3
ACCESS_FS_REMOVE_DIR = 1 << 4
ACCESS_FS_REMOVE_FILE = 1 << 5
ACCESS_FS_MAKE_CHAR = 1 << 6
ACCESS_FS_MAKE_DIR = 1 << 7
ACCESS_FS_MAKE_REG = 1 << 8
ACCESS_FS_MAKE_SOCK = 1 << 9
ACCESS_FS_MAKE_FIFO = 1 << 10
ACCESS_FS_MAKE_BLOCK = 1 << 11
ACCESS_FS_MAKE_SYM = 1 << 12
ACCESS_FS_REFER = 1 << 13  # ABI 2
ACCESS_FS_TRUNCATE = 1 << 14  # ABI 3
ACCESS_FS_IOCTL_DEV = 1 << 15  # ABI 5
ACCESS_FS_RESOLVE_UNIX = 1 << 16  # ABI 9

ACCESS_NET_BIND_TCP = 1 << 0  # ABI 4
ACCESS_NET_CONNECT_TCP = 1 << 1  # ABI 4
ACCESS_NET_BIND_UDP = 1 << 2  # ABI 10
ACCESS_NET_CONNECT_SEND_UDP = 1 << 3  # ABI 10

SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

# All filesystem rights a kernel of a given ABI knows (index = ABI).
_FS_BITS_BY_ABI = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16, 6: 16, 7: 16, 8: 16, 9: 17, 10: 17, 11: 17}


def fs_access_all(abi: int) -> int:
    """Every filesystem right known at this ABI (newer ABIs keep older bits)."""
    return (1 << _FS_BITS_BY_ABI[min(abi, max(_FS_BITS_BY_ABI))]) - 1


class RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
        # ABI 10: rights (subsets of the handled ones) whose denials a quiet rule silences;
        # quiet_scoped silences scope denials outright.
        ("quiet_access_fs", ctypes.c_uint64),
        ("quiet_access_net", ctypes.c_uint64),
        ("quiet_scoped", ctypes.c_uint64),
    ]


# Size of struct landlock_ruleset_attr as each ABI knows it.
RULESET_ATTR_SIZE_V1 = 8
RULESET_ATTR_SIZE_V4 = 16
RULESET_ATTR_SIZE_V6 = 24
RULESET_ATTR_SIZE_V10 = 48

assert ctypes.sizeof(RulesetAttr) == RULESET_ATTR_SIZE_V10


class PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class NetPortAttr(ctypes.Structure):
    _fields_ = [("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64)]


assert ctypes.sizeof(PathBeneathAttr) == 12
assert ctypes.sizeof(NetPortAttr) == 16


def create_ruleset(attr: ctypes.Structure | None, size: int, flags: int = 0) -> tuple[int, int]:
    ptr = ctypes.addressof(attr) if attr is not None else 0
    return syscall("landlock_create_ruleset", ptr, size, flags)


def add_rule(ruleset_fd: int, rule_type: int, attr: ctypes.Structure | None, flags: int = 0) -> tuple[int, int]:
    ptr = ctypes.addressof(attr) if attr is not None else 0
    return syscall("landlock_add_rule", ruleset_fd, rule_type, ptr, flags)


def restrict_self(ruleset_fd: int, flags: int = 0) -> tuple[int, int]:
    return syscall("landlock_restrict_self", ruleset_fd, flags)


def abi_version() -> int:
    """Landlock ABI version, or a negative errno (ENOSYS: not built; EOPNOTSUPP: not active)."""
    ret, err = create_ruleset(None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    return ret if ret >= 0 else -err


def errata() -> int | None:
    """Errata bitmask, or None on kernels that predate the ERRATA flag."""
    ret, _ = create_ruleset(None, 0, LANDLOCK_CREATE_RULESET_ERRATA)
    return ret if ret >= 0 else None


# --- the ABI table -----------------------------------------------------------------

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "landlock_abi.json")) as _f:
    ABI_TABLE = json.load(_f)


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def expected_abi(version: tuple[int, int] | None = None) -> tuple[int, int | None]:
    """(lowest, highest) ABI the table allows for a kernel release; highest is None past the newest entry."""
    version = version or kernel_version()
    low, high = 0, None
    for release, abi in ABI_TABLE["abi"]:
        if _release(release) <= version:
            low = abi
            if _release(release) == version:
                return abi, abi
        elif high is None:
            high = abi
    return low, high


def expected_errata(release: str | None = None) -> int | None:
    """The exact errata bitmask of a kernel the table knows (by full version), else None."""
    release = release or os.uname().release
    numbers = release.split("-")[0].split("+")[0]
    return ABI_TABLE["errata_of"].get(numbers)


def possible_errata(abi: int) -> int:
    """Every erratum bit a kernel of this ABI may report: those fixing code of this ABI or older."""
    return sum(1 << (int(n) - 1) for n, fixed_abi in ABI_TABLE["errata"].items() if fixed_abi <= abi)


def require_abi(needed: int) -> int:
    """Skip the test unless the kernel's Landlock ABI is at least `needed`.

    A skip is only right where the table says this kernel release lacks the
    ABI: a kernel that under-reports (7.3 answering 10) fails instead.
    """
    abi = abi_version()
    if abi == -errno.ENOSYS:
        raise Skip("Landlock is not built in this kernel (ENOSYS)")
    if abi == -errno.EOPNOTSUPP:
        raise Skip("Landlock is built but not in the active LSM list (EOPNOTSUPP)")
    if abi < 0:
        raise Failure(f"ABI query failed with {errname(-abi)}")
    if abi < needed:
        low, _ = expected_abi()
        if low >= needed:
            major, minor = kernel_version()
            raise Failure(f"kernel {major}.{minor} must have Landlock ABI {low} (landlock_abi.json), reports {abi}")
        raise Skip(f"needs Landlock ABI {needed}, kernel has {abi}")
    return abi


def ruleset(
    fs: int = 0, net: int = 0, scoped: int = 0, quiet_fs: int = 0, quiet_net: int = 0, quiet_scoped: int = 0
) -> int:
    """Create a ruleset sized for what it handles (and silences); fails the test on error."""
    attr = RulesetAttr(fs, net, scoped, quiet_fs, quiet_net, quiet_scoped)
    if quiet_fs or quiet_net or quiet_scoped:
        size = RULESET_ATTR_SIZE_V10
    else:
        size = RULESET_ATTR_SIZE_V6 if scoped else RULESET_ATTR_SIZE_V4 if net else RULESET_ATTR_SIZE_V1
    return expect_errno(create_ruleset(attr, size), 0, "landlock_create_ruleset")


def allow_path(ruleset_fd: int, path: str, access: int, flags: int = 0) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        attr = PathBeneathAttr(access, fd)
        expect_errno(add_rule(ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, attr, flags), 0, f"add_rule({path})")
    finally:
        os.close(fd)


def allow_port(ruleset_fd: int, port: int, access: int, flags: int = 0) -> None:
    attr = NetPortAttr(access, port)
    expect_errno(add_rule(ruleset_fd, LANDLOCK_RULE_NET_PORT, attr, flags), 0, f"add_rule(port {port})")


def enforce(ruleset_fd: int, flags: int = 0) -> None:
    """no_new_privs + restrict_self + close: the usual sandboxing sequence."""
    set_no_new_privs()
    expect_errno(restrict_self(ruleset_fd, flags), 0, "landlock_restrict_self")
    os.close(ruleset_fd)


def sandbox(fs: int = 0, net: int = 0, scoped: int = 0, paths: tuple[tuple[str, int], ...] = ()) -> None:
    """Create, fill and enforce one layer on the calling process."""
    fd = ruleset(fs, net, scoped)
    for path, access in paths:
        allow_path(fd, path, access)
    enforce(fd)


# --- additions for the landlock suite (keep the names above stable) -----------

# Highest ABI whose flag and access bits this binding knows: beyond it, "the
# next bit up" may be a real feature, so tests only use it as "unknown" up to here.
MAX_KNOWN_ABI = 11

RESTRICT_SELF_LOG_ALL = (
    LANDLOCK_RESTRICT_SELF_LOG_SAME_EXEC_OFF
    | LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON
    | LANDLOCK_RESTRICT_SELF_LOG_SUBDOMAINS_OFF
)


def net_access_all(abi: int) -> int:
    """Every network right known at this ABI (TCP bind/connect since ABI 4, UDP bind/connect-send since ABI 10)."""
    tcp = ACCESS_NET_BIND_TCP | ACCESS_NET_CONNECT_TCP if abi >= 4 else 0
    return tcp | (ACCESS_NET_BIND_UDP | ACCESS_NET_CONNECT_SEND_UDP if abi >= 10 else 0)


def scope_all(abi: int) -> int:
    """Every scope known at this ABI (abstract unix sockets and signals since ABI 6)."""
    return SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0


def restrict_flags_known(abi: int) -> int:
    """restrict_self flags known at this ABI: LOG_* since ABI 7, TSYNC since ABI 8, NO_NEW_PRIVS since ABI 11."""
    flags = RESTRICT_SELF_LOG_ALL if abi >= 7 else 0
    flags |= LANDLOCK_RESTRICT_SELF_TSYNC if abi >= 8 else 0
    return flags | (LANDLOCK_RESTRICT_SELF_NO_NEW_PRIVS if abi >= 11 else 0)


def add_rule_flags_known(abi: int) -> int:
    """add_rule flags known at this ABI: QUIET since ABI 10."""
    return LANDLOCK_ADD_RULE_QUIET if abi >= 10 else 0


def attr_size_for(abi: int) -> int:
    """sizeof(struct landlock_ruleset_attr) as a kernel of this ABI knows it (quiet_* fields since ABI 10)."""
    if abi >= 10:
        return RULESET_ATTR_SIZE_V10
    return RULESET_ATTR_SIZE_V6 if abi >= 6 else RULESET_ATTR_SIZE_V4 if abi >= 4 else RULESET_ATTR_SIZE_V1


def add_path_rule(ruleset_fd: int, path: str, access: int) -> tuple[int, int]:
    """Raw add_rule(PATH_BENEATH) on an O_PATH fd of path: (ret, errno), nothing checked."""
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        return add_rule(ruleset_fd, LANDLOCK_RULE_PATH_BENEATH, PathBeneathAttr(access, fd))
    finally:
        os.close(fd)


def layer(
    fs: int = 0,
    net: int = 0,
    scoped: int = 0,
    paths: tuple[tuple[str, int], ...] = (),
    ports: tuple[tuple[int, int], ...] = (),
    flags: int = 0,
    quiet_fs: int = 0,
    quiet_net: int = 0,
    quiet_scoped: int = 0,
    quiet_paths: tuple[tuple[str, int], ...] = (),
    quiet_ports: tuple[tuple[int, int], ...] = (),
) -> None:
    """Create, fill and enforce one layer (paths and ports, quiet ones too) with restrict_self flags."""
    fd = ruleset(fs, net, scoped, quiet_fs, quiet_net, quiet_scoped)
    for path, access in paths:
        allow_path(fd, path, access)
    for port, access in ports:
        allow_port(fd, port, access)
    for path, access in quiet_paths:
        allow_path(fd, path, access, LANDLOCK_ADD_RULE_QUIET)
    for port, access in quiet_ports:
        allow_port(fd, port, access, LANDLOCK_ADD_RULE_QUIET)
    enforce(fd, flags)
