"""Kconfig fragments: parse, merge with conflict detection, prove they landed.

kconfiglib cannot parse modern kernels, so `.config` generation is left to the
kernel's own tools (merge_config.sh, olddefconfig) and this module only reads
text: fragments, the final `.config`, and the `depends on` lines of the tree's
Kconfig files, to say *why* an option did not land.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lab.errors import UserError
from lab.paths import KCONFIGS

# The fragments every `klab build` uses unless told otherwise (plus arch/<arch>).
DEFAULT_FRAGMENTS = ("base", "bpf-lsm", "landlock", "yama", "seccomp")

_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")
_VALUE = re.compile(r'^(y|m|n|-?\d+|0x[0-9a-fA-F]+|"(?:[^"\\]|\\.)*")$')


@dataclass(frozen=True)
class Fragment:
    """One fragment file: its options in order, and a hash of its content."""

    name: str
    path: Path
    options: tuple[tuple[str, str], ...]
    sha256: str


def parse_fragment(path: Path, name: str | None = None) -> Fragment:
    """Parse `CONFIG_X=v` and `# CONFIG_X is not set` lines; anything else is an error."""
    text = path.read_text()
    options: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        unset = _UNSET.match(line)
        if unset:
            options[unset.group(1)] = "n"
            continue
        if line.startswith("#"):
            continue
        setting = _SET.match(line)
        if not setting or not _VALUE.match(setting.group(2)):
            raise UserError(
                f"{path}:{lineno}: malformed fragment line {raw!r}; "
                'expected CONFIG_NAME=y|m|n|NUMBER|"string" or "# CONFIG_NAME is not set"'
            )
        options[setting.group(1)] = setting.group(2)
    return Fragment(name or path.stem, path, tuple(options.items()), hashlib.sha256(text.encode()).hexdigest())


def find_fragment(name: str, directory: Path = KCONFIGS) -> Path:
    """A fragment by name (`bpf-lsm`, `arch/arm64`) from kconfigs/, or a path to a file."""
    candidate = Path(name)
    if candidate.suffix == ".config" and candidate.is_file():
        return candidate.resolve()
    path = directory / f"{name}.config"
    if path.is_file():
        return path
    known = sorted(str(p.relative_to(directory).with_suffix("")) for p in directory.rglob("*.config"))
    raise UserError(f"unknown fragment {name!r}; choose one of: {', '.join(known)} (or pass a path to a .config file)")


def load_fragments(names: Iterable[str], arch_fragment: str) -> list[Fragment]:
    """Resolve and parse the requested fragments, with the arch fragment last."""
    frags = [parse_fragment(find_fragment(n), n) for n in names]
    frags.append(parse_fragment(find_fragment(arch_fragment), arch_fragment))
    return frags


def merged_request(fragments: Iterable[Fragment]) -> dict[str, str]:
    """What the fragments ask for together; two fragments disagreeing is an error."""
    wanted: dict[str, tuple[str, str]] = {}
    for frag in fragments:
        for option, value in frag.options:
            if option in wanted and wanted[option][0] != value:
                other_value, other = wanted[option]
                raise UserError(
                    f"fragments disagree on CONFIG_{option}: {other} sets {other_value}, {frag.name} sets {value}; "
                    "remove one of them"
                )
            wanted[option] = (value, frag.name)
    return {option: value for option, (value, _) in wanted.items()}


def fragments_digest(fragments: Iterable[Fragment]) -> str:
    h = hashlib.sha256()
    for frag in fragments:
        h.update(f"{frag.name}\0{frag.sha256}\0".encode())
    return h.hexdigest()


def read_config(path: Path) -> dict[str, str]:
    """Options of a `.config`: set ones with their value, `is not set` ones as 'n'."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        setting = _SET.match(line)
        if setting:
            values[setting.group(1)] = setting.group(2)
            continue
        unset = _UNSET.match(line)
        if unset:
            values[unset.group(1)] = "n"
    return values


