"""Manifests beside artifacts (build.json, image.json, results.json), written atomically."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def write(path: Path, doc: Any) -> None:
    """Write JSON to a temporary file beside `path`, then rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read(path: Path) -> dict[str, Any] | None:
    """The manifest at `path`, or None when it is missing or unreadable (an unfinished stage)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def sha256(path: Path) -> str:
    """Content hash of an artifact a manifest records (a .config, a disk image), read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
