"""The test matrix (lab.yaml): kernels x arches x boot parameter sets x suites.

`klab test --matrix`, `make test-kernel` and the CI pipelines (through `klab
ci matrix`) read this one file. Every value is checked against its expected
type on the YAML node that holds it, so each error names the file, the line
and the fix: `lab.yaml:8: suites must be a list such as [landlock, seccomp],
not the string 'landlock'`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lab import arches, yamlfile
from lab.errors import UserError
from lab.kernel.kconfig import DEFAULT_FRAGMENTS
from lab.run import catalog


@dataclass(frozen=True)
class Kernel:
    name: str  # short label used in cell ids: "6.12"
    source: str  # "debian:6.12" or a path to a tree
    fragments: tuple[str, ...] = DEFAULT_FRAGMENTS


@dataclass(frozen=True)
class Boot:
    name: str
    append: str = ""
    suites: tuple[str, ...] = ()  # empty: the matrix's suites


@dataclass(frozen=True)
class MatrixCell:
    """One planned guest boot: a kernel on an arch with one boot parameter set, running some suites."""

    kernel: Kernel
    arch: str
    boot: Boot
    suites: tuple[str, ...]
    rootfs: str = "auto"

    @property
    def id(self) -> str:
        return f"{self.arch}.{self.kernel.name}.{self.boot.name}"


@dataclass(frozen=True)
class Matrix:
    kernels: tuple[Kernel, ...]
    arches: tuple[str, ...]
    suites: tuple[str, ...]
    boots: tuple[Boot, ...] = (Boot("default"),)
    rootfs: str = "auto"
    source_file: str = field(default="", compare=False)
    known_failures: str = ""  # path of the known-failures file (lab.results.knownfail), relative paths resolved

    def all_suites(self) -> tuple[str, ...]:
        """Every suite some boot of the matrix runs, in the matrix's order."""
        return tuple(dict.fromkeys([*self.suites, *(s for b in self.boots for s in b.suites)]))

    def cells(self) -> list[MatrixCell]:
        out = []
        for kernel, arch, boot in itertools.product(self.kernels, self.arches, self.boots):
            out.append(MatrixCell(kernel, arch, boot, tuple(boot.suites or self.suites), self.rootfs))
        return out


class _Reader:
    """Typed access to the matrix's YAML nodes; every error carries file:line and the fix."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, node: yaml.Node, message: str) -> UserError:
        return UserError(f"{self.path}:{node.start_mark.line + 1}: {message}")

    def mapping(self, node: yaml.Node, where: str, keys: dict[str, bool]) -> dict[str, yaml.Node]:
        """The mapping's values by key; unknown keys and missing required ones are errors."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{where} must be a mapping (key: value lines), not {_shown(node)}")
        out: dict[str, yaml.Node] = {}
        for key_node, value in node.value:
            key = str(key_node.value)
            if key not in keys:
                raise self.fail(key_node, f"unknown key {key!r} in {where}; expected one of: {', '.join(keys)}")
            out[key] = value
        for key, required in keys.items():
            if required and key not in out:
                raise self.fail(node, f"{where} lacks the required key {key!r}")
        return out

    def text(self, node: yaml.Node, where: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.value == "":
            raise self.fail(node, f'{where} must be a single value such as "6.12", not {_shown(node)}')
        return str(node.value)

    def items(self, node: yaml.Node, where: str, example: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{where} must be a list such as {example}, not {_shown(node)}")
        return list(node.value)

    def words(self, node: yaml.Node, where: str, example: str, check: Callable[[str], str] | None = None) -> list[str]:
        out = []
        for item in self.items(node, where, example):
            word = self.text(item, f"each of {where}")
            if check is not None:
                try:
                    word = check(word)
                except UserError as exc:
                    raise self.fail(item, str(exc)) from exc
            out.append(word)
        return out


def _shown(node: yaml.Node) -> str:
    if isinstance(node, yaml.ScalarNode):
        return f"the string {node.value!r}" if node.value != "" else "an empty value"
    return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"


def _suite(name: str) -> str:
    catalog.check(name, "suite")
    return name


def _arch(name: str) -> str:
    return arches.get(name).name


def load(path: Path) -> Matrix:
    """Parse and validate a matrix file; every problem is a UserError with file:line."""
    root, _ = yamlfile.load(path, "matrix")
    if root is None:
        raise UserError(f"{path}: empty matrix file; it needs at least `kernels:`")
    r = _Reader(path)
    keys = {"kernels": True, "arches": False, "suites": False, "boots": False, "rootfs": False, "known_failures": False}
    top = r.mapping(root, "the matrix", keys)
    kernels = []
    for i, node in enumerate(r.items(top["kernels"], "kernels", '[{name: "6.12", source: "debian:6.12"}]')):
        k = r.mapping(node, f"kernels[{i}]", {"name": True, "source": True, "fragments": False})
        frags = r.words(k["fragments"], "fragments", "[base, landlock]") if "fragments" in k else DEFAULT_FRAGMENTS
        kernels.append(
            Kernel(r.text(k["name"], "a kernel's name"), r.text(k["source"], "a kernel's source"), tuple(frags))
        )
    arch_names = r.words(top["arches"], "arches", "[x86_64, arm64]", _arch) if "arches" in top else list(arches.ARCHES)
    suite_names = r.words(top["suites"], "suites", "[landlock, seccomp]", _suite) if "suites" in top else []
    boots = []
    for i, node in enumerate(r.items(top["boots"], "boots", "[{name: default}]") if "boots" in top else []):
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                if key_node.value == "expect_fail":
                    raise r.fail(
                        key_node, "expect_fail moved to known-failures.yaml: an entry with test, boots, reason"
                    )
        b = r.mapping(node, f"boots[{i}]", {"name": True, "append": False, "suites": False})
        boots.append(
            Boot(
                r.text(b["name"], "a boot's name"),
                r.text(b["append"], "append") if "append" in b else "",
                tuple(r.words(b["suites"], "suites", "[bpf_lsm]", _suite) if "suites" in b else ()),
            )
        )
    names = [b.name for b in boots]
    if len(set(names)) != len(names):
        raise r.fail(top["boots"], f"boot names must be unique (they name cells): {names}")
    rootfs = r.text(top["rootfs"], "rootfs") if "rootfs" in top else "auto"
    known = ""
    if "known_failures" in top:
        known_path = path.parent / r.text(top["known_failures"], "known_failures")
        if not known_path.is_file():
            raise r.fail(top["known_failures"], f"known_failures: {known_path} does not exist; fix the path")
        known = str(known_path)
    return Matrix(
        tuple(kernels),
        tuple(arch_names),
        tuple(suite_names or catalog.all_suites()),
        tuple(boots) or (Boot("default"),),
        rootfs,
        str(path),
        known,
    )
