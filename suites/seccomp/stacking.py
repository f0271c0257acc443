"""seccomp: stacking with the other LSMs."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import tempfile

import _klab
import _seccomp as sc
from _klab import Failure, Skip, expect_eq, expect_errno

from seccomp import suite
from seccomp.common import MAGIC_FD

test = suite.test


def _scratch_dir() -> str:
    path = tempfile.mkdtemp(prefix="klab-seccomp-")
    with open(os.path.join(path, "f"), "w") as f:
        f.write("x")
    os.dup2(os.open(path, os.O_RDONLY | os.O_DIRECTORY), MAGIC_FD)
    return path


def _openat(dirfd: int, name: str, flags: int) -> tuple[int, int]:
    buf = ctypes.create_string_buffer(name.encode())
    r = _klab.syscall("openat", dirfd, buf, flags | os.O_CLOEXEC)
    if r[0] >= 0:
        os.close(r[0])
    return r


AT_FDCWD = -100


def _landlock_then_seccomp() -> None:
    """Landlock denies file writes; seccomp answers EXDEV for openat on MAGIC_FD."""
    import _landlock

    _landlock.require_abi(1)
    _landlock.sandbox(fs=_landlock.ACCESS_FS_WRITE_FILE)
    sc.must_install(sc.rules(("openat", sc.RET_ERRNO | errno.EXDEV, MAGIC_FD)))


def _check_both_layers(path: str) -> None:
    expect_errno(_openat(MAGIC_FD, "f", os.O_WRONLY), errno.EXDEV, "openat(MAGIC_FD, f, O_WRONLY): seccomp first")
    expect_errno(_openat(MAGIC_FD, "f", os.O_RDONLY), errno.EXDEV, "openat(MAGIC_FD, f, O_RDONLY): seccomp")
    full = os.path.join(path, "f")
    expect_errno(_openat(AT_FDCWD, full, os.O_WRONLY), errno.EACCES, "openat(AT_FDCWD, f, O_WRONLY): Landlock")
    expect_errno(_openat(AT_FDCWD, full, os.O_RDONLY), 0, "openat(AT_FDCWD, f, O_RDONLY): allowed by both")


@suite.test
def seccomp_errno_preempts_landlock_denial() -> None:
    """seccomp decides at syscall entry, before any LSM hook: a Landlock-denied open that seccomp
    filters with ERRNO(EXDEV) returns EXDEV, not Landlock's EACCES."""
    sc.require_filter_mode()
    path = _scratch_dir()
    try:
        _landlock_then_seccomp()
        _check_both_layers(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@suite.test
def landlock_and_seccomp_inherited_together() -> None:
    """A forked child inherits both the Landlock domain and the seccomp filter."""
    sc.require_filter_mode()
    path = _scratch_dir()
    try:
        _landlock_then_seccomp()
        _klab.in_child(_check_both_layers, path)
        _klab.in_child(lambda: expect_eq(sc.proc_status().get("Seccomp"), "2", "child's Seccomp field"))
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _bpf_file_open_counter(tgid: int):  # type: ignore[no-untyped-def]
    """Load and attach a BPF LSM file_open program counting this tgid's opens; return (counters, link)."""
    try:
        import _bpf
    except ImportError as exc:
        raise Skip(f"the BPF loader (_bpf) is not available: {exc}") from exc
    needed = (
        *("btf_find_funcs", "BTF_PATH", "Asm", "prog_load", "link_create", "Counters", "BpfError", "ENOTSUPP"),
        *("FN_GET_CURRENT_PID_TGID", "FN_MAP_LOOKUP_ELEM", "R0", "R1", "R2", "R10", "SIZE_W", "SIZE_DW"),
    )
    missing = [n for n in needed if not hasattr(_bpf, n)]
    if missing:
        raise Skip(f"_bpf lacks {', '.join(missing)}")
    if _bpf_lsm_active() is False:
        raise Skip("bpf is not in the active LSM list (/sys/kernel/security/lsm)")
    if not os.path.exists(_bpf.BTF_PATH):
        raise Skip(f"no kernel BTF at {_bpf.BTF_PATH}: BPF LSM programs cannot load")
    funcs = _bpf.btf_find_funcs(["bpf_lsm_file_open"])
    if "bpf_lsm_file_open" not in funcs:
        raise Skip("kernel BTF has no bpf_lsm_file_open (no CONFIG_BPF_LSM)")
    counters = _bpf.Counters(1)
    asm = (
        _bpf.Asm()
        .call(_bpf.FN_GET_CURRENT_PID_TGID)
        .alu64("rsh", _bpf.R0, imm=32)
        .jmp("jne", _bpf.R0, "out", imm=tgid)
        .st(_bpf.SIZE_W, _bpf.R10, -4, 0)
        .mov64(_bpf.R2, _bpf.R10)
        .alu64("add", _bpf.R2, imm=-4)
        .ld_map_fd(_bpf.R1, counters.fd)
        .call(_bpf.FN_MAP_LOOKUP_ELEM)
        .jmp("jeq", _bpf.R0, "out", imm=0)
        .mov64(_bpf.R1, imm=1)
        .atomic_add(_bpf.SIZE_DW, _bpf.R0, 0, _bpf.R1)
        .label("out")
        .ret(0)
    )
    try:
        prog = _bpf.prog_load(asm.assemble(), funcs["bpf_lsm_file_open"].type_id)
        link = _bpf.link_create(prog)
    except _bpf.BpfError as exc:
        if exc.errno == errno.EPERM:
            raise Skip(f"this machine refuses BPF LSM programs to a process with all capabilities ({exc})") from exc
        if exc.errno in (errno.EOPNOTSUPP, _bpf.ENOTSUPP):  # no BPF trampoline on this arch/kernel
            raise Skip(f"cannot attach a BPF LSM program on this kernel: {exc}") from exc
        raise
    return counters, (prog, link)


def _bpf_lsm_active() -> bool | None:
    try:
        with open("/sys/kernel/security/lsm") as f:
            return "bpf" in f.read().split(",")
    except OSError:
        return None


@suite.test
def bpf_lsm_hook_not_reached_for_seccomp_denied_call() -> None:
    """A BPF LSM file_open program counts this process's opens; an open rejected by seccomp never
    reaches it (counter unchanged) while an allowed open still does (counter + 1)."""
    sc.require_filter_mode()
    path = _scratch_dir()
    try:
        counters, _keep = _bpf_file_open_counter(os.getpid())
        expect_errno(_openat(MAGIC_FD, "f", os.O_RDONLY), 0, "open before any filter")
        if counters[0] == 0:
            active = _bpf_lsm_active()
            if active is not True:
                raise Skip("bpf is not an active LSM (program attached, file_open never ran)")
            raise Failure("bpf is an active LSM but the attached file_open program did not count an open")
        _klab.set_no_new_privs()
        sc.must_install(sc.rules(("openat", sc.RET_ERRNO | errno.EXDEV, MAGIC_FD)))
        before = counters[0]
        expect_errno(_openat(MAGIC_FD, "f", os.O_RDONLY), errno.EXDEV, "open denied by seccomp")
        expect_eq(counters[0], before, "file_open count after the seccomp-denied open")
        expect_errno(_openat(AT_FDCWD, os.path.join(path, "f"), os.O_RDONLY), 0, "open allowed by seccomp")
        expect_eq(counters[0], before + 1, "file_open count after the allowed open")
    finally:
        shutil.rmtree(path, ignore_errors=True)
