"""Fragment parsing, merging, validation messages, against a small Kconfig tree shaped like the kernel's."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import kconfig
from lab.errors import UserError

KCONFIG = """
config SECURITY
\tbool "Enable different security models"

config BPF_SYSCALL
\tbool "Enable bpf() system call"

config MODULES
\tbool "Enable loadable module support"

config BPF_JIT
\tbool "Enable BPF Just In Time compiler"
\tdepends on HAVE_EBPF_JIT
\tdepends on MODULES

config HAVE_EBPF_JIT
\tbool

config BPF_EVENTS
\tdepends on BPF_SYSCALL
\tdepends on (KPROBE_EVENTS || UPROBE_EVENTS) && PERF_EVENTS
\tbool
\tdefault y

config BPF_LSM
\tbool "Enable BPF LSM Instrumentation"
\tdepends on BPF_EVENTS
\tdepends on BPF_SYSCALL
\tdepends on SECURITY
\tdepends on BPF_JIT
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "Kconfig").write_text(KCONFIG)
    (tmp_path / "arch/arm64").mkdir(parents=True)
    (tmp_path / "arch/arm64/Kconfig").write_text('config BPF_LSM\n\tbool "wrong arch"\n\tdepends on NOT_X86\n')
    return tmp_path


def _frag(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.config"
    path.write_text(text)
    return path


def test_parse_fragment_values_and_unset(tmp_path: Path) -> None:
    frag = kconfig.parse_fragment(
        _frag(tmp_path, "f", '# why\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x y"\nCONFIG_D=0x10\nCONFIG_E=-3\n')
    )
    assert frag.options == (("A", "y"), ("B", "n"), ("C", '"x y"'), ("D", "0x10"), ("E", "-3"))
    assert len(frag.sha256) == 64


@pytest.mark.parametrize("line", ["CONFIG_A", "CONFIG_A=maybe", "A=y", "CONFIG_A= y", 'CONFIG_A="unterminated'])
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str) -> None:
    path = _frag(tmp_path, "bad", f"# ok\nCONFIG_OK=y\n{line}\n")
    with pytest.raises(UserError, match=r"bad.config:3: malformed fragment line"):
        kconfig.parse_fragment(path)


def test_unknown_fragment_lists_choices() -> None:
    with pytest.raises(UserError, match=r"unknown fragment 'bpf'; choose one of: .*bpf-lsm"):
        kconfig.find_fragment("bpf")


def test_default_fragments_exist_and_parse() -> None:
    for name in (*kconfig.DEFAULT_FRAGMENTS, "arch/x86_64", "arch/arm64", "debug"):
        frag = kconfig.parse_fragment(kconfig.find_fragment(name), name)
        assert frag.options, name


def test_every_fragment_option_has_a_why_comment() -> None:
    for name in (*kconfig.DEFAULT_FRAGMENTS, "arch/x86_64", "arch/arm64", "debug"):
        lines = kconfig.find_fragment(name).read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("CONFIG_"):
                above = [ln for ln in lines[:i] if ln.strip()]
                assert above and above[-1].startswith(("#", "CONFIG_")), f"{name}: {line} has no comment"


def test_conflicting_fragments_are_refused(tmp_path: Path) -> None:
    a = kconfig.parse_fragment(_frag(tmp_path, "a", "CONFIG_X=y\n"))
    b = kconfig.parse_fragment(_frag(tmp_path, "b", "# CONFIG_X is not set\n"))
    with pytest.raises(UserError, match="fragments disagree on CONFIG_X: a sets y, b sets n"):
        kconfig.merged_request([a, b])
    assert kconfig.merged_request([a, a]) == {"X": "y"}


def test_validate_names_the_unmet_dependencies(tree: Path) -> None:
    requested = {"SECURITY": "y", "BPF_SYSCALL": "y", "BPF_JIT": "y", "BPF_LSM": "y"}
    final = {"SECURITY": "y", "BPF_SYSCALL": "y", "HAVE_EBPF_JIT": "y", "MODULES": "n"}
    misses = kconfig.validate(requested, final, tree, "x86")
    assert [m.option for m in misses] == ["BPF_JIT", "BPF_LSM"]
    jit, lsm = (m.describe() for m in misses)
    assert jit.startswith("CONFIG_BPF_JIT=y did not land (now: not set): depends on (HAVE_EBPF_JIT=y) && (MODULES=n)")
    assert "[Kconfig:" in jit
    assert "depends on (BPF_EVENTS=n) && (BPF_SYSCALL=y) && (SECURITY=y) && (BPF_JIT=n)" in lsm
    # One level down: why BPF_EVENTS and BPF_JIT are off too.
    assert "BPF_EVENTS: depends on (BPF_SYSCALL=y) && ((KPROBE_EVENTS=n || UPROBE_EVENTS=n) && PERF_EVENTS=n)" in lsm
    assert "it has no prompt" in lsm
    assert "NOT_X86" not in lsm  # arch/arm64 Kconfig is not this arch's


def test_validate_passes_when_everything_landed(tree: Path) -> None:
    assert kconfig.validate({"SECURITY": "y", "MODULES": "n"}, {"SECURITY": "y"}, tree, "x86") == []


def test_unknown_symbol_is_explained(tree: Path) -> None:
    (miss,) = kconfig.validate({"NO_SUCH": "y"}, {}, tree, "x86")
    assert "no `config NO_SUCH`" in miss.describe()


def test_read_config(tmp_path: Path) -> None:
    path = tmp_path / ".config"
    path.write_text('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_LSM="landlock,bpf"\n# comment\n')
    assert kconfig.read_config(path) == {"A": "y", "B": "n", "LSM": '"landlock,bpf"'}


def test_digest_changes_with_content(tmp_path: Path) -> None:
    a1 = kconfig.parse_fragment(_frag(tmp_path, "a", "CONFIG_X=y\n"))
    a2 = kconfig.parse_fragment(_frag(tmp_path, "a", "CONFIG_X=y\nCONFIG_Y=y\n"))
    assert kconfig.fragments_digest([a1]) != kconfig.fragments_digest([a2])
    assert kconfig.fragments_digest([a1]) == kconfig.fragments_digest([a1])
