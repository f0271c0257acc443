"""Live progress: the guest's KTAP on the console counted as it goes by; plain lines off a terminal."""

from __future__ import annotations

import io

from lab.paths import REPO_ROOT
from lab.run import progress

CONSOLE = REPO_ROOT / "tests" / "data" / "ktap" / "console-splat.log"


def test_console_tap_counts_results_across_chunk_boundaries() -> None:
    out = io.StringIO()
    prog = progress.Progress(out, live=False)
    tap = progress.ConsoleTap(prog, "x86_64.6.12.default")
    prog.phase("x86_64.6.12.default", "booting", planned=7)
    text = CONSOLE.read_text()
    for i in range(0, len(text), 37):  # the pty hands over arbitrary pieces
        tap.write(text[i : i + 37])
    state = prog.state("x86_64.6.12.default")
    assert (state.passed, state.failed, state.skipped) == (4, 2, 1)
    assert state.suite == "ptracedemo" and state.phase == "running"
    lines = out.getvalue().splitlines()
    assert lines[0] == "klab: x86_64.6.12.default: booting 0/7 tests, 0 failed, 0s"
    assert any(line.startswith("klab: x86_64.6.12.default: running fsdemo") for line in lines)


def test_plain_mode_prints_every_phase_and_heartbeats_between(monkeypatch: object) -> None:
    out = io.StringIO()
    prog = progress.Progress(out, live=False)
    prog.phase("c", "booting", planned=3)
    for _ in range(50):
        prog.result("c", "pass")  # within one heartbeat: no line each
    prog.phase("c", "done", verdict="pass")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("klab: c: booting") and lines[-1].endswith(": pass")
    assert len(lines) < 10


def test_a_terminal_gets_a_live_table() -> None:
    out = io.StringIO()
    with progress.Progress(out, live=True) as prog:
        prog.phase("arm64.7.3.default", "booting", planned=2)
        prog.result("arm64.7.3.default", "fail")
    text = out.getvalue()
    assert "arm64.7.3.default" in text and "1/2" in text
