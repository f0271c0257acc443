"""`klab`: the command line. The only place that turns errors into exit codes."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from lab import (
    arches,
    bisect,
    build,
    debian,
    export,
    images,
    kconfig,
    manifest,
    matrix,
    pipeline,
    probe,
    qemu,
    report,
    results,
    runner,
    session,
    source,
    testrun,
)
from lab.errors import EXIT_USAGE, BuildError, KernelFailure, LabBaseError, UserError
from lab.paths import REPO_ROOT


def _add_build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--src", type=Path, help="kernel source tree (default: the fetched linux-source-6.12)")
    p.add_argument("--version", default=source.DEFAULT_VERSION, help="linux-source version when --src is not given")
    p.add_argument("--arch", required=True, help="x86_64 or arm64")
    p.add_argument(
        "-f",
        "--fragment",
        dest="fragments",
        action="append",
        help=f"kconfig fragment name from kconfigs/ or a path (default: {' '.join(kconfig.DEFAULT_FRAGMENTS)})",
    )
    p.add_argument("--llvm", action="store_true", help="build with LLVM=1 (clang, lld)")
    p.add_argument("--build-dir", type=Path, help="build here instead of the cache")
    p.add_argument("-j", "--jobs", type=int, default=None, help="parallel make jobs (default: nproc)")


def build_request(args: argparse.Namespace) -> build.BuildRequest:
    """Validate every build input before anything runs."""
    arch = arches.get(args.arch)
    src_path = args.src if args.src else source.fetch(args.version)
    src = source.resolve(src_path)
    fragments = kconfig.load_fragments(args.fragments or kconfig.DEFAULT_FRAGMENTS, f"arch/{arch.name}")
    kconfig.merged_request(fragments)
    extra = {"jobs": args.jobs} if args.jobs else {}
    return build.BuildRequest(src, arch, tuple(fragments), llvm=args.llvm, build_dir=args.build_dir, **extra)


def cmd_source_fetch(args: argparse.Namespace) -> int:
    if args.list:
        for offer in debian.Archive().kernel_sources():
            version = offer.package.removeprefix("linux-source-")
            print(f"{version:<6} {offer.package} {offer.version} ({offer.suite})")
        return 0
    print(source.fetch(args.version))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    req = build_request(args)
    build.preflight(req)
    print(build.configure_dir(req, req.directory(), req.directory() / "config.log"))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    req = build_request(args)
    print(f"$ {' '.join(build.make_argv(req, req.directory(), req.arch.image_target))}", file=sys.stderr)
    pipeline.run_build(req)
    print(req.directory())
    return 0


def _add_boot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", required=True, help="x86_64 or arm64")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--build", type=Path, help="a klab build dir (reads its build.json)")
    which.add_argument("--kernel", type=Path, help="any kernel image (bzImage / Image)")
    p.add_argument(
        "--rootfs",
        default=None,
        help="host (this machine's / over 9p, same arch only), image (the lab's Debian image), "
        "or the path of an ext4 image (default: host when the arch is native, else image)",
    )
    p.add_argument("--append", default="", help="extra kernel command line")
    p.add_argument("--mem", type=int, default=0, help="guest memory in MiB")
    p.add_argument("--cpus", type=int, default=0, help="guest CPUs")
    p.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    p.add_argument("--timeout", type=float, default=600, help="seconds for the command (stretched under TCG)")


def kernel_path(args: argparse.Namespace, arch: arches.Arch) -> Path:
    """The kernel image from --kernel, or from the build dir's manifest."""
    if args.kernel:
        return Path(args.kernel)
    doc = manifest.read(Path(args.build) / build.MANIFEST)
    if doc is None:
        raise UserError(f"{args.build} has no build.json: not a finished klab build dir (run `klab build` first)")
    if doc["arch"] != arch.name:
        raise UserError(f"{args.build} is an {doc['arch']} build, not {arch.name}; pass --arch {doc['arch']}")
    return Path(doc["artifacts"]["image"])


def rootfs_for(args: argparse.Namespace, arch: arches.Arch) -> str:
    choice = args.rootfs or (qemu.HOST_ROOTFS if arches.is_native(arch) else "image")
    if choice == "image":
        return str(images.default_image(arch))
    return choice


def boot_plan(args: argparse.Namespace, **extra: object) -> qemu.BootPlan:
    arch = arches.get(args.arch)
    kernel = kernel_path(args, arch)
    qemu.check_kernel_image(arch, kernel)
    return runner.make_plan(
        arch,
        kernel,
        rootfs=rootfs_for(args, arch),
        accel_request=args.accel,
        append=args.append,
        memory_mb=args.mem,
        cpus=args.cpus,
        **extra,  # type: ignore[arg-type]
    )


