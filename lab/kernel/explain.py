"""Why a requested option did not land: the tree's own Kconfig, read as text and evaluated.

The index follows `source` statements from the top Kconfig (with this arch's
$(SRCARCH)), so the `if` blocks and `menu ... depends on` that enclose a
symbol count as its dependencies, and records `select`/`imply` as reverse
dependencies. An explanation lists each unmet condition once, as written,
with the current values of its symbols: `BPF_EVENTS (now BPF_EVENTS=n)`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lab.kernel.kconfig import misses

_CONFIG_START = re.compile(r"^\s*(?:menu)?config\s+([A-Za-z0-9_]+)\s*$")
_DEPENDS = re.compile(r"^\s*depends\s+on\s+(.+?)\s*$")
_SELECT = re.compile(r"^\s*(select|imply)\s+([A-Za-z0-9_]+)(?:\s+if\s+(.+?))?\s*$")
_PROMPT = re.compile(r'^\s*(?:(?:bool|tristate|string|int|hex)\s+"|prompt\s+")')
_IF = re.compile(r"^\s*if\s+(.+?)\s*$")
_SOURCE = re.compile(r'^\s*(o?r?source)\s+"([^"]+)"')
_BLOCK_END = re.compile(r"^\s*(endmenu|endif|endchoice|choice|menu|if|source|osource|rsource|comment|mainmenu)\b")
_TOKEN = re.compile(r'\s*(\$\([^)]*\)|&&|\|\||!=|<=|>=|[()!=<>]|"[^"]*"|[A-Za-z0-9_.-]+)')
_SYMBOL = re.compile(r"^[A-Z][A-Z0-9_]*$")
_HELP = re.compile(r"^(\s*)(?:help|---help---)\s*$")


@dataclass
class Symbol:
    where: str
    depends: list[str] = field(default_factory=list)  # own `depends on` lines, in order
    context: list[str] = field(default_factory=list)  # conditions of the enclosing if/menu blocks
    selected_by: list[str] = field(default_factory=list)  # "A" or "A if COND", from select/imply
    has_prompt: bool = False


class KconfigIndex:
    """Every symbol of a tree (for one arch): its conditions, where it is defined, and who selects it."""

    def __init__(self, srctree: Path, srcarch: str) -> None:
        self.srctree = srctree
        self.srcarch = srcarch
        self.symbols: dict[str, Symbol] = {}
        self._seen: set[Path] = set()
        self._read(srctree / "Kconfig", [])

    def defines(self, name: str) -> bool:
        return name in self.symbols and self.symbols[name].where != "?"

    def _read(self, path: Path, outer: list[str]) -> None:
        if path in self._seen or not path.is_file():
            return
        self._seen.add(path)
        rel = str(path.relative_to(self.srctree))
        context = list(outer)  # enclosing conditions, innermost last
        stack: list[int] = []  # how many conditions each open if/menu pushed
        current: Symbol | None = None
        name = ""
        menu_open = False
        help_indent = -1  # inside help text: lines indented deeper than its `help` keyword
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            indent = len(line.expandtabs()) - len(line.expandtabs().lstrip())
            if help_indent >= 0 and (not line.strip() or indent > help_indent):
                continue
            help_indent = -1
            helps = _HELP.match(line)
            if helps:
                help_indent = len(helps.group(1).expandtabs())
                continue
            start = _CONFIG_START.match(line)
            if start:
                name = start.group(1)
                current = self.symbols.setdefault(name, Symbol(f"{rel}:{lineno}"))
                if current.where == "?":  # seen as a select target first
                    current.where = f"{rel}:{lineno}"
                current.context.extend(c for c in context if c not in current.context)
                menu_open = False
                continue
            dep = _DEPENDS.match(line)
            if dep and menu_open:
                context.append(dep.group(1))
                stack[-1] += 1
                continue
            if _BLOCK_END.match(line):
                current, menu_open = None, False
                self._block(line, path, context, stack)
                menu_open = line.split()[0] in ("menu", "choice")
                continue
            if current is None:
                continue
            if dep:
                current.depends.append(dep.group(1))
            elif (sel := _SELECT.match(line)) is not None:
                target = self.symbols.setdefault(sel.group(2), Symbol("?"))
                target.selected_by.append(name + (f" if {sel.group(3)}" if sel.group(3) else ""))
            elif _PROMPT.match(line):
                current.has_prompt = True

    def _block(self, line: str, path: Path, context: list[str], stack: list[int]) -> None:
        word = line.split()[0]
        if word == "if":
            cond = _IF.match(line)
            context.append(cond.group(1) if cond else "")
            stack.append(1)
        elif word in ("menu", "choice"):
            stack.append(0)
        elif word in ("endif", "endmenu", "endchoice") and stack:
            for _ in range(stack.pop()):
                context.pop()
        elif word in ("source", "osource", "rsource", "orsource"):
            src = _SOURCE.match(line)
            if src:
                self._source(src.group(1), src.group(2), path, context)

    def _source(self, kind: str, name: str, path: Path, context: list[str]) -> None:
        name = name.replace("$(SRCARCH)", self.srcarch).replace("$(HEADER_ARCH)", self.srcarch)
        if "$(" in name:
            return
        base = path.parent if kind in ("rsource", "orsource") else self.srctree
        for target in sorted(base.glob(name)) if "*" in name else [base / name]:
            self._read(target, context)

    def explain(self, option: str, values: Mapping[str, str], depth: int = 2, seen: set[str] | None = None) -> str:
        """The unmet conditions of `option`, each once with current values, recursing into unmet symbols."""
        seen = seen if seen is not None else {option}
        sym = self.symbols.get(option)
        if sym is None or sym.where == "?":
            return f"no `config {option}` in this tree's Kconfig files (misspelt, or gone in this kernel version)"
        unmet = [c for c in dict.fromkeys(sym.depends + sym.context) if c and evaluate(c, values) == 0]
        parts = []
        if unmet:
            parts.append(f"depends on {', '.join(_show(c, values) for c in unmet)} [{sym.where}]")
        if not sym.has_prompt:
            chosen = sym.selected_by[:4] + (["..."] if len(sym.selected_by) > 4 else [])
            by = f" (selected by {', '.join(chosen)})" if chosen else ""
            parts.append(f"it has no prompt: only `select` or its default sets it{by}")
        if not parts:
            parts.append(f"its conditions hold; a `choice` or another option's value overrides it [{sym.where}]")
        if depth > 0:
            for name in dict.fromkeys(n for c in unmet for n in _symbols(c)):
                if values.get(name, "n") == "n" and self.defines(name) and name not in seen:
                    seen.add(name)
                    parts.append(f"{name}: {self.explain(name, values, depth - 1, seen)}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Mismatch:
    """A requested option that the final .config does not have as asked."""

    option: str
    wanted: str
    got: str  # 'n' when absent or not set
    why: str  # the unmet conditions, as written in Kconfig, with current values

    def describe(self) -> str:
        got = "not set" if self.got == "n" else self.got
        return f"CONFIG_{self.option}={self.wanted} did not land (now: {got}){': ' + self.why if self.why else ''}"


def validate(requested: Mapping[str, str], final: Mapping[str, str], srctree: Path, srcarch: str) -> list[Mismatch]:
    """Compare what was asked with what `olddefconfig` produced, explaining each miss."""
    missed = misses(requested, final)
    if not missed:
        return []
    index = KconfigIndex(srctree, srcarch)
    return [Mismatch(opt, want, got, index.explain(opt, final)) for opt, want, got in missed]


def _symbols(expr: str) -> list[str]:
    return [t for t in _tokens(expr) if _SYMBOL.match(t)]


def _show(clause: str, values: Mapping[str, str]) -> str:
    if _SYMBOL.match(clause):
        return f"{clause} (now {values.get(clause, 'n')})"
    names = list(dict.fromkeys(_symbols(clause)))
    now = ", ".join(f"{n}={values.get(n, 'n')}" for n in names)
    return f"{clause} (now {now})" if now else clause


def _tokens(expr: str) -> list[str]:
    return [m.group(1) for m in _TOKEN.finditer(expr)]


def evaluate(expr: str, values: Mapping[str, str]) -> int:
    """A Kconfig expression in tristate logic: 0 (n), 1 (m), 2 (y). Macros ($(...)) count as met."""
    tokens = _tokens(expr)
    pos = 0

    def peek() -> str:
        return tokens[pos] if pos < len(tokens) else ""

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def value(word: str) -> str:
        if word.startswith('"'):
            return word.strip('"')
        if _SYMBOL.match(word):
            return values.get(word, "n").strip('"')
        return word

    def atom() -> int:
        word = take() if peek() else "n"
        if word == "!":
            return 2 - atom()
        if word == "(":
            inner = disjunction()
            if peek() == ")":
                take()
            return inner
        if word.startswith("$("):
            return 2
        if peek() in ("=", "!=", "<", ">", "<=", ">="):
            op, other = take(), value(take() if peek() else "")
            return 2 if _compare(value(word), op, other) else 0
        return {"y": 2, "m": 1}.get(value(word), 0)

    def conjunction() -> int:
        result = atom()
        while peek() == "&&":
            take()
            result = min(result, atom())
        return result

    def disjunction() -> int:
        result = conjunction()
        while peek() == "||":
            take()
            result = max(result, conjunction())
        return result

    return disjunction()


def _compare(left: str, op: str, right: str) -> bool:
    if op in ("=", "!="):
        return (left == right) == (op == "=")
    try:
        a, b = int(left, 0), int(right, 0)
    except ValueError:
        a, b = left, right  # type: ignore[assignment]
    return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
