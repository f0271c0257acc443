"""Kconfig fragments: parse, resolve for a tree, merge with conflict detection, prove they landed.

kconfiglib cannot parse modern kernels, so `.config` generation is left to the
kernel's own tools (merge_config.sh, olddefconfig) and this module only reads
text: fragments and the final `.config`. Why an option did not land is
`lab.kernel.explain`'s job.

Fragments are the kernel's own format plus one kind of comment that
merge_config.sh ignores: a `# klab:` line right above an option says where
the option applies, because options come and go between kernel versions:

    # klab: kernel >= 6.2          requested on 6.2 and newer only
    # klab: kernel < 7.0, >= 6.1   both bounds
    # klab: optional               requested where this tree's Kconfig defines it;
                                   elsewhere reported as "not in this kernel"

Everything that applies must land; what does not apply is listed in the
build's report, never silently dropped.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from lab.errors import UserError
from lab.paths import KCONFIGS

# The fragments every `klab build` uses unless told otherwise (plus arch/<arch>).
DEFAULT_FRAGMENTS = ("base", "bpf-lsm", "landlock", "yama", "seccomp")

_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")
_VALUE = re.compile(r'^(y|m|n|-?\d+|0x[0-9a-fA-F]+|"(?:[^"\\]|\\.)*")$')
_DIRECTIVE = re.compile(r"^#\s*klab:\s*(.*?)\s*$")
_BOUND = re.compile(r"^(?:kernel\s*)?(>=|<)\s*(\d+)\.(\d+)$")

Version = tuple[int, int]


@dataclass(frozen=True)
class Condition:
    """Where one option applies: a kernel version range, or only where the tree defines it."""

    since: Version | None = None  # inclusive
    before: Version | None = None  # exclusive
    optional: bool = False

    def excludes(self, version: Version) -> str:
        """Why this option does not apply to `version` ('' when it does)."""
        if self.since and version < self.since:
            return f"only for kernel >= {self.since[0]}.{self.since[1]}"
        if self.before and version >= self.before:
            return f"only for kernel < {self.before[0]}.{self.before[1]}"
        return ""


@dataclass(frozen=True)
class Fragment:
    """One fragment file: its options in order, their conditions, and a hash of its content."""

    name: str
    path: Path
    options: tuple[tuple[str, str], ...]
    sha256: str
    conditions: tuple[tuple[str, Condition], ...] = ()


def parse_condition(text: str, where: str) -> Condition:
    """`optional`, or comma-separated `kernel >= X.Y` / `< X.Y` bounds."""
    if text == "optional":
        return Condition(optional=True)
    since = before = None
    for part in text.split(","):
        bound = _BOUND.match(part.strip())
        if not bound:
            raise UserError(
                f"{where}: malformed directive 'klab: {text}'; "
                "expected 'klab: optional' or 'klab: kernel >= X.Y[, < X.Y]'"
            )
        version = (int(bound.group(2)), int(bound.group(3)))
        if bound.group(1) == ">=":
            since = version
        else:
            before = version
    return Condition(since=since, before=before)


def parse_fragment(path: Path, name: str | None = None) -> Fragment:
    """Parse `CONFIG_X=v`, `# CONFIG_X is not set` and `# klab:` lines; anything else is an error."""
    text = path.read_text()
    options: dict[str, str] = {}
    conditions: dict[str, Condition] = {}
    pending: tuple[Condition, int] | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        directive = _DIRECTIVE.match(line)
        if directive:
            pending = (parse_condition(directive.group(1), f"{path}:{lineno}"), lineno)
            continue
        option = _option(line, f"{path}:{lineno}", raw)
        if option is None:
            continue
        options[option[0]] = option[1]
        if pending:
            conditions[option[0]] = pending[0]
            pending = None
    if pending:
        raise UserError(f"{path}:{pending[1]}: 'klab:' directive with no option after it; put it right above one")
    return Fragment(
        name or path.stem,
        path,
        tuple(options.items()),
        hashlib.sha256(text.encode()).hexdigest(),
        tuple(conditions.items()),
    )


def _option(line: str, where: str, raw: str) -> tuple[str, str] | None:
    unset = _UNSET.match(line)
    if unset:
        return unset.group(1), "n"
    if not line or line.startswith("#"):
        return None
    setting = _SET.match(line)
    if not setting or not _VALUE.match(setting.group(2)):
        raise UserError(
            f"{where}: malformed fragment line {raw!r}; "
            'expected CONFIG_NAME=y|m|n|NUMBER|"string" or "# CONFIG_NAME is not set"'
        )
    return setting.group(1), setting.group(2)


def find_fragment(name: str, directory: Path = KCONFIGS) -> Path:
    """A fragment by name (`bpf-lsm`, `arch/arm64`) from kconfigs/, or a path to a file."""
    candidate = Path(name)
    if candidate.suffix == ".config" and candidate.is_file():
        return candidate.resolve()
    path = directory / f"{name}.config"
    if path.is_file():
        return path
    raise UserError(
        f"unknown fragment {name!r}; choose one of: {', '.join(known_fragments(directory))} "
        "(or pass a path to a .config file)"
    )


def known_fragments(directory: Path = KCONFIGS) -> list[str]:
    return sorted(str(p.relative_to(directory).with_suffix("")) for p in directory.rglob("*.config"))


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


@dataclass(frozen=True)
class Request:
    """What the fragments ask of one tree: the options that apply, and those that do not, with why."""

    wanted: dict[str, str]
    not_applicable: dict[str, str]  # option -> reason ("not in this kernel", "only for kernel >= 6.2")


def resolve(fragments: Iterable[Fragment], version: Version, defined: Callable[[str], bool]) -> Request:
    """Apply every option's condition to a tree of `version` whose Kconfig defines `defined(option)`."""
    frags = list(fragments)
    wanted = merged_request(frags)
    skipped: dict[str, str] = {}
    for frag in frags:
        for option, cond in frag.conditions:
            why = cond.excludes(version)
            if not why and cond.optional and not defined(option):
                why = "not in this kernel (optional)"
            if why:
                skipped[option] = why
    return Request({k: v for k, v in wanted.items() if k not in skipped}, skipped)


def applicable_text(frag: Fragment, request: Request) -> str:
    """The fragment as merge_config.sh should see it for this tree: options that do not apply are left out."""
    lines = []
    for option, value in frag.options:
        if option in request.not_applicable:
            lines.append(f"# CONFIG_{option}: {request.not_applicable[option]}")
        elif value == "n":
            lines.append(f"# CONFIG_{option} is not set")
        else:
            lines.append(f"CONFIG_{option}={value}")
    return "\n".join(lines) + "\n"


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


def misses(requested: Mapping[str, str], final: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(option, wanted, got) for every requested option the final .config does not have as asked."""
    return [(opt, want, final.get(opt, "n")) for opt, want in requested.items() if final.get(opt, "n") != want]
