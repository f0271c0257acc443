"""lab.vm.relay: the command's streams end at their mark, byte for byte, and the guest hears it may power off.

The guest side is played by plain UNIX socket clients connecting as QEMU's
chardevs do (`-chardev socket,path=P`): the relay cannot tell them apart.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from lab.errors import LabError
from lab.proc import Deadline
from lab.vm import relay

MARK = b"\x1eklab-end-0123456789abcdef"


@pytest.mark.parametrize(
    ("data", "held"),
    [
        (b"plain text\n", 0),
        (b"", 0),
        (b"out\x1e", 1),
        (b"out\x1eklab-e", 7),
        (MARK[:-1], len(MARK) - 1),
        (b"\x1ex", 0),  # a record separator not followed by the mark's next byte is output at once
        (b"\x1e\x1e", 1),
    ],
)
def test_only_what_may_start_the_mark_is_held_back(data: bytes, held: int) -> None:
    assert relay.held_back(data, MARK) == held


@pytest.mark.parametrize(
    ("chunks", "out", "ended"),
    [
        ([b"hello\n" + MARK], b"hello\n", True),
        ([b"hel", b"lo" + MARK[:5], MARK[5:]], b"hello", True),  # the mark split across reads
        ([b"a" + MARK + b"left behind"], b"a", True),  # what a leftover process writes after it is cut
        ([b"\x1e", b"x", MARK], b"\x1ex", True),  # held back, then passed on once it is not the mark
        ([bytes(range(256)) * 4, MARK], bytes(range(256)) * 4, True),  # binary, NUL and CR included
        ([b"crash", b"\x1ekl"], b"crash\x1ekl", False),  # EOF with no mark: what was held back comes out
    ],
)
def test_the_cutter_passes_everything_before_the_mark(chunks: list[bytes], out: bytes, ended: bool) -> None:
    cutter = relay.MarkCutter(MARK)
    got = b"".join(cutter.feed(c) for c in chunks)
    if not cutter.ended:
        got += cutter.flush()
    assert (got, cutter.ended) == (out, ended)


def _read_all(fd: int, into: list[bytes]) -> threading.Thread:
    def run() -> None:
        while chunk := os.read(fd, 65536):
            into.append(chunk)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_streams_pass_byte_exact_eof_reaches_the_guest_and_the_guest_is_told_to_go(tmp_path: Path) -> None:
    paths = {s: tmp_path / relay.socket_name(s) for s in relay.STREAMS}
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pipes = relay.Relay(paths, relay.StdFds(stdin_r, out_w, err_w), MARK)
    pipes.listen()
    guest = {s: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for s in relay.STREAMS}
    for stream, sock in guest.items():
        sock.connect(str(paths[stream]))
    pipes.accept(Deadline.after(5), lambda: True)
    pipes.start()
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [_read_all(out_r, out), _read_all(err_r, err)]

    blob = os.urandom(1 << 20)
    os.write(stdin_w, b"typed\r\n")
    os.close(stdin_w)
    received = b""
    while chunk := guest["stdin"].recv(65536):  # b"" once klab's stdin ended: the guest's read returns 0
        received += chunk
    assert received == b"typed\r\n"

    guest["stdout"].sendall(blob[:1000] + b"\r\n\0" + blob[1000:] + MARK)
    guest["stderr"].sendall(b"err\n" + MARK)
    assert pipes.wait(Deadline.after(10))
    assert guest["stderr"].recv(16) == relay.END_ANSWER, "the guest may power off now"

    pipes.close()
    os.close(out_w)
    os.close(err_w)
    for thread in readers:
        thread.join(10)
    assert b"".join(out) == blob[:1000] + b"\r\n\0" + blob[1000:]
    assert b"".join(err) == b"err\n"
    assert not any(p.exists() for p in paths.values()), "no socket is left behind"


def test_output_cut_short_is_reported_not_passed_as_complete(tmp_path: Path) -> None:
    """The guest died mid-output (a panic): its last bytes still come out, and wait says the output is incomplete."""
    paths = {s: tmp_path / relay.socket_name(s) for s in relay.STREAMS}
    out_r, out_w = os.pipe()
    pipes = relay.Relay(paths, relay.StdFds(None, out_w, out_w), MARK)
    pipes.listen()
    guest = {s: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for s in relay.STREAMS}
    for stream, sock in guest.items():
        sock.connect(str(paths[stream]))
    pipes.accept(Deadline.after(5), lambda: True)
    pipes.start()
    assert guest["stdin"].recv(1) == b"", "a terminal's stdin is not read: the command sees EOF at once"
    guest["stdout"].sendall(b"last words\x1e")
    for sock in guest.values():
        sock.close()
    assert not pipes.wait(Deadline.after(10))
    pipes.close()
    os.close(out_w)
    assert os.read(out_r, 100) == b"last words\x1e"


def test_qemu_gone_before_it_connected_is_a_lab_error(tmp_path: Path) -> None:
    paths = {s: tmp_path / relay.socket_name(s) for s in relay.STREAMS}
    pipes = relay.Relay(paths, relay.StdFds(None, 1, 2), MARK)
    pipes.listen()
    try:
        with pytest.raises(LabError, match="QEMU did not connect the command's stdin"):
            pipes.accept(Deadline.after(5), lambda: False)
    finally:
        pipes.close()


def test_a_reader_that_goes_away_drops_its_stream_only(tmp_path: Path) -> None:
    """`klab run -- CMD | head -1`: the rest of stdout is read and dropped (the guest never blocks); stderr flows."""
    paths = {s: tmp_path / relay.socket_name(s) for s in relay.STREAMS}
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    os.close(out_r)  # the reader is gone before anything comes
    pipes = relay.Relay(paths, relay.StdFds(None, out_w, err_w), MARK)
    pipes.listen()
    guest = {s: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for s in relay.STREAMS}
    for stream, sock in guest.items():
        sock.connect(str(paths[stream]))
    pipes.accept(Deadline.after(5), lambda: True)
    pipes.start()
    guest["stdout"].sendall(b"x" * (1 << 20) + MARK)
    guest["stderr"].sendall(b"still here\n" + MARK)
    assert pipes.wait(Deadline.after(10))
    pipes.close()
    os.close(out_w)
    os.close(err_w)
    assert pipes.gone == {out_w}
    assert os.read(err_r, 100) == b"still here\n"
    told = b""
    while len(told) < len(relay.PIPE_ASK + relay.END_ANSWER):
        told += guest["stderr"].recv(16)
    assert told == relay.PIPE_ASK + relay.END_ANSWER, "SIGPIPE for the command, once, then the end"
