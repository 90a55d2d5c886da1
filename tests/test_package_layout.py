"""The package's shape: no import circles between its modules, and ``models/`` holds networks, not scripts.

An import circle works only while every import in it stays lazy or ordered just so; it also means neither module
can be read, tested or moved without the other. Imports inside functions count: a lazy import is still a circle.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from support.paths import ROOT

TOP_LEVEL = ("pipeline", "components", "models")  # installed as vugan.<top> (setup.py)


def module_files(root: Path) -> dict[str, Path]:
    """vugan module name -> source file, for every .py under the top-level folders of ``root``."""
    out = {}
    for top in TOP_LEVEL:
        for path in sorted((root / top).rglob("*.py")):
            parts = ("vugan",) + path.relative_to(root).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its source (module level or inside functions)."""
    files = module_files(root)
    graph = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, one level up per extra dot
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                # "from a import b": b is a module when a file says so, otherwise a name inside a
                targets |= {f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names}
        graph[name] = {t for t in targets if t in files and t != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan), each sorted; [] when the graph has no circle."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_cycle_finder_sees_a_circle_made_by_a_lazy_import(tmp_path):
    pkg = tmp_path / "components" / "demo"
    pkg.mkdir(parents=True)
    (tmp_path / "components" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from vugan.components.demo.b import helper\n")
    (pkg / "b.py").write_text("def helper():\n    from vugan.components.demo import a\n    return a\n")
    (pkg / "c.py").write_text("from . import b\n")  # relative import, one way only: no circle
    graph = import_graph(tmp_path)
    assert graph["vugan.components.demo.c"] == {"vugan.components.demo.b"}
    assert import_cycles(graph) == [["vugan.components.demo.a", "vugan.components.demo.b"]]


def test_no_import_circle_anywhere_in_the_package():
    """0 import circles in pipeline/, components/ and models/, counting imports inside functions too (the renovation
    removed embeddings <-> vu_encoder, trainer.core <-> init_from and pipeline.config <-> registry <-> component)."""
    assert import_cycles(import_graph(ROOT)) == []


def test_models_holds_networks_not_scripts():
    """Training and maintenance scripts live in tools/ and bench/, run against the installed package."""
    scripts = [str(p.relative_to(ROOT)) for p in (ROOT / "models").rglob("*.py")
               if "__main__" in p.read_text() or "sys.path" in p.read_text()]
    assert scripts == []
