#!/usr/bin/env python3
"""Build benchmark: `klab build` against plain `make` on the same .config, measured fairly.

For one kernel (Debian's linux-source-X.Y) and one arch:
- cold: an empty build dir; klab with an empty ccache (a fresh KLAB_CACHE), klab with ccache
  disabled (CCACHE_DISABLE=1: what klab itself costs; the difference is ccache's own share),
  and plain make with no ccache. Before each cold run the tree is read once (page cache warm for
  everyone), and the runs alternate plain make first and klab first over --rounds rounds;
- no-op: the same build again with nothing changed;
- incremental: after touching security/landlock/task.c;
- second tree: a copy of the tree laid out like the cache (X/src/linux-X.Y, built in
  X/build/ARCH), empty build dir, ccache warm from the first klab build: what a bisect's or a
  patch series' first build costs.
Plain make uses the .config klab produced, so both compile the same kernel. Prints a table with
the ratios klab/plain and ccache's statistics. Takes about an hour per kernel on 2 cores.

Usage: bench/build.py [--version 6.12] [--arch x86_64] [--rounds 1]
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

from lab import arches  # noqa: E402
from lab.kernel import source  # noqa: E402

TOUCHED = "security/landlock/task.c"


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def warm_page_cache(tree: Path) -> None:
    """Read every file of the tree once, so no run pays for the disk the other did not."""
    subprocess.run(["tar", "cf", "/dev/null", "-C", str(tree.parent), tree.name], check=True)


def klab_argv(version: str, arch: str, build_dir: Path | None = None, src: Path | None = None) -> list[str]:
    argv = [sys.executable, "-m", "lab", "build", "--arch", arch, "--src", str(src) if src else f"debian:{version}"]
    return argv + (["--build-dir", str(build_dir)] if build_dir else [])


def fresh_cache(scratch: Path, name: str, tree: Path) -> dict[str, str]:
    """A KLAB_CACHE of its own (empty ccache, no build dirs) holding a copy of the fetched tree.

    A copy, not a link: ccache makes paths under the cache relative, which is what lets a second
    tree laid out alike share its objects, and a tree outside the cache would stay absolute.
    """
    cache = scratch / name
    (cache / "src").mkdir(parents=True)
    subprocess.run(["cp", "-a", str(tree), str(cache / "src" / tree.name)], check=True)
    shutil.copyfile(source.marker(tree), source.marker(cache / "src" / tree.name))
    return dict(os.environ, KLAB_CACHE=str(cache))


def ccache_stats(env: dict[str, str]) -> str:
    out = subprocess.run(
        ["ccache", "-d", str(Path(env["KLAB_CACHE"]) / "ccache"), "-s"], capture_output=True, text=True
    )
    keep = ("Hits:", "Misses:", "Cache size")
    return "; ".join(" ".join(line.split()) for line in out.stdout.splitlines() if line.strip().startswith(keep))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", default="6.12", help="Debian linux-source version (default: 6.12)")
    parser.add_argument("--arch", default="x86_64")
    parser.add_argument("--rounds", type=int, default=1, help="cold rounds; each alternates which goes first")
    args = parser.parse_args()
    arch = arches.get(args.arch)
    tree = source.fetch(args.version)
    scratch = Path(tempfile.mkdtemp(prefix="klab-bench-build-"))
    cold: dict[str, list[float]] = {"klab": [], "klab, no ccache": [], "make": []}
    try:
        make_env = dict(os.environ, KBUILD_BUILD_USER="klab", KBUILD_BUILD_HOST="kernel-lab")
        plain = scratch / "plain"
        config = None
        for round_ in range(args.rounds):
            order = ["make", "klab", "klab, no ccache"] if round_ % 2 == 0 else ["klab", "klab, no ccache", "make"]
            if config is None:  # plain make needs klab's .config: klab goes first in the first round
                order = ["klab", "make", "klab, no ccache"]
            for what in order:
                if what == "make":
                    warm_page_cache(tree)
                    shutil.rmtree(plain, ignore_errors=True)
                    plain.mkdir()
                    assert config is not None
                    shutil.copyfile(config, plain / ".config")
                    make = ["make", "-C", str(tree), f"O={plain}", f"ARCH={arch.kernel_arch}", f"-j{os.cpu_count()}"]
                    prefix = arches.cross_prefix(arch)
                    make += [f"CROSS_COMPILE={prefix}"] if prefix else []
                    cold["make"].append(timed([*make, arch.image_target], make_env))
                else:
                    env = fresh_cache(scratch, f"{what.replace(' ', '').replace(',', '-')}-{round_}", tree)
                    warm_page_cache(Path(env["KLAB_CACHE"]) / "src" / tree.name)
                    if what != "klab":
                        env["CCACHE_DISABLE"] = "1"
                    cold[what].append(timed(klab_argv(args.version, arch.name), env))
                    if what == "klab":
                        klab_env = env
                        bdir = next((Path(env["KLAB_CACHE"]) / "build").glob(f"{arch.name}-*[0-9a-f]"))
                        config = bdir / ".config"
        stats = ccache_stats(klab_env)
        noop = {
            "klab": timed(klab_argv(args.version, arch.name), klab_env),
            "make": timed([*make, arch.image_target], make_env),
        }
        os.utime(Path(klab_env["KLAB_CACHE"]) / "src" / tree.name / TOUCHED)
        incremental = {"klab": timed(klab_argv(args.version, arch.name), klab_env)}
        os.utime(tree / TOUCHED)
        incremental["make"] = timed([*make, arch.image_target], make_env)
        # A second tree laid out like the cache, with klab's warm ccache: bisect scenarios and patch series.
        second = Path(klab_env["KLAB_CACHE"]) / "second-tree"
        (second / "src").mkdir(parents=True)
        subprocess.run(["cp", "-a", str(tree), str(second / "src" / tree.name)], check=True)
        source.marker(second / "src" / tree.name).unlink(missing_ok=True)  # a tree of its own, not the package
        second_time = timed(
            klab_argv(args.version, arch.name, second / "build" / arch.name, second / "src" / tree.name), klab_env
        )
        second_stats = ccache_stats(klab_env)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def best(values: list[float]) -> float:
        return min(values)

    print(f"kernel build, {arch.name}, linux-source-{args.version}, {os.cpu_count()} CPUs, {args.rounds} cold round(s)")
    print(f"{'case':<28} {'klab build':>11} {'plain make':>11} {'klab/plain':>11}")
    rows = [
        ("cold (ccache empty)", best(cold["klab"]), best(cold["make"])),
        ("cold, klab without ccache", best(cold["klab, no ccache"]), best(cold["make"])),
        ("no-op", noop["klab"], noop["make"]),
        ("incremental (one .c)", incremental["klab"], incremental["make"]),
    ]
    for case, klab_s, make_s in rows:
        print(f"{case:<28} {klab_s:>11.1f} {make_s:>11.1f} {klab_s / make_s:>11.2f}")
    print(f"{'second tree, ccache warm':<28} {second_time:>11.1f}")
    print(f"ccache's own share of a cold build: {best(cold['klab']) - best(cold['klab, no ccache']):+.1f} s")
    print(f"ccache after the cold build: {stats}")
    print(f"ccache after the second tree: {second_stats}")
    print(f"all cold runs: { {k: [round(v, 1) for v in vs] for k, vs in cold.items()} }")
    return 0


if __name__ == "__main__":
    sys.exit(main())
