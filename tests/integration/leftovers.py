"""Whether a QEMU that one test's klab started outlived it.

Tests on other xdist workers boot the same kernel at the same time, so a
QEMU is matched by a tag in the environment it inherits from klab, never by
its command line.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path

TAG_VARIABLE = "KLAB_TEST_TAG"


def tagged_env(base: Mapping[str, str] | None = None, **extra: str) -> tuple[str, dict[str, str]]:
    """A fresh tag and the environment that carries it to klab and its QEMU."""
    tag = uuid.uuid4().hex
    return tag, {**(os.environ if base is None else base), **extra, TAG_VARIABLE: tag}


def qemus_tagged(tag: str) -> list[int]:
    """The pids of live QEMUs whose environment holds the tag."""
    wanted = f"{TAG_VARIABLE}={tag}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "comm").read_text().startswith("qemu-system"):
                continue
            if wanted in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:  # gone meanwhile: not left over
            continue
    return found


def assert_no_qemu_left(tag: str) -> None:
    left = qemus_tagged(tag)
    assert not left, f"QEMU outlived its klab: pids {left}"
