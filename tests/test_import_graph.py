"""The import graph of the `selfrefine` package: no cycle, and no `_private` name taken from another module.

Every `import`/`from ... import` statement counts, wherever it stands (module scope, inside a function,
under `if TYPE_CHECKING:`): a function-local import that closes a circle is still a circle, only one
that fails at call time instead of import time. Each test reports every violation it finds, not the
first, so one run shows all that is left to fix.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "selfrefine"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


@dataclass(frozen=True)
class Edge:
    """`source` imports `target` (a selfrefine module) at `line`; `names` are the names the statement
    takes from `target` (empty for `import a.b.c` and for a submodule taken with `from pkg import sub`)."""

    source: str
    target: str
    line: int
    names: tuple[str, ...]


def discover(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Module]:
    """Every module of the package, by dotted name (a package by its own name, for its `__init__`)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        modules[name] = Module(name, path, is_package)
    assert package in modules, f"no {package}/__init__.py under {root.parent}"
    return modules


def _resolve_relative(module: Module, level: int, target: str | None) -> str:
    """The absolute module name of `from {'.' * level}{target} import ...` written in `module`."""
    parts = module.name.split(".")
    # A package's `__init__` is its own base; a plain module's base is the package holding it.
    base = parts if module.is_package else parts[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def edges_of(module: Module, modules: dict[str, Module]) -> list[Edge]:
    """The selfrefine modules `module` imports, one edge per (statement, target)."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
    edges = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    edges.append(Edge(module.name, alias.name, node.lineno, ()))
        elif isinstance(node, ast.ImportFrom):
            source = (_resolve_relative(module, node.level, node.module) if node.level
                      else node.module or "")
            if source not in modules:
                continue
            taken_from_source = []
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in modules:
                    edges.append(Edge(module.name, submodule, node.lineno, ()))
                else:
                    taken_from_source.append(alias.name)
            if taken_from_source:
                edges.append(Edge(module.name, source, node.lineno, tuple(taken_from_source)))
    return edges


def import_graph(modules: dict[str, Module] | None = None) -> list[Edge]:
    modules = modules if modules is not None else discover()
    return [edge for module in modules.values() for edge in edges_of(module, modules)]


def _strongly_connected(nodes: list[str], successors: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (the graph is small, but recursion depth
    should not depend on it)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(successors.get(start, ())))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(successors.get(child, ()))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(sorted(component))
    return components


def _shortest_cycle(start: str, members: set[str], successors: dict[str, list[str]]) -> list[str]:
    """The shortest path start -> ... -> start inside one strongly connected component (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in successors.get(node, ()):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{start} is in a strongly connected component but on no cycle")


def find_cycles(edges: list[Edge]) -> list[tuple[list[str], list[str]]]:
    """Per strongly connected component with a cycle (a self-import included): its members and one
    shortest cycle through the first of them."""
    successors: dict[str, list[str]] = {}
    for edge in edges:
        targets = successors.setdefault(edge.source, [])
        if edge.target not in targets:
            targets.append(edge.target)
    nodes = sorted({edge.source for edge in edges} | {edge.target for edge in edges})
    cycles = []
    for component in _strongly_connected(nodes, successors):
        if len(component) > 1 or component[0] in successors.get(component[0], ()):
            cycles.append((component, _shortest_cycle(component[0], set(component), successors)))
    return sorted(cycles)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_imports(edges: list[Edge]) -> list[str]:
    """`source:line imports _name from target` for every private name taken from another module."""
    found = []
    for edge in edges:
        if edge.source == edge.target:
            continue
        if edge.names:
            found += [f"{edge.source}:{edge.line} imports {name} from {edge.target}"
                      for name in edge.names if _is_private(name)]
        elif any(_is_private(part) for part in edge.target.split(".")):
            # `import pkg._sub` or `from pkg import _sub`: a private module is a private name too.
            found.append(f"{edge.source}:{edge.line} imports module {edge.target}")
    return sorted(set(found))


def _describe(component: list[str], cycle: list[str], edges: list[Edge]) -> str:
    lines = {(edge.source, edge.target): edge.line for edge in reversed(edges)}
    path = " -> ".join(f"{node} (line {lines[(node, after)]})" for node, after in zip(cycle, cycle[1:]))
    return f"{path} -> {cycle[-1]}\n    (the circle's modules: {', '.join(component)})"


def test_the_package_has_no_import_cycle():
    edges = import_graph()
    cycles = find_cycles(edges)
    assert not cycles, (f"{len(cycles)} import cycle(s) among selfrefine modules (function-local imports "
                        "count):\n" + "\n".join(_describe(*cycle, edges) for cycle in cycles))


def test_no_module_imports_a_private_name_from_another():
    found = private_imports(import_graph())
    assert not found, (f"{len(found)} import(s) of a _private name from another selfrefine module; "
                       "make the name public where it belongs:\n" + "\n".join(found))


# The checker itself, on a small package written for the purpose: it must see what it claims to see.

def _write(root: Path, files: dict[str, str]) -> dict[str, Module]:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return discover(root / "pkg", "pkg")


def test_checker_sees_function_local_relative_and_submodule_imports(tmp_path):
    modules = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from .sub import b\n",
        "pkg/sub/__init__.py": "from pkg.sub.b import helper\n",
        "pkg/sub/b.py": "import pkg.c\n",
        "pkg/c.py": "from pkg import a\nfrom pkg.sub import helper, b\n",
    })
    edges = {(edge.source, edge.target) for edge in import_graph(modules)}
    assert edges == {("pkg.a", "pkg.sub.b"), ("pkg.sub", "pkg.sub.b"), ("pkg.sub.b", "pkg.c"),
                     ("pkg.c", "pkg.a"), ("pkg.c", "pkg.sub"), ("pkg.c", "pkg.sub.b")}
    # `from pkg import a` names a submodule, so it is no edge to pkg/__init__.
    assert find_cycles(import_graph(modules)) == [(["pkg.a", "pkg.c", "pkg.sub", "pkg.sub.b"],
                                                   ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"])]


def test_checker_reports_private_names_and_a_self_import(tmp_path):
    modules = _write(tmp_path, {
        "pkg/__init__.py": "from pkg import _version\nfrom pkg import VERSION\n",
        "pkg/_version.py": "VERSION = 1\n",
        "pkg/a.py": "def f():\n    from pkg.b import _helper, __all__, public\n",
        "pkg/b.py": "_helper = public = 1\n__all__ = []\n",
    })
    edges = import_graph(modules)
    assert private_imports(edges) == ["pkg.a:2 imports _helper from pkg.b",
                                      "pkg:1 imports module pkg._version"]
    assert find_cycles(edges) == [(["pkg"], ["pkg", "pkg"])]
