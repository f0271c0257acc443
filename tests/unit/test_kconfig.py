"""Fragment parsing, merging, validation messages, against a small Kconfig tree shaped like the kernel's."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.errors import UserError
from lab.kernel import explain, kconfig

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
\thelp
\t  Lines of help text are not Kconfig syntax:
\t  if this were read as a block, everything after would be wrong.

config SERIAL_8250
\tbool "8250 serial"
\tdepends on !S390

config SERIAL_8250_CONSOLE
\tbool "Console on 8250"
\tdepends on SERIAL_8250=y

config X86
\tdef_bool y
\tselect HAVE_EBPF_JIT if X86_64

menuconfig VIRTUALIZATION
\tbool "Virtualization"

if VIRTUALIZATION

config KVM
\tbool "KVM"

endif

source "arch/$(SRCARCH)/Kconfig"
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "Kconfig").write_text(KCONFIG)
    (tmp_path / "arch/arm64").mkdir(parents=True)
    (tmp_path / "arch/arm64/Kconfig").write_text('config BPF_LSM\n\tbool "wrong arch"\n\tdepends on NOT_X86\n')
    (tmp_path / "arch/x86").mkdir(parents=True)
    (tmp_path / "arch/x86/Kconfig").write_text('config X86_64\n\tbool "64-bit"\n')
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
    misses = explain.validate(requested, final, tree, "x86")
    assert [m.option for m in misses] == ["BPF_JIT", "BPF_LSM"]
    jit, lsm = (m.describe() for m in misses)
    # Only the unmet conditions, each once, with the values that make them unmet.
    assert jit.startswith("CONFIG_BPF_JIT=y did not land (now: not set): depends on MODULES (now n) [Kconfig:")
    assert "HAVE_EBPF_JIT" not in jit.split("[")[0]
    assert lsm.startswith(
        "CONFIG_BPF_LSM=y did not land (now: not set): depends on BPF_EVENTS (now n), BPF_JIT (now n)"
    )
    # One level down: why BPF_EVENTS is off too, its compound clause with every symbol's value.
    assert (
        "BPF_EVENTS: depends on (KPROBE_EVENTS || UPROBE_EVENTS) && PERF_EVENTS "
        "(now KPROBE_EVENTS=n, UPROBE_EVENTS=n, PERF_EVENTS=n)"
    ) in lsm
    assert "it has no prompt" in lsm
    assert lsm.count("BPF_JIT: depends on") == 1  # explained once, though two paths lead to it
    assert "NOT_X86" not in lsm  # arch/arm64 Kconfig is not this arch's
    assert "help text" not in lsm and "if this were" not in lsm


def test_explanations_read_comparisons_and_negations_plainly(tree: Path) -> None:
    index = explain.KconfigIndex(tree, "x86")
    assert index.explain("SERIAL_8250_CONSOLE", {"SERIAL_8250": "n"}).startswith(
        "depends on SERIAL_8250=y (now SERIAL_8250=n)"
    )
    # A negation that holds is not a problem: SERIAL_8250 is then overridden by something else.
    assert "S390" not in index.explain("SERIAL_8250", {})
    assert index.explain("SERIAL_8250", {"S390": "y"}).startswith("depends on !S390 (now S390=y)")


def test_enclosing_if_blocks_and_selects_count(tree: Path) -> None:
    index = explain.KconfigIndex(tree, "x86")
    assert index.explain("KVM", {}).startswith("depends on VIRTUALIZATION (now n)")
    assert index.explain("KVM", {"VIRTUALIZATION": "y"}).startswith("its conditions hold")
    assert "selected by X86 if X86_64" in index.explain("HAVE_EBPF_JIT", {})
    assert index.defines("X86_64") and not index.defines("NOT_X86")  # arch/x86 sourced, arch/arm64 not


@pytest.mark.parametrize(
    ("expr", "values", "want"),
    [
        ("A && B", {"A": "y", "B": "m"}, 1),
        ("A || !B", {}, 2),
        ("A=y", {"A": "y"}, 2),
        ('A != "x"', {"A": '"x"'}, 0),
        ("(A || B) && C", {"B": "y", "C": "y"}, 2),
        ("X < 5", {"X": "3"}, 2),
        ("$(cc-option,-mfoo) && A", {"A": "y"}, 2),
    ],
)
def test_expression_evaluation(expr: str, values: dict[str, str], want: int) -> None:
    assert explain.evaluate(expr, values) == want


def test_validate_passes_when_everything_landed(tree: Path) -> None:
    assert explain.validate({"SECURITY": "y", "MODULES": "n"}, {"SECURITY": "y"}, tree, "x86") == []


def test_unknown_symbol_is_explained(tree: Path) -> None:
    (miss,) = explain.validate({"NO_SUCH": "y"}, {}, tree, "x86")
    assert "no `config NO_SUCH`" in miss.describe()


def test_version_conditions_and_optional_options(tmp_path: Path) -> None:
    frag = kconfig.parse_fragment(
        _frag(
            tmp_path,
            "f",
            "CONFIG_A=y\n# klab: optional\nCONFIG_GONE=y\n# klab: kernel >= 6.2\nCONFIG_NEW=y\n"
            "# klab: kernel < 7.0, >= 6.1\nCONFIG_MID=y\n",
        )
    )
    defined = {"A", "NEW", "MID"}.__contains__
    old = kconfig.resolve([frag], (6, 1), defined)
    assert old.wanted == {"A": "y", "MID": "y"}
    assert old.not_applicable == {"GONE": "not in this kernel (optional)", "NEW": "only for kernel >= 6.2"}
    new = kconfig.resolve([frag], (7, 3), defined)
    assert new.wanted == {"A": "y", "NEW": "y"}
    assert new.not_applicable["MID"] == "only for kernel < 7.0"
    # merge_config.sh sees only what applies; the rest stays visible as a comment.
    text = kconfig.applicable_text(frag, new)
    assert "CONFIG_NEW=y" in text and "\nCONFIG_GONE" not in text and "# CONFIG_GONE: not in this kernel" in text
    # An optional option the tree defines is requested like any other.
    assert kconfig.resolve([frag], (7, 3), lambda o: True).wanted["GONE"] == "y"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# klab: sometimes\nCONFIG_A=y\n", r"f.config:1: malformed directive 'klab: sometimes'"),
        ("# klab: kernel >= 6\nCONFIG_A=y\n", r"f.config:1: malformed directive"),
        ("CONFIG_A=y\n# klab: optional\n", r"f.config:2: 'klab:' directive with no option after it"),
    ],
)
def test_malformed_directives_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        kconfig.parse_fragment(_frag(tmp_path, "f", text))


def test_read_config(tmp_path: Path) -> None:
    path = tmp_path / ".config"
    path.write_text('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_LSM="landlock,bpf"\n# comment\n')
    assert kconfig.read_config(path) == {"A": "y", "B": "n", "LSM": '"landlock,bpf"'}


def test_digest_changes_with_content(tmp_path: Path) -> None:
    a1 = kconfig.parse_fragment(_frag(tmp_path, "a", "CONFIG_X=y\n"))
    a2 = kconfig.parse_fragment(_frag(tmp_path, "a", "CONFIG_X=y\nCONFIG_Y=y\n"))
    assert kconfig.fragments_digest([a1]) != kconfig.fragments_digest([a2])
    assert kconfig.fragments_digest([a1]) == kconfig.fragments_digest([a1])
