"""Failure signatures: a stable name for *how* something failed, the same on every run and machine.

Bisect compares them (a different failure on the way is not the one being
bisected), known failures match them, reports group by them. Tokens that
vary between runs (pids, addresses, IDs, inodes, ports, temp paths, timestamps)
never appear.

- a test: `suite.test: <kind>`, the kind being the errno pair of an errno
  check ("expected EACCES, got success"), else the assertion's own label
  with every run-specific token replaced (`normalise`);
- a kernel event: its report title normalised the way kernel CI (syzkaller)
  titles crashes: `WARNING in hook_file_open`, `KASAN: slab-use-after-free
  Read in landlock_merge_ruleset`, `BUG: kernel NULL pointer dereference in
  f`, `INFO: task hung in f`.
"""

from __future__ import annotations

import re

from lab.results.consolelog import BY_KIND, HOST_MADE, EventKind, KernelEvent, strip_prefix

_ERRNO_PAIR = re.compile(r"expected ([A-Z][A-Z0-9]+|success)\b.*?, got ([A-Z][A-Z0-9]+|success)\b")
# Run-specific tokens, replaced in this order. A timestamp first (its parts are not one word);
# then every temporary path (/tmp/klab-landlock-k2j3a_9x/a/b -> /tmp/T/a/b); then whole words of
# hex digits holding a digit, or 8 and more of them (pids, ports, inodes, addresses, Landlock domain IDs like 5ae31cf79:
# all of the word, whatever its length); then numbers left inside words (10s, 2G), not the 4 of IPv4.
_RUN_SPECIFIC = (
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?"), "TIME"),
    (re.compile(r"/tmp/[^/\s'\"()\[\],]+"), "/tmp/T"),
    (re.compile(r"(?<![\w.-])(?:0x)?(?:[0-9a-fA-F]*\d[0-9a-fA-F]*|[0-9a-f]{8,})(?![\w-])"), "N"),
    (re.compile(r"(?<![A-Za-z_0-9])\d+"), "N"),
    (re.compile(r"N(?:\.N)+"), "N"),  # versions, decimals, dotted quads
)
_FRAME = re.compile(r"^\s*(?:\[<[0-9a-f]+>\]\s*)?([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+")
_RIP = re.compile(r"(?:RIP: [0-9a-f]+:|pc : |PC is at )([A-Za-z_][\w.]*)\+0x")
_WARN_AT = re.compile(r"WARNING: CPU: \d+ PID: \d+ at \S+ ([A-Za-z_][\w.]*)\+0x")
_KASAN = re.compile(r"BUG: KASAN: ([\w-]+) in ([A-Za-z_][\w.]*)")
_KASAN_ACCESS = re.compile(r"^(Read|Write) of size")
# Frames that say how a task waits or warns, not where: skipped when looking for the culprit function.
_PLUMBING = re.compile(
    r"^(?:__?schedule\w*|schedule\w*|io_schedule\w*|__warn\w*|warn_\w*|report_bug|handle_bug|exc_\w+|asm_\w+|"
    r"dump_stack\w*|panic|__?might_\w+|lock_acquire|__?mutex_lock\w*|rwsem_down\w*|down_\w+|"
    r"wait_for_\w+|do_wait\w*|\w*_slowpath|kasan_\w+|__asan_\w+|ubsan_\w+|__ubsan_\w+|print_report|"
    r"rcu_\w+|show_stack|dump_backtrace|watchdog_\w+|__\w*lockup\w*|entry_SYSCALL\w*|do_syscall_\w+|"
    r"el0\w*|el1\w*|invoke_syscall|__do_sys_\w+|__x64_sys_\w+|__arm64_sys_\w+|x64_sys_call|ret_from_fork\w*)$"
)


def normalise(text: str) -> str:
    """`text` with every run-specific token replaced (numbers and hex IDs by N, temp paths, times), spaces collapsed."""
    for pattern, replacement in _RUN_SPECIFIC:
        text = pattern.sub(replacement, text)
    return " ".join(text.split())


def of_test(suite: str, name: str, status: str, reason: str) -> str:
    """The signature of a test that did not pass (status FAIL, ERROR or MISS)."""
    if status == "MISS":
        kind = "never reported" + (f" ({reason.split(': ', 1)[1]})" if reason.startswith("never reported: ") else "")
    elif status == "ERROR":
        kind = "error " + (reason.split(":", 1)[0].strip() or "unknown")
    else:
        pair = _ERRNO_PAIR.search(reason)
        text = normalise(reason)  # first: a timestamp's colons must not cut the label
        label = text.split(":", 1)[0].strip()
        kind = f"{label}: expected {pair.group(1)}, got {pair.group(2)}" if pair else label
    return f"{suite}.{name}: {kind or status.lower()}"


def _culprit(lines: list[str]) -> str:
    """The first function in the report that is not the machinery of reporting or waiting."""
    for line in lines:
        rip = _RIP.search(line)
        if rip and not _PLUMBING.match(rip.group(1)):
            return rip.group(1)
    for line in lines:
        frame = _FRAME.match(line)
        if frame and not line.lstrip().startswith("?") and not _PLUMBING.match(frame.group(1)):
            return frame.group(1)
    return ""


def _in(title: str, function: str) -> str:
    return f"{title} in {function}" if function else title


def of_event(event: KernelEvent) -> str:
    """A kernel event's title as kernel CI writes it: the kind of report and the function it points at."""
    lines = [strip_prefix(line).rstrip() for line in event.excerpt.splitlines()]
    first = lines[0].strip() if lines else ""
    culprit = _culprit(lines[1:] if event.kind is EventKind.WARNING else lines)
    if event.kind is EventKind.WARNING:
        at = _WARN_AT.search(first)
        return _in("WARNING", at.group(1) if at else culprit)
    if event.kind is EventKind.KASAN:
        found = _KASAN.search(first)
        access = next((m.group(1) for line in lines if (m := _KASAN_ACCESS.match(line.strip()))), "")
        if found:
            return " ".join(filter(None, ["KASAN:", found.group(1), access])) + f" in {found.group(2)}"
    if event.kind is EventKind.BUG and first.startswith(
        ("BUG: kernel NULL pointer dereference", "BUG: unable to handle")
    ):
        return _in(first.split(",")[0], culprit)
    if event.kind in HOST_MADE:
        return BY_KIND[event.kind].title
    if BY_KIND[event.kind].title:
        return _in(BY_KIND[event.kind].title, culprit)
    if event.kind is EventKind.LOCKDEP:
        return _in("WARNING: " + first.removeprefix("WARNING: ").split(" detected")[0].strip(), culprit)
    if event.kind is EventKind.UBSAN:
        return _in(normalise(first.split(" in ")[0]), culprit)
    if event.kind is EventKind.PANIC:
        return "kernel panic: " + normalise(first.split("not syncing:", 1)[-1].strip())
    return _in(normalise(first.split(":")[0] if ":" in first else first) or event.kind, culprit)
