"""The main job: matrix -> kernel builds -> images -> cell specs.

`make test-kernel`, `klab test --matrix`, CI cells and bisect steps come
here. Builds run one at a time (each uses every core); guests then run
`jobs` at a time (lab.run.cellrun).
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import IO

from lab import arches
from lab.arches import Arch
from lab.image import build as image_build
from lab.image import recipes
from lab.kernel import build, kconfig, source
from lab.kernel.record import BuildManifest
from lab.results import knownfail
from lab.run import matrix
from lab.run.cellrun import CellSpec
from lab.run.progress import Progress
from lab.vm import bootfiles
from lab.vm.qemu import HOST_ROOTFS


def source_path(spec: str) -> Path:
    """`debian:6.12` (lab.yaml's `source:`, `--src`) is fetched into the cache; anything else is a path to a tree."""
    if spec.startswith("debian:"):
        return source.fetch(spec.split(":", 1)[1])
    return Path(spec).expanduser()


def build_kernel(
    src: Path,
    arch: Arch,
    fragments: tuple[str, ...],
    log: IO[str] = sys.stderr,
    build_dir: Path | None = None,
    progress: Progress | None = None,
    kept: bool = False,
) -> BuildManifest:
    """Build (or find up to date, or kept: see BuildRequest.kept) one kernel; returns its build.json."""
    loaded = tuple(kconfig.load_fragments(fragments, f"arch/{arch.name}"))
    req = build.BuildRequest(source.resolve(src), arch, loaded, build_dir=build_dir, kept=kept)
    kconfig.merged_request(req.fragments)
    return run_build(req, log, progress)


def run_build(req: build.BuildRequest, log: IO[str] = sys.stderr, progress: Progress | None = None) -> BuildManifest:
    """build.build with live progress (the run's, else its own), then one line: up to date, or built in N s."""
    start = time.monotonic()
    label = f"build {req.arch.name} {req.source.path.name}"
    with contextlib.nullcontext(progress) if progress is not None else Progress() as shown:
        shown.phase(label, "building")
        result = build.build(req, progress=shown.make_steps(label))
        state = "up to date" if result.up_to_date else f"built in {time.monotonic() - start:.0f}s"
        if result.reused:
            state = "kept from an earlier build of the same tree"
        shown.phase(label, "done", verdict=state)
    print(f"klab: {req.arch.name} {result.manifest.kernelrelease}: {state} ({result.manifest.build_dir})", file=log)
    for option, why in result.manifest.not_applicable.items():
        print(f"klab: CONFIG_{option} not requested: {why}", file=log)
    return result.manifest


def rootfs_for(arch: Arch, choice: str) -> tuple[str, str]:
    """(rootfs, image sha256): host for a native arch under `auto`, else the lab's image (built if needed)."""
    if choice == "auto":
        choice = HOST_ROOTFS if arches.is_native(arch) else "image"
    if choice == HOST_ROOTFS:
        return HOST_ROOTFS, ""
    if choice == "image":
        doc = image_build.build_image(arch, recipes.find_recipe(recipes.DEFAULT_RECIPE))
        return doc.image, doc.sha256
    bootfiles.check_rootfs_image(Path(choice))
    return choice, ""


def matrix_specs(
    mtx: matrix.Matrix,
    *,
    arch_names: tuple[str, ...] = (),
    suites: tuple[str, ...] = (),
    patterns: tuple[str, ...] = (),
    src_override: Path | None = None,
    accel: str = "auto",
    known: tuple[knownfail.Entry, ...] = (),
    repeat: int = 1,
    progress: Progress | None = None,
) -> list[CellSpec]:
    """Build every kernel x arch the matrix needs and turn its cells into runnable specs."""
    wanted_arches = {arches.get(a).name for a in arch_names} if arch_names else set(mtx.arches)
    cells = [c for c in mtx.cells() if c.arch in wanted_arches]
    builds: dict[tuple[str, str], BuildManifest] = {}
    rootfs: dict[str, tuple[str, str]] = {}
    specs = []
    for cell in cells:
        chosen = tuple(s for s in cell.suites if not suites or s in suites)
        if not chosen:
            continue  # before building: a cell that runs nothing needs no kernel
        arch = arches.get(cell.arch)
        key = (cell.kernel.name, arch.name)
        if key not in builds:
            src = src_override or source_path(cell.kernel.source)
            builds[key] = build_kernel(src, arch, cell.kernel.fragments, progress=progress)
        if arch.name not in rootfs:
            rootfs[arch.name] = rootfs_for(arch, cell.rootfs)
        specs.append(
            CellSpec(
                id=cell.id,
                arch=arch,
                kernel=builds[key].image,
                rootfs=rootfs[arch.name][0],
                image_hash=rootfs[arch.name][1],
                suites=chosen,
                patterns=patterns,
                append=cell.boot.append,
                accel=accel,
                build=builds[key],
                boot=cell.boot.name,
                known=known,
                repeat=repeat,
            )
        )
    return specs
