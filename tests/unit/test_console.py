"""Console classification on consoles recorded from real boots, replayed through the real pexpect watcher."""

from __future__ import annotations

from pathlib import Path

import pexpect
import pytest

from lab.proc import Deadline
from lab.results import consolelog
from lab.vm import console
from lab.vm.console import WatchEnd

DATA = Path(__file__).resolve().parents[1] / "data"
CONSOLES = DATA / "console"


@pytest.mark.parametrize(
    ("log", "reached_init", "first_fatal"),
    [
        ("x86_64-ok.log", True, None),
        ("x86_64-panic-sysrq.log", True, "panic"),
        ("x86_64-no-rootfs.log", False, "panic"),
        ("x86_64-init-hang.log", False, None),
    ],
)
def test_scan_recorded_consoles(log: str, reached_init: bool, first_fatal: str | None) -> None:
    text = consolelog.read(CONSOLES / log)
    assert consolelog.reached_init(text) is reached_init
    fatal = [e for e in consolelog.scan(text) if e.fatal]
    assert (fatal[0].kind if fatal else None) == first_fatal


def test_panic_excerpt_names_the_cause() -> None:
    text = consolelog.read(CONSOLES / "x86_64-panic-sysrq.log")
    event = next(e for e in consolelog.scan(text) if e.fatal)
    assert event.title == "Kernel panic - not syncing: sysrq triggered crash"
    assert "Call Trace:" in event.excerpt


def test_root_mount_failure_is_a_panic_before_init() -> None:
    text = consolelog.read(CONSOLES / "x86_64-no-rootfs.log")
    event = next(e for e in consolelog.scan(text) if e.fatal)
    assert "VFS: Unable to mount root fs" in event.title
    assert text.index(event.excerpt.splitlines()[0]) > text.index("VFS: Cannot open root device")


@pytest.mark.parametrize(
    ("line", "kind", "fatal"),
    [
        ("[   42.1] WARNING: CPU: 1 PID: 77 at security/landlock/fs.c:100 hook_file_open+0x12/0x30", "warning", False),
        ("[   42.1] BUG: KASAN: slab-use-after-free in landlock_put_ruleset+0x20/0x40", "kasan", False),
        ("[   42.1] BUG: kernel NULL pointer dereference, address: 0000000000000008", "bug", False),
        ("[   42.1] Oops: general protection fault, probably for non-canonical address", "oops", False),
        ("[   42.1] UBSAN: shift-out-of-bounds in kernel/bpf/verifier.c:1234:5", "ubsan", False),
        ("[   42.1] WARNING: possible circular locking dependency detected", "lockdep", False),
        ("[   42.1] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [python3:99]", "softlockup", False),
        ("[   42.1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", "rcu_stall", False),
        ("[   42.1] INFO: task python3:88 blocked for more than 120 seconds.", "hung_task", False),
        ("[   42.1] Kernel panic - not syncing: Fatal exception", "panic", True),
        ("[   42.1] NMI watchdog: Watchdog detected hard LOCKUP on cpu 1", "hardlockup", False),
    ],
)
def test_event_table(line: str, kind: str, fatal: bool) -> None:
    events = consolelog.scan(f"[    1.0] booting\n{line}\n[   42.2] next line\n")
    assert [(e.kind, e.fatal) for e in events] == [(kind, fatal)]
    assert events[0].excerpt.startswith(line)


def test_ordinary_lines_are_not_events() -> None:
    text = "[ 1.0] landlock: Up and running.\n[ 2.0] WARNING is a word\nok 3 warning_test\n"
    assert consolelog.scan(text) == []


def _watch(
    tmp_path: Path, log: Path, marker: str, timeout: float, then_sleep: float
) -> tuple[console.WatchResult, str]:
    """Replay a recorded console through a real pexpect child and the real Watcher; (outcome, recorded text)."""
    script = f"cat {log}; sleep {then_sleep}"
    child = pexpect.spawn("sh", ["-c", script], encoding="utf-8", codec_errors="replace", searchwindowsize=8192)
    record = tmp_path / "console.log"
    with open(record, "w") as f:
        child.logfile_read = f
        # A short settle: the recordings hold whole reports already; a live console gets its default 3 s.
        outcome = console.Watcher(child, record, settle=0.2).wait(marker, Deadline.after(timeout))
    child.close(force=True)
    return outcome, consolelog.read(record)


@pytest.mark.parametrize(
    ("log", "marker", "end", "kind"),
    [
        ("x86_64-ok.log", consolelog.INIT_STARTED, WatchEnd.MARKER, None),
        ("x86_64-ok.log", consolelog.COMMAND_EXITED, WatchEnd.MARKER, None),
        # The crash comes after init: waiting for init sees init, waiting for the command sees the panic.
        ("x86_64-panic-sysrq.log", consolelog.INIT_STARTED, WatchEnd.MARKER, None),
        ("x86_64-panic-sysrq.log", consolelog.COMMAND_EXITED, WatchEnd.FATAL, "panic"),
        ("x86_64-no-rootfs.log", consolelog.INIT_STARTED, WatchEnd.FATAL, "panic"),
    ],
)
def test_watcher_replays_real_consoles(tmp_path: Path, log: str, marker: str, end: WatchEnd, kind: str | None) -> None:
    outcome, _ = _watch(tmp_path, CONSOLES / log, marker, timeout=20, then_sleep=5)
    assert outcome.end is end
    assert (outcome.event.kind if outcome.event else None) == kind


def test_watcher_times_out_on_a_silent_hang(tmp_path: Path) -> None:
    outcome, text = _watch(
        tmp_path, CONSOLES / "x86_64-init-hang.log", consolelog.INIT_STARTED, timeout=0.5, then_sleep=30
    )
    assert outcome.end is WatchEnd.TIMEOUT
    assert not consolelog.reached_init(text)


def test_lab_init_failure_is_told_apart(tmp_path: Path) -> None:
    log = tmp_path / "in.log"
    log.write_text("[ 1.0] booting\nklab-init: FATAL: cannot mount the klab share\n")
    outcome, text = _watch(tmp_path, log, consolelog.INIT_STARTED, timeout=20, then_sleep=5)
    assert outcome.end is WatchEnd.LAB
    assert consolelog.init_fatal(text) == "klab-init: FATAL: cannot mount the klab share"


def test_normalize_pty_line_endings() -> None:
    assert consolelog.normalize("a\r\r\nb\r\nc\n") == "a\nb\nc\n"


def test_tail_is_the_guests_last_words_without_the_qemu_command() -> None:
    hang = consolelog.read(CONSOLES / "x86_64-init-hang.log")
    text = "# qemu-system-x86_64 -kernel bzImage\n" + hang
    got = consolelog.tail(text, lines=3).splitlines()
    assert got == hang.splitlines()[-3:]
    assert got[-1].endswith("on the kernel command line")
    assert consolelog.tail("# qemu-system-x86_64 -kernel bzImage\n") == ""  # silence: nothing but the command
