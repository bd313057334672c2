"""The scenario notebooks, each declared once: :data:`SCENARIOS` maps a stem to its :class:`ScenarioSpec`.

A scenario is the notebook ``notebooks/NN_<stem>.ipynb`` (with its jupytext pair ``NN_<stem>.py``) and the
module ``vizkit/scenarios/<stem>.py`` it calls. Its spec holds what is declared nowhere else: the number and
title, the explorer widget class, and the parameters the browser test (``tests/ui``) runs the notebook with.
The rest comes from the module and is only read here: the notebook's parameters (the module's
``notebook_parameters()``), its validator (``check_notebook_parameters``) and the explorer's controls (the
class's ``CONTROLS``). The parameters every notebook shares (run folder, overwrite, widgets, seed, device) are
:data:`COMMON_PARAMETERS`; the modules take them from here with :func:`common_parameters`.

Readers: ``vizkit run`` gets a notebook's validator by the notebook's stem (:func:`notebook_validator`, passed
to :func:`vizkit.distributed.params.read_notebook`), the browser test the controls and its parameters. Nothing
heavy is imported here: a spec imports its module (torch, the models) only when asked for one of those.

Example::

    from vizkit.scenarios.registry import get_scenario

    spec = get_scenario("notebooks/02_vit_mnist_attention.ipynb")  # or "vit_mnist_attention"
    spec.explorer_path  # 'vizkit.scenarios.vit_mnist_attention:AttentionExplorer'
    spec.controls  # [{'label': 'sample', 'kind': 'slider'}, ...], from AttentionExplorer.CONTROLS
    spec.validator({"num_samples": 0, ...}, ())  # ParameterError: num_samples=0: must be positive
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import InputError
from ..notebook import Param
from ..state import DEVICES

__all__ = [
    "ScenarioSpec",
    "SCENARIOS",
    "COMMON_PARAMETERS",
    "DEVICES",
    "UnknownScenarioError",
    "Validator",
    "common_parameters",
    "get_scenario",
    "find_scenario",
    "notebook_validator",
    "layers_ok",
    "parse_layers",
    "choices_ok",
]

#: a notebook's check: ``check(namespace, names_defined_before_the_parameters_cell) -> parameters``
Validator = Callable[[Mapping[str, Any], Iterable[str]], dict[str, Any]]


def _non_negative(value: int) -> str | None:
    return None if value >= 0 else "must be >= 0"


#: the parameters every scenario notebook declares at the end of its parameters cell, in this order (a notebook
#: that runs on no torch device, such as 05, leaves ``device`` out)
COMMON_PARAMETERS: dict[str, Param] = {
    p.name: p
    for p in (
        Param("output_dir", (str,), help="run folder; empty means a new runs/<timestamp>-<notebook>/"),
        Param("overwrite", (bool,), help="allow writing into a non-empty output_dir"),
        Param("interactive", (bool,), help="show the widget explorer (static figures are always written)"),
        Param("seed", (int,), check=_non_negative, help="seed for every random source"),
        Param("device", (str,), choices=DEVICES, help="cpu | cuda | auto"),
    )
}


def common_parameters(*names: str) -> list[Param]:
    """The shared parameters ``names`` (all of :data:`COMMON_PARAMETERS` when none is given), in the order of
    :data:`COMMON_PARAMETERS`, for a scenario's ``notebook_parameters()``."""
    unknown = [n for n in names if n not in COMMON_PARAMETERS]
    if unknown:
        raise ValueError(
            f"no common parameter {', '.join(map(repr, unknown))}: choose from {', '.join(COMMON_PARAMETERS)}"
        )
    return [p for name, p in COMMON_PARAMETERS.items() if not names or name in names]


def layers_ok(value: Any) -> str | None:
    """The check of a notebook's layers parameter (a ``Param`` check: None when fine, else the
    problem): ``last`` / ``last_<k>`` / ``all``, comma-separated block indices or module names
    (``"-4,-3"``, ``"encoder.layers.1"``), or a non-empty list of indices or names."""
    if isinstance(value, str):
        v = value.strip().lower()
        if (
            v in ("all", "last")
            or v.startswith("last_")
            or all(
                p.strip().lstrip("-").isdigit() or p.strip().startswith(("encoder", "backbone", "blocks"))
                for p in v.split(",")
                if p.strip()
            )
        ):
            return None
        return "use last, last_4, all, block indices such as -4,-3,-2,-1, or module names"
    ok = all((isinstance(i, int) and not isinstance(i, bool)) or isinstance(i, str) for i in value)
    return None if ok and value else "a non-empty list of block indices or names"


def parse_layers(value: Any) -> Any:
    """A layers parameter as :func:`vizkit.layers.resolve_layers` takes it: ``"-4,-3"`` -> ``[-4, -3]``;
    ``"last_4"`` / ``"all"`` / ``"last"`` lower-cased; names pass through; a list is copied."""
    if isinstance(value, str):
        v = value.strip()
        if v.lower() in ("all", "last") or v.lower().startswith("last_"):
            return v.lower()
        parts = [p.strip() for p in v.split(",") if p.strip()]
        return [int(p) if p.lstrip("-").isdigit() else p for p in parts]
    return list(value)


def choices_ok(choices: Iterable[str], what: str) -> Callable[[str], str | None]:
    """The check of a comma-separated parameter whose items are ``choices`` (``what`` names them in
    the message): ``choices_ok(["a", "b"], "mode")("a,c")`` -> ``"unknown mode(s) c: choose from a, b"``."""
    allowed = list(choices)

    def check(value: str) -> str | None:
        bad = [m for m in value.split(",") if m.strip() and m.strip() not in allowed]
        return f"unknown {what}(s) {', '.join(bad)}: choose from {', '.join(allowed)}" if bad else None

    return check


