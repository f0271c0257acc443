"""Arguments shared by several commands, spelled the same everywhere, and checked before any work starts."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from lab import arches
from lab.errors import UserError
from lab.kernel import build, kconfig, record, source
from lab.kernel.record import BuildManifest
from lab.run import prepare
from lab.vm import accel, bootfiles, command, qemu

ACCELS = ("auto", "kvm", "tcg")


ARCH_HELP = "the guest's arch: " + ", ".join(
    f"{a.name}{f' (or {chr(47).join(a.aliases)})' if a.aliases else ''}"
    for a in sorted(arches.ARCHES.values(), key=lambda a: a.name)
)


def add_arch(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--arch", required=required, help=ARCH_HELP)


def split_words(values: list[str] | None) -> list[str]:
    """`--arches x86_64 arm64`, `--arches x86_64,arm64` and `--arches "x86_64 arm64"` all mean the same."""
    return [word for value in values or [] for word in value.replace(",", " ").split()]


def add_arches(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--arches", action="extend", nargs="+", metavar="ARCH", help="only these arches of the matrix (default: all)"
    )


def add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--src",
        default=f"debian:{source.DEFAULT_VERSION}",
        help="kernel tree: a directory, or debian:X.Y for Debian's linux-source-X.Y (default: %(default)s)",
    )


def add_fragments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-f",
        "--fragment",
        dest="fragments",
        action="append",  # one value each: `-f debug SERIES` must leave SERIES to the positional
        default=[],
        metavar="FRAG",
        help=f"kconfig fragment (a name from kconfigs/ or a .config path) added to the defaults "
        f"({' '.join(kconfig.DEFAULT_FRAGMENTS)}); repeatable: -f debug -f my.config",
    )
    p.add_argument(
        "--bare",
        action="store_true",
        help="start from no fragment at all: only the -f ones, plus arch/<arch> (which needs what base.config sets)",
    )


def fragment_names(args: argparse.Namespace) -> list[str]:
    """The fragments a build uses: the defaults plus -f, or only -f with --bare; each once, in order."""
    names = list(args.fragments) if args.bare else [*kconfig.DEFAULT_FRAGMENTS, *args.fragments]
    if args.bare and not names:
        raise UserError("--bare needs at least one -f FRAG (the arch fragment alone cannot boot)")
    return list(dict.fromkeys(names))


def build_request(args: argparse.Namespace) -> build.BuildRequest:
    """Validate every build input before anything runs (the tree is fetched when it is debian:X.Y)."""
    arch = arches.get(args.arch)
    fragments = kconfig.load_fragments(fragment_names(args), f"arch/{arch.name}")
    kconfig.merged_request(fragments)
    src = source.resolve(prepare.source_path(args.src))
    extra = {"jobs": args.jobs} if getattr(args, "jobs", None) else {}
    return build.BuildRequest(src, arch, tuple(fragments), llvm=args.llvm, build_dir=args.build_dir, **extra)


def add_kernel_choice(p: argparse.ArgumentParser, required: bool = True) -> None:
    which = p.add_mutually_exclusive_group(required=required)
    which.add_argument("--build", type=Path, help="a klab build dir (reads its build.json)")
    which.add_argument("--kernel", type=Path, help="any kernel image (bzImage / Image)")


def kernel_of(args: argparse.Namespace, arch: arches.Arch) -> tuple[Path, BuildManifest | None]:
    """The kernel image from --kernel, or from the build dir's manifest (checked against --arch)."""
    if args.kernel:
        bootfiles.check_kernel_image(arch, Path(args.kernel))
        return Path(args.kernel), None
    doc = record.load(Path(args.build), arch)
    bootfiles.check_kernel_image(arch, doc.image)
    warn_past_nr_cpus(getattr(args, "cpus", 0), Path(doc.artifacts.config))
    return doc.image, doc


def warn_past_nr_cpus(cpus: int, config: Path) -> None:
    """QEMU starts every `-smp` CPU but the kernel brings up at most CONFIG_NR_CPUS: say so, not silently fewer."""
    limit = kconfig.read_config(config).get("NR_CPUS", "") if cpus and config.is_file() else ""
    if limit.isdigit() and cpus > int(limit):
        print(
            f"klab: warning: --cpus {cpus}, but the kernel has CONFIG_NR_CPUS={limit}: the guest brings up {limit};"
            " raise CONFIG_NR_CPUS in a fragment (--fragment) and rebuild",
            file=sys.stderr,
        )


