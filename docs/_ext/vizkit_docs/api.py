"""The Python API reference: which modules it documents, which names each exports, and whether each name
has a docstring.

Every module of the package is documented on one page of ``reference/api/`` (``automodule`` with
``:members:``): a module with ``__all__`` shows exactly those names (re-exports included), one without it
the public names it defines. A constant's docstring is a ``#:`` comment above it or a string below it, in
the module that defines it; :func:`attribute_doc` finds it through the ``from ... import`` chain of a
re-export, and the Sphinx hook :func:`fill_reexported_data_docs` shows it on the re-exporting page too.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import types
import warnings
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE = "vizkit"
#: re-export shims kept for one release (they warn on import); their names are documented where they live
DEPRECATED_SHIMS = ("vizkit.attention_visualizer", "vizkit.clip_gradcam", "vizkit.clip_models")

#: the page of each group of modules, in the order of the reference's table of contents
GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "core",
        "Explanations, layers, captures",
        (
            "vizkit",
            "vizkit.explain",
            "vizkit.errors",
            "vizkit.layers",
            "vizkit.hooks",
            "vizkit.state",
            "vizkit.targets",
            "vizkit.tokens",
            "vizkit.positions",
        ),
    ),
    (
        "math",
        "Methods, statistics, metrics",
        ("vizkit.methods", "vizkit.attention_math", "vizkit.stats", "vizkit.metrics"),
    ),
    (
        "shared",
        "Files, runs, batches, evaluation, Dask",
        (
            "vizkit.io",
            "vizkit.runs",
            "vizkit.batch",
            "vizkit.evaluate",
            "vizkit.datasets",
            "vizkit.vlm_benchmarks",
            "vizkit.distributed",
        ),
    ),
    (
        "presentation",
        "Figures, videos, reports, notebooks, widgets",
        ("vizkit.render", "vizkit.token_video", "vizkit.report", "vizkit.notebook", "vizkit.widgets", "vizkit.figures"),
    ),
    ("models", "Models and loaders", ("vizkit.models",)),
    ("zoo", "The zoo's loaders, data and recipes", ("vizkit.zoo",)),
    ("scenarios", "Scenarios", ("vizkit.scenarios",)),
    ("cli", "The command-line modules", ("vizkit.cli", "vizkit.demo")),
)


def module_names() -> list[str]:
    """Every module of the package the reference documents (``__main__`` modules and the deprecated shims
    left out), in import order of the walk."""
    pkg = importlib.import_module(PACKAGE)
    names = [PACKAGE]
    for info in pkgutil.walk_packages(pkg.__path__, f"{PACKAGE}."):
        if info.name.endswith("__main__") or info.name in DEPRECATED_SHIMS:
            continue
        names.append(info.name)
    return names


def group_of(module: str) -> str:
    """The reference page (a :data:`GROUPS` key) a module is documented on."""
    best = ""
    key = ""
    for name, _title, prefixes in GROUPS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, key = prefix, name
    if not key:
        raise ValueError(f"module {module} belongs to no group of the API reference: add it to GROUPS")
    return key


def load(module: str) -> types.ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(module)


def exported(module: str) -> list[str] | None:
    """The module's ``__all__`` (None when it has none)."""
    names = getattr(load(module), "__all__", None)
    return list(names) if names is not None else None


@cache
def _source_tree(module: str) -> ast.Module | None:
    mod = load(module)
    path = getattr(mod, "__file__", None)
    if not path or not path.endswith(".py"):
        return None
    return ast.parse(Path(path).read_text(encoding="utf-8"))


@cache
def _attr_docs(module: str) -> dict[str, str]:
    from sphinx.pycode import ModuleAnalyzer

    try:
        docs = ModuleAnalyzer.for_module(module).find_attr_docs()
    except Exception:  # a module without source
        return {}
    return {name: "\n".join(lines).strip() for (scope, name), lines in docs.items() if scope == ""}


def _imported_from(module: str, name: str) -> tuple[str, str] | None:
    """``(module, original name)`` of a ``from X import name [as alias]`` at the top level of ``module``."""
    tree = _source_tree(module)
    if tree is None:
        return None
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    base = module if module_is_package(module) else module.rpartition(".")[0]
                    for _ in range(max(node.level - 1, 0)):
                        base = base.rpartition(".")[0]
                    source = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
                    return source, alias.name
    return None


def module_is_package(module: str) -> bool:
    return hasattr(load(module), "__path__")


def attribute_doc(module: str, name: str) -> tuple[str, str] | None:
    """The docstring of constant ``name`` of ``module`` and the module that holds it (following re-exports);
    None when there is none."""
    seen = set()
    while (module, name) not in seen:
        seen.add((module, name))
        doc = _attr_docs(module).get(name)
        if doc:
            return doc, module
        origin = _imported_from(module, name)
        if origin is None:
            return None
        module, name = origin
    return None


def _own_doc(obj: Any) -> str | None:
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if isinstance(obj, type) and doc and doc.startswith(f"{obj.__name__}("):
        return None  # the signature a dataclass writes when the class has no docstring
    return doc.strip() if isinstance(doc, str) and doc.strip() else None


def is_documentable_object(obj: Any) -> bool:
    """Functions, classes and modules carry their docstring; everything else is a constant."""
    return inspect.isroutine(obj) or inspect.isclass(obj) or inspect.ismodule(obj)


def docstring(module: str, name: str) -> str | None:
    """The docstring of ``module.name``: the object's own for functions, classes and modules, the ``#:``
    comment or following string of its definition for a constant."""
    obj = getattr(load(module), name)
    if is_documentable_object(obj):
        return _own_doc(obj)
    found = attribute_doc(module, name)
    return found[0] if found else None


