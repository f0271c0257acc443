"""A test-only suite whose one test fails with what differs on every run: signatures must not.

Its failure text carries the test process's pid, a fresh temporary directory,
that directory's inode, a random hex ID, a bound port and the time of day, the
tokens real failures carry (Landlock domain IDs, ports, inodes). Two boots give
two different texts; `klab` must give them one signature.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import time

import _klab

suite = _klab.Suite("signature_demo")


@suite.test
def fails_with_run_specific_tokens() -> None:
    """Fails on purpose; everything in its message but the wording changes from run to run."""
    tmp = tempfile.mkdtemp(prefix="klab-signature-demo-", dir="/tmp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**6:06d}Z"
    domain = secrets.token_hex(4 + os.getpid() % 4)  # hex of varying length, as Landlock's domain IDs
    _klab.expect_eq(
        "denied",
        "allowed",
        f"domain {domain} of pid {os.getpid()} in {tmp} (inode {os.stat(tmp).st_ino}) port {port} at {stamp}",
    )