_MEMORY_UNITS = {"": 1, "M": 1, "MB": 1, "MIB": 1, "G": 1024, "GB": 1024, "GIB": 1024}


def memory_mib(text: str) -> int:
    """`--mem`: plain MiB or with a unit; argparse turns the error into exit 2 with the option's name."""
    number = text.rstrip("MmGgIiBb")
    unit = text[len(number) :].upper()
    if not number.isdigit() or unit not in _MEMORY_UNITS or int(number) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size: give MiB (512) or a unit (512M, 2G)")
    return int(number) * _MEMORY_UNITS[unit]


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def add_guest(p: argparse.ArgumentParser) -> None:
    """How the guest boots: rootfs, command line, size, accelerator."""
    p.add_argument(
        "--rootfs",
        default="auto",
        help="host (this machine's / over 9p, same arch only), image (the lab's Debian image), "
        "or the path of an ext4 image (default: host when the arch is native, else image)",
    )
    p.add_argument("--append", default="", help="extra kernel command line")
    p.add_argument(
        "--mem", type=memory_mib, default=0, help="guest memory: MiB, or with a unit (512M, 2G; default: the arch's)"
    )
    p.add_argument("--cpus", type=positive_int, default=0, help="guest CPUs (default: the arch's)")
    p.add_argument("--accel", default="auto", choices=ACCELS, help="auto: KVM only where a probe guest really boots")


GDB_PORT = 1234


def add_gdb(p: argparse.ArgumentParser, wait: bool = False) -> None:
    """--gdb; with `wait`, --gdb-wait too (a guest a person boots, where someone is there to continue it)."""
    p.add_argument(
        "--gdb",
        nargs="?",
        type=int,
        const=GDB_PORT,
        metavar="PORT",
        help=f"QEMU's gdbstub on 127.0.0.1:PORT (default {GDB_PORT}), the kernel booted with nokaslr; "
        "klab prints the gdb-multiarch command (build with -f debug for lx-symbols)",
    )
    if wait:
        p.add_argument(
            "--gdb-wait",
            nargs="?",
            type=int,
            const=GDB_PORT,
            metavar="PORT",
            help="as --gdb, and the guest's CPUs wait (QEMU's -S) until gdb says `continue`; "
            "no boot deadline meanwhile (klab run's --timeout still counts the wait)",
        )


def gdb_choice(args: argparse.Namespace) -> tuple[int | None, bool]:
    """(gdbstub port or None, whether the guest waits for gdb): --gdb-wait implies --gdb."""
    port, wait = getattr(args, "gdb", None), getattr(args, "gdb_wait", None)
    if wait is None:
        return port, False
    if port is not None and port != wait:
        raise UserError(f"--gdb {port} and --gdb-wait {wait} name two ports; give --gdb-wait alone (it implies --gdb)")
    return wait, True


def boot_plan(args: argparse.Namespace, workdir: Path, **extra: object) -> qemu.BootPlan:
    """The plan of a guest a person boots (`klab run`, `klab shell`): its console and share live in `workdir`."""
    arch = arches.get(args.arch)
    kernel, _ = kernel_of(args, arch)
    rootfs, _ = prepare.rootfs_for(arch, args.rootfs)
    gdb_port, gdb_wait = gdb_choice(args)
    plan = command.make_plan(
        arch,
        kernel,
        accel.decide(arch, args.accel),
        workdir=workdir,
        rootfs=rootfs,
        append=args.append,
        memory_mb=args.mem,
        cpus=args.cpus,
        gdb_port=gdb_port,
        **extra,  # type: ignore[arg-type]
    )
    return dataclasses.replace(plan, gdb_wait=True) if gdb_wait else plan


def add_selection(p: argparse.ArgumentParser) -> None:
    """Which tests: suites and -k patterns, as in suites/run.py."""
    p.add_argument("--suite", action="append", default=[], help="suite to run (repeatable; default: all)")
    p.add_argument("-k", dest="patterns", action="append", default=[], help="only tests whose SUITE.TEST contains this")
