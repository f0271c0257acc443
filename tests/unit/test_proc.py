"""lab.proc: absolute deadlines that nothing a child does can stretch, and logs that keep what it said."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import proc
from lab.paths import REPO_ROOT


def test_a_child_that_prints_half_a_line_and_hangs_cannot_outlive_the_deadline(tmp_path: Path) -> None:
    """A blocking readline would wait for the newline that never comes (the bug this guards against)."""
    log = tmp_path / "log"
    start = time.monotonic()
    with pytest.raises(proc.CommandFailed) as caught:
        proc.run(["sh", "-c", "printf 'half a line'; exec sleep 30"], deadline=proc.Deadline.after(0.5), log=log)
    assert time.monotonic() - start < 10, "the deadline was 0.5 s; the child would have taken 30 s"
    assert caught.value.timed_out
    assert "half a line" in caught.value.tail and "half a line" in log.read_text()


def test_grandchildren_die_with_the_child() -> None:
    result = proc.run(["sh", "-c", "sleep 30 & echo $!; wait"], deadline=proc.Deadline.after(0.5), check=False)
    assert result.timed_out
    grandchild = Path(f"/proc/{int(result.output.split()[0])}/stat")

    def gone() -> bool:  # SIGKILL is delivered asynchronously: dead means gone or a zombie
        try:
            return grandchild.read_text().split()[2] == "Z"
        except OSError:
            return True

    deadline = time.monotonic() + 5
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gone(), "the grandchild outlived the deadline"


def test_lines_arrive_as_they_are_printed_and_output_is_kept() -> None:
    seen: list[str] = []
    result = proc.run(["printf", "a\\nb\\nno newline"], deadline=proc.Deadline.after(10), on_line=seen.append)
    assert seen == ["a", "b", "no newline"]
    assert result.output == "a\nb\nno newline" and result.returncode == 0 and not result.timed_out


def test_failure_carries_the_tail_and_a_missing_program_is_127() -> None:
    with pytest.raises(proc.CommandFailed, match=r"exited 3") as caught:
        proc.run(["sh", "-c", "echo why; exit 3"], deadline=proc.Deadline.after(10))
    assert caught.value.tail == "why\n" or caught.value.tail.strip() == "why"
    with pytest.raises(proc.CommandFailed) as missing:
        proc.run(["/nonexistent/tool"], deadline=proc.Deadline.after(10))
    assert missing.value.returncode == 127


def test_a_child_deadline_never_extends_its_parents() -> None:
    parent = proc.Deadline.after(1.0)
    assert parent.within(3600).at == parent.at
    assert parent.within(0.1).at < parent.at
    assert proc.Deadline.after(-1).expired and proc.Deadline.after(-1).left() == 0.0


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_no_child_outlives_klab_killed_from_outside(how: signal.Signals, tmp_path: Path) -> None:
    """A CI runner's cancel (SIGTERM) or the OOM killer (SIGKILL) ends klab: its apt-get or make must end too."""
    pidfile = tmp_path / "child.pid"
    script = (
        "import sys; from pathlib import Path; from lab import proc\n"
        "with proc.interrupts_raise():\n"
        f"    proc.run(['sh', '-c', 'echo $$ > {pidfile}; exec sleep 600'], deadline=proc.Deadline.after(600))\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO_ROOT)
    deadline = time.monotonic() + 30
    while not (pidfile.is_file() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = Path(f"/proc/{int(pidfile.read_text())}/stat")
    parent.send_signal(how)
    parent.wait(timeout=30)

    def gone() -> bool:
        try:
            return child.read_text().split()[2] == "Z"
        except OSError:
            return True

    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(), f"the child outlived klab's {how.name}"
