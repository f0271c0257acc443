"""Commands that make things: `klab source`, `config`, `build`, `image build`, and `probe` (what the host can make)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from lab import arches, debian
from lab.cli import args as common
from lab.cli import probe
from lab.image import build as image_build
from lab.image import recipes
from lab.kernel import build, source
from lab.run import prepare
from lab.run.progress import Progress, mmdebstrap_step


def cmd_source_fetch(args: argparse.Namespace) -> int:
    if args.list:
        offers, age = debian.Archive().kernel_sources()
        for offer in offers:
            version = offer.package.removeprefix("linux-source-")
            print(f"{version:<6} {offer.package} {offer.version} ({offer.suite})")
        if age:
            print(
                f"klab: the archive's answer from {age / 60:.0f} min ago (asked again when its lists refresh, daily)",
                file=sys.stderr,
            )
        return 0
    print(source.fetch(source.check_version(args.version)))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    req = common.build_request(args)
    build.preflight(req)
    print(build.configure_dir(req, req.directory(), req.directory() / "config.log"))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    req = common.build_request(args)
    print(f"$ {shlex.join(build.make_argv(req, req.directory(), req.arch.image_target))}", file=sys.stderr)
    prepare.run_build(req)
    print(req.directory())
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    print(probe.render(probe.collect()))
    return 0


def cmd_image_build(args: argparse.Namespace) -> int:
    arch = arches.get(args.arch)
    recipe_path = recipes.find_recipe(args.recipe)
    recipe = recipes.load_recipe(recipe_path)
    hit = image_build.cached_image(recipe, arch) is not None
    if not hit:
        rootfs = image_build.image_dir(recipe, arch).with_name("<tmp>") / "rootfs"
        mirror = recipe.mirror or debian.archive_uri()
        print(f"$ {shlex.join(image_build.mmdebstrap_argv(recipe, arch, rootfs, mirror))}", file=sys.stderr)
    label = f"image {recipe.name} {arch.name}"
    with Progress() as progress:
        progress.phase(label, "building")
        doc = image_build.build_image(arch, recipe_path, progress.make_steps(label, mmdebstrap_step))
        progress.phase(label, "done", verdict="up to date" if hit else "built")
    state = "up to date" if hit else f"built in {doc.duration:.0f}s"
    print(f"{recipe.name} {arch.name}: {state}, {doc.allocated_bytes >> 20} MiB used", file=sys.stderr)
    print(doc.image)
    return 0


def _add_build_args(p: argparse.ArgumentParser) -> None:
    common.add_source(p)
    common.add_arch(p)
    common.add_fragments(p)
    p.add_argument("--llvm", action="store_true", help="build with LLVM=1 (clang, lld)")
    p.add_argument("--build-dir", type=Path, help="build here instead of the cache")
    p.add_argument("-j", "--jobs", type=common.positive_int, default=None, help="parallel make jobs (default: nproc)")


def register(sub: Any) -> None:
    src = sub.add_parser(
        "source", help="kernel source trees", epilog="example: klab source fetch --version 7.3"
    ).add_subparsers(dest="source_command", required=True)
    fetch = src.add_parser(
        "fetch",
        help="download and unpack Debian's linux-source-X.Y once; print its path",
        epilog="example: klab source fetch --version 7.3    (klab source fetch --list: what the archive has)",
    )
    fetch.add_argument("--version", default=source.DEFAULT_VERSION, help="X.Y of linux-source-X.Y (default: 6.12)")
    fetch.add_argument("--list", action="store_true", help="print the linux-source versions the archive offers")
    fetch.set_defaults(func=cmd_source_fetch)

    cfg = sub.add_parser(
        "config",
        help="make the .config from fragments and prove every requested option landed",
        epilog="example: klab config --src debian:7.3 --arch arm64 -f debug",
    )
    _add_build_args(cfg)
    cfg.set_defaults(func=cmd_config)

    bld = sub.add_parser(
        "build",
        help="configure, validate and build a kernel; print the build dir",
        epilog="example: klab build --src ~/linux --arch x86_64 -f my-extra.config",
    )
    _add_build_args(bld)
    bld.set_defaults(func=cmd_build)

    img = sub.add_parser(
        "image", help="guest root filesystems", epilog="example: klab image build --arch arm64"
    ).add_subparsers(dest="image_command", required=True)
    ib = img.add_parser(
        "build",
        help="build (or reuse) a guest image from a recipe in images/; print its path",
        epilog="example: klab image build --arch arm64",
    )
    common.add_arch(ib)
    ib.add_argument("--recipe", default=recipes.DEFAULT_RECIPE, help="recipe name or path (default: %(default)s)")
    ib.set_defaults(func=cmd_image_build)

    prb = sub.add_parser(
        "probe",
        help="what this host can do: QEMU, compilers, pahole, KVM (really tried), images",
        epilog="example: klab probe",
    )
    prb.set_defaults(func=cmd_probe)
