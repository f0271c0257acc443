"""Where kernel-lab keeps its caches: one root, so CI can save and restore it whole."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_root() -> Path:
    """`$KLAB_CACHE`, else `$XDG_CACHE_HOME/kernel-lab`, else `~/.cache/kernel-lab`."""
    if os.environ.get("KLAB_CACHE"):
        return Path(os.environ["KLAB_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kernel-lab"


def cache_dir(*parts: str) -> Path:
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def exclusive(entry: Path) -> Iterator[None]:
    """Hold `entry`.lock: parallel workers (xdist, CI jobs) that need the same cache entry wait for
    the first one to make it, instead of making it twice or deleting it under each other."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.with_name(entry.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


REPO_ROOT = Path(__file__).resolve().parent.parent
KCONFIGS = REPO_ROOT / "kconfigs"
IMAGES = REPO_ROOT / "images"
SUITES = REPO_ROOT / "suites"