def cmd_run(args: argparse.Namespace) -> int:
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        raise UserError("no command given: klab run ... -- CMD [ARGS...]")
    plan = boot_plan(args)
    print(f"$ {shlex.join(qemu.qemu_argv(plan))}", file=sys.stderr)
    print(f"klab: accel {plan.accel.accel} ({plan.accel.why})", file=sys.stderr)
    result = runner.run_command(plan, shlex.join(command), timeout=args.timeout, stream=sys.stdout)
    print(
        f"klab: exit {result.exit_status}, boot {result.boot_seconds:.1f}s, total {result.total_seconds:.1f}s, "
        f"console {result.console_log}",
        file=sys.stderr,
    )
    for event in result.events:
        print(f"klab: kernel {event.kind}: {event.title}", file=sys.stderr)
    return result.exit_status


def cmd_shell(args: argparse.Namespace) -> int:
    if args.ssh:
        plan = boot_plan(args, ssh_port=qemu.free_port())
        with session.SSHSession(plan) as sess:
            print(f"klab: guest up in {sess.boot_seconds:.1f}s; ssh session (exit to power off)", file=sys.stderr)
            return session.interactive_ssh(sess)
    plan = boot_plan(args)
    qemu.prepare_control(plan, "shell")
    with qemu.Machine(plan) as vm:
        assert vm.child is not None
        vm.child.logfile_read = None
        vm.child.interact(escape_character=None)
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    report = probe.collect()
    print(probe.render(report))
    return 0


def _kernel_label(doc: dict[str, object] | None, kernel: Path) -> str:
    """Short kernel name for cell ids: major.minor of the build, else the image file name."""
    release = str(doc.get("kernelrelease", "")) if doc else ""
    return ".".join(release.split(".")[:2]) if release else kernel.stem


def _default_results() -> Path:
    return Path("results") / time.strftime("run-%Y%m%d-%H%M%S")


def _single_kernel_specs(args: argparse.Namespace) -> list[testrun.CellSpec]:
    arch = arches.get(args.arch)
    kernel = kernel_path(args, arch)
    qemu.check_kernel_image(arch, kernel)
    doc = testrun.build_manifest(Path(args.build)) if args.build else None
    suites = tuple(args.suite or matrix.ALL_SUITES)
    for suite in suites:
        matrix.check_suite(suite)
    rootfs, image_hash = pipeline.rootfs_for(arch, args.rootfs or "auto")
    label = _kernel_label(doc, kernel)
    groups = [(s,) for s in suites] if args.jobs > 1 and len(suites) > 1 else [suites]
    specs = []
    for group in groups:
        suffix = f"-{group[0]}" if len(groups) > 1 else ""
        specs.append(
            testrun.CellSpec(
                id=f"{arch.name}.{label}.default{suffix}",
                arch=arch,
                kernel=kernel,
                rootfs=rootfs,
                image_hash=image_hash,
                suites=group,
                patterns=tuple(args.patterns),
                append=args.append,
                accel=args.accel,
                memory_mb=args.mem,
                cpus=args.cpus,
                build=doc,
                kernel_name=label,
            )
        )
    return specs


def _run_and_report(specs: list[testrun.CellSpec], results_dir: Path, jobs: int, argv: list[str]) -> int:
    if not specs:
        raise UserError("nothing to run: no cell matches the requested arches and suites")
    start = time.time()
    print(f"klab: {len(specs)} cell(s), {jobs} at a time; results in {results_dir}", file=sys.stderr)
    cells = testrun.run_cells(specs, results_dir, jobs)
    meta = {"argv": argv, "started": start, "wall_seconds": round(time.time() - start, 2), "jobs": jobs}
    testrun.write_reports(results_dir, cells, meta)
    print(report.summary_table(cells))
    print(f"klab: results: {results_dir}/results.json, junit.xml, results.ktap, console-*.log", file=sys.stderr)
    return results.exit_status(cells)


def cmd_test(args: argparse.Namespace) -> int:
    results_dir = Path(args.results) if args.results else _default_results()
    if args.matrix:
        mtx = matrix.load(Path(args.matrix))
        specs = pipeline.matrix_specs(
            mtx,
            arch_names=tuple(args.arches),
            suites=tuple(args.suite or ()),
            patterns=tuple(args.patterns),
            accel=args.accel,
        )
    else:
        if not args.arch or not (args.build or args.kernel):
            raise UserError("klab test needs --arch and --build DIR or --kernel PATH, or --matrix FILE")
        specs = _single_kernel_specs(args)
    return _run_and_report(specs, results_dir, args.jobs, sys.argv)


