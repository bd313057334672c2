"""vizkit.scenarios.registry: one spec per scenario notebook, in step with the notebooks, the modules and their
explorers; the validator `vizkit run` finds for each notebook by its stem."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import vizkit.scenarios as scenarios
from vizkit.distributed.params import read_notebook
from vizkit.errors import InputError, ParameterError
from vizkit.notebook import Param
from vizkit.scenarios.registry import (
    COMMON_PARAMETERS,
    SCENARIOS,
    ScenarioSpec,
    UnknownScenarioError,
    common_parameters,
    find_scenario,
    get_scenario,
    notebook_validator,
)

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
SPECS = list(SCENARIOS.values())


def defines(stem: str, name: str) -> bool:
    """Whether vizkit/scenarios/<stem>.py defines ``name`` at module level (read with ast)."""
    tree = ast.parse((ROOT / "vizkit" / "scenarios" / f"{stem}.py").read_text(encoding="utf-8"))
    return any(isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name for n in tree.body)


def test_every_scenario_module_with_a_notebook_has_a_spec() -> None:
    with_notebook = sorted(m for m in scenarios.MODULES if defines(m, "check_notebook_parameters"))
    assert (
        sorted(SCENARIOS)
        == with_notebook
        == [
            "clip_detector_attention",
            "clip_text_gradcam",
            "detector_gradcam_eval",
            "vit_mnist_attention",
            "vlm_attention_video",
        ]
    )
    for key, spec in SCENARIOS.items():
        assert key == spec.stem and spec.module == f"vizkit.scenarios.{spec.stem}"
        assert spec.load().__name__ == spec.module and defines(spec.stem, "notebook_parameters")
        assert defines(spec.stem, spec.explorer), spec.explorer_path


def test_stems_and_numbers_match_the_notebooks() -> None:
    assert sorted(s.notebook for s in SPECS) == sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert [s.number for s in SPECS] == list(range(1, len(SPECS) + 1))
    for spec in SPECS:
        assert spec.notebook_stem == Path(spec.notebook).stem and (NOTEBOOKS / f"{spec.notebook_stem}.py").is_file()
        nb = json.loads((NOTEBOOKS / spec.notebook).read_text(encoding="utf-8"))
        assert "vizkit" not in nb["metadata"], f"{spec.notebook}: the registry, not the notebook, holds the explorer"
        cells = nb["cells"]
        assert "".join(cells[0]["source"]).startswith(f"# Scenario {spec.number} — "), spec.notebook
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert f".{spec.explorer}(" in code, f"{spec.notebook} does not show {spec.explorer}"
        assert ".check_notebook_parameters(globals(), _before)" in code, spec.notebook


def test_explorer_controls_are_the_class_controls() -> None:
    for spec in SPECS:
        declared = spec.explorer_class.CONTROLS
        assert declared and spec.controls == [{"label": label, "kind": kind} for label, kind in declared]
        assert {c["kind"] for c in spec.controls} <= {"slider", "dropdown", "toggle"}
    assert SCENARIOS["vlm_attention_video"].controls == [
        {"label": "token", "kind": "slider"},
        {"label": "layer", "kind": "dropdown"},
        {"label": "head", "kind": "dropdown"},
    ]
    assert SCENARIOS["vit_mnist_attention"].explorer_path == "vizkit.scenarios.vit_mnist_attention:AttentionExplorer"


def test_get_scenario_takes_a_stem_a_notebook_stem_or_a_path() -> None:
    spec = SCENARIOS["vit_mnist_attention"]
    for name in (
        "vit_mnist_attention",
        "02_vit_mnist_attention",
        "notebooks/02_vit_mnist_attention.ipynb",
        NOTEBOOKS / "02_vit_mnist_attention.py",
        Path("runs/x/02_vit_mnist_attention.ipynb"),
    ):
        assert get_scenario(name) is spec and find_scenario(name) is spec
    assert find_scenario("my_notebook.ipynb") is None and find_scenario("03_vit_mnist_attention") is None


def test_an_unknown_stem_names_the_valid_ones() -> None:
    with pytest.raises(UnknownScenarioError) as info:
        get_scenario("notebooks/02_vit_mnist_atention.ipynb")
    message = str(info.value)
    assert message.startswith(
        "no scenario 'notebooks/02_vit_mnist_atention.ipynb' (did you mean "
        "'02_vit_mnist_attention'?): valid stems are clip_detector_attention, "
        "vit_mnist_attention, detector_gradcam_eval, clip_text_gradcam, vlm_attention_video"
    )
    assert "01_clip_detector_attention.ipynb" in message
    assert isinstance(info.value, InputError) and isinstance(info.value, KeyError)
    with pytest.raises(UnknownScenarioError, match="valid stems are clip_detector_attention"):
        get_scenario("gradcam")


def test_parameters_are_the_notebooks_parameters_cell_and_share_the_common_ones() -> None:
    for spec in SPECS:
        params = spec.parameters()
        assert [p.name for p in params] == list(read_notebook(NOTEBOOKS / spec.notebook).defaults), spec.stem
        shared = [p for p in params if p.name in COMMON_PARAMETERS]
        assert [p.name for p in shared][:4] == ["output_dir", "overwrite", "interactive", "seed"], spec.stem
        assert all(p is COMMON_PARAMETERS[p.name] for p in shared), f"{spec.stem} redeclares a common parameter"
        assert params[-len(shared) :] == shared  # they close the parameters cell
    assert "device" not in [p.name for p in SCENARIOS["vlm_attention_video"].parameters()]
    assert common_parameters("seed", "output_dir") == [COMMON_PARAMETERS["output_dir"], COMMON_PARAMETERS["seed"]]
    assert common_parameters() == list(COMMON_PARAMETERS.values())
    with pytest.raises(ValueError, match="no common parameter 'sed': choose from output_dir, overwrite"):
        common_parameters("sed")


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_a_validator_for_every_notebook_accepts_its_defaults_and_rejects_a_bad_value(spec: ScenarioSpec) -> None:
    nb = read_notebook(NOTEBOOKS / spec.notebook, notebook_validator)
    assert nb.validator is spec.validator is spec.load().check_notebook_parameters
    assert notebook_validator(spec.notebook_stem) is spec.validator
    assert nb.validate({}) == nb.defaults
    assert nb.validate(dict(spec.ui_parameters)) == {**nb.defaults, **spec.ui_parameters}  # the browser test's
    with pytest.raises(ParameterError, match=r"seed=-1: must be >= 0"):
        nb.validate({"seed": -1})
    with pytest.raises(ParameterError, match=r"unknown parameter 'sede' \(did you mean seed\?\)"):
        nb.validate({"sede": 1})
    with pytest.raises(ParameterError, match=r"interactive='yes': expected bool"):
        nb.validate({"interactive": "yes"})


def test_a_notebook_outside_the_registry_falls_back_to_its_annotations(tmp_path: Path) -> None:
    copy = tmp_path / "my_copy.ipynb"
    copy.write_text((NOTEBOOKS / "02_vit_mnist_attention.ipynb").read_text(encoding="utf-8"), encoding="utf-8")
    assert notebook_validator(copy) is None
    nb = read_notebook(copy, notebook_validator)
    assert nb.validator is None and nb.defaults["num_samples"] == 8
    nb.validate({"num_samples": 0})  # a value only the scenario's own check rejects passes the annotations
    with pytest.raises(ParameterError, match=r"num_samples='four': expected int, got str"):
        nb.validate({"num_samples": "four"})
    assert read_notebook(NOTEBOOKS / "02_vit_mnist_attention.ipynb").validator is None  # read without a lookup


def test_the_ui_parameters_name_notebook_parameters() -> None:
    assert {s.stem: dict(s.ui_parameters) for s in SPECS if s.ui_parameters} == {
        "clip_detector_attention": {"faithfulness_samples": 0},
        "detector_gradcam_eval": {"max_samples": 100, "table_methods": "gradcam", "faithfulness": False},
        "clip_text_gradcam": {"num_scenes": 0},
        "vlm_attention_video": {"ground_truth_questions": 0},
    }
    for spec in SPECS:
        names = {p.name for p in spec.parameters()}
        assert set(spec.ui_parameters) <= names, spec.stem
    assert all(isinstance(p, Param) for p in COMMON_PARAMETERS.values())
