"""The test matrix (lab.yaml): kernels x arches x boot parameter sets x suites.

Both `klab test --matrix`, `make test-kernel` and the CI pipelines (through
`klab ci matrix`) read this one file. Errors name the file and line.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab import arches, yamlfile
from lab.errors import UserError
from lab.kconfig import DEFAULT_FRAGMENTS
from lab.paths import SUITES

ALL_SUITES = ("landlock", "landlock_ptrace", "bpf_lsm", "seccomp")

# Allowed keys per mapping, and whether each is required.
_SCHEMA: dict[str, dict[str, bool]] = {
    "top": {"kernels": True, "arches": False, "suites": False, "boots": False, "rootfs": False},
    "kernel": {"name": True, "source": True, "fragments": False},
    "boot": {"name": True, "append": False, "suites": False, "expect_fail": False},
}


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
    # Tests that must FAIL in this boot (canaries): a failure passes, a pass fails.
    expect_fail: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cell:
    """One guest boot: a kernel on an arch with one boot parameter set, running some suites."""

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

    def cells(self) -> list[Cell]:
        out = []
        for kernel, arch, boot in itertools.product(self.kernels, self.arches, self.boots):
            suites = boot.suites or self.suites
            out.append(Cell(kernel, arch, boot, tuple(suites), self.rootfs))
        return out


def _check_keys(node: yaml.Node, kind: str, path: Path, where: str) -> None:
    if not isinstance(node, yaml.MappingNode):
        raise UserError(f"{path}:{node.start_mark.line + 1}: {where} must be a mapping")
    allowed = _SCHEMA[kind]
    seen = set()
    for key_node, _ in node.value:
        key = key_node.value
        if key not in allowed:
            raise UserError(
                f"{path}:{key_node.start_mark.line + 1}: unknown key {key!r} in {where}; "
                f"expected one of: {', '.join(allowed)}"
            )
        seen.add(key)
    for key, required in allowed.items():
        if required and key not in seen:
            raise UserError(f"{path}:{node.start_mark.line + 1}: {where} lacks the required key {key!r}")


def _items(node: yaml.Node, key: str) -> list[yaml.Node]:
    for key_node, value in node.value:
        if key_node.value == key:
            if not isinstance(value, yaml.SequenceNode):
                raise ValueError(key)
            return list(value.value)
    return []


def load(path: Path) -> Matrix:
    """Parse and validate a matrix file; every problem is a UserError with file:line."""
    root, data = yamlfile.load(path, "matrix")
    if root is None:
        raise UserError(f"{path}: empty matrix file; it needs at least `kernels:`")
    _check_keys(root, "top", path, "the matrix")
    try:
        for i, node in enumerate(_items(root, "kernels")):
            _check_keys(node, "kernel", path, f"kernels[{i}]")
        for i, node in enumerate(_items(root, "boots")):
            _check_keys(node, "boot", path, f"boots[{i}]")
    except ValueError as exc:
        raise UserError(f"{path}: `{exc}` must be a list") from exc
    return _build(data, path)


def _build(data: dict[str, Any], path: Path) -> Matrix:
    kernels = tuple(
        Kernel(str(k["name"]), str(k["source"]), tuple(k.get("fragments") or DEFAULT_FRAGMENTS))
        for k in data["kernels"]
    )
    arch_names = tuple(arches.get(a).name for a in data.get("arches") or arches.ARCHES)
    suites = tuple(data.get("suites") or ALL_SUITES)
    boots = tuple(
        Boot(
            str(b["name"]), str(b.get("append") or ""), tuple(b.get("suites") or ()), tuple(b.get("expect_fail") or ())
        )
        for b in data.get("boots") or [{"name": "default"}]
    )
    for suite in suites + tuple(s for b in boots for s in b.suites):
        check_suite(suite, path)
    names = [b.name for b in boots]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: boot names must be unique (they name cells): {names}")
    return Matrix(kernels, arch_names, suites, boots, str(data.get("rootfs") or "auto"), str(path))


def check_suite(name: str, where: Path | str = "--suite") -> None:
    if name not in ALL_SUITES or not (SUITES / name / "__init__.py").is_file():
        raise UserError(f"{where}: unknown suite {name!r}; choose from: {', '.join(ALL_SUITES)}")