@dataclass(frozen=True)
class Mismatch:
    """A requested option that the final .config does not have as asked."""

    option: str
    wanted: str
    got: str  # 'n' when absent or not set
    why: str  # the unmet `depends on`, as written in Kconfig, with current values

    def describe(self) -> str:
        got = "not set" if self.got == "n" else self.got
        return f"CONFIG_{self.option}={self.wanted} did not land (now: {got}){': ' + self.why if self.why else ''}"


def validate(requested: Mapping[str, str], final: Mapping[str, str], srctree: Path, srcarch: str) -> list[Mismatch]:
    """Compare what was asked with what `olddefconfig` produced, explaining each miss."""
    misses = [(opt, want, final.get(opt, "n")) for opt, want in requested.items() if final.get(opt, "n") != want]
    if not misses:
        return []
    index = KconfigIndex(srctree, srcarch)
    return [Mismatch(opt, want, got, index.explain(opt, final)) for opt, want, got in misses]


_CONFIG_START = re.compile(r"^\s*(?:menu)?config\s+([A-Za-z0-9_]+)\s*$")
_DEPENDS = re.compile(r"^\s*depends\s+on\s+(.+?)\s*$")
_PROMPT = re.compile(r'^\s*(?:bool|tristate|string|int|hex|prompt)\s+"')
_SYMBOL = re.compile(r"\b([A-Z][A-Z0-9_]+)\b")


@dataclass
class _Symbol:
    depends: list[str]
    where: str
    has_prompt: bool


class KconfigIndex:
    """`depends on` lines of every symbol, read straight from the tree's Kconfig files."""

    def __init__(self, srctree: Path, srcarch: str) -> None:
        self.symbols: dict[str, _Symbol] = {}
        for path in sorted(srctree.rglob("Kconfig*")):
            rel = path.relative_to(srctree)
            if rel.parts[0] == "arch" and len(rel.parts) > 2 and rel.parts[1] != srcarch:
                continue
            if path.is_file():
                self._scan(path, str(rel))

    def _scan(self, path: Path, rel: str) -> None:
        current: _Symbol | None = None
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            start = _CONFIG_START.match(line)
            if start:
                current = self.symbols.setdefault(start.group(1), _Symbol([], f"{rel}:{lineno}", False))
                continue
            if current is None:
                continue
            if re.match(r"^\s*(endmenu|endif|endchoice|choice|menu|if|source|comment)\b", line):
                current = None
                continue
            dep = _DEPENDS.match(line)
            if dep:
                current.depends.append(dep.group(1))
            elif _PROMPT.match(line):
                current.has_prompt = True

    def explain(self, option: str, values: Mapping[str, str], depth: int = 2) -> str:
        """The unmet `depends on` of `option`, annotated with current values, recursing into unmet symbols."""
        sym = self.symbols.get(option)
        if sym is None:
            return f"no `config {option}` in this tree's Kconfig files (misspelt, or gone in this kernel version)"
        parts = []
        if sym.depends:
            expr = " && ".join(f"({d})" if len(sym.depends) > 1 else d for d in sym.depends)
            parts.append(f"depends on {self._annotate(expr, values)} [{sym.where}]")
        if not sym.has_prompt:
            parts.append("it has no prompt: it is only set by `select` or by its default")
        if depth > 0:
            for dep in self._unmet(sym, values):
                inner = self.explain(dep, values, depth - 1)
                if inner and not inner.startswith("no `config"):
                    parts.append(f"{dep}: {inner}")
        return "; ".join(parts)

    def _unmet(self, sym: _Symbol, values: Mapping[str, str]) -> list[str]:
        names: list[str] = []
        for dep in sym.depends:
            for name in _SYMBOL.findall(dep):
                if values.get(name, "n") == "n" and name in self.symbols and name not in names:
                    names.append(name)
        return names

    @staticmethod
    def _annotate(expr: str, values: Mapping[str, str]) -> str:
        def show(match: re.Match[str]) -> str:
            name = match.group(1)
            value = values.get(name, "n")
            return f"{name}={value}"

        return _SYMBOL.sub(show, expr)
