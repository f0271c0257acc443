"""Where kernel-lab keeps its caches: one root, so CI can save and restore it whole."""

from __future__ import annotations

import os
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


REPO_ROOT = Path(__file__).resolve().parent.parent
KCONFIGS = REPO_ROOT / "kconfigs"
IMAGES = REPO_ROOT / "images"
SUITES = REPO_ROOT / "suites"
