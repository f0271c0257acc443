"""The command line's contract: examples in every --help, options spelled alike, exit codes, checks before work."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest

from lab import arches, cli
from lab.cli import args as common
from lab.cli import test_cmds
from lab.errors import EXIT_FAILED, EXIT_LAB, EXIT_UNTESTABLE, EXIT_USAGE, BuildError, KernelFailure, UserError
from lab.kernel import build, kconfig, source
from lab.run import prepare


def _subparsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found = _subparsers(sub, (*path, name))
                out += found or [((*path, name), sub)]
    return out


def test_every_command_has_an_example_in_its_help() -> None:
    commands = _subparsers(cli.parser())
    assert len(commands) >= 20
    missing = [" ".join(path) for path, sub in commands if "example" not in (sub.epilog or "")]
    assert not missing, f"no example in --help of: {missing}"


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("klab ")


@pytest.mark.parametrize(
    "argv",
    [
        ["test", "--matrix", "lab.yaml", "--arches", "x86_64", "arm64"],
        ["test", "--matrix", "lab.yaml", "--arches", "x86_64,arm64"],
        ["test-kernel", "--arches", "x86_64", "arm64"],
        ["test-kernel", "--arches", "x86_64 arm64"],
    ],
)
def test_arches_take_the_same_forms_everywhere(argv: list[str]) -> None:
    args = cli.parser().parse_args(argv)
    assert common.split_words(args.arches) == ["x86_64", "arm64"]


@pytest.mark.parametrize("command", ["build", "config"])
def test_fragments_add_to_the_defaults_and_bare_starts_from_nothing(command: str) -> None:
    parsed = cli.parser().parse_args([command, "--arch", "x86_64", "-f", "debug", "-f", "a.config", "-f", "b.config"])
    assert common.fragment_names(parsed) == [*kconfig.DEFAULT_FRAGMENTS, "debug", "a.config", "b.config"]
    bare = cli.parser().parse_args([command, "--arch", "x86_64", "--bare", "-f", "base", "-f", "x.config"])
    assert common.fragment_names(bare) == ["base", "x.config"]


def test_an_unexpected_error_is_128_with_one_line_and_the_traceback_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KLAB_CACHE", str(tmp_path))

    def boom(args: argparse.Namespace) -> int:
        raise KeyError("no such field")

    monkeypatch.setattr("lab.cli.build_cmds.cmd_probe", boom)
    assert cli.main(["probe"]) == EXIT_LAB
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("klab: unexpected error: KeyError")
    log = Path(err.split("(traceback: ")[1].rstrip(")"))
    assert log.is_file() and "Traceback" in log.read_text()


def _failure_with_evidence() -> KernelFailure:
    exc = KernelFailure("kernel panic while the command ran", "panic", "Kernel panic - not syncing: x")
    exc.console_log = Path("/r/console.log")
    return exc


@pytest.mark.parametrize(
    ("error", "code", "stderr"),
    [
        (
            UserError("unknown arch 'x86'; use x86_64 or arm64"),
            EXIT_USAGE,
            ["klab: error: unknown arch 'x86'; use x86_64 or arm64"],
        ),
        (
            BuildError("the kernel did not build", Path("/b/build.log"), "vmlinux.o: error"),
            EXIT_UNTESTABLE,
            ["klab: error: the kernel did not build", "vmlinux.o: error", "klab: full log: /b/build.log"],
        ),
        (BuildError("no tree"), EXIT_UNTESTABLE, ["klab: error: no tree"]),
        (
            _failure_with_evidence(),
            EXIT_FAILED,
            [
                "klab: kernel failure (panic): kernel panic while the command ran",
                "Kernel panic - not syncing: x",
                "klab: console log: /r/console.log",
            ],
        ),
    ],
)
def test_each_kind_of_error_has_its_exit_code_and_its_evidence(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], error: Exception, code: int, stderr: list[str]
) -> None:
    def fail(args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr("lab.cli.build_cmds.cmd_probe", fail)
    assert cli.main(["probe"]) == code
    assert capsys.readouterr().err.splitlines() == stderr


def test_ci_merge_with_nothing_to_merge_is_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["ci", "merge", "--out", str(tmp_path / "m")]) == EXIT_USAGE
    assert "nothing to merge" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_a_typo_in_a_suite_name_is_caught_before_any_build(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(prepare, "matrix_specs", lambda *a, **k: pytest.fail("built before checking --suite"))
    assert cli.main(["test-kernel", "--suite", "landlok"]) == EXIT_USAGE
    assert "unknown suite 'landlok'; did you mean landlock? choose from: landlock," in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["test-kernel", "--suite", "landlock", "-k", "zzzz"], "no test matches -k zzzz in suite landlock (see"),
        (
            ["test-kernel", "--suite", "seccomp", "-k", "landlock.abi_version_query"],
            "no test matches -k landlock.abi_version_query in suite seccomp; it matches 1 test(s) of landlock",
        ),
        (["test-kernel", "-k", "landlock.abi_versoin"], "did you mean: landlock.abi_version"),
    ],
)
def test_a_selection_of_no_test_is_refused_before_any_build(
    argv: list[str], error: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(prepare, "matrix_specs", lambda *a, **k: pytest.fail("built before checking -k"))
    assert cli.main(argv) == EXIT_USAGE
    (line,) = capsys.readouterr().err.splitlines()
    assert error in line


def test_list_prints_the_selection_and_runs_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(prepare, "matrix_specs", lambda *a, **k: pytest.fail("--list built something"))
    assert cli.main(["test-kernel", "--list", "--suite", "landlock", "-k", "abi_version"]) == 0
    names = capsys.readouterr().out.split()
    assert names and all(n.startswith("landlock.") and "abi_version" in n for n in names)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["test", "--matrix", "lab.yaml", "--arch", "x86_64"], "--arch: a single kernel's options"),
        (["test", "--arch", "x86_64", "--kernel", "k", "--arches", "arm64"], "--arches: chooses among a matrix"),
        (["test-kernel", "--arches", "sparc"], "unknown arch 'sparc'"),
    ],
)
def test_contradictory_or_bad_flags_are_refused(
    argv: list[str], error: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(prepare, "matrix_specs", lambda *a, **k: pytest.fail("work started"))
    assert cli.main(argv) == EXIT_USAGE
    assert error in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["test", "--matrix", "lab.yaml", "--repeat", "0"],
            "argument --repeat: '0' is not a whole number of 1 or more",
        ),
        (["test", "--arch", "x86_64", "--kernel", "k", "--mem", "lots"], "argument --mem: 'lots' is not a memory size"),
        (["test", "--arch", "x86_64", "--kernel", "k", "--mem", "0"], "argument --mem: '0' is not a memory size"),
        (["test", "--arch", "x86_64", "--kernel", "k", "--cpus", "-1"], "argument --cpus: '-1' is not a whole number"),
        (["run", "--arch", "x86_64", "--kernel", "k", "--timeout", "-5", "--", "true"], "'-5' is not a number of"),
        (["run", "--arch", "x86_64", "--kernel", "k", "--timeout", "inf", "--", "true"], "'inf' is not a number of"),
        (["test-kernel", "-n", "0"], "argument -n/--jobs: '0' is not a whole number of 1 or more"),
    ],
)
def test_bad_numbers_are_usage_errors_before_anything_runs(
    argv: list[str], error: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(prepare, "matrix_specs", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == EXIT_USAGE
    assert error in capsys.readouterr().err.splitlines()[-1]


@pytest.mark.parametrize(("text", "mib"), [("512", 512), ("512M", 512), ("2G", 2048), ("2GiB", 2048), ("1g", 1024)])
def test_memory_sizes_take_units(text: str, mib: int) -> None:
    assert common.memory_mib(text) == mib


def test_printed_commands_rerun_as_printed(tmp_path: Path) -> None:
    """`CC=ccache gcc` is one argument: the line klab prints must split back into the same argv."""
    tree = tmp_path / "linux"
    (tree / "scripts/kconfig").mkdir(parents=True)
    (tree / "Kconfig").write_text("")
    (tree / "scripts/kconfig/merge_config.sh").write_text("")
    (tree / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 0\n")
    req = build.BuildRequest(
        source.resolve(tree), arches.get("arm64"), tuple(kconfig.load_fragments(["base"], "arch/arm64"))
    )
    argv = build.make_argv(req, tmp_path / "b", "Image")
    assert shlex.split(shlex.join(argv)) == argv
    if any(a.startswith("CC=ccache") for a in argv):
        assert "'CC=ccache aarch64-linux-gnu-gcc'" in shlex.join(argv)


def test_known_failures_default_to_the_repository_file() -> None:
    path, entries = test_cmds.known_failures(None, "")
    assert path == test_cmds.DEFAULT_KNOWN and entries


def test_a_cache_root_that_is_a_file_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("")
    monkeypatch.setenv("KLAB_CACHE", str(blocker / "cache"))
    assert cli.main(["probe"]) == EXIT_USAGE
    (line,) = capsys.readouterr().err.splitlines()
    assert (
        line
        == f"klab: error: KLAB_CACHE {blocker}/cache: {blocker} is not a directory; point KLAB_CACHE at a directory"
    )


GOLDEN_RESULTS = str(Path(__file__).parents[1] / "data" / "results" / "results.golden.json")


@pytest.mark.parametrize(
    ("argv", "path"),
    [
        (["lava", "device", "--arch", "arm64", "--out", "/proc/klab-device.yaml"], "/proc/klab-device.yaml"),
        (["report", GOLDEN_RESULTS, "--html", "/proc/klab-report.html"], "/proc/klab-report.html"),
    ],
)
def test_a_path_the_user_cannot_write_is_bad_input(
    argv: list[str], path: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == EXIT_USAGE
    err = capsys.readouterr().err.splitlines()
    assert err == [f"klab: error: {path}: No such file or directory; choose a path this user can use"]


@pytest.mark.parametrize(
    ("argv", "usage", "error"),
    [
        (["test", "--suit", "landlock"], "usage: klab test ",
         "klab test: error: unrecognized arguments: --suit landlock; did you mean --suite?"),
        (["source", "fetch", "--verison", "7.3"], "usage: klab source fetch ",
         "klab source fetch: error: unrecognized arguments: --verison 7.3; did you mean --version?"),
        (["tset"], "usage: klab ", "did you mean test or bisect?"),
    ],
)  # fmt: skip
def test_a_misspelt_command_or_option_gets_its_commands_usage_and_a_suggestion(
    argv: list[str], usage: str, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(usage) and err.splitlines()[-1].endswith(error), err


def test_a_prefix_never_matches_the_hidden_suite_dir(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["test", "--suite-d", "x"])
    assert "--suite-dir" not in capsys.readouterr().err.splitlines()[-1]


def test_a_fragment_option_takes_one_value_and_leaves_the_series(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.parser().parse_args(["try", "-f", "debug", "series.mbox", "--src", "/k", "--arch", "x86_64"])
    assert (args.fragments, args.series) == (["debug"], "series.mbox")


@pytest.mark.parametrize(("cpus", "warned"), [(4, True), (2, False), (0, False)])
def test_more_cpus_than_the_kernel_brings_up_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cpus: int, warned: bool
) -> None:
    config = tmp_path / ".config"
    config.write_text("CONFIG_SMP=y\nCONFIG_NR_CPUS=2\n")
    common.warn_past_nr_cpus(cpus, config)
    err = capsys.readouterr().err
    assert ("--cpus 4, but the kernel has CONFIG_NR_CPUS=2: the guest brings up 2" in err) is warned
    assert err == "" or warned
