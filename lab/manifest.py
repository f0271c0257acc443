"""Manifests beside artifacts (build.json, image.json, results.json...): typed records, written atomically.

A stage reads the previous stage's manifest as a frozen dataclass (a `Record`),
never as a dict: `Record.read` checks every field against its type and the
schema version, and a problem names the file. `write` goes through
`lab.atomic`, so readers never see half a file.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from lab import atomic
from lab.errors import UserError

R = TypeVar("R", bound="Record")


class ManifestError(UserError):
    """A manifest is missing, unreadable, of another schema, or malformed; the message names the file."""


class Record:
    """Base of the typed manifests: frozen dataclasses with one JSON form each.

    Subclasses are `@dataclass(frozen=True)` and set SCHEMA; fields may be
    str, int, float, bool, nested Records, and lists, tuples or dicts of those.
    """

    SCHEMA: ClassVar[int] = 1

    def to_json(self) -> dict[str, Any]:
        doc = {"schema": self.SCHEMA}
        doc.update(self.fields_json())
        return doc

    def fields_json(self) -> dict[str, Any]:
        """The fields alone, as a record nested in another document (a cell or a test in results.json)."""
        return dict(_dump(self))

    @classmethod
    def from_fields(cls: type[R], doc: Any, where: str) -> R:
        """A record from its fields alone (no schema key): each checked against its type, the error naming `where`."""
        if not isinstance(doc, dict):
            raise ManifestError(f"{where}: expected a JSON object")
        return _load(cls, doc, where)

    @classmethod
    def from_json(cls: type[R], doc: Any, where: str) -> R:
        """The record in `doc`; a wrong schema or a field of the wrong type is a ManifestError naming `where`."""
        if not isinstance(doc, dict):
            raise ManifestError(f"{where}: expected a JSON object")
        schema = doc.get("schema")
        if schema != cls.SCHEMA:
            raise ManifestError(
                f"{where}: schema {schema!r}, but this klab reads {cls.__name__} schema {cls.SCHEMA}; "
                "make it again with this klab"
            )
        return _load(cls, {k: v for k, v in doc.items() if k != "schema"}, where)

    def write(self, path: Path) -> None:
        atomic.write_text(path, json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls: type[R], path: Path) -> R:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise ManifestError(f"{path} does not exist") from exc
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read it ({exc.strerror or exc})") from exc
        except ValueError as exc:
            raise ManifestError(f"{path}: not JSON (cut short or overwritten?)") from exc
        return cls.from_json(doc, str(path))

    @classmethod
    def read_if_valid(cls: type[R], path: Path) -> R | None:
        """The record, or None when it is missing, unfinished or of another schema (a cache entry to redo)."""
        try:
            return cls.read(path)
        except ManifestError:
            return None


def _dump(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Record):
        return {f.name: _dump(getattr(value, f.name)) for f in dataclasses.fields(value)}  # type: ignore[arg-type]
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _dump(v) for k, v in value.items()}
    return value


def _load(cls: type[R], doc: dict[str, Any], where: str) -> R:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(doc) - set(fields))
    if unknown:
        raise ManifestError(f"{where}: unknown field(s) {', '.join(unknown)} in {cls.__name__}")
    kwargs = {}
    for name, f in fields.items():
        if name not in doc:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ManifestError(f"{where}: {cls.__name__} lacks the field {name!r}")
            continue
        kwargs[name] = _convert(hints[name], doc[name], f"{where}: {name}")
    return cls(**kwargs)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _convert(option, value, where)
            except ManifestError:
                continue
        raise ManifestError(f"{where}: {value!r} is none of {hint}")
    if hint is type(None):
        if value is not None:
            raise ManifestError(f"{where}: expected null, got {value!r}")
        return None
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            choices = ", ".join(str(m.value) for m in hint)
            raise ManifestError(f"{where}: {value!r} is not one of {choices}") from None
    if isinstance(hint, type) and issubclass(hint, Record):
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: expected an object")
        return _load(hint, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ManifestError(f"{where}: expected a list, got {value!r}")
        items = [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ManifestError(f"{where}: expected an object, got {value!r}")
        return {str(k): _convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ManifestError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def sha256(path: Path) -> str:
    """Content hash of an artifact a manifest records (a .config, a disk image), read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object written by something that is not a Record (the guest's results), or None if unusable."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_json(path: Path, doc: Any) -> None:
    """JSON that is not a Record (results.json's flat test list, caches), written atomically."""
    atomic.write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
