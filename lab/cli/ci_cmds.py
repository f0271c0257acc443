"""`klab ci` and `klab lava`: the command glue for CI pipelines and LAVA labs.

Both CI files in ci/ take their cells from `klab ci matrix`, which reads
lab.yaml, so a kernel or arch added there reaches GitHub Actions and GitLab CI
without editing either. A CI cell is one (kernel, arch): it builds that kernel
once and runs every boot of the matrix for it (`klab ci run`); the merge job
joins the cells' results.json (`klab ci merge`). LAVA jobs and their results
are in lab.lava.definition and lab.lava.readback; this module wires them to the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from lab import arches
from lab.cli import args as common
from lab.cli.test_cmds import known_failures, run_and_report
from lab.errors import UserError
from lab.image import build, recipes
from lab.lava import definition, readback
from lab.paths import HOME
from lab.results import model, store, write
from lab.run import catalog, matrix, prepare
from lab.run.progress import Progress

DEFAULT_MATRIX = HOME / "lab.yaml"
# The GitLab pipeline's stages; the generated child pipeline repeats them (jobs it includes name them).
GITLAB_STAGES = ("matrix", "test", "merge")
GITLAB_CI_FILE = "ci/gitlab-ci.yml"


# --- CI matrix ------------------------------------------------------------------------------------


def ci_cells(mtx: matrix.Matrix) -> list[dict[str, str]]:
    """One CI job per (kernel, arch): it builds that kernel once and runs all its boots."""
    out: dict[str, dict[str, str]] = {}
    for cell in mtx.cells():
        name = f"{cell.arch}.{cell.kernel.name}"
        entry = out.setdefault(
            name,
            {"name": name, "kernel": cell.kernel.name, "source": cell.kernel.source, "arch": cell.arch, "cells": ""},
        )
        entry["cells"] = " ".join(filter(None, [entry["cells"], cell.id]))
    return list(out.values())


def github_matrix(mtx: matrix.Matrix) -> str:
    """`strategy.matrix` for GitHub Actions: one line of JSON, for $GITHUB_OUTPUT."""
    return json.dumps({"include": ci_cells(mtx)}, separators=(",", ":"))


def gitlab_child(mtx: matrix.Matrix) -> str:
    """A GitLab child pipeline: one job per cell extending `.klab-cell`, then the merge (from ci/gitlab-ci.yml)."""
    doc: dict[str, Any] = {"include": [{"local": GITLAB_CI_FILE}], "stages": list(GITLAB_STAGES)}
    names = []
    for entry in ci_cells(mtx):
        job = f"cell {entry['name']}"
        names.append(job)
        doc[job] = {
            "extends": ".klab-cell",
            "stage": "test",
            "variables": {"KLAB_CELL": entry["name"], "KLAB_KERNEL": entry["kernel"], "KLAB_ARCH": entry["arch"]},
        }
    doc["merge"] = {
        "extends": ".klab-merge",
        "stage": "merge",
        "needs": [{"job": job, "artifacts": True} for job in names],
    }
    return yaml.safe_dump(doc, sort_keys=False)


# --- CI cell and merge ----------------------------------------------------------------------------


def run_ci_cell(mtx: matrix.Matrix, kernel: str, arch: str, results_dir: Path, jobs: int, accel: str) -> int:
    """Build one kernel for one arch, run all its boots, write the reports: `klab test-kernel`'s path exactly
    (the matrix's known failures applied, expired ones failing first), so a CI cell's verdict is a local one."""
    chosen = [k for k in mtx.kernels if k.name == kernel]
    if not chosen:
        names = ", ".join(k.name for k in mtx.kernels)
        raise UserError(f"{mtx.source_file}: no kernel named {kernel!r}; choose one of: {names}")
    known_file, known = known_failures(None, mtx.known_failures)
    with Progress() as progress:
        specs = prepare.matrix_specs(
            replace(mtx, kernels=tuple(chosen)), arch_names=(arch,), accel=accel, known=known, progress=progress
        )
        return run_and_report(specs, results_dir, jobs, progress, known_file)


def merge_results(paths: list[Path], out: Path, expected: list[tuple[str, str]]) -> list[model.CellResult]:
    """Join the cells' results; a cell the matrix promised that never came back is a lab error, not a pass."""
    if not paths and not expected:
        raise UserError("nothing to merge: give the cells' results.json files, or --matrix to name the cells expected")
    cells = store.merge(paths)
    seen = {cell.id for cell in cells}
    for cell_id, arch in expected:
        if cell_id not in seen:
            cells.append(model.CellResult(id=cell_id, arch=arch, error="no results.json came back from its CI job"))
    out.mkdir(parents=True, exist_ok=True)
    write.reports(out, cells, store.RunMeta(argv=tuple(sys.argv), merged_from=tuple(map(str, paths))))
    return cells


# --- command line ---------------------------------------------------------------------------------


def cmd_ci_matrix(args: argparse.Namespace) -> int:
    mtx = matrix.load(Path(args.matrix))
    print(github_matrix(mtx) if args.format == "github" else gitlab_child(mtx), end="\n")
    return 0


def cmd_ci_run(args: argparse.Namespace) -> int:
    mtx = matrix.load(Path(args.matrix))
    return run_ci_cell(mtx, args.kernel, arches.get(args.arch).name, Path(args.results), args.jobs, args.accel)


def cmd_ci_merge(args: argparse.Namespace) -> int:
    expected = [(c.id, c.arch) for c in matrix.load(Path(args.matrix)).cells()] if args.matrix else []
    cells = merge_results([Path(p) for p in args.results_json], Path(args.out), expected)
    print((Path(args.out) / "summary.txt").read_text(), end="")
    return model.exit_status(cells)


def cmd_lava_job(args: argparse.Namespace) -> int:
    arch = arches.get(args.arch)
    for suite in args.suite:
        catalog.check(suite)
    kernel, doc = common.kernel_of(args, arch)
    release = doc.kernelrelease if doc else ""
    if args.rootfs and not Path(args.rootfs).is_file():
        raise UserError(f"--rootfs {args.rootfs} does not exist; build the lab's image with `klab image build`")
    image = Path(args.rootfs or build.build_image(arch, recipes.find_recipe(recipes.DEFAULT_RECIPE)).image)
    req = definition.JobRequest(
        arch, kernel, image, tuple(args.suite), tuple(args.patterns), release, args.append, args.url_base
    )
    cell = args.cell or f"{arch.name}.{'.'.join(release.split('.')[:2]) or kernel.stem}.lava"
    artifacts = definition.write_job(req, Path(args.out), cell)
    print(
        f"klab: artifacts in {artifacts}; run locally: lava-run --job-id 1 --output-dir DIR "
        f"--device DEVICE.yaml {args.out} > DIR/{readback.LOG_NAME} 2>&1",
        file=sys.stderr,
    )
    print(args.out)
    return 0


def cmd_lava_device(args: argparse.Namespace) -> int:
    Path(args.out).write_text(
        yaml.safe_dump(definition.device_dict(arches.get(args.arch), kvm=args.kvm), sort_keys=False)
    )
    print(args.out)
    return 0


def cmd_lava_results(args: argparse.Namespace) -> int:
    source = Path(args.lava_results)
    job_file = Path(args.job) if args.job else (source / "job.yaml" if source.is_dir() else None)
    meta = _job_metadata(job_file)
    suites = tuple(meta.get("klab.suites", "").split())
    planned = catalog.planned_tests(suites, tuple(meta.get("klab.patterns", "").split())) if suites else []
    run = readback.read_lava_results(source)
    cell_id = args.cell or meta.get("klab.cell") or "lava"
    cell = readback.to_cell(
        run, cell_id, args.arch or meta.get("klab.arch", ""), planned, meta.get("klab.kernel_release", "")
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if run.console:
        (out / f"console-{cell_id}.log").write_text(run.console)
        cell.console_log = str(out / f"console-{cell_id}.log")
    write.reports(out, [cell], store.RunMeta(argv=tuple(sys.argv), lava_results=str(source)))
    print((out / "summary.txt").read_text(), end="")
    return model.exit_status([cell])


def _job_metadata(path: Path | None) -> dict[str, str]:
    if path is None or not path.is_file():
        return {}
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not a LAVA job definition: {exc}") from exc
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def register(subparsers: Any) -> None:
    """Add `klab ci ...` and `klab lava ...`."""
    ci = subparsers.add_parser(
        "ci", help="CI pipelines: the cell matrix, one cell, merging results", epilog=f"example: {CI_EXAMPLES['run']}"
    )
    sub = ci.add_subparsers(dest="ci_command", required=True)
    p = sub.add_parser(
        "matrix", help="print the CI cells from the matrix file (GitHub JSON or a GitLab child pipeline)"
    )
    p.add_argument("--matrix", default=str(DEFAULT_MATRIX), help="matrix file (default: lab.yaml)")
    p.add_argument("--format", default="github", choices=("github", "gitlab"))
    p.set_defaults(func=cmd_ci_matrix)
    p = sub.add_parser("run", help="one CI cell: build one kernel for one arch and run all its boots")
    p.add_argument("--matrix", default=str(DEFAULT_MATRIX), help="matrix file (default: lab.yaml)")
    p.add_argument("--kernel", required=True, help="kernel name from the matrix, e.g. 6.12")
    p.add_argument("--arch", required=True, help=common.ARCH_HELP)
    p.add_argument("--results", required=True, help="results directory")
    p.add_argument("-n", "--jobs", type=common.positive_int, default=1, help="guests to run at once")
    p.add_argument("--accel", default="auto", choices=("auto", "kvm", "tcg"))
    p.set_defaults(func=cmd_ci_run)
    p = sub.add_parser("merge", help="merge the cells' results.json into one results.json, junit.xml, summary")
    p.add_argument("results_json", nargs="*", help="results.json files, one per cell job (none: every cell is missing)")
    p.add_argument("--out", required=True, help="directory for the merged reports")
    p.add_argument("--matrix", help="matrix file: its cells with no results become lab errors")
    p.set_defaults(func=cmd_ci_merge)
    _examples(sub, CI_EXAMPLES)
    _register_lava(subparsers)


def _register_lava(subparsers: Any) -> None:
    lv = subparsers.add_parser(
        "lava",
        help="LAVA: job definitions, a local device dictionary, results back",
        epilog=f"example: {LAVA_EXAMPLES['job']}",
    )
    sub = lv.add_subparsers(dest="lava_command", required=True)
    p = sub.add_parser("job", help="write a LAVA job (qemu device type) and its artifacts for one kernel")
    p.add_argument("--arch", required=True, help=common.ARCH_HELP)
    common.add_kernel_choice(p)
    p.add_argument("--suite", action="append", required=True, help="suite to run (repeatable)")
    p.add_argument("-k", dest="patterns", action="append", default=[], help="only tests whose SUITE.TEST contains this")
    p.add_argument("--rootfs", help="the lab's ext4 guest image (default: build or reuse debian-bookworm)")
    p.add_argument("--append", default="", help="extra kernel command line")
    p.add_argument("--url-base", default="", help="URL the artifacts will be served from (default: file:// paths)")
    p.add_argument("--cell", help="cell id for the results (default: ARCH.KERNEL.lava)")
    p.add_argument("--out", required=True, help="job file to write; artifacts go to <stem>-artifacts/ beside it")
    p.set_defaults(func=cmd_lava_job)
    p = sub.add_parser("device", help="write a qemu device dictionary for `lava-run --device` on this host")
    p.add_argument("--arch", required=True, help=common.ARCH_HELP)
    p.add_argument("--kvm", action="store_true", help="use KVM (only where a guest really boots with it)")
    p.add_argument("--out", required=True, help="device dictionary file to write")
    p.set_defaults(func=cmd_lava_device)
    p = sub.add_parser("results", help="turn a LAVA job's results into results.json, junit.xml and a summary")
    p.add_argument(
        "--lava-results",
        required=True,
        help=f"lava-run's log, a dir holding {readback.LOG_NAME}, or a results export",
    )
    p.add_argument("--out", required=True, help="results directory")
    p.add_argument("--job", help="the job definition (its metadata names the cell and the planned tests)")
    p.add_argument("--cell", help="cell id (default: from the job's metadata)")
    p.add_argument("--arch", help="arch (default: from the job's metadata)")
    p.set_defaults(func=cmd_lava_results)
    _examples(sub, LAVA_EXAMPLES)


CI_EXAMPLES = {
    "matrix": "klab ci matrix --matrix lab.yaml --format gitlab > cells.yml",
    "run": "klab ci run --kernel 7.3 --arch arm64 --results results/arm64.7.3",
    "merge": "klab ci merge --matrix lab.yaml --out merged results/*/results.json",
}
LAVA_EXAMPLES = {
    "job": "klab lava job --arch x86_64 --build BUILD_DIR --suite seccomp --out job.yaml",
    "device": "klab lava device --arch arm64 --out device.yaml",
    "results": "klab lava results --lava-results out/ --job job.yaml --out results",
}


def _examples(sub: Any, examples: dict[str, str]) -> None:
    for name, example in examples.items():
        sub.choices[name].epilog = f"example: {example}"
