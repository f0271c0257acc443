"""lab.vm.session: one command's answer comes in three parts that share one deadline."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pexpect.fdpexpect
import pytest

from lab import arches
from lab.errors import LabError
from lab.proc import Deadline
from lab.vm import accel, session
from lab.vm.qemu import BootPlan


def _plan(tmp_path: Path) -> BootPlan:
    kvm = accel.Decision("kvm", "test: deadlines are not stretched")
    return BootPlan(arches.get("x86_64"), tmp_path / "bzImage", kvm, "host", tmp_path, tmp_path, agent=True)


def test_the_three_parts_of_an_answer_share_one_deadline(tmp_path: Path) -> None:
    """A guest that answers the status at once and then goes silent: the call ends at its deadline,
    not after a fresh timeout for each part still missing (three times as long, before)."""
    ours, guest = socket.socketpair()
    sess = session.AgentSession(_plan(tmp_path), answer_slack=0.0)
    sess.chan = pexpect.fdpexpect.fdspawn(ours.fileno(), encoding="utf-8")
    sess.vm.watcher = lambda: type("W", (), {"text": staticmethod(lambda: "")})()  # type: ignore[method-assign]

    def answer_status_only() -> None:
        request = guest.recv(65536).decode()
        token = request.split("KLAB-RC-")[1].split()[0]
        guest.sendall(f"KLAB-RC-{token} 0\n".encode())

    if os.fork() == 0:
        try:
            ours.close()
            answer_status_only()
            guest.recv(1)  # silent until the host side closes
        finally:
            os._exit(0)
    guest.close()
    start = time.monotonic()
    with pytest.raises(LabError, match="guest agent timed out"):
        sess.run("true", Deadline.after(0.6))
    took = time.monotonic() - start
    ours.close()
    os.wait()
    assert took < 1.1, f"{took:.2f}s: each of the two missing parts waited its own 0.6 s"
