"""YAML files users write (image recipes, the matrix): data plus node tree, so errors can name the line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lab.errors import UserError


def load(path: Path, what: str) -> tuple[yaml.Node | None, Any]:
    """(node tree, data) of a YAML file; unreadable or invalid YAML is one UserError naming the file and line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what}: {exc.strerror}") from exc
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise UserError(f"{path}{line}: invalid YAML ({problem}); fix the syntax") from exc