def cmd_test_kernel(args: argparse.Namespace) -> int:
    """`make test-kernel`: the matrix in lab.yaml, optionally on the user's tree and a subset of arches."""
    results_dir = Path(args.results) if args.results else _default_results()
    mtx = matrix.load(Path(args.matrix))
    for suite in args.suite or ():
        matrix.check_suite(suite)
    specs = pipeline.matrix_specs(
        mtx,
        arch_names=tuple(args.arches.split()) if args.arches else (),
        suites=tuple(args.suite or ()),
        patterns=tuple(args.patterns),
        src_override=Path(args.src) if args.src else None,
        accel=args.accel,
    )
    return _run_and_report(specs, results_dir, args.jobs, sys.argv)


def _add_test_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", action="append", help="suite to run (repeatable; default: all)")
    p.add_argument("-k", dest="patterns", action="append", default=[], help="only tests whose SUITE.TEST contains this")
    p.add_argument("--results", help="results directory (default: results/run-DATE)")
    p.add_argument("-n", "--jobs", type=int, default=1, help="guests to run at once")
    p.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="klab", description="Build, boot and test Linux kernels for the LSMs.")
    sub = p.add_subparsers(dest="command", required=True)

    src = sub.add_parser("source", help="kernel source trees").add_subparsers(dest="source_command", required=True)
    fetch = src.add_parser("fetch", help="download and unpack Debian's linux-source-X; print its path")
    fetch.add_argument(
        "--version", default=source.DEFAULT_VERSION, help="MAJOR.MINOR of linux-source-X.Y (default: %(default)s)"
    )
    fetch.add_argument("--list", action="store_true", help="print the linux-source versions the archive offers")
    fetch.set_defaults(func=cmd_source_fetch)

    cfg = sub.add_parser("config", help="make and validate the .config from fragments")
    _add_build_args(cfg)
    cfg.set_defaults(func=cmd_config)

    bld = sub.add_parser("build", help="configure, validate and build a kernel; print the build dir")
    _add_build_args(bld)
    bld.set_defaults(func=cmd_build)

    run = sub.add_parser("run", help="boot a kernel, run CMD in the guest, exit with its status")
    _add_boot_args(run)
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    run.set_defaults(func=cmd_run)

    sh = sub.add_parser("shell", help="boot a kernel and give an interactive shell (console, or --ssh)")
    _add_boot_args(sh)
    sh.add_argument("--ssh", action="store_true", help="use SSH (paramiko) instead of the serial console")
    sh.set_defaults(func=cmd_shell)

    prb = sub.add_parser("probe", help="what this host can do: QEMU, compilers, KVM (really tried), images")
    prb.set_defaults(func=cmd_probe)

    tst = sub.add_parser("test", help="run the suites in guests; write KTAP, JUnit, JSON and a summary")
    tst.add_argument("--matrix", help="a matrix file such as lab.yaml (kernels x arches x boots x suites)")
    tst.add_argument("--arch", help="x86_64 or arm64 (with --build or --kernel)")
    tst.add_argument("--arches", nargs="*", default=[], help="with --matrix: only these arches")
    tst.add_argument("--build", type=Path, help="a klab build dir")
    tst.add_argument("--kernel", type=Path, help="any kernel image")
    tst.add_argument("--rootfs", default=None, help="host, image, or an ext4 image path (default: auto)")
    tst.add_argument("--append", default="", help="extra kernel command line")
    tst.add_argument("--mem", type=int, default=0)
    tst.add_argument("--cpus", type=int, default=0)
    _add_test_selection(tst)
    tst.set_defaults(func=cmd_test)

    tk = sub.add_parser("test-kernel", help="the main job: build, image, boot and test the whole matrix")
    tk.add_argument("--matrix", default=str(REPO_ROOT / "lab.yaml"), help="matrix file (default: lab.yaml)")
    tk.add_argument("--src", help="kernel tree to use instead of the matrix's sources")
    tk.add_argument("--arches", default="", help='space-separated arches (default: the matrix\'s), e.g. "x86_64"')
    _add_test_selection(tk)
    tk.set_defaults(func=cmd_test_kernel)

    images.register_cli(sub)
    bisect.register_cli(sub)
    export.register_cli(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BuildError as exc:
        print(f"klab: error: {exc}", file=sys.stderr)
        if exc.tail:
            print(exc.tail, file=sys.stderr)
        if exc.log:
            print(f"klab: full log: {exc.log}", file=sys.stderr)
        return exc.exit_code
    except KernelFailure as exc:
        print(f"klab: kernel failure ({exc.kind}): {exc}", file=sys.stderr)
        if exc.excerpt:
            print(exc.excerpt, file=sys.stderr)
        if exc.console_log:
            print(f"klab: console log: {exc.console_log}", file=sys.stderr)
        return exc.exit_code
    except LabBaseError as exc:
        print(f"klab: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("klab: interrupted", file=sys.stderr)
        return 130
    return EXIT_USAGE
