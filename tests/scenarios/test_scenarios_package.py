"""vizkit.scenarios: one module per notebook, lazy public names, deprecated shims that warn."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import vizkit.scenarios as scenarios

ROOT = Path(__file__).resolve().parents[2]


def test_every_scenario_module_has_a_notebook_and_a_test():
    # registry.py declares the scenarios (tests/scenarios/test_registry.py); it is not one
    modules = sorted(
        p.stem for p in (ROOT / "vizkit" / "scenarios").glob("*.py") if p.stem not in ("__init__", "registry")
    )
    assert modules == sorted(scenarios.MODULES)
    notebooks = {p.stem.split("_", 1)[1] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    tests = {p.stem[len("test_") :] for p in (ROOT / "tests" / "scenarios").glob("test_*.py")}
    assert notebooks <= set(modules), f"notebooks without a scenario module: {notebooks - set(modules)}"
    for stem in notebooks:
        assert stem in tests, f"scenario {stem} has no tests/scenarios/test_{stem}.py"


def test_public_names_resolve_to_their_module():
    for name in scenarios.__all__:
        obj = getattr(scenarios, name)
        if name in scenarios.MODULES:
            assert obj.__name__ == f"vizkit.scenarios.{name}"
        elif name in scenarios.NOTEBOOK_HELPERS:
            assert obj is getattr(importlib.import_module(scenarios.NOTEBOOK_HELPERS[name]), name)
        elif name in scenarios.ALIASES:
            module, defined = scenarios.ALIASES[name]
            module = importlib.import_module(f"vizkit.scenarios.{module}")
            assert obj is getattr(module, defined) and defined in module.__all__
        else:
            module = importlib.import_module(f"vizkit.scenarios.{scenarios._WHERE[name]}")
            assert obj is getattr(module, name) and name in module.__all__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        scenarios.nope  # noqa: B018


def test_each_public_name_is_exported_once_and_the_two_attention_visualizers_are_apart():
    from vizkit.scenarios import vit_mnist_attention, vlm_attention_video

    listed = [
        *scenarios.MODULES,
        *(n for names in scenarios._EXPORTS.values() for n in names),
        *scenarios.ALIASES,
        *scenarios.NOTEBOOK_HELPERS,
    ]
    assert sorted(n for n in set(listed) if listed.count(n) > 1) == []
    assert scenarios.AttentionVisualizer is scenarios.ViTAttentionVisualizer is vit_mnist_attention.AttentionVisualizer
    assert scenarios.VLMAttentionVisualizer is vlm_attention_video.AttentionVisualizer  # the seed's name there
    assert scenarios.AttentionVisualizer is not scenarios.VLMAttentionVisualizer
    for name in (
        "ViTAttentionVisualizer",
        "VLMAttentionVisualizer",
        "vit_mnist_attention.AttentionVisualizer",
        "vlm_attention_video.AttentionVisualizer",
    ):
        assert name in scenarios.__doc__, name


def test_notebooks_import_only_from_vizkit_and_vizkit_scenarios():
    """``from vizkit import <submodule>`` or ``from vizkit.scenarios import ...``; nothing deeper."""
    import ast
    import json

    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for cell in cells:
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            tree = ast.parse(
                "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
            )
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vizkit"):
                    assert node.module in ("vizkit", "vizkit.scenarios"), f"{path.name}: from {node.module} import"
                if isinstance(node, ast.Import):
                    for alias in node.names:
                        assert not alias.name.startswith("vizkit.") or alias.name == "vizkit.scenarios", (
                            f"{path.name}: import {alias.name}"
                        )


def test_scenario_docstrings_name_the_score_and_give_an_example():
    for stem in scenarios.MODULES:
        doc = importlib.import_module(f"vizkit.scenarios.{stem}").__doc__ or ""
        assert doc.startswith("Scenario "), stem
        assert "Example::" in doc, stem


def test_import_vizkit_stays_light_and_scenarios_load_lazily():
    code = (
        "import sys, vizkit, vizkit.scenarios as s; heavy = ('matplotlib', 'transformers', 'open_clip', "
        "'ipywidgets', 'vizkit.scenarios.clip_text_gradcam', 'dask', 'distributed', 'vizkit.distributed'); "
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "old, new, name",
    [
        ("vizkit.attention_visualizer", "vizkit.scenarios.vit_mnist_attention", "AttentionVisualizer"),
        ("vizkit.clip_gradcam", "vizkit.scenarios.clip_text_gradcam", "visualize_clip_gradcam"),
        ("vizkit.clip_models", "vizkit.scenarios.clip_text_gradcam", "load_clip_model"),
    ],
)
def test_old_paths_warn_and_re_export(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match="moved"):
        shim = importlib.import_module(old)
    assert getattr(shim, name) is getattr(importlib.import_module(new), name)
