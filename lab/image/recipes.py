"""Image recipes (images/*.yaml): the schema, and a loader whose every error names the file, line and fix."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab import yamlfile
from lab.errors import UserError
from lab.paths import IMAGES

DEFAULT_RECIPE = "debian-bookworm"
VARIANTS = ("essential", "apt", "minbase", "required", "buildd", "important", "standard")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_PACKAGE_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


@dataclass(frozen=True)
class Recipe:
    path: Path
    name: str
    suite: str
    variant: str
    packages: tuple[str, ...]
    size_mb: int
    components: tuple[str, ...] = ("main",)
    mirror: str = ""  # empty: the Debian archive of the host's own apt sources (lab.debian.archive_uri)
    # dpkg path-exclude globs: files the guest never needs (docs, man pages, translations).
    exclude: tuple[str, ...] = ()


# key -> (type check, what to write). Required keys are those without a Recipe default.
_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (lambda v: isinstance(v, str) and bool(_NAME_RE.match(v)), "a lower-case name like debian-bookworm"),
    "suite": (lambda v: isinstance(v, str) and bool(_NAME_RE.match(v)), "a Debian suite like bookworm"),
    "variant": (lambda v: v in VARIANTS, f"one of: {', '.join(VARIANTS)}"),
    "packages": (
        lambda v: isinstance(v, list) and all(isinstance(p, str) and _PACKAGE_RE.match(p) for p in v),
        "a list of Debian package names",
    ),
    "size_mb": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer (MiB)"),
    "components": (
        lambda v: isinstance(v, list) and bool(v) and all(isinstance(c, str) and _NAME_RE.match(c) for c in v),
        "a list like [main]",
    ),
    "mirror": (lambda v: isinstance(v, str) and v.startswith(("http://", "https://", "file:/")), "an http(s) URL"),
    "exclude": (
        lambda v: isinstance(v, list) and all(isinstance(p, str) and p.startswith("/") for p in v),
        "a list of absolute path globs like /usr/share/doc/*",
    ),
}
_REQUIRED = ("name", "suite", "variant", "packages", "size_mb")
_OPTIONAL = ("components", "mirror", "exclude")


def load_recipe(path: Path) -> Recipe:
    """Parse and validate a recipe; every problem is one UserError naming the file, line and fix."""
    node, doc = yamlfile.load(path, "image recipe")
    if not isinstance(doc, dict) or not isinstance(node, yaml.MappingNode):
        raise UserError(f"{path}: an image recipe must be a mapping of keys ({', '.join(_FIELDS)})")
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    _check_fields(path, doc, lines)
    if doc["name"] != path.stem:
        raise UserError(
            f"{path}:{lines['name']}: name {doc['name']!r} differs from the file name; "
            f"rename the file to {doc['name']}.yaml or set name: {path.stem}"
        )
    optional: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in doc.items() if k in _OPTIONAL}
    return Recipe(
        path=path.resolve(),
        name=doc["name"],
        suite=doc["suite"],
        variant=doc["variant"],
        packages=tuple(doc["packages"]),
        size_mb=doc["size_mb"],
        **optional,
    )


def _check_fields(path: Path, doc: dict[Any, Any], lines: dict[str, int]) -> None:
    for key in doc:
        if key not in _FIELDS:
            raise UserError(f"{path}:{lines.get(str(key), '?')}: unknown key {key!r}; known keys: {', '.join(_FIELDS)}")
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        raise UserError(f"{path}: missing key{'s' if len(missing) > 1 else ''}: {', '.join(missing)}; add them")
    for key, value in doc.items():
        ok, what = _FIELDS[key]
        if not ok(value):
            raise UserError(f"{path}:{lines[key]}: {key} is {value!r}; it must be {what}")


def find_recipe(name_or_path: str) -> Path:
    """A recipe by name (images/NAME.yaml) or by path; unknown names list the choices."""
    as_path = Path(name_or_path)
    if as_path.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        if not as_path.is_file():
            raise UserError(f"image recipe {name_or_path} does not exist")
        return as_path
    candidate = IMAGES / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    choices = ", ".join(sorted(p.stem for p in IMAGES.glob("*.yaml"))) or "(none)"
    raise UserError(f"unknown image recipe {name_or_path!r}; choose one of: {choices}, or give a path to a .yaml file")
