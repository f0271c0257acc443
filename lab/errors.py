"""The three kinds of failure, kept apart because bisect and CI act on each differently.

Only `lab.cli` maps them to exit codes (see EXIT_* below and the README).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1  # tests failed or the kernel is bad
EXIT_USAGE = 2  # bad input: nothing was run, nothing half-written
EXIT_TIMEOUT = 124  # klab run: the guest command outlived --timeout (timeout(1)'s code), the kernel said nothing
EXIT_UNTESTABLE = 125  # could not test this kernel (build failure, unrelated boot failure)
EXIT_LAB = 128  # lab infrastructure fault: never a verdict on the kernel
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: what finished is reported, marked interrupted


def did_you_mean(words: Iterable[str], choices: Iterable[str], n: int = 1) -> str:
    """'did you mean A or B?': up to n choices close to each misspelt word, '' when none is close.

    Every "unknown X" message of the lab says it the same way: commands,
    options and suite names alike.
    """
    known = list(choices)
    near = [m for word in words for m in difflib.get_close_matches(word, known, n=n)]
    return f"did you mean {' or '.join(dict.fromkeys(near))}?" if near else ""


class LabBaseError(Exception):
    """Base of kernel-lab's own errors; the message is one line a user can act on."""

    exit_code = EXIT_LAB

    def report(self) -> list[str]:
        """What the terminal gets: the one line, then whatever evidence the error carries."""
        return [f"klab: error: {self}"]


class UserError(LabBaseError):
    """Bad input: an unknown arch, a missing tree, a malformed fragment."""

    exit_code = EXIT_USAGE


class LabError(LabBaseError):
    """The host could not do its part: QEMU, an image, SSH, the disk."""

    exit_code = EXIT_LAB


class BuildError(LabBaseError):
    """The kernel did not build (or its config could not be satisfied): untestable, not bad."""

    exit_code = EXIT_UNTESTABLE

    def __init__(self, message: str, log: Path | None = None, tail: str = "") -> None:
        super().__init__(message)
        self.log = log
        self.tail = tail

    def report(self) -> list[str]:
        return [*super().report(), *_present(self.tail, f"klab: full log: {self.log}" if self.log else "")]


class ConfigMismatch(LabBaseError):
    """Requested kconfig options did not land in the final .config."""

    exit_code = EXIT_FAILED


class CommandTimeout(LabBaseError):
    """A guest command outlived its deadline while the kernel reported nothing: the command's, not the kernel's."""

    exit_code = EXIT_TIMEOUT

    def __init__(self, message: str, tail: str = "") -> None:
        super().__init__(message)
        self.tail = tail

    def report(self) -> list[str]:
        return [*super().report(), *_present(self.tail)]


class KernelFailure(LabBaseError):
    """The kernel misbehaved: panic, oops, hang, splat."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, kind: str = "", excerpt: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.excerpt = excerpt
        self.console_log: Path | None = None
        self.memory_dump: Path | None = None  # the guest's memory (ELF), when the run asked for it

    def report(self) -> list[str]:
        first = f"klab: kernel failure ({self.kind}): {self}"
        log = f"klab: console log: {self.console_log}" if self.console_log else ""
        return [first, *_present(self.excerpt, log)]


def _present(*lines: str) -> list[str]:
    return [line for line in lines if line]
