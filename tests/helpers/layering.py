"""Import-layering checker: parse a package with ``ast`` (nothing is imported) and check its graph.

Graph: one node per ``.py`` file (``pkg/a/__init__.py`` -> ``pkg.a``). Every ``import`` counts,
at module level or inside functions, except under ``if TYPE_CHECKING:``. ``from X import n`` points
at ``X.n`` when that is a module of the tree, else at ``X``; a name that is not in the tree falls
back to its longest prefix that is. Parent packages' ``__init__`` are NOT implicit targets, imports
of other packages are ignored, and dynamic ``importlib.import_module(...)`` calls are not seen.

Rules are data: ``rules`` is an ordered list of (fnmatch glob on the module name, layer); the first
match wins and a module matching none is an "unassigned" violation. ``allowed`` maps a layer to the
other layers it may import (a layer may always import itself). Leaf layers (entry points) may import
anything, but no non-leaf module may import one. Per-module exceptions are expressed by giving the
module its own small layer: ``vizkit.errors`` is layer "base", the only thing ``io`` may import.
Cycles (strongly connected components with more than one module, or a self-import) are reported
separately, whatever the layers.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal

Rules = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Edge:
    target: str  # imported module
    file: str  # importing file, relative to the package's parent directory (posix)
    lineno: int


@dataclass(frozen=True)
class Violation:
    kind: Literal["layer", "cycle", "unassigned"]
    message: str


def _module_files(package_dir: Path, package_name: str) -> dict[str, tuple[Path, bool]]:
    """module name -> (path, is_package)."""
    out: dict[str, tuple[Path, bool]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join([package_name, *(parts[:-1] if is_pkg else parts)])] = (path, is_pkg)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """Collects (absolute dotted name, candidate submodule name or None, lineno)."""

    def __init__(self, package: str) -> None:
        self.package = package  # the package relative imports resolve against
        self.found: list[tuple[str, str | None, int]] = []

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
        else:  # the body only runs under a type checker; an else branch runs for real
            for child in node.orelse:
                self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        self.found += [(alias.name, None, node.lineno) for alias in node.names]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            pkg = self.package.split(".")
            if node.level - 1 >= len(pkg):
                return  # beyond the top-level package: not importable, ignore
            anchor = ".".join(pkg[: len(pkg) - (node.level - 1)])
            base = f"{anchor}.{base}" if base else anchor
        self.found += [(base, f"{base}.{a.name}", node.lineno) for a in node.names if a.name != "*"]
        if any(a.name == "*" for a in node.names):
            self.found.append((base, None, node.lineno))


def import_graph(package_dir: Path, package_name: str) -> dict[str, list[Edge]]:
    """module -> its imports of modules in the tree (sorted by line), for every module in the tree."""
    package_dir = Path(package_dir)
    modules = _module_files(package_dir, package_name)

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        for i in range(len(parts), 0, -1):  # longest prefix that is a module of the tree
            if ".".join(parts[:i]) in modules:
                return ".".join(parts[:i])
        return None

    graph: dict[str, list[Edge]] = {}
    for module, (path, is_pkg) in modules.items():
        visitor = _Imports(module if is_pkg else module.rpartition(".")[0])
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        rel = path.relative_to(package_dir.parent).as_posix()
        edges: list[Edge] = []
        for name, submodule, lineno in visitor.found:
            target = submodule if submodule in modules else resolve(name)
            if target is not None:
                edges.append(Edge(target, rel, lineno))
        graph[module] = sorted(set(edges), key=lambda e: (e.lineno, e.target))
    return graph


def layer_of(module: str, rules: Rules) -> str | None:
    return next((layer for pattern, layer in rules if fnmatchcase(module, pattern)), None)


def _sccs(graph: Mapping[str, Sequence[Edge]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; nodes and successors visited in sorted order."""
    succ = {m: sorted({e.target for e in edges if e.target in graph}) for m, edges in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(succ[node]):
                work.append((node, i + 1))
                nxt = succ[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(sorted(component))
            if work:  # propagate low-link to the parent frame
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return result


def _shortest_cycle(graph: Mapping[str, Sequence[Edge]], component: list[str]) -> list[str]:
    """Shortest cycle through the component's first module (BFS inside the component)."""
    start, members = component[0], set(component)
    prev: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted({e.target for e in graph[node]}):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if nxt in members and nxt not in prev:
                prev[nxt] = node
                queue.append(nxt)
    raise AssertionError(f"no cycle through {start}")  # impossible for a real SCC


def check(
    package_dir: Path,
    package_name: str,
    rules: Rules,
    allowed: Mapping[str, Collection[str]],
    leaf_layers: Collection[str] = ("leaf",),
) -> list[Violation]:
    """Layer, leaf, unassigned-module and cycle violations of the package at ``package_dir``."""
    graph = import_graph(package_dir, package_name)
    layers = {m: layer_of(m, rules) for m in graph}
    order = list(dict.fromkeys(layer for _, layer in rules))
    out: list[Violation] = []
    for module, edges in graph.items():
        src = layers[module]
        if src is None:
            out.append(Violation("unassigned", f"module {module} has no layer: add it to the rules"))
            continue
        ok = set(allowed.get(src, ()))
        for e in edges:
            dst = layers[e.target]
            if dst is None or dst == src:
                continue
            if dst in leaf_layers and src not in leaf_layers:
                out.append(
                    Violation(
                        "layer",
                        f"{e.file}:{e.lineno} {module} imports leaf module "
                        f"{e.target} (leaves are entry points: cli, demo, zoo/train, "
                        "shims; move the shared code down)",
                    )
                )
            elif dst not in ok:
                names = ", ".join(sorted(ok - {src}, key=lambda x: (order.index(x) if x in order else 99, x)))
                out.append(
                    Violation(
                        "layer",
                        f"{e.file}:{e.lineno} imports {e.target} (layer {src} "
                        f"may not import layer {dst}; allowed: {names or 'nothing'})",
                    )
                )
    for component in _sccs(graph):
        if len(component) == 1 and all(e.target != component[0] for e in graph[component[0]]):
            continue
        cycle = _shortest_cycle(graph, component)
        lines = [f"import cycle: {' -> '.join(cycle)}"]
        for a, b in zip(cycle, cycle[1:]):
            e = next(e for e in graph[a] if e.target == b)
            lines.append(f"    {e.file}:{e.lineno} imports {b}")
        if len(component) > len(cycle) - 1:
            lines.append(f"    (same strongly connected component: {', '.join(component)})")
        out.append(Violation("cycle", "\n".join(lines)))
    return out


def format_violations(violations: Sequence[Violation]) -> str:
    if not violations:
        return "no layering violations"
    return f"{len(violations)} layering violation(s):\n" + "\n".join(f"[{v.kind}] {v.message}" for v in violations)


# --- the vizkit rules: "vizkit.errors" is its own "base" layer, the only vizkit module io may use --
def _layer(layer: str, *names: str) -> list[tuple[str, str]]:
    return [(f"vizkit.{n}" if n else "vizkit", layer) for n in names]


VIZKIT_RULES: list[tuple[str, str]] = [
    *_layer("base", "errors"),
    *_layer("core", "", "state", "layers", "hooks", "targets", "tokens", "positions", "explain", "attention_cache"),
    *_layer("math", "methods", "methods.*", "attention_math", "stats", "metrics", "metrics.*"),
    *_layer("io", "io"),
    *_layer("shared", "evaluate", "runs", "batch", "distributed", "distributed.*"),  # runs, sweeps, Dask: no scenario
    *_layer("presentation", "render", "token_video", "report", "notebook", "widgets", "figures", "figures.*"),
    *_layer("models", "models", "models.*"),
    *_layer("datasets", "datasets", "vlm_benchmarks"),  # test-set readers (DeepfakeBench JSON ...): below the zoo
    *_layer("leaf", "zoo.train", "zoo.train.*", "zoo.__main__"),  # before "zoo.*": first match wins
    *_layer("zoo", "zoo", "zoo.*"),
    *_layer("scenarios", "scenarios", "scenarios.*"),
    *_layer("leaf", "cli", "cli.*", "demo", "__main__", "attention_visualizer", "clip_gradcam", "clip_models"),
]
_BELOW_SCENARIOS = {"base", "core", "math", "io", "shared", "presentation", "models", "zoo", "datasets"}
VIZKIT_ALLOWED: dict[str, frozenset[str]] = {  # each layer may also import itself
    "base": frozenset(),
    "core": frozenset({"math", "io", "base"}),
    "math": frozenset({"core", "io", "base"}),
    "io": frozenset({"base"}),
    "shared": frozenset({"core", "math", "io", "base"}),
    "presentation": frozenset({"core", "math", "io", "shared", "base"}),
    "models": frozenset({"core", "math", "io", "base"}),
    "zoo": frozenset({"core", "math", "io", "base", "models", "datasets"}),
    "datasets": frozenset({"core", "math", "io", "base"}),
    "scenarios": frozenset(_BELOW_SCENARIOS),
    "leaf": frozenset(_BELOW_SCENARIOS | {"scenarios"}),
}
