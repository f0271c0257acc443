"""bpf_lsm: who may load LSM programs and take over attached ones.

bpf_prog_load() wants CAP_BPF for any program type but socket filters, and
CAP_PERFMON for the tracing-like types, LSM among them; CAP_SYS_ADMIN stands
in for either (bpf_capable(), perfmon_capable(); bpf_token_capable() from
v6.9). Each case runs in a child that keeps only the capabilities named.
An attached program is reachable through its bpffs pin and by id: without
privileges neither path hands it over.
"""

from __future__ import annotations

import errno
import os
import stat

import _bpf
import _klab
from _bpf import Asm
from _klab import CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, expect_eq
from _worker import Worker, expect_result

from bpf_lsm import suite
from bpf_lsm.common import enforce, errno_of, require, try_load
from bpf_lsm.detach import _unlink_quietly, pin_path

test = suite.test

CAP_NAMES = {CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_BPF: "CAP_BPF", CAP_PERFMON: "CAP_PERFMON"}
NOBODY = 65534


def _load_with(kept: tuple[int, ...]) -> int:
    """In a child holding no capability but `kept`: the errno of loading a file_open program."""

    def body() -> int:
        _klab.drop_caps(*(cap for cap in range(64) if cap not in kept))
        eff, prm, _ = _klab.get_caps()
        want = sum(1 << cap for cap in kept)
        _klab.expect((eff, prm) == (want, want), f"capability sets: {eff:#x}, {prm:#x}, expected {want:#x}")
        return try_load("file_open", Asm().ret(0))[0]

    return _klab.in_child(body)


@suite.test
def loading_needs_cap_bpf_and_cap_perfmon_or_cap_sys_admin() -> None:
    """An LSM program loads with CAP_BPF+CAP_PERFMON or with CAP_SYS_ADMIN; missing any one of those is EPERM."""
    require()
    for kept, want in (
        ((CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON), 0),
        ((CAP_BPF, CAP_PERFMON), 0),
        ((CAP_SYS_ADMIN,), 0),
        ((CAP_BPF,), errno.EPERM),  # CAP_PERFMON missing
        ((CAP_PERFMON,), errno.EPERM),  # CAP_BPF missing
        ((), errno.EPERM),  # CAP_SYS_ADMIN missing (and the pair)
    ):
        names = "+".join(CAP_NAMES[c] for c in kept) or "none of them"
        got = _load_with(kept)
        expect_eq(got, want, f"errno loading an LSM program holding {names}")


def _become_nobody() -> None:
    """setgroups([]), then gid and uid nobody: the capability sets empty themselves on the uid change."""
    _klab.expect_errno(_klab.syscall("setgroups", 0, 0), 0, "setgroups(0, NULL)")
    _klab.expect_errno(_klab.syscall("setresgid", NOBODY, NOBODY, NOBODY), 0, "setresgid(nobody)")
    _klab.expect_errno(_klab.syscall("setresuid", NOBODY, NOBODY, NOBODY), 0, "setresuid(nobody)")
    eff, prm, _ = _klab.get_caps()
    _klab.expect((eff, prm) == (0, 0), f"capabilities after setresuid(nobody): effective {eff:#x}, permitted {prm:#x}")


@suite.test
def unprivileged_process_cannot_take_over_pinned_link() -> None:
    """A root-owned pinned LSM link (mode 0600) is out of reach of an unprivileged process.

    As uid nobody without capabilities: BPF_OBJ_GET of the pin is EACCES (read-
    write and BPF_F_RDONLY), unlinking it is EPERM in the sticky bpffs root
    (EACCES where the directory is not writable), BPF_LINK_GET_FD_BY_ID and
    BPF_PROG_GET_FD_BY_ID are EPERM (CAP_SYS_ADMIN only). The link keeps enforcing.
    """
    require()
    path = pin_path("takeover")
    try:
        with Worker() as target:
            prog, link = enforce("file_open", target.pid, -errno.EPERM)
            _bpf.obj_pin(link, path)
            link_id, prog_id = _bpf.link_info(link).id, _bpf.prog_info(prog)[1]
            st = os.stat(path)
            expect_eq((stat.S_IMODE(st.st_mode), st.st_uid), (0o600, 0), "(mode, owner) of the pinned link")
            parent = os.stat(os.path.dirname(path)).st_mode
            sticky_writable = parent & stat.S_ISVTX and parent & stat.S_IWOTH and parent & stat.S_IXOTH
            want_unlink = errno.EPERM if sticky_writable else errno.EACCES

            def intruder() -> int:
                _become_nobody()
                for flags, what in ((0, "read-write"), (_bpf.BPF_F_RDONLY, "BPF_F_RDONLY")):
                    expect_eq(errno_of(_bpf.obj_get, path, flags), errno.EACCES, f"BPF_OBJ_GET ({what}) as nobody")
                expect_eq(_klab.oserror_errno(os.unlink, path), want_unlink, "unlinking the pin as nobody")
                expect_eq(errno_of(_bpf.link_get_fd_by_id, link_id), errno.EPERM, "BPF_LINK_GET_FD_BY_ID as nobody")
                expect_eq(errno_of(_bpf.prog_get_fd_by_id, prog_id), errno.EPERM, "BPF_PROG_GET_FD_BY_ID as nobody")
                return 0

            expect_eq(_klab.in_child(intruder), 0, "the unprivileged child's exit code")
            os.close(link)
            expect_result(target.do("open", "/dev/null"), errno.EPERM, "open after the attempts (the pin still holds)")
            expect_eq(os.path.exists(path), True, "the pin exists after the attempts")
            fd = _bpf.obj_get(path)
            expect_eq(_bpf.link_info(fd).id, link_id, "link id through BPF_OBJ_GET as root")
            os.close(fd)
            os.close(prog)
    finally:
        _unlink_quietly(path)
