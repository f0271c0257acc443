"""Failure signatures, from tables: the same failure always gets the same name, whatever numbers vary."""

from __future__ import annotations

import pytest

from lab.paths import REPO_ROOT
from lab.results import consolelog, signature

KTAP = REPO_ROOT / "tests" / "data" / "ktap"
CONSOLES = REPO_ROOT / "tests" / "data" / "console"


@pytest.mark.parametrize(
    ("status", "reason", "want"),
    [
        ("FAIL", "reading /proc/123/environ under a -ENOKEY program: expected EACCES (13), got success (0)",
         "s.t: reading /proc/N/environ under a -ENOKEY program: expected EACCES, got success"),
        ("FAIL", "open b/f (denied by layer 16 alone): expected EACCES (13), got success",
         "s.t: open b/f (denied by layer N alone): expected EACCES, got success"),
        ("FAIL", "IPv4 sendto(51271) on a socket connected to 40826: expected EACCES (13), got success",
         "s.t: IPv4 sendto(N) on a socket connected to N: expected EACCES, got success"),
        ("FAIL", "worker 4242 did not answer within 10s", "s.t: worker N did not answer within Ns"),
        ("ERROR", "KeyError: 'missing'", "s.t: error KeyError"),
        ("MISS", "never reported: kernel panic", "s.t: never reported (kernel panic)"),
        ("MISS", "never reported", "s.t: never reported"),
    ],
)  # fmt: skip
def test_test_signatures_keep_the_kind_and_drop_the_numbers(status: str, reason: str, want: str) -> None:
    assert signature.of_test("s", "t", status, reason) == want


def test_the_same_failure_on_another_run_has_the_same_signature() -> None:
    one = signature.of_test("landlock", "udp", "FAIL", "sendto(51271) to 40826: expected EACCES (13), got success")
    two = signature.of_test("landlock", "udp", "FAIL", "sendto(33012) to 41999: expected EACCES (13), got success")
    other = signature.of_test("landlock", "udp", "FAIL", "sendto(33012) to 41999: expected EACCES (13), got EPERM (1)")
    assert one == two != other


def _event(kind: str, text: str, fatal: bool = False) -> consolelog.KernelEvent:
    return consolelog.KernelEvent(kind, 0, text, fatal)


WARNING = """\
[   42.123456] WARNING: CPU: 0 PID: 123 at security/landlock/fs.c:100 hook_file_open+0x12/0x30
[   42.123490] RIP: 0010:hook_file_open+0x12/0x30
[   42.123530] Call Trace:
[   42.123550]  ? __warn+0x7d/0x130
[   42.123560]  security_file_open+0x41/0x60"""
KASAN = """\
[   12.000001] BUG: KASAN: slab-use-after-free in landlock_merge_ruleset+0x2a/0x300
[   12.000002] Read of size 8 at addr ffff888003a4c000 by task python3/77
[   12.000003] Call Trace:
[   12.000004]  dump_stack_lvl+0x4b/0x70
[   12.000005]  print_report+0x10/0x20
[   12.000006]  kasan_report+0x10/0x20
[   12.000007]  landlock_merge_ruleset+0x2a/0x300"""
NULL_DEREF = """\
[    3.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008
[    3.000001] #PF: supervisor read access in kernel mode
[    3.000002] Oops: 0000 [#1] PREEMPT SMP NOPTI
[    3.000003] RIP: 0010:bpf_lsm_file_open+0x4/0x10"""
NULL_DEREF_ARM64 = """\
[    3.000000] Unable to handle kernel NULL pointer dereference at virtual address 0000000000000008
[    3.000003] pc : seccomp_run_filters+0x44/0x120
[    3.000004] lr : __seccomp_filter+0x7c/0x500"""
HUNG = """\
[  240.0] INFO: task python3:412 blocked for more than 120 seconds.
[  240.1] Call Trace:
[  240.2]  <TASK>
[  240.3]  __schedule+0x2e0/0x8a0
[  240.4]  schedule+0x5a/0xd0
[  240.5]  schedule_timeout+0x10f/0x120
[  240.6]  wait_for_completion+0x8e/0x140
[  240.7]  landlock_restrict_sibling_threads+0x1f0/0x2c0
[  240.8]  __do_sys_landlock_restrict_self+0x1a0/0x230"""


@pytest.mark.parametrize(
    ("kind", "text", "want"),
    [
        ("warning", WARNING, "WARNING in hook_file_open"),
        ("kasan", KASAN, "KASAN: slab-use-after-free Read in landlock_merge_ruleset"),
        ("bug", NULL_DEREF, "BUG: kernel NULL pointer dereference in bpf_lsm_file_open"),
        ("hung_task", HUNG, "INFO: task hung in landlock_restrict_sibling_threads"),
        ("panic", "[ 9.1] Kernel panic - not syncing: sysrq triggered crash", "kernel panic: sysrq triggered crash"),
        ("panic", "[ 9.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100",
         "kernel panic: Attempted to kill init! exitcode=N"),
        ("ubsan", "[ 5.0] UBSAN: array-index-out-of-bounds in security/landlock/ruleset.c:310:12\n"
         "[ 5.1]  landlock_find_rule+0x1c/0x90", "UBSAN: array-index-out-of-bounds in landlock_find_rule"),
        ("boot_timeout", "", "boot timeout"),
    ],
)  # fmt: skip
def test_kernel_event_titles_as_kernel_ci_writes_them(kind: str, text: str, want: str) -> None:
    assert signature.of_event(_event(kind, text)) == want


def test_an_arm64_oops_names_its_pc() -> None:
    assert signature.of_event(_event("oops", NULL_DEREF_ARM64)) == "Oops in seccomp_run_filters"


def test_recorded_consoles() -> None:
    """Reports found by the console scanner in real (and recorded) logs get stable titles."""
    splat = consolelog.scan(consolelog.read(KTAP / "console-splat.log"))
    assert [signature.of_event(e) for e in splat] == ["WARNING in hook_file_open"]
    panic = consolelog.scan(consolelog.read(CONSOLES / "x86_64-panic-sysrq.log"))
    assert signature.of_event(next(e for e in panic if e.fatal)) == "kernel panic: sysrq triggered crash"
