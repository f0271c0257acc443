"""Kernels kept by what they were built from: a clean git tree's content, the arch, fragments and compiler.

Bisect and try build commits that they, or an earlier run, built before: a warm
`make test` reruns the same scenarios, `klab try --each` builds base and tip
again. A git tree hash names the source exactly, so the finished kernel of
that tree is reused instead of rebuilt (even an incremental build relinks
vmlinux and regenerates its BTF: about 40 s here). What a boot and its checks
need is kept (image, .config, System.map, utsversion.h, the build log), not
vmlinux, and only the newest KEEP kernels.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from lab.git import git
from lab.kernel.record import MANIFEST, Artifacts, BuildManifest
from lab.kernel.source import digest
from lab.paths import cache_dir

KEEP = 40
UTS_HEADER = "include/generated/utsversion.h"


def content_key(tree: Path, *parts: str) -> str | None:
    """The key of the tree as checked out, with `parts` (arch, fragments...); None unless a clean git checkout.

    An untracked file counts as a change: a Makefile may pick it up.
    """
    status = git(tree, "status", "--porcelain", "--untracked-files=normal", check=False)
    if status.returncode != 0 or status.output.strip():
        return None
    head_tree = git(tree, "rev-parse", "--verify", "--quiet", "HEAD^{tree}", check=False)
    if head_tree.returncode != 0:
        return None
    return digest(head_tree.output.strip(), *parts)


def find(key: str) -> BuildManifest | None:
    """The kept kernel for `key`, or None; a hit counts as use, so the kernels used last stay."""
    entry = cache_dir("kernels") / key
    doc = BuildManifest.read_if_valid(entry / MANIFEST)
    if doc is None or not doc.image.is_file():
        return None
    os.utime(entry)
    return doc


def keep(key: str, doc: BuildManifest) -> None:
    """Copy what a boot needs of a finished build into the store (atomically), then drop the oldest."""
    root = cache_dir("kernels")
    final = root / key
    if final.is_dir():
        return
    tmp = root / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    bdir = doc.build_dir
    image = tmp / doc.image.relative_to(bdir)
    for source, target in (
        (doc.image, image),
        (Path(doc.artifacts.config), tmp / ".config"),
        (Path(doc.artifacts.system_map), tmp / "System.map"),
        (bdir / UTS_HEADER, tmp / UTS_HEADER),  # kernels before 6.1 have none: uts_version() says ""
        (Path(doc.artifacts.log), tmp / "build.log"),
    ):
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    kept = Artifacts(
        image=str(final / image.relative_to(tmp)),
        vmlinux="",  # not kept: hundreds of MB, and only a debugger of the build dir's own kernel needs it
        config=str(final / ".config"),
        system_map=str(final / "System.map"),
        log=str(final / "build.log"),
    )
    dataclasses.replace(doc, artifacts=kept).write(tmp / MANIFEST)
    try:
        tmp.rename(final)
    except OSError:  # a parallel worker kept the same kernel first
        shutil.rmtree(tmp, ignore_errors=True)
    _prune(root)


def _prune(root: Path) -> None:
    entries = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=os.path.getmtime)
    for old in entries[: max(0, len(entries) - KEEP)]:
        shutil.rmtree(old, ignore_errors=True)
