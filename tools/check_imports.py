"""Check the package's import graph: no cycles, and the engine never imports Nautilus.

Usage: ``uv run python tools/check_imports.py`` (exit 0 when clean, 1 with one line per problem).

Every ``import`` / ``from ... import`` in ``nautilus_dsm`` counts, at module level and inside
functions (a lazy import still ties two modules together), except those under
``if TYPE_CHECKING:`` (annotations only). ``from a.b import c`` is an edge to ``a.b.c`` when that
is a module, else to ``a.b``; importing a submodule is not counted as importing its package's
``__init__`` (the convention of grimp / import-linter).

Rules:
- no cycle among the package's modules (strongly connected components of more than one module,
  or a module importing itself);
- ``nautilus_dsm.dsm`` and ``nautilus_dsm.common`` (and ``nautilus_dsm.constants``,
  ``nautilus_dsm.errors``) import neither ``nautilus_trader`` nor any module outside
  ``dsm``, ``common``, ``constants`` and ``errors``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = "nautilus_dsm"
ENGINE = (
    "nautilus_dsm.dsm",
    "nautilus_dsm.common",
    "nautilus_dsm.constants",
    "nautilus_dsm.errors",
)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: set[str]) -> None:
        self.module, self.is_package, self.modules = module, is_package, modules
        self.found: list[tuple[str, int]] = []

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.module if self.is_package else self.module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        for alias in node.names:
            candidate = f"{base}.{alias.name}"
            self.found.append((candidate if candidate in self.modules else base, node.lineno))


def import_graph(root: Path) -> dict[str, list[tuple[str, int]]]:
    """Map each module of the package to the imports it makes (target, line)."""
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules = {module_name(root, f) for f in files}
    graph: dict[str, list[tuple[str, int]]] = {}
    for path in files:
        name = module_name(root, path)
        visitor = _Imports(name, path.name == "__init__.py", modules)
        visitor.visit(ast.parse(path.read_text(), str(path)))
        graph[name] = visitor.found
    return graph


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    # Tarjan's strongly connected components, iteratively (the graph is small, recursion is not
    # the problem; clarity is).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    return found


def problems(root: Path) -> list[str]:
    """Every rule broken, one readable line each (empty when the graph is clean)."""
    graph = import_graph(root)
    out: list[str] = []
    edges: dict[str, set[str]] = {}
    for module, imports in graph.items():
        internal = {t for t, _ in imports if t == PACKAGE or t.startswith(PACKAGE + ".")}
        edges[module] = {t for t in internal if t in graph}
        if module.startswith(ENGINE):
            for target, line in imports:
                if target == "nautilus_trader" or target.startswith("nautilus_trader."):
                    out.append(
                        f"{module}:{line} imports {target}: the engine never imports Nautilus"
                    )
                elif target.startswith(PACKAGE) and not target.startswith(ENGINE):
                    out.append(
                        f"{module}:{line} imports {target}: the engine imports only dsm, "
                        "common, constants and errors"
                    )
    for component in _cycles(edges):
        out.append("import cycle: " + " -> ".join(component))
    return out


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    found = problems(root)
    for line in found:
        print(line)
    n = len(import_graph(root))
    print(f"{n} modules checked: {'clean' if not found else f'{len(found)} problem(s)'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