class UnknownScenarioError(InputError, KeyError):
    """A stem or notebook that is not a registered scenario (the message lists the valid stems)."""

    def __str__(self) -> str:  # KeyError would quote the message otherwise
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class ScenarioSpec:
    """One scenario notebook. ``number`` and ``stem`` name the notebook (``NN_<stem>.ipynb``) and the module
    (``vizkit.scenarios.<stem>``); ``explorer`` is the widget class in that module; ``ui_parameters`` the
    overrides the browser test runs the notebook with (papermill-style, after its parameters cell)."""

    number: int
    stem: str
    title: str
    explorer: str
    ui_parameters: Mapping[str, Any] = field(default_factory=dict)

    @property
    def notebook(self) -> str:
        """The notebook's file name, ``NN_<stem>.ipynb``."""
        return f"{self.number:02d}_{self.stem}.ipynb"

    @property
    def notebook_stem(self) -> str:
        """``NN_<stem>``: the name of the notebook and of its ``.py`` pair without the suffix."""
        return f"{self.number:02d}_{self.stem}"

    @property
    def module(self) -> str:
        """The scenario module's dotted name."""
        return f"{__package__}.{self.stem}"

    @property
    def explorer_path(self) -> str:
        """``"module:Class"`` of the explorer widget."""
        return f"{self.module}:{self.explorer}"

    def load(self) -> ModuleType:
        """The scenario module (imported on first use)."""
        return importlib.import_module(self.module)

    def parameters(self) -> list[Param]:
        """The notebook's parameters, in the order of its parameters cell (the module's ``notebook_parameters``)."""
        return list(self.load().notebook_parameters())

    @property
    def validator(self) -> Validator:
        """The notebook's own check (the module's ``check_notebook_parameters``): names, types, values and
        their combinations; raises :class:`vizkit.errors.ParameterError` listing every problem."""
        return self.load().check_notebook_parameters

    @property
    def explorer_class(self) -> type:
        """The explorer widget class."""
        return getattr(self.load(), self.explorer)

    @property
    def controls(self) -> list[dict[str, str]]:
        """The explorer's controls as its class declares them (``CONTROLS``): ``{"label", "kind"}`` each, kind
        one of slider, dropdown, toggle."""
        return [{"label": label, "kind": kind} for label, kind in self.explorer_class.CONTROLS]


#: every scenario's spec by its stem, in notebook order (01 .. 05)
SCENARIOS: dict[str, ScenarioSpec] = {
    s.stem: s
    for s in (
        ScenarioSpec(
            1,
            "clip_detector_attention",
            "a deepfake detector's real/fake gradient-weighted attention (seed 000)",
            "DetectorAttentionExplorer",
            {"faithfulness_samples": 0},
        ),
        ScenarioSpec(
            2, "vit_mnist_attention", "a ViT digit classifier's CLS attention (seed 001)", "AttentionExplorer"
        ),
        ScenarioSpec(
            3,
            "detector_gradcam_eval",
            "Grad-CAM of a deepfake detector on named layers, and an evaluation that explains its mistakes (seed 002)",
            "DetectorGradCAMExplorer",
            {"max_samples": 100, "table_methods": "gradcam", "faithfulness": False},
        ),
        ScenarioSpec(
            4,
            "clip_text_gradcam",
            "CLIP image-text similarity by Grad-CAM (seed 003)",
            "ClipExplorer",
            {"num_scenes": 0},
        ),
        ScenarioSpec(
            5,
            "vlm_attention_video",
            "a VLM's per-token attention over text and image, as a video (seed 004)",
            "VLMAttentionExplorer",
            {"ground_truth_questions": 0},
        ),
    )
}
# the browser test's parameters: the widgets are what it tests, so the long evaluation tables that nbval and
# `make demo` run in full are made small or skipped there


def find_scenario(name: str | os.PathLike) -> ScenarioSpec | None:
    """The spec of a scenario stem (``vit_mnist_attention``), a notebook stem (``02_vit_mnist_attention``) or a
    notebook path (``notebooks/02_vit_mnist_attention.ipynb``, or its ``.py`` pair); None when none matches."""
    path = Path(name)
    key = path.stem if path.suffix in (".ipynb", ".py") else path.name
    if key in SCENARIOS:
        return SCENARIOS[key]
    return next((s for s in SCENARIOS.values() if s.notebook_stem == key), None)


def get_scenario(name: str | os.PathLike) -> ScenarioSpec:
    """Like :func:`find_scenario`, but an unknown name raises :class:`UnknownScenarioError` listing the valid
    stems (and the closest one)."""
    spec = find_scenario(name)
    if spec is None:
        key = Path(name).stem if Path(name).suffix in (".ipynb", ".py") else Path(name).name
        names = [*SCENARIOS, *(s.notebook_stem for s in SCENARIOS.values())]
        close = difflib.get_close_matches(key, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UnknownScenarioError(
            f"no scenario {str(name)!r}{hint}: valid stems are {', '.join(SCENARIOS)} "
            f"(notebooks {', '.join(s.notebook for s in SCENARIOS.values())})"
        )
    return spec


def notebook_validator(notebook: str | os.PathLike) -> Validator | None:
    """The validator of a registered notebook, found by the notebook's stem; None for any other notebook (its
    parameters are then checked against the annotations of its parameters cell)."""
    spec = find_scenario(notebook)
    return spec.validator if spec is not None else None
