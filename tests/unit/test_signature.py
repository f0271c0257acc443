"""Failure signatures, from tables: the same failure always gets the same name, whatever numbers vary."""

from __future__ import annotations

import re

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


# The same failure as two runs print it, one pair per suite, in the suites' own message formats:
# only run-specific tokens differ (domain IDs of any length, pids, ports, inodes, fds, temp paths,
# audit timestamps and serials, addresses, durations).
SAME_FAILURE_TWICE = [
    ("landlock", "audit_tsync_siblings_share_the_callers_domain",
     "number of 'status=allocated' records for domain 5ae31cf79 ([Record(type=1424, text='domain=5ae31cf79 "
     "status=allocated mode=enforcing pid=412 uid=0 exe=\"/usr/bin/python3.11\" comm=\"python3\"')]): "
     "expected 1, got 2",
     "number of 'status=allocated' records for domain 1b07 ([Record(type=1424, text='domain=1b07 "
     "status=allocated mode=enforcing pid=98121 uid=0 exe=\"/usr/bin/python3.11\" comm=\"python3\"')]): "
     "expected 1, got 2"),
    ("landlock", "audit_denial_names_the_path",
     "number of AUDIT_LANDLOCK_ACCESS records for /tmp/klab-landlock-k2j3a_9x/b/f "
     "([Record(type=1423, text='audit(1796617844.379:1187): domain=fae31cf790 blockers=fs.read_file "
     "path=\"/tmp/klab-landlock-k2j3a_9x/b/f\" dev=\"vda\" ino=131077')]): expected 1, got 0",
     "number of AUDIT_LANDLOCK_ACCESS records for /tmp/klab-landlock-zzqpmn_a/b/f "
     "([Record(type=1423, text='audit(1796621002.004:99): domain=10ae2 blockers=fs.read_file "
     "path=\"/tmp/klab-landlock-zzqpmn_a/b/f\" dev=\"vda\" ino=40')]): expected 1, got 0"),
    ("landlock", "udp_sendto",
     "IPv4 sendto(51271) on a socket connected to 40826 at 2026-12-07T05:26:42.123Z: expected EACCES (13), got success",
     "IPv4 sendto(33012) on a socket connected to 41999 at 2026-12-08 11:02:03: expected EACCES (13), got success"),
    ("landlock_ptrace", "ptrace_attach_from_a_sandbox",
     "tracee 4242 did not stop within 10s", "tracee 77 did not stop within 12s"),
    ("landlock_ptrace", "proc_status_of_the_parent",
     "Pid field of /proc/4242/status: expected '4242', got '4243'",
     "Pid field of /proc/310/status: expected '310', got '311'"),
    ("seccomp", "notify_fd_is_an_anon_inode",
     "what fd 7 is: expected 'anon_inode:seccomp notify', got 'socket:[40519]'",
     "what fd 12 is: expected 'anon_inode:seccomp notify', got 'socket:[1187]'"),
    ("bpf_lsm", "file_open_sees_the_inode",
     "inode number seen by the program for /tmp/klab-bpf-lsm-q1w2e3r4/f: expected 131077, got 0 (map at "
     "ffff888003a4c000)",
     "inode number seen by the program for /tmp/klab-bpf-lsm-aaaaaaaa/f: expected 12, got 0 (map at "
     "ffffa0c1deadb000)"),
]  # fmt: skip


@pytest.mark.parametrize(("suite", "test", "one", "two"), SAME_FAILURE_TWICE)
def test_the_same_failure_from_two_runs_gets_one_signature(suite: str, test: str, one: str, two: str) -> None:
    first = signature.of_test(suite, test, "FAIL", one)
    assert first == signature.of_test(suite, test, "FAIL", two)
    assert not re.search(r"(?<![A-Za-z])\d", first.split(":", 1)[1]), f"a run-specific number is left: {first}"


def test_normalising_keeps_what_names_the_failure() -> None:
    assert signature.normalise("IPv4 on ext4 for x86_64 under sha256") == "IPv4 on ext4 for x86_64 under sha256"
    assert signature.normalise("domain 5ae31cf79 and domain=1b07 at ffff888003a4c000") == ("domain N and domain=N at N")
    assert signature.normalise("/tmp/klab-seccomp-x1/f and /tmp/tmpk3j_a9x") == "/tmp/T/f and /tmp/T"
    assert signature.normalise("audit(1796617844.379:1187) after 1.5s, 6.12.118") == "audit(N:N) after Ns, N"
    assert signature.normalise("EACCES ENOKEY fs.read_file") == "EACCES ENOKEY fs.read_file"
    assert signature.normalise("domain abcdefab, a faced decade") == "domain N, a faced decade"
