"""lab.run.reproduce and `klab reproduce`: results.json cell -> the same boot, found by content, never rebuilt.

The results.json is written from tests/unit/_results_data.py's cells (plus what
a run records for reproduce: kernel path and sha256, rootfs, -k, --repeat);
build dirs and images are fake ones under a temporary KLAB_CACHE.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from lab import arches, cli
from lab.cli import reproduce_cmd
from lab.errors import UserError
from lab.image.build import ImageManifest
from lab.kernel.record import Artifacts, BuildManifest, SourceInfo
from lab.manifest import sha256
from lab.results import store
from lab.results.model import CellResult, Status
from lab.results.model import TestResult as Result
from lab.results.store import Run, RunMeta
from lab.run import reproduce
from tests.unit._results_data import cells

DESCRIBE = "linux-source-6.12 6.12.117-1~deb12u1"
CONFIG = "c0" * 32


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("KLAB_CACHE", str(root))
    return root


def fake_build(root: Path, name: str, content: bytes, arch: str = "x86_64", **changes: Any) -> BuildManifest:
    """A finished build dir under the cache: a kernel image file and its build.json."""
    bdir = root / name
    image = bdir / arches.get(arch).image_path
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(content)
    doc = BuildManifest(
        key="k", arch=arch, source=SourceInfo("/src", "debian:x", DESCRIBE, "f", "kf"), kernelrelease="6.12.117",
        fragments=(), not_applicable={}, config_sha256=CONFIG, toolchain={}, durations={},
        artifacts=Artifacts(str(image), str(bdir / "vmlinux"), str(bdir / ".config"), "", ""), reproducer="make",
        finished=1.0,
    )  # fmt: skip
    doc = dataclasses.replace(doc, **changes)
    doc.write(bdir / "build.json")
    return doc


def fake_image(root: Path, arch: str, content: bytes) -> ImageManifest:
    idir = root / "images" / f"debian-bookworm-{arch}-0123"
    idir.mkdir(parents=True, exist_ok=True)
    image = idir / f"{idir.name}.ext4"
    image.write_bytes(content)
    doc = ImageManifest(
        recipe="debian-bookworm", recipe_path="", arch=arch, debian_arch=arch, key="0123", builder_version="2",
        image=str(image), sha256=sha256(image), size_bytes=len(content), allocated_bytes=0, label="", init="",
        packages=(), installed={}, mmdebstrap="", mirror="", reproducer="", durations={}, duration=0.0, log="",
        finished=1.0,
    )  # fmt: skip
    doc.write(idir / "image.json")
    return doc


def recorded(cache: Path, tmp_path: Path) -> tuple[Path, BuildManifest, ImageManifest]:
    """A results.json whose x86_64 cell booted a lab build on host, and whose arm64 cell an image."""
    x86 = fake_build(cache / "build", "x86_64-linux-6.12-aaaa", b"HdrS x86 kernel")
    arm = fake_build(cache / "build", "arm64-linux-6.12-bbbb", b"ARM64 kernel", arch="arm64")
    image = fake_image(cache, "arm64", b"ext4 image")
    good, crashed, lab = cells()
    good = dataclasses.replace(
        good, kernel=str(x86.image), kernel_sha256=sha256(x86.image), rootfs="host", describe=DESCRIBE,
        kernel_release="6.12.117", config_sha256=CONFIG, patterns=("fsdemo.", "ptracedemo."), repeat=2,
        boot="default",
    )  # fmt: skip
    crashed = dataclasses.replace(
        crashed, kernel=str(arm.image), kernel_sha256=sha256(arm.image), rootfs=image.image,
        image=f"{image.image} sha256:{image.sha256}", image_sha256=image.sha256, describe=DESCRIBE,
        kernel_release="6.12.117", config_sha256=CONFIG, append="lsm=landlock",
    )  # fmt: skip
    out = tmp_path / "run"
    out.mkdir()
    store.write(out / "results.json", [good, crashed, lab], RunMeta(argv=("klab", "test")))
    return out, x86, image


def look(native: bool = True, **changes: Any) -> reproduce.Lookups:
    return dataclasses.replace(reproduce.real_lookups(), native=lambda arch: native, **changes)


def loaded(path: Path) -> Run:
    return store.load(path / "results.json")


# --- which cells -----------------------------------------------------------------------------------


def run_of(*cell_tests: tuple[str, list[str]]) -> Run:
    out = []
    for cell_id, names in cell_tests:
        cell = CellResult(id=cell_id, arch="x86_64")
        cell.tests = [Result(*n.split(".", 1), Status.PASS) for n in names]
        out.append(cell)
    return Run(RunMeta(), out)


TWO = run_of(("a", ["landlock.x", "landlock.xy", "seccomp.z"]), ("b", ["landlock.x"]))


@pytest.mark.parametrize(
    ("test", "cell", "chosen", "test_name"),
    [
        (None, None, ["a", "b"], None),
        (None, "b", ["b"], None),
        ("seccomp.z", None, ["a"], "seccomp.z"),
        ("landlock.x", "b", ["b"], "landlock.x"),
        ("landlock.xy", None, ["a"], "landlock.xy"),
    ],
)
def test_choose_the_cells_to_rerun(test: str | None, cell: str | None, chosen: list[str], test_name: str) -> None:
    got = reproduce.choose(TWO, test, cell, "r.json")
    assert [c.cell.id for c in got] == chosen
    assert [c.test.full_name if c.test else None for c in got] == [test_name] * len(chosen)


@pytest.mark.parametrize(
    ("test", "cell", "message"),
    [
        ("landlock.x", None, "landlock.x ran in 2 cells: a, b; choose one with --cell ID"),
        ("landlock.nope", None, "landlock.nope: no test of that name ran in r.json"),
        ("landlock", None, "name the test as SUITE.TEST"),
        ("seccomp.z", "b", "seccomp.z: no test of that name ran in cell b"),
        (None, "c", "--cell c: no such cell in r.json; its cells: a, b"),
        ("landlock.xyz", None, "did you mean: landlock.x, landlock.xy"),
    ],
)
def test_choose_refuses_with_the_choices(test: str | None, cell: str | None, message: str) -> None:
    with pytest.raises(UserError) as exc:
        reproduce.choose(TWO, test, cell, "r.json")
    assert message in str(exc.value)


# --- plan: the same kernel, rootfs, command line, selection -------------------------------------


def test_plan_rebuilds_the_same_boot(cache: Path, tmp_path: Path) -> None:
    out, x86, image = recorded(cache, tmp_path)
    run = loaded(out)
    [good] = [p.spec for p in reproduce.plan(run, "r", cell_id="x86_64.6.12.default", look=look())]
    [crashed] = [p.spec for p in reproduce.plan(run, "r", cell_id="arm64.6.12.default", look=look())]
    assert (good.id, good.kernel, good.rootfs, good.image_hash) == ("x86_64.6.12.default", x86.image, "host", "")
    assert (good.append, good.accel, good.repeat, good.boot) == ("lsm=landlock,bpf", "tcg", 2, "default")
    assert good.suites == ("fsdemo", "ptracedemo") and good.patterns == ("fsdemo.", "ptracedemo.")
    assert good.build is not None and good.build.config_sha256 == CONFIG
    assert (crashed.rootfs, crashed.image_hash, crashed.append) == (image.image, image.sha256, "lsm=landlock")
    assert crashed.arch.name == "arm64" and crashed.suites == ("fsdemo", "ptracedemo")


def test_plan_one_test_runs_only_its_suite_and_name(cache: Path, tmp_path: Path) -> None:
    out, _, _ = recorded(cache, tmp_path)
    planned = reproduce.plan(loaded(out), "r", test="ptracedemo.traceme", cell_id="arm64.6.12.default", look=look())
    assert [(p.spec.id, p.spec.suites, p.spec.patterns) for p in planned] == [
        ("arm64.6.12.default", ("ptracedemo",), ("ptracedemo.traceme",))
    ]


def test_accel_override_and_lab_error_cell(cache: Path, tmp_path: Path) -> None:
    out, _, _ = recorded(cache, tmp_path)
    planned = reproduce.plan(loaded(out), "r", cell_id="arm64.6.12.default", accel="auto", look=look())
    assert planned[0].spec.accel == "auto"
    with pytest.raises(UserError, match="x86_64.6.1.default: results.json records no kernel sha256"):
        reproduce.plan(loaded(out), "r", cell_id="x86_64.6.1.default", look=look())


def test_kernel_moved_is_found_by_sha256_in_another_build_dir(cache: Path, tmp_path: Path) -> None:
    out, x86, _ = recorded(cache, tmp_path)
    content = x86.image.read_bytes()
    x86.image.unlink()
    other = fake_build(cache / "try" / "abc" / "build", "x86_64", content)  # a klab try build dir has it
    spec = reproduce.plan(loaded(out), "r", cell_id="x86_64.6.12.default", look=look())[0].spec
    assert spec.kernel == other.image and spec.build == other


def test_kernel_given_by_the_user_is_checked_by_sha256(cache: Path, tmp_path: Path) -> None:
    out, x86, _ = recorded(cache, tmp_path)
    content = x86.image.read_bytes()
    (x86.build_dir / "build.json").unlink()
    x86.image.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "bzImage").write_bytes(b"another kernel")
    (elsewhere / "copy").write_bytes(content)
    run = loaded(out)
    kernels = [elsewhere / "bzImage", elsewhere / "copy"]
    spec = reproduce.plan(run, "r", cell_id="x86_64.6.12.default", kernels=kernels, look=look())[0].spec
    assert spec.kernel == elsewhere / "copy" and spec.build is None


def test_kernel_gone_names_it_and_the_build_command(cache: Path, tmp_path: Path) -> None:
    out, x86, _ = recorded(cache, tmp_path)
    x86.image.write_bytes(b"rebuilt from another tree")
    bad = dataclasses.replace(x86, config_sha256="ff" * 32)
    bad.write(x86.build_dir / "build.json")
    with pytest.raises(UserError) as exc:
        reproduce.plan(loaded(out), "r", cell_id="x86_64.6.12.default", look=look())
    message = str(exc.value)
    assert "cell x86_64.6.12.default: its kernel is gone" in message and str(x86.image) in message
    assert "rebuild it with `klab build --src debian:6.12 --arch x86_64`" in message


def test_kernel_rebuilt_from_the_same_tree_and_config_is_used_with_a_note(cache: Path, tmp_path: Path) -> None:
    out, x86, _ = recorded(cache, tmp_path)
    x86.image.write_bytes(b"same tree, same .config, another build time")
    planned = reproduce.plan(loaded(out), "r", cell_id="x86_64.6.12.default", look=look())[0]
    assert planned.spec.kernel == x86.image
    assert "rebuilt from the same tree (linux-source-6.12 6.12.117-1~deb12u1)" in planned.notes[0]


@pytest.mark.parametrize(
    ("describe", "command"),
    [
        ("linux-source-7.3 7.3.4-1~bpo13+1", "klab build --src debian:7.3 --arch arm64"),
        ("v6.13-rc1-5-gabc", "klab build --src TREE --arch arm64  (TREE: a tree at v6.13-rc1-5-gabc)"),
    ],
)
def test_rebuild_command(describe: str, command: str) -> None:
    assert reproduce.rebuild_command(CellResult(id="c", arch="arm64", describe=describe)) == command


def test_image_moved_is_found_by_hash_and_gone_names_the_image_command(cache: Path, tmp_path: Path) -> None:
    out, _, image = recorded(cache, tmp_path)
    run = loaded(out)
    moved = cache / "images" / "elsewhere"
    Path(image.image).parent.rename(moved)
    new_path = moved / Path(image.image).name
    dataclasses.replace(image, image=str(new_path)).write(moved / "image.json")
    spec = reproduce.plan(run, "r", cell_id="arm64.6.12.default", look=look())[0].spec
    assert (spec.rootfs, spec.image_hash) == (str(new_path), image.sha256)
    new_path.unlink()
    with pytest.raises(UserError) as exc:
        reproduce.plan(run, "r", cell_id="arm64.6.12.default", look=look())
    assert f"its image is gone: no arm64 image with sha256:{image.sha256[:16]}" in str(exc.value)
    assert "rebuild it with `klab image build --arch arm64`" in str(exc.value)


def test_host_rootfs_of_another_arch_is_refused(cache: Path, tmp_path: Path) -> None:
    out, _, _ = recorded(cache, tmp_path)
    with pytest.raises(UserError, match="booted the host's / as an x86_64 rootfs; this host cannot"):
        reproduce.plan(loaded(out), "r", cell_id="x86_64.6.12.default", look=look(native=False))


def test_extra_tests_a_substring_selects() -> None:
    planned = [("landlock", "x"), ("landlock", "xy")]
    assert reproduce.extra_tests(planned, "landlock.x") == ["landlock.xy"]


# --- the command ------------------------------------------------------------------------------------


def test_cli_runs_through_klab_tests_path(cache: Path, tmp_path: Path) -> None:
    out, x86, _ = recorded(cache, tmp_path)
    seen: dict[str, Any] = {}

    def fake_run(specs: list[Any], results_dir: Path, jobs: int, progress: Any, known_file: Path | None) -> int:
        seen.update(specs=specs, results_dir=results_dir, jobs=jobs)
        return 1

    facts = reproduce_cmd.Facts(
        look(native=True),
        planned_tests=lambda suites, patterns: [("fsdemo", "open_denied")],
        check_suite=lambda name, where: None,
        run=fake_run,
    )
    argv = ["reproduce", str(out), "fsdemo.open_denied", "--cell", "x86_64.6.12.default"]
    rc = reproduce_cmd.cmd_reproduce(cli.parser().parse_args([*argv, "--results", str(tmp_path / "again")]), facts)
    assert rc == 1
    [spec] = seen["specs"]
    assert (spec.id, spec.kernel, spec.patterns) == ("x86_64.6.12.default", x86.image, ("fsdemo.open_denied",))
    assert seen["results_dir"] == tmp_path / "again"


def test_cli_missing_kernel_is_exit_2_and_writes_nothing(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, x86, _ = recorded(cache, tmp_path)
    x86.image.unlink()
    rc = cli.main(["reproduce", str(out), "--cell", "x86_64.6.12.default", "--results", str(tmp_path / "again")])
    assert rc == 2
    assert "klab build --src debian:6.12 --arch x86_64" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()


def test_cli_refuses_to_write_over_the_run_it_reproduces(cache: Path, tmp_path: Path) -> None:
    out, _, _ = recorded(cache, tmp_path)
    assert cli.main(["reproduce", str(out), "--results", str(out)]) == 2


# --- did it come back ---------------------------------------------------------------------------------

WAS = Result("landlock", "x", Status.FAIL, reason="open: expected EACCES (13), got success",
             signature="landlock.x: open: expected EACCES, got success")  # fmt: skip


def _rerun(*tests: Result) -> list[CellResult]:
    return [CellResult(id="c", arch="x86_64", tests=list(tests))]


def _planned(*tests: Result) -> list[reproduce.Planned]:
    cell = CellResult(id="c", arch="x86_64", tests=list(tests))
    spec = reproduce.spec_for(reproduce.Choice(cell), Path("k"), None, ("host", ""), None)
    return [reproduce.Planned(spec, (), reproduce.Choice(cell))]


@pytest.mark.parametrize(
    ("now", "outcome", "line", "code"),
    [
        (dataclasses.replace(WAS, reason="open: expected EACCES (13), got success (0)"), reproduce.Outcome.REPRODUCED,
         "c: landlock.x: reproduced (FAIL with signature landlock.x: open: expected EACCES, got success)", 1),
        (Result("landlock", "x", Status.PASS), reproduce.Outcome.NOT_REPRODUCED,
         "c: landlock.x: did NOT reproduce: PASS now (was FAIL with signature landlock.x: open: expected EACCES, "
         "got success)", 0),
        (dataclasses.replace(WAS, signature="landlock.x: open: expected EACCES, got EPERM"),
         reproduce.Outcome.DIFFERENT, "c: landlock.x: fails differently: landlock.x: open: expected EACCES, got "
         "EPERM (was FAIL with signature landlock.x: open: expected EACCES, got success)", 3),
        (dataclasses.replace(WAS, status=Status.FLAKY, signature="", runs=("FAIL", "PASS", "FAIL", "PASS", "PASS")),
         reproduce.Outcome.REPRODUCED, "c: landlock.x: reproduced 2 of 5 runs (FAIL with signature landlock.x: "
         "open: expected EACCES, got success)", 1),
        (dataclasses.replace(WAS, status=Status.PASS, signature="", runs=("PASS",) * 20),
         reproduce.Outcome.NOT_REPRODUCED, "c: landlock.x: did NOT reproduce: PASS now (was FAIL with signature "
         "landlock.x: open: expected EACCES, got success)", 0),
    ],
)  # fmt: skip
def test_a_rerun_failure_is_judged_by_its_signature(
    now: Result, outcome: reproduce.Outcome, line: str, code: int
) -> None:
    [verdict] = reproduce.verdicts(_planned(WAS, Result("landlock", "ok", Status.PASS)), _rerun(now))
    assert (verdict.outcome, verdict.line) == (outcome, line)
    assert reproduce.exit_status([verdict], 1 if now.status is not Status.PASS else 0) == code


def test_a_rerun_that_could_not_test_keeps_its_own_code() -> None:
    found = reproduce.verdicts(_planned(WAS), [])
    assert [v.outcome for v in found] == [reproduce.Outcome.NOT_RUN]
    assert reproduce.exit_status(found, 128) == 128
    assert reproduce.exit_status(found, 0) == 125, "the failure did not run again: nothing was tested"
    assert reproduce.exit_status([], 0) == 0, "an original without failures: the rerun's own verdict"


def test_one_failure_back_is_reproduced_whatever_the_others_do() -> None:
    other = dataclasses.replace(WAS, name="y", signature="landlock.y: z")
    found = reproduce.verdicts(_planned(WAS, other), _rerun(WAS, Result("landlock", "y", Status.PASS)))
    assert [v.outcome for v in found] == [reproduce.Outcome.REPRODUCED, reproduce.Outcome.NOT_REPRODUCED]
    assert reproduce.exit_status(found, 1) == 1


def test_cli_says_it_did_not_reproduce_and_exits_0(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _, _ = recorded(cache, tmp_path)
    [was] = [t for t in store.load(out / "results.json").cells[0].tests if t.full_name == "fsdemo.open_denied"]
    assert was.status is Status.FAIL and was.signature

    def passes_now(specs: list[Any], results_dir: Path, jobs: int, progress: Any, known_file: Path | None) -> int:
        results_dir.mkdir(parents=True)
        cell = CellResult(id=specs[0].id, arch="x86_64", tests=[Result("fsdemo", "open_denied", Status.PASS)])
        store.write(results_dir / "results.json", [cell], RunMeta())
        assert specs[0].repeat == 3
        return 0

    facts = reproduce_cmd.Facts(
        look(native=True), planned_tests=lambda s, p: [("fsdemo", "open_denied")],
        check_suite=lambda name, where: None, run=passes_now,
    )  # fmt: skip
    argv = ["reproduce", str(out), "fsdemo.open_denied", "--cell", "x86_64.6.12.default", "--repeat", "3"]
    args = cli.parser().parse_args([*argv, "--results", str(tmp_path / "again")])
    assert reproduce_cmd.cmd_reproduce(args, facts) == 0
    said = capsys.readouterr().out.splitlines()
    assert said == [
        f"klab reproduce: x86_64.6.12.default: fsdemo.open_denied: did NOT reproduce: PASS now "
        f"(was FAIL with signature {was.signature})",
        "klab reproduce: exit 0 (no failure came back)",
    ]
