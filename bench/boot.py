#!/usr/bin/env python3
"""Boot benchmark: `klab run` against bare QEMU (the floor) and virtme-ng's `vng`, per arch, under TCG.

For each arch: time from start to the guest command's first output line and
to exit, median of N runs, for
- klab: `klab run --arch A --kernel K -- echo klab-bench-ready`;
- bare QEMU: the very QEMU command line klab would use (same kernel, same init,
  same shares), started directly with no harness: the floor;
- vng: `vng --run K --exec 'echo klab-bench-ready'` (virtme-ng from PyPI, in its
  own venv under the cache), x86_64 only, where it can boot the kernel.
Kernels are the lab's cached 6.12 builds. Prints a table and the ratios.

Usage: bench/boot.py [--runs 5] [--arches "x86_64 arm64"] [--no-vng]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab import arches  # noqa: E402
from lab.image import build  # noqa: E402
from lab.kernel import kconfig, source  # noqa: E402
from lab.paths import cache_dir  # noqa: E402
from lab.run import prepare  # noqa: E402
from lab.vm import accel, command, qemu  # noqa: E402

MARK = "klab-bench-ready"


def first_output_and_exit(
    argv: list[str], env: dict[str, str] | None = None, timeout: float = 120
) -> tuple[float, float]:
    """(seconds to the first line containing MARK, seconds to exit); nan for what never came within `timeout`."""
    start = time.monotonic()
    first = float("nan")
    with subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    ) as p:
        assert p.stdout is not None
        # The whole group: a tool's QEMU child would otherwise hold the pipe open.
        killer = threading.Timer(timeout, os.killpg, (p.pid, signal.SIGKILL))
        killer.start()
        for line in p.stdout:
            if MARK.encode() in line and first != first:
                first = time.monotonic() - start
        p.wait()
        killer.cancel()
    total = time.monotonic() - start
    return first, (float("nan") if total >= timeout else total)


def bare_qemu_argv(arch: arches.Arch, kernel: Path, rootfs: str, work: Path) -> list[str]:
    tcg = accel.Decision("tcg", "bench: the same accelerator for every tool")
    plan = command.make_plan(arch, kernel, tcg, rootfs=rootfs, workdir=work, results_dir=work / "r")
    qemu.prepare_control(plan, "run", f"echo {MARK}")
    return qemu.qemu_argv(plan)


def vng_argv(kernel: Path) -> list[str] | None:
    venv = cache_dir("bench") / "vng-venv"
    vng = venv / "bin/vng"
    if not vng.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        done = subprocess.run([str(venv / "bin/pip"), "install", "-q", "virtme-ng"], capture_output=True)
        if done.returncode != 0:
            return None
    # 9p like klab (virtiofs needs virtiofsd); vng finds its helpers (virtme-run) on PATH.
    # --verbose: on a kernel without what vng needs for its I/O ports, the output only shows on the console.
    return [str(vng), "--verbose", "--run", str(kernel), "--disable-kvm", "--force-9p", "--exec", f"echo {MARK}"]


def measure(argv_for_run: Callable[[], list[str]], runs: int, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Median (first output, exit) over `runs` runs; argv_for_run prepares each run afresh."""
    firsts, totals = [], []
    for _ in range(runs):
        first, total = first_output_and_exit(argv_for_run(), env)
        firsts.append(first)
        totals.append(total)
    return statistics.median(firsts), statistics.median(totals)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--arches", default="x86_64 arm64")
    parser.add_argument("--no-vng", action="store_true")
    args = parser.parse_args()
    rows = []
    for name in args.arches.split():
        arch = arches.get(name)
        doc = prepare.build_kernel(source.fetch("6.12"), arch, kconfig.DEFAULT_FRAGMENTS)
        kernel = Path(doc["artifacts"]["image"])
        rootfs = qemu.HOST_ROOTFS if arches.is_native(arch) else str(build.default_image(arch))
        rf = "host" if rootfs == qemu.HOST_ROOTFS else "image"
        klab = [sys.executable, "-m", "lab", "run", "--arch", name, "--kernel", str(kernel), "--accel", "tcg"]
        klab += ["--rootfs", rootfs, "--", "echo", MARK]
        work = Path(tempfile.mkdtemp(prefix="klab-bench-boot-"))
        try:
            bare = partial(bare_qemu_argv, arch, kernel, rootfs, work)
            rows.append((name, rf, "bare qemu", *measure(bare, args.runs)))
            rows.append((name, rf, "klab run", *measure(partial(list, klab), args.runs)))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if name == "x86_64" and not args.no_vng and arches.is_native(arch):
            vng = vng_argv(kernel)
            if vng is None:
                rows.append((name, "host", "vng", float("nan"), float("nan")))
            else:
                env = dict(os.environ, PATH=f"{Path(vng[0]).parent}:{os.environ['PATH']}")
                first, total = measure(partial(list, vng), args.runs, env)
                rows.append((name, "host", "vng", first, total))
    print(f"boot to first output and to exit, TCG, median of {args.runs} runs (seconds), {os.cpu_count()} CPUs")
    print(f"{'arch':<7} {'rootfs':<6} {'tool':<10} {'first output':>12} {'exit':>7} {'exit/floor':>10}")
    floors = {r[0]: r[4] for r in rows if r[2] == "bare qemu"}
    for arch_name, rf, tool, first, total in rows:
        ratio = total / floors[arch_name] if floors.get(arch_name) else float("nan")
        print(f"{arch_name:<7} {rf:<6} {tool:<10} {first:>12.2f} {total:>7.2f} {ratio:>10.2f}")
    print("nan: never came within 60 s (vng on this minimal kernel: no overlayfs, and no ACPI to power off,")
    print("so it prints the marker and then halts instead of exiting; klab reboots into QEMU's -no-reboot exit)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
