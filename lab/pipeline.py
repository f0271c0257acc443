"""The main job: matrix -> kernel builds -> images -> cells -> reports.

`make test-kernel` and `klab test --matrix` come here. Builds run one at a
time (each uses every core); guests then run `jobs` at a time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from lab import arches, build, images, kconfig, matrix, source
from lab.arches import Arch
from lab.qemu import HOST_ROOTFS
from lab.testrun import CellSpec


def source_path(kernel: matrix.Kernel) -> Path:
    """`debian:6.12` is fetched into the cache; anything else is a path to a tree."""
    if kernel.source.startswith("debian:"):
        return source.fetch(kernel.source.split(":", 1)[1])
    return Path(kernel.source)


def build_kernel(  # type: ignore[no-untyped-def]
    src: Path, arch: Arch, fragments: tuple[str, ...], log=sys.stderr, build_dir: Path | None = None
) -> dict[str, Any]:
    """Build (or find up to date) one kernel; returns its build.json."""
    loaded = tuple(kconfig.load_fragments(fragments, f"arch/{arch.name}"))
    req = build.BuildRequest(source.resolve(src), arch, loaded, build_dir=build_dir)
    kconfig.merged_request(req.fragments)
    return run_build(req, log)


def run_build(req: build.BuildRequest, log=sys.stderr) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """build.build with a progress line while it runs and one line at the end: up to date, or built in N s."""
    start = time.monotonic()
    doc = build.build(req, progress=build.progress_printer(req.arch.name))
    if not doc.get("up_to_date") and sys.stderr.isatty():
        sys.stderr.write("\n")  # end the progress line
    state = "up to date" if doc.get("up_to_date") else f"built in {time.monotonic() - start:.0f}s"
    print(f"klab: {req.arch.name} {doc['kernelrelease']}: {state} ({req.directory()})", file=log)
    for option, why in (doc.get("not_applicable") or {}).items():
        print(f"klab: CONFIG_{option} not requested: {why}", file=log)
    return doc


def rootfs_for(arch: Arch, choice: str) -> tuple[str, str]:
    """(rootfs, image sha256): host for a native arch under `auto`, else the lab's image (built if needed)."""
    if choice == "auto":
        choice = HOST_ROOTFS if arches.is_native(arch) else "image"
    if choice == HOST_ROOTFS:
        return HOST_ROOTFS, ""
    if choice == "image":
        doc = images.build_image(arch, images.find_recipe(images.DEFAULT_RECIPE))
        return str(doc["image"]), str(doc["sha256"])
    return choice, ""


def matrix_specs(
    mtx: matrix.Matrix,
    *,
    arch_names: tuple[str, ...] = (),
    suites: tuple[str, ...] = (),
    patterns: tuple[str, ...] = (),
    src_override: Path | None = None,
    accel: str = "auto",
) -> list[CellSpec]:
    """Build every kernel x arch the matrix needs and turn its cells into runnable specs."""
    wanted_arches = {arches.get(a).name for a in arch_names} if arch_names else set(mtx.arches)
    cells = [c for c in mtx.cells() if c.arch in wanted_arches]
    builds: dict[tuple[str, str], dict[str, Any]] = {}
    rootfs: dict[str, tuple[str, str]] = {}
    specs = []
    for cell in cells:
        arch = arches.get(cell.arch)
        key = (cell.kernel.name, arch.name)
        if key not in builds:
            src = src_override or source_path(cell.kernel)
            builds[key] = build_kernel(src, arch, cell.kernel.fragments)
        if arch.name not in rootfs:
            rootfs[arch.name] = rootfs_for(arch, cell.rootfs)
        chosen = tuple(s for s in cell.suites if not suites or s in suites)
        if not chosen:
            continue
        doc = builds[key]
        specs.append(
            CellSpec(
                id=cell.id,
                arch=arch,
                kernel=Path(doc["artifacts"]["image"]),
                rootfs=rootfs[arch.name][0],
                image_hash=rootfs[arch.name][1],
                suites=chosen,
                patterns=patterns,
                append=cell.boot.append,
                expect_fail=cell.boot.expect_fail,
                accel=accel,
                build=doc,
                kernel_name=cell.kernel.name,
            )
        )
    return specs
