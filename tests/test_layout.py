"""The package layout stays legible: no import cycle between its parts, and methods/ holds only methods."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "taskbridge"


def _edges() -> dict[str, set[str]]:
    """Part (sub-package or top-level module) -> parts it imports, from every import in every file
    (function-level imports included: a lazy import is still a dependency)."""
    edges: dict[str, set[str]] = {}
    for f in SRC.rglob("*.py"):
        rel = f.relative_to(SRC)
        part = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        package = ["taskbridge", *rel.parts[:-1]]
        for node in ast.walk(ast.parse(f.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                mod = ".".join([*base, *([node.module] if node.module else [])])
                names = [mod] + ([f"{mod}.{a.name}" for a in node.names] if mod == "taskbridge" else [])
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                bits = name.split(".")
                if bits[0] == "taskbridge" and len(bits) > 1 and bits[1] != part:
                    edges.setdefault(part, set()).add(bits[1])
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one part (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_parts() -> None:
    edges = _edges()
    assert _cycles(edges) == []
    assert "engine" not in edges["evaluation"] and "engine" not in edges["inference"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]  # the check itself finds one


def test_methods_holds_only_registered_methods() -> None:
    support = {"__init__.py", "base.py", "common.py"}
    for f in sorted((SRC / "methods").glob("*.py")):
        if f.name in support:
            continue
        text = f.read_text()
        assert "METHODS.register(" in text, f"{f.name}: building blocks belong in losses/, discriminators/, modules/"
