"""A recorded serial console: what the kernel said, classified after the fact.

`KERNEL_EVENTS` is the table of kernel failure reports the lab recognises;
`scan()` finds them in a console log (the unit tests replay recorded boots
through it), and the guest init's markers tell boot phases apart. Following a
live console is `lab.vm.console`'s job; it uses this table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Console lines may carry a printk timestamp and, on newer kernels, a caller id.
_PREFIX = r"(?:\[\s*\d+\.\d+\]\s*)?(?:\[\s*[CT]\d+\]\s*)?"
# The same prefix, taking at most one space after it: KTAP's indentation survives.
_PREFIX_RE = re.compile(r"^\s*\[\s*\d+\.\d+\] ?(?:\[\s*[CT]\d+\] ?)?")


def strip_prefix(line: str) -> str:
    """A console line without its printk timestamp and caller id: what the kernel or the guest printed."""
    return _PREFIX_RE.sub("", line, count=1)


@dataclass(frozen=True)
class Event:
    """A kind of kernel report: its name, the line that starts it, and whether the kernel is gone."""

    kind: str
    pattern: str
    fatal: bool = False


KERNEL_EVENTS: tuple[Event, ...] = (
    Event("panic", r"Kernel panic - not syncing", fatal=True),
    Event("kasan", r"BUG: KASAN: "),
    Event("ubsan", r"UBSAN: "),
    Event(
        "lockdep", r"WARNING: (?:possible (?:circular|recursive) locking|inconsistent lock state|suspicious RCU usage)"
    ),
    Event("softlockup", r"watchdog: BUG: soft lockup"),
    Event("hardlockup", r"(?:NMI )?watchdog: Watchdog detected hard LOCKUP"),
    Event("rcu_stall", r"rcu: INFO: rcu_\w+ (?:self-)?detected stall"),
    Event("hung_task", r"INFO: task \S+ blocked for more than \d+ seconds"),
    Event("oops", r"Oops(?::| -) "),
    Event("bug", r"(?:kernel )?BUG: (?!KASAN)"),
    Event("warning", r"WARNING: CPU: \d+ PID: \d+"),
)

_EVENT_RE = re.compile(
    "|".join(f"(?P<{e.kind}>^{_PREFIX}{e.pattern})" for e in KERNEL_EVENTS),
    re.MULTILINE,
)
_BY_KIND = {e.kind: e for e in KERNEL_EVENTS}

# Lines the guest init prints, which tell boot phases apart.
INIT_STARTED = "klab-init: init started"
# The init could not set the guest up (a share missing...): the lab's fault, not the kernel's.
INIT_FATAL = "klab-init: FATAL: "
# Printed when the command of a run has exited: the rest is the guest ending.
COMMAND_EXITED = "klab-init: command exited"
EXCERPT_LINES = 30
COMMAND_MARK = "# "  # starts a console log's first line: the QEMU command (qemu.Machine writes it), not guest output


@dataclass(frozen=True)
class KernelEvent:
    """One report found on the console: kind, where it starts, and the lines around it."""

    kind: str
    offset: int
    excerpt: str
    fatal: bool

    @property
    def title(self) -> str:
        """The report's first line without the timestamp: what a reader recognises."""
        first = self.excerpt.splitlines()[0] if self.excerpt.strip() else ""
        return strip_prefix(first).strip() or self.kind


def scan(text: str) -> list[KernelEvent]:
    """Every kernel report in a console log, in order."""
    events = []
    for match in _EVENT_RE.finditer(text):
        kind = match.lastgroup or "bug"
        events.append(KernelEvent(kind, match.start(), excerpt(text, match.start()), _BY_KIND[kind].fatal))
    return events


def excerpt(text: str, offset: int, lines: int = EXCERPT_LINES) -> str:
    """`lines` lines of the console from the one containing `offset` (the report's body)."""
    start = text.rfind("\n", 0, offset) + 1
    return "\n".join(text[start:].splitlines()[:lines])


def tail(text: str, lines: int = EXCERPT_LINES) -> str:
    """The last `lines` lines the guest printed: where a hang or a silent death shows."""
    said = text.splitlines()
    if said and said[0].startswith(COMMAND_MARK):
        said = said[1:]
    return "\n".join(said[-lines:])


def normalize(text: str) -> str:
    """Console text as the guest meant it: the pty turns each \r\n into \r\r\n."""
    return text.replace("\r\r\n", "\n").replace("\r\n", "\n")


def read(path: Path) -> str:
    """A recorded console log, normalized; empty when there is none."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            return normalize(f.read())
    except OSError:
        return ""


def reached_init(text: str) -> bool:
    return INIT_STARTED in text


def init_fatal(text: str) -> str | None:
    """The lab init's own fatal message, if it printed one."""
    at = text.find(INIT_FATAL)
    return text[at:].splitlines()[0] if at >= 0 else None


def fatal_pattern() -> str:
    """One regex matching the start of any fatal report, for the live watcher."""
    return "|".join(e.pattern for e in KERNEL_EVENTS if e.fatal)
