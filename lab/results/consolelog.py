"""A recorded serial console: what the kernel said, classified after the fact.

`KERNEL_EVENTS` is the table of kernel failure reports the lab recognises;
`scan()` finds them in a console log (the unit tests replay recorded boots
through it), and the guest init's markers tell boot phases apart. Following a
live console is `lab.vm.console`'s job; it uses this table.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from lab.manifest import Record

# Console lines may carry a printk timestamp and, on newer kernels, a caller id.
_PREFIX = r"(?:\[\s*\d+\.\d+\]\s*)?(?:\[\s*[CT]\d+\]\s*)?"
# The same prefix, taking at most one space after it: KTAP's indentation survives.
_PREFIX_RE = re.compile(r"^\s*\[\s*\d+\.\d+\] ?(?:\[\s*[CT]\d+\] ?)?")


def strip_prefix(line: str) -> str:
    """A console line without its printk timestamp and caller id: what the kernel or the guest printed."""
    return _PREFIX_RE.sub("", line, count=1)


class EventKind(enum.StrEnum):
    """What the kernel did, as the lab names it (in results.json, summaries and signatures)."""

    PANIC = "panic"
    KASAN = "kasan"
    UBSAN = "ubsan"
    LOCKDEP = "lockdep"
    SOFTLOCKUP = "softlockup"
    HARDLOCKUP = "hardlockup"
    RCU_STALL = "rcu_stall"
    HUNG_TASK = "hung_task"
    OOPS = "oops"
    BUG = "bug"
    WARNING = "warning"
    # Seen by the host, not printed by the kernel: no console line starts them.
    BOOT_TIMEOUT = "boot_timeout"  # the lab's init never started
    TIMEOUT = "timeout"  # the console went quiet while the guest ran
    DIED = "died"  # the guest reset itself (QEMU exited cleanly) with no report and before it was done


@dataclass(frozen=True)
class Event:
    """A kind of kernel report: the line that starts it, whether the kernel is gone, and its title.

    `title` is what kernel CI calls every report of this kind (the start of its
    signature, lab.results.signature); "" where the title is read from the report.
    A host-made kind has no pattern: the host saw it, the console has no line for it.
    """

    kind: EventKind
    pattern: str
    fatal: bool = False
    title: str = ""


KERNEL_EVENTS: tuple[Event, ...] = (
    Event(EventKind.PANIC, r"Kernel panic - not syncing", fatal=True),
    Event(EventKind.KASAN, r"BUG: KASAN: "),
    Event(EventKind.UBSAN, r"UBSAN: "),
    Event(
        EventKind.LOCKDEP,
        r"WARNING: (?:possible (?:circular|recursive) locking|inconsistent lock state|suspicious RCU usage)",
    ),
    Event(EventKind.SOFTLOCKUP, r"watchdog: BUG: soft lockup", title="BUG: soft lockup"),
    Event(EventKind.HARDLOCKUP, r"(?:NMI )?watchdog: Watchdog detected hard LOCKUP", title="BUG: hard lockup"),
    Event(EventKind.RCU_STALL, r"rcu: INFO: rcu_\w+ (?:self-)?detected stall", title="INFO: rcu detected stall"),
    Event(EventKind.HUNG_TASK, r"INFO: task \S+ blocked for more than \d+ seconds", title="INFO: task hung"),
    Event(EventKind.OOPS, r"Oops(?::| -) ", title="Oops"),
    Event(EventKind.BUG, r"(?:kernel )?BUG: (?!KASAN)"),
    Event(EventKind.WARNING, r"WARNING: CPU: \d+ PID: \d+"),
    Event(EventKind.BOOT_TIMEOUT, "", fatal=True, title="boot timeout"),
    Event(EventKind.TIMEOUT, "", fatal=True, title="guest hang"),
    Event(EventKind.DIED, "", fatal=True, title="guest died"),
)
BY_KIND = {e.kind: e for e in KERNEL_EVENTS}
HOST_MADE = tuple(e.kind for e in KERNEL_EVENTS if not e.pattern)

_EVENT_RE = re.compile(
    "|".join(f"(?P<{e.kind.value}>^{_PREFIX}{e.pattern})" for e in KERNEL_EVENTS if e.pattern),
    re.MULTILINE,
)

# Lines the guest init prints, which tell boot phases apart.
INIT_STARTED = "klab-init: init started"
# The init could not set the guest up (a share missing...): the lab's fault, not the kernel's.
INIT_FATAL = "klab-init: FATAL: "
# Printed once sshd listens (SSH sessions): the forwarded port answers from then on.
SSHD_STARTED = "klab-init: sshd started"
# Printed when the command of a run has exited: the rest is the guest ending.
COMMAND_EXITED = "klab-init: command exited"
EXCERPT_LINES = 30
COMMAND_MARK = "# "  # starts a console log's first line: the QEMU command (qemu.Machine writes it), not guest output


@dataclass(frozen=True)
class KernelEvent(Record):
    """One report found on the console (or a host-made one): kind, where it starts, and the lines around it."""

    kind: EventKind
    offset: int
    excerpt: str
    fatal: bool

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", EventKind(self.kind))  # a kind given by its name is the same kind

    @property
    def title(self) -> str:
        """The report's first line without the timestamp: what a reader recognises."""
        first = self.excerpt.splitlines()[0] if self.excerpt.strip() else ""
        return strip_prefix(first).strip() or self.kind


def scan(text: str) -> list[KernelEvent]:
    """Every kernel report in a console log, in order."""
    events = []
    for match in _EVENT_RE.finditer(text):
        kind = EventKind(match.lastgroup or EventKind.BUG)
        events.append(KernelEvent(kind, match.start(), excerpt(text, match.start()), BY_KIND[kind].fatal))
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
    return "|".join(e.pattern for e in KERNEL_EVENTS if e.fatal and e.pattern)
