"""Import layering of vizkit (see tests/helpers/layering.py for the rules), plus the checker's own tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

from layering import VIZKIT_ALLOWED, VIZKIT_RULES, Edge, Violation, check, format_violations, import_graph, layer_of

VIZKIT = Path(__file__).resolve().parents[1] / "vizkit"


def test_vizkit_layering() -> None:
    violations = check(VIZKIT, "vizkit", VIZKIT_RULES, VIZKIT_ALLOWED)
    assert not violations, format_violations(violations)


def test_vizkit_rules_assign_the_target_layout() -> None:
    expected = {
        "vizkit": "core",
        "vizkit.errors": "base",
        "vizkit.explain": "core",
        "vizkit.methods": "math",
        "vizkit.methods.gradcam": "math",
        "vizkit.stats": "math",
        "vizkit.metrics": "math",
        "vizkit.metrics.road": "math",
        "vizkit.io": "io",
        "vizkit.runs": "shared",
        "vizkit.batch": "shared",
        "vizkit.widgets": "presentation",
        "vizkit.models": "models",
        "vizkit.models.clip": "models",
        "vizkit.zoo": "zoo",
        "vizkit.zoo.tiny_vlm": "zoo",
        "vizkit.zoo.train": "leaf",
        "vizkit.zoo.train.tiny_vlm": "leaf",
        "vizkit.zoo.__main__": "leaf",
        "vizkit.scenarios": "scenarios",
        "vizkit.scenarios.clip_text_gradcam": "scenarios",
        "vizkit.cli": "leaf",
        "vizkit.cli.common": "leaf",
        "vizkit.cli.evaluate": "leaf",
        "vizkit.cli.__main__": "leaf",
        "vizkit.__main__": "leaf",
        "vizkit.clip_models": "leaf",
        "vizkit.distributed": "shared",
        "vizkit.distributed.sweep": "shared",
        "vizkit.datasets": "datasets",
        "vizkit.something_new": None,
    }
    assert {m: layer_of(m, VIZKIT_RULES) for m in expected} == expected


# --- synthetic trees -------------------------------------------------------------------------
RULES = [
    ("pkg.errors", "base"),
    ("pkg", "core"),
    ("pkg.core_mod", "core"),
    ("pkg.models", "models"),
    ("pkg.models.*", "models"),
    ("pkg.scenarios", "scenarios"),
    ("pkg.cli", "leaf"),
]
ALLOWED = {
    "base": set(),
    "core": {"base"},
    "models": {"core", "base"},
    "scenarios": {"core", "base", "models"},
    "leaf": {"core", "base", "models", "scenarios"},
}


def make_tree(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (path relative to root -> source) and return root / "pkg"."""
    base = {
        "pkg/__init__.py": "",
        "pkg/errors.py": "class E(Exception):\n    pass\n",
        "pkg/core_mod.py": "from .errors import E\n",
        "pkg/models/__init__.py": "class SomeClass:\n    pass\n",
        "pkg/models/clip.py": "from .. import errors\nimport torch\n",
        "pkg/scenarios.py": "from .models import clip\nfrom . import core_mod\nx = 1\n",
        "pkg/cli.py": "import pkg.scenarios\nfrom pkg.models import SomeClass\n",
    }
    for rel, source in {**base, **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    return root / "pkg"


def targets(graph: dict[str, list[Edge]], module: str) -> list[tuple[str, int]]:
    return [(e.target, e.lineno) for e in graph[module]]


def test_clean_tree_passes(tmp_path: Path) -> None:
    pkg = make_tree(tmp_path, {})
    assert check(pkg, "pkg", RULES, ALLOWED) == []
    assert format_violations([]) == "no layering violations"
    graph = import_graph(pkg, "pkg")
    assert sorted(graph) == [
        "pkg",
        "pkg.cli",
        "pkg.core_mod",
        "pkg.errors",
        "pkg.models",
        "pkg.models.clip",
        "pkg.scenarios",
    ]
    assert targets(graph, "pkg.cli") == [("pkg.scenarios", 1), ("pkg.models", 2)]
    assert graph["pkg.core_mod"] == [Edge("pkg.errors", "pkg/core_mod.py", 1)]


def test_upward_import_in_a_function_is_reported(tmp_path: Path) -> None:
    pkg = make_tree(
        tmp_path,
        {
            "pkg/core_mod.py": """\
        from .errors import E


        def helper():
            from .scenarios import x
            return x
        """
        },
    )
    violations = check(pkg, "pkg", RULES, ALLOWED)
    assert violations[0] == Violation(
        "layer", "pkg/core_mod.py:5 imports pkg.scenarios (layer core may not import layer scenarios; allowed: base)"
    )
    # scenarios imports core_mod back: the upward import also closes a cycle
    assert [v.kind for v in violations] == ["layer", "cycle"]
    assert violations[1].message.splitlines()[0] == "import cycle: pkg.core_mod -> pkg.scenarios -> pkg.core_mod"


def test_cycle_hidden_in_a_function_is_reported_with_its_path(tmp_path: Path) -> None:
    pkg = make_tree(
        tmp_path,
        {
            "pkg/models/a.py": "from .b import thing\n",
            "pkg/models/b.py": "thing = 1\n\n\ndef late():\n    from pkg.models import a\n    return a\n",
        },
    )
    violations = check(pkg, "pkg", RULES, ALLOWED)
    assert violations == [
        Violation(
            "cycle",
            "import cycle: pkg.models.a -> pkg.models.b -> pkg.models.a\n"
            "    pkg/models/a.py:1 imports pkg.models.b\n"
            "    pkg/models/b.py:5 imports pkg.models.a",
        )
    ]
    assert "[cycle] import cycle: pkg.models.a -> pkg.models.b -> pkg.models.a" in format_violations(violations)


def test_self_import_is_a_cycle(tmp_path: Path) -> None:
    pkg = make_tree(tmp_path, {"pkg/models/a.py": "def f():\n    import pkg.models.a\n"})
    assert check(pkg, "pkg", RULES, ALLOWED) == [
        Violation("cycle", "import cycle: pkg.models.a -> pkg.models.a\n    pkg/models/a.py:2 imports pkg.models.a")
    ]


def test_bigger_component_reports_a_cycle_and_its_members(tmp_path: Path) -> None:
    pkg = make_tree(
        tmp_path,
        {
            "pkg/models/a.py": "from . import b, c\n",
            "pkg/models/b.py": "from . import a\n",
            "pkg/models/c.py": "from . import a\n",
        },
    )
    (violation,) = check(pkg, "pkg", RULES, ALLOWED)
    assert violation.message.splitlines() == [
        "import cycle: pkg.models.a -> pkg.models.b -> pkg.models.a",
        "    pkg/models/a.py:1 imports pkg.models.b",
        "    pkg/models/b.py:1 imports pkg.models.a",
        "    (same strongly connected component: pkg.models.a, pkg.models.b, pkg.models.c)",
    ]


def test_type_checking_imports_are_not_counted(tmp_path: Path) -> None:
    pkg = make_tree(
        tmp_path,
        {
            "pkg/core_mod.py": """\
        import typing
        from typing import TYPE_CHECKING

        from .errors import E

        if TYPE_CHECKING:
            from .scenarios import x
        if typing.TYPE_CHECKING:
            import pkg.cli
        else:
            from . import models
        """
        },
    )
    graph = import_graph(pkg, "pkg")
    assert targets(graph, "pkg.core_mod") == [("pkg.errors", 4), ("pkg.models", 11)]  # the else branch runs
    assert [(v.kind, v.message.split(" (")[0]) for v in check(pkg, "pkg", RULES, ALLOWED)] == [
        ("layer", "pkg/core_mod.py:11 imports pkg.models")
    ]


def test_relative_imports_resolve_to_modules_or_packages(tmp_path: Path) -> None:
    pkg = make_tree(
        tmp_path,
        {
            "pkg/models/vit.py": """\
        from .. import errors
        from ..models import clip
        from ..models import SomeClass
        from ..errors import E
        from . import clip as c2, SomeClass as S2
        from .clip import anything
        import pkg
        import pkg.models.clip
        from pkg import *
        """,
            "pkg/models/__init__.py": "from .clip import x\nfrom . import vit\n",
        },
    )
    graph = import_graph(pkg, "pkg")
    assert targets(graph, "pkg.models.vit") == [
        ("pkg.errors", 1),
        ("pkg.models.clip", 2),
        ("pkg.models", 3),
        ("pkg.errors", 4),
        ("pkg.models", 5),
        ("pkg.models.clip", 5),
        ("pkg.models.clip", 6),
        ("pkg", 7),
        ("pkg.models.clip", 8),
        ("pkg", 9),
    ]
    # in a package's __init__, "." is the package itself
    assert targets(graph, "pkg.models") == [("pkg.models.clip", 1), ("pkg.models.vit", 2)]
    assert targets(graph, "pkg.models.clip") == [("pkg.errors", 1)]  # `from .. import errors`; torch ignored


def test_module_without_a_layer_is_reported(tmp_path: Path) -> None:
    pkg = make_tree(tmp_path, {"pkg/extra.py": "from . import errors\n"})
    assert check(pkg, "pkg", RULES, ALLOWED) == [
        Violation("unassigned", "module pkg.extra has no layer: add it to the rules")
    ]


def test_importing_a_leaf_from_a_non_leaf_is_reported(tmp_path: Path) -> None:
    pkg = make_tree(
        tmp_path, {"pkg/scenarios.py": "from .models import clip\n\n\ndef run():\n    from .cli import main\n"}
    )
    violations = check(pkg, "pkg", RULES, ALLOWED)
    assert violations == [
        Violation(
            "layer",
            "pkg/scenarios.py:5 pkg.scenarios imports leaf module pkg.cli (leaves are entry points: "
            "cli, demo, zoo/train, shims; move the shared code down)",
        ),
        Violation(
            "cycle",
            "import cycle: pkg.cli -> pkg.scenarios -> pkg.cli\n"
            "    pkg/cli.py:1 imports pkg.scenarios\n    pkg/scenarios.py:5 imports pkg.cli",
        ),
    ]


def test_leaf_may_import_leaf_and_anything_else(tmp_path: Path) -> None:
    rules = [*RULES, ("pkg.demo", "leaf")]
    pkg = make_tree(tmp_path, {"pkg/demo.py": "from . import cli, scenarios, core_mod\n"})
    assert check(pkg, "pkg", rules, ALLOWED) == []


def test_external_imports_create_no_edge(tmp_path: Path) -> None:
    pkg = make_tree(
        tmp_path,
        {
            "pkg/core_mod.py": """\
        from __future__ import annotations
        import torch
        import numpy as np
        from torch.nn import functional as F
        import pkgextra
        from . import errors
        """
        },
    )
    graph = import_graph(pkg, "pkg")
    assert graph["pkg.core_mod"] == [Edge("pkg.errors", "pkg/core_mod.py", 6)]
    assert targets(graph, "pkg.models.clip") == [("pkg.errors", 1)]
