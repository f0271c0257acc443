"""The matrix file: cells, and errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import UserError
from lab.paths import REPO_ROOT
from lab.run import matrix


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    return path


def test_repo_lab_yaml_cells() -> None:
    mtx = matrix.load(REPO_ROOT / "lab.yaml")
    ids = [c.id for c in mtx.cells()]
    assert ids == [
        "x86_64.6.12.default", "x86_64.6.12.nobpf", "arm64.6.12.default", "arm64.6.12.nobpf",
        "x86_64.7.3.default", "x86_64.7.3.nobpf", "arm64.7.3.default", "arm64.7.3.nobpf",
    ]  # fmt: skip
    nobpf = next(c for c in mtx.cells() if c.boot.name == "nobpf")
    assert nobpf.suites == ("bpf_lsm",) and "bpf" not in nobpf.boot.append.split("lsm=")[1].split(",")
    assert Path(mtx.known_failures) == REPO_ROOT / "known-failures.yaml"


def test_expect_fail_moved_to_known_failures(tmp_path: Path) -> None:
    text = "kernels: [{name: a, source: b}]\nboots:\n  - name: x\n    expect_fail: [s.t]\n"
    with pytest.raises(UserError, match=r"lab.yaml:4: expect_fail moved to known-failures.yaml"):
        matrix.load(_write(tmp_path, text))


def test_unknown_key_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, 'kernels:\n  - name: "6.12"\n    source: debian:6.12\n    fragmnts: [base]\n')
    with pytest.raises(UserError, match=r"lab.yaml:4: unknown key 'fragmnts' in kernels\[0\]; expected one of"):
        matrix.load(path)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "kernels:\n  - name: [unclosed\n")
    with pytest.raises(UserError, match=r"lab.yaml:\d+: invalid YAML"):
        matrix.load(path)


def test_missing_required_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "kernels:\n  - name: x\n")
    with pytest.raises(UserError, match=r"lab.yaml:2: kernels\[0\] lacks the required key 'source'"):
        matrix.load(path)


def test_unknown_suite_and_arch(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown suite 'lsm'"):
        matrix.load(_write(tmp_path, "kernels: [{name: a, source: b}]\nsuites: [lsm]\n"))
    with pytest.raises(UserError, match="unknown arch 'riscv'"):
        matrix.load(_write(tmp_path, "kernels: [{name: a, source: b}]\narches: [riscv]\n"))


def test_top_level_unknown_key(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"lab.yaml:2: unknown key 'arch' in the matrix"):
        matrix.load(_write(tmp_path, "kernels: [{name: a, source: b}]\narch: [x86_64]\n"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "kernels: [{name: a, source: b}]\nsuites: landlock\n",
            r"lab.yaml:2: suites must be a list such as \[landlock, seccomp\], not the string 'landlock'",
        ),
        (
            "kernels: [{name: a, source: b}]\narches: [x86_64, sparc]\n",
            r"lab.yaml:2: unknown arch 'sparc'; choose one of",
        ),
        ("kernels: [{name: a, source: b}]\nsuites: [seccomp, lsm]\n", r"lab.yaml:2: suite: unknown suite 'lsm'"),
        ("kernels: {name: a}\n", r"lab.yaml:1: kernels must be a list such as"),
        ("kernels: [{name: [a], source: b}]\n", r"lab.yaml:1: a kernel's name must be a single value"),
        (
            "kernels: [{name: a, source: b}]\nboots: [{name: x, suites: bpf_lsm}]\n",
            r"lab.yaml:2: suites must be a list",
        ),
        ("kernels: [{name: a, source: b}]\nboots: [{name: x}, {name: x}]\n", r"lab.yaml:2: boot names must be unique"),
    ],
)
def test_type_errors_name_file_line_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        matrix.load(_write(tmp_path, text))
