"""The guest suites' audit reader under a flood: it stops at its limit instead of waiting for a quiet.

A datagram socketpair stands in for the audit netlink socket; a thread sends
records the way kauditd does (one per datagram, nlmsg_len without the header)
every few milliseconds, as another audit user on a shared host would.
"""

from __future__ import annotations

import socket
import struct
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "suites"))
_audit = pytest.importorskip("_audit", reason="suites/_audit.py needs Linux")

AUDIT_USER = 1107


def _flood(sock: socket.socket, stop: threading.Event) -> None:
    payload = b"audit(1.0:1): op=flood"
    while not stop.is_set():
        sock.send(struct.pack("=IHHII", len(payload), AUDIT_USER, 0, 0, 0) + payload)
        time.sleep(0.005)


def test_records_stop_at_the_limit_while_records_keep_coming() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    stop = threading.Event()
    sender = threading.Thread(target=_flood, args=(theirs, stop))
    log = _audit.AuditLog()
    log._sock = ours
    sender.start()
    try:
        start = time.monotonic()
        got = log.records(settle=0.2, limit=0.5)
        took = time.monotonic() - start
        waited = log.wait_for(lambda r: r.fields.get("op") == "never", timeout=0.5)
        took_wait = time.monotonic() - start - took
    finally:
        stop.set()
        sender.join()
        ours.close()
        theirs.close()
    assert 0.5 <= took < 1.5, took
    assert got and all(r.type == AUDIT_USER and r.fields.get("op") == "flood" for r in got)
    assert 0.5 <= took_wait < 1.5 and waited, took_wait
