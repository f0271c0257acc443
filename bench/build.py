#!/usr/bin/env python3
"""Build benchmark: klab build against plain make, cold, no-op and incremental.

For one arch (default x86_64) on the fetched linux-source-6.12:
- cold: an empty build dir and an empty ccache (klab: a fresh KLAB_CACHE; make: a fresh O= dir, no ccache);
- no-op: the same build again with nothing changed;
- incremental: after touching security/landlock/task.c.
Plain make uses the .config klab produced, so both compile the same kernel.
Prints a table with the ratio klab/plain. Takes about 25 minutes on 2 cores.

Usage: bench/build.py [--arch x86_64] [--skip-cold]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lab import arches, source  # noqa: E402

TOUCHED = "security/landlock/task.c"


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def klab_argv(arch: str) -> list[str]:
    return [sys.executable, "-m", "lab", "build", "--arch", arch]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="x86_64")
    parser.add_argument("--skip-cold", action="store_true", help="only no-op and incremental (warm caches)")
    args = parser.parse_args()
    arch = arches.get(args.arch)
    tree = source.fetch("6.12")
    rows: dict[str, dict[str, float]] = {}
    scratch = Path(tempfile.mkdtemp(prefix="klab-bench-build-"))
    try:
        klab_env = dict(os.environ)
        if not args.skip_cold:
            klab_env["KLAB_CACHE"] = str(scratch / "cache")
            (scratch / "cache/src").mkdir(parents=True)
            (scratch / "cache/src/linux-6.12").symlink_to(tree)
            rows["cold"] = {"klab": timed(klab_argv(arch.name), klab_env)}
        else:
            subprocess.run(klab_argv(arch.name), env=klab_env, check=True, capture_output=True)
        rows["no-op"] = {"klab": timed(klab_argv(arch.name), klab_env)}
        os.utime(tree / TOUCHED)
        rows["incremental"] = {"klab": timed(klab_argv(arch.name), klab_env)}

        bdir = Path(
            subprocess.run(
                klab_argv(arch.name), env=klab_env, check=True, capture_output=True, text=True
            ).stdout.strip()
        )
        plain = scratch / "plain"
        plain.mkdir()
        shutil.copyfile(bdir / ".config", plain / ".config")
        make = ["make", "-C", str(tree), f"O={plain}", f"ARCH={arch.kernel_arch}", f"-j{os.cpu_count()}"]
        prefix = arches.cross_prefix(arch)
        if prefix:
            make.append(f"CROSS_COMPILE={prefix}")
        make.append(arch.image_target)
        env = dict(os.environ, KBUILD_BUILD_USER="klab", KBUILD_BUILD_HOST="kernel-lab")
        cold_make = timed(make, env)
        if not args.skip_cold:
            rows["cold"]["make"] = cold_make
        rows["no-op"]["make"] = timed(make, env)
        os.utime(tree / TOUCHED)
        rows["incremental"]["make"] = timed(make, env)
        subprocess.run(klab_argv(arch.name), env=klab_env, check=True, capture_output=True)  # leave klab's dir current
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"kernel build, {arch.name}, linux-source-6.12, {os.cpu_count()} CPUs (seconds)")
    print(f"{'case':<12} {'klab build':>11} {'plain make':>11} {'klab/plain':>11}")
    for case, row in rows.items():
        ratio = row["klab"] / row["make"] if row.get("make") else float("nan")
        print(f"{case:<12} {row['klab']:>11.1f} {row.get('make', float('nan')):>11.1f} {ratio:>11.2f}")
    print(f"(incremental = after touching {TOUCHED}; klab uses ccache and skips make when the tree is unchanged)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