def undocumented() -> list[str]:
    """``module.name`` of every name in a documented module's ``__all__`` without a docstring."""
    missing = []
    for module in module_names():
        for name in exported(module) or ():
            if not docstring(module, name):
                missing.append(f"{module}.{name}")
    return missing


def fill_reexported_data_docs(app, what, name, obj, options, lines) -> None:
    """``autodoc-process-docstring``: a constant shows the docstring of its definition (followed through a
    re-export), never the docstring of its type (``dict``, ``tuple``: autodoc's fallback)."""
    if what not in ("data", "attribute"):
        return
    module, _, attr = name.rpartition(".")
    try:
        found = attribute_doc(module, attr)
    except Exception:  # a class attribute: autodoc's own comment lookup stands
        return
    if found is None:
        type_doc = inspect.getdoc(type(obj)) or ""
        if lines and "\n".join(lines).strip() == type_doc.strip():
            lines.clear()
        return
    doc, origin = found
    lines[:] = doc.splitlines()
    if origin != module:
        lines += ["", f"(Defined in :mod:`{origin}`.)"]


def _defined_in(obj: Any) -> tuple[str, str] | None:
    """``(module, qualified name)`` where a function or class is defined, a module's own name."""
    if inspect.ismodule(obj):
        return obj.__name__, ""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if module and qualname and "<" not in qualname:
        return module, qualname
    return None


def _documented_at_home(module: str, name: str) -> bool:
    """Whether ``module``'s own section documents ``name`` (its ``__all__`` lists it; without ``__all__``,
    a public name it defines, a constant only with a docstring)."""
    if module not in set(module_names()) or name.startswith("_"):
        return False
    names = exported(module)
    if names is not None:
        return name in names
    obj = getattr(load(module), name, None)
    if obj is None:
        return False
    if is_documentable_object(obj):
        return _own_doc(obj) is not None
    return name in _attr_docs(module)


def canonical(module: str, name: str) -> str | None:
    """Where ``module.name`` is documented when that is elsewhere (a re-export, or a module listed in
    ``__all__``): the dotted target; None when ``module``'s own section documents it."""
    obj = getattr(load(module), name)
    if is_documentable_object(obj):
        home = _defined_in(obj)
        if home is None:
            return None
        if inspect.ismodule(obj):
            return home[0] if home[0] in set(module_names()) else None
        if home[0] == module:
            return None
        top = home[1].split(".")[0]
        return f"{home[0]}.{home[1]}" if _documented_at_home(home[0], top) else None
    found = attribute_doc(module, name)
    if found is None or found[1] == module:
        return None
    origin = found[1]
    original = name
    chain = _imported_from(module, name)
    while chain is not None and chain[0] != origin:
        chain = _imported_from(*chain)
    if chain is not None:
        original = chain[1]
    return f"{origin}.{original}" if _documented_at_home(origin, original) else None


def reference_targets(module: str) -> dict[str, str]:
    """Where each name of ``module``'s ``__all__`` is documented: ``module.name`` itself, or the definition a
    re-export's row links to."""
    return {name: canonical(module, name) or f"{module}.{name}" for name in exported(module) or ()}


def _directive(module: str, name: str) -> list[str]:
    obj = getattr(load(module), name)
    if inspect.isclass(obj):
        head = [f".. autoclass:: {module}::{name}", "   :members:", "   :show-inheritance:"]
        if issubclass(obj, BaseException):
            head = [f".. autoexception:: {module}::{name}", "   :members:", "   :show-inheritance:"]
        return head
    if inspect.isroutine(obj):
        return [f".. autofunction:: {module}::{name}"]
    return [f".. autodata:: {module}::{name}", "   :no-value:" if _long_value(obj) else ""]


def _long_value(obj: Any) -> bool:
    return len(repr(obj)) > 120


def module_section(module: str) -> list[str]:
    """The markdown of one module's section of its API page."""
    out = [f"## `{module}`", ""]
    names = exported(module)
    if names is None:
        return out + ["```{eval-rst}", f".. automodule:: {module}", "   :members:", "   :show-inheritance:", "```", ""]
    own, elsewhere = [], []
    for name in names:
        target = canonical(module, name)
        (elsewhere if target else own).append((name, target))
    body = [f".. automodule:: {module}", ""]
    for name, _ in own:
        body += [line for line in _directive(module, name) if line] + [""]
    out += ["```{eval-rst}", *body, "```", ""]
    if elsewhere:
        out += [f"Also exported by `{module}` (documented where it is defined):", ""]
        out += ["| name | documented at |", "|---|---|"]
        out += [f"| `{module}.{name}` | {{py:obj}}`{target}` |" for name, target in elsewhere]
        out += [""]
    return out


def page(group: str) -> str:
    """The markdown source of one API reference page."""
    title = next(t for k, t, _ in GROUPS if k == group)
    modules = [m for m in module_names() if group_of(m) == group]
    out = [f"# {title}", ""]
    out += [
        "Generated from the docstrings (`make docs`). A module with `__all__` documents exactly those names",
        "(a name it re-exports links to where it is defined); one without documents the public names it defines.",
        "",
    ]
    for module in modules:
        out += module_section(module)
    return "\n".join(out)


def write_pages(folder: Path) -> list[Path]:
    """Write one page per group into ``folder`` (only files whose text changed are rewritten)."""
    from .util import write_if_changed

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, _title, _ in GROUPS:
        path = folder / f"{key}.md"
        write_if_changed(path, page(key))
        paths.append(path)
    return paths
