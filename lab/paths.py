"""Where kernel-lab keeps its caches: one root, so CI can save and restore it whole."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.errors import LabError, UserError


def cache_root() -> Path:
    """`$KLAB_CACHE`, else `$XDG_CACHE_HOME/kernel-lab`, else `~/.cache/kernel-lab`."""
    if os.environ.get("KLAB_CACHE"):
        return Path(os.environ["KLAB_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kernel-lab"


def check_cache_root() -> None:
    """Say once, before any work, what is wrong with the cache root: every stage and the crash log live in it."""
    root = cache_root()
    named = "KLAB_CACHE" if os.environ.get("KLAB_CACHE") else "the cache"
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UserError(f"{named} {root}: {existing} is not a directory; point KLAB_CACHE at a directory")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{named} {root}: {existing} is not writable by this user; point KLAB_CACHE elsewhere")


def require_free_space(where: Path, need_bytes: int) -> None:
    """Refuse before writing what cannot fit: on a full disk apt and unpackers fail half-way, or hang."""
    free = shutil.disk_usage(where).free
    if free < need_bytes:
        raise LabError(
            f"no space left on the device holding {where} (need about {need_bytes / 2**30:.1f} GB, "
            f"{free / 2**30:.1f} GB free); free some, or point KLAB_CACHE at a larger disk"
        )


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


PACKAGE = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE.parent
# The lab's home: fragments, recipes, suites, the guest's init, lab.yaml and known-failures.yaml.
# A checkout (or an editable install) uses the repository; a wheel (pip install ., pipx) carries a
# copy in lab/home, which is symlinks into the repository in a checkout.
HOME = REPO_ROOT if (REPO_ROOT / "suites" / "run.py").is_file() else PACKAGE / "home"
KCONFIGS = HOME / "kconfigs"
IMAGES = HOME / "images"
SUITES = HOME / "suites"
