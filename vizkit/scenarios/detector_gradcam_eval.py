"""Scenario 3: Grad-CAM / Grad-CAM++ of a CLIP deepfake detector on named transformer layers,
and an evaluation over a test set that explains its mistakes (seed 002; notebook
``03_detector_gradcam_eval.ipynb``, CLIs ``vizkit detector-gradcam`` and ``vizkit evaluate``).

What is explained: the logit of the explained class of a real/fake detector
(``[B, 3, H, W] -> [B, 2]``, class 1 = fake) — in the evaluation by default the fake class, the
score the metrics rank by (``target="fake"``; ``"predicted"``, ``"real"`` or ``"label"``
otherwise; the seed's ``generate_gradcam`` explains the predicted class) — by Grad-CAM (Selvaraju et al.,
ICCV 2017) or Grad-CAM++ (Chattopadhay et al., WACV 2018) at each requested layer, all layers
from ONE forward and ONE ``torch.autograd.grad`` (:func:`vizkit.cam`: gradients only from the
score down to the earliest requested layer, no parameter gradients).

Layer names are the seed's Hugging Face names relative to the vision model:
``encoder.layers.N`` (a block's output; N < 0 counts from the end) or a submodule of it such as
``encoder.layers.N.layer_norm1`` (the block's input, layer-normed), found in the detector by
suffix match (``backbone.encoder.layers.N`` or ``backbone.vision_model.encoder.layers.N``
depending on the transformers version). The LAST block's output is zero for a CLS-pooled
classifier (no patch token of it reaches the score), so the default layers are the block
INPUTS: the seed's blocks 23, 20, 15, 10 on a 24-layer model, else the last four blocks.

The evaluation (:func:`run_evaluation`) is a batch of :mod:`vizkit.batch`: the test set in fixed
chunks of ``batch_size`` samples, each chunk's predictions, per-layer maps and localisation
scores computed by :func:`evaluate_chunk` (a pure function of (arguments, chunk index)) and
written atomically to ``chunks/NNNNN.json`` + ``.npz`` by its unit, so an interrupted run resumes
where it stopped. Metrics (AUC, accuracy, EER, AP, video AUC; scikit-learn) come from all chunk
files; the sample folders and the report's figures are units too (rendered where the units run).

This module runs the evaluation and holds the notebook's parameters and explorer; the rest of
scenario 3 is in its sibling modules, whose public names are importable from here too:
``detector_gradcam_chunk`` (one chunk evaluated), ``detector_gradcam_params`` (arguments, checks,
config defaults), ``detector_gradcam_report`` (the run's outputs and report.md),
``detector_gradcam_run`` (a finished run read back), ``detector_gradcam_demo`` (the one-image
CLI) and ``detector_gradcam_wrapper`` (the seed's wrapper). The layers and the detector come from
:mod:`vizkit.models.detector_layers` and :func:`vizkit.models.load_detector.load_eval_detector`,
the figures from :mod:`vizkit.figures`.

Example::

    from vizkit.scenarios import run_evaluation
    summary = run_evaluation(output_dir="eval_out", gradcam_enabled=True, gradcam_samples=10,
                             max_samples=100)          # the zoo detector on its test faces
    summary.metrics["auc"], summary.localization      # AUC, pointing game per layer x method
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..batch import BatchMapper, BatchRun, Job, Unit
from ..datasets import EvalDataset, parse_label
from ..errors import InputError, ParameterError
from ..evaluate import binary_metrics
from ..evaluate import binary_metrics_table as metrics_table
from ..figures.layer_comparison import COMBINED, layer_label
from ..metrics.road import ROAD_PERCENTILES
from ..models import Detector
from ..models.detector_layers import LayerInfo, default_layers, layer_table, resolve_gradcam_layers
from ..models.load_detector import load_eval_detector
from ..render import RELEVANCE_CMAP, combined_map, display_image
from ..runs import chunk_count, clear_complete, is_complete, read_chunk_arrays, write_chunk, written_chunks
from ..state import resolve_device
from ..widgets import Control, Explorer, HeatmapView
from ..zoo.face_test_split import FACE_FORGERY, resolve_test_set
from .detector_gradcam_chunk import evaluate_chunk, evaluation_context
from .detector_gradcam_demo import gradcam_demo, gradcam_image
from .detector_gradcam_params import (
    CAM_METHODS,
    LABEL_NAMES,
    SEED_LAYERS,
    TARGETS,
    ConfigDefaults,
    EvalArgs,
    EvalContext,
    config_defaults,
    refuse_added_faithfulness,
)
from .detector_gradcam_report import finish_run, metadata_text, sample_title, select_samples, write_report
from .detector_gradcam_run import EvalSummary, load_run, run_dataset, run_pointing_chance
from .detector_gradcam_tables import shown_layer
from .detector_gradcam_wrapper import CLIPDetectorWithGradCAM

if TYPE_CHECKING:
    from ..distributed.chunks import ClusterOptions

__all__ = [
    "Detector",
    "LayerInfo",
    "load_eval_detector",
    "resolve_gradcam_layers",
    "default_layers",
    "layer_table",
    "EvalArgs",
    "EvalContext",
    "EvalSummary",
    "evaluate_chunk",
    "evaluation_context",
    "run_evaluation",
    "evaluate_detector",
    "config_defaults",
    "ConfigDefaults",
    "detector_metrics",
    "metrics_table",
    "metadata_text",
    "select_samples",
    "write_report",
    "gradcam_demo",
    "gradcam_image",
    "CLIPDetectorWithGradCAM",
    "DetectorGradCAMExplorer",
    "load_run",
    "run_pointing_chance",
    "notebook_parameters",
    "check_notebook_parameters",
    "SEED_LAYERS",
    "TARGETS",
    "CAM_METHODS",
    "LABEL_NAMES",
    "resolve_test_set",
    "EvalDataset",
    "parse_label",
]  # defined here: the evaluation; the others are re-exported from their modules

detector_metrics = binary_metrics  # seed 002's name


def run_evaluation(
    output_dir: str | os.PathLike | None = None,
    *,
    detector_path: str | None = None,
    weights_path: str | None = None,
    test_dataset: str | None = None,
    max_samples: int = 0,
    gradcam_enabled: bool = True,
    layers: Sequence[str] | None = None,
    method: str = "gradcam",
    table_methods: Sequence[str] = CAM_METHODS,
    target: str = "fake",
    batch_size: int = 32,
    gradcam_samples: int = 50,
    save_all_predictions: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    device: str | torch.device = "cpu",
    detector: Detector | None = None,
    report: bool = True,
    map_chunks: BatchMapper | None = None,
    layout: str | None = None,
    num_heads: int | None = None,
    test_config: str | os.PathLike | None = None,
    faithfulness: bool = False,
    road_percentiles: Sequence[float] = ROAD_PERCENTILES,
    faithfulness_samples: int = 0,
) -> EvalSummary:
    """Evaluate a detector on a test set (see the module docstring); resumable. Returns the
    summary of the finished run (also when it was already complete). ``layout``: where the
    Grad-CAM layers' channels are (see :func:`vizkit.cam`); ``num_heads``: a CLIP detector's
    heads when its width is not a known CLIP tower; ``test_config``: DeepfakeBench's
    ``test_config.yaml`` (dataset keys) merged over the detector YAML; ``faithfulness``: also ROAD
    (at ``road_percentiles``) and the confidence change of every map, per layer x method over all
    images (``faithfulness_samples``: the first N only; a run made without it is refused, not
    extended: ``overwrite``). A run whose images were
    partly unreadable is finished with them listed in ``errors.csv``; running it again reads
    those chunks again (add the missing frames first); ``overwrite`` starts afresh.

    ``map_chunks``: the :class:`vizkit.batch.BatchMapper` the units (chunks, sample folders,
    report figures) run on, e.g. on a Dask cluster (default: this process)."""
    args = EvalArgs(
        detector_path and str(detector_path),
        weights_path and str(weights_path),
        str(test_dataset or FACE_FORGERY),
        int(max_samples or 0),
        bool(gradcam_enabled),
        tuple(str(x) for x in (layers or ())),
        method,
        tuple(table_methods),
        target,
        int(batch_size),
        int(gradcam_samples),
        bool(save_all_predictions),
        layout=layout,
        num_heads=num_heads,
        test_config=str(test_config) if test_config else None,
        faithfulness=bool(faithfulness),
        road_percentiles=tuple(float(p) for p in road_percentiles),
        faithfulness_samples=int(faithfulness_samples),
    )
    ctx = evaluation_context(args, device, detector=detector)
    manifest = args.manifest(ctx.dataset, ctx.layers)
    refuse_added_faithfulness(output_dir, manifest, overwrite)
    batch = BatchRun.open(output_dir, "detector-gradcam-eval", manifest, overwrite)
    run, n = batch.folder, chunk_count(len(ctx.dataset), args.batch_size)
    units = [Unit(f"chunk-{k:05d}", k) for k in range(n)]
    todo = [u for u in units if not batch.done(u.key)]
    if batch.resuming and is_complete(run) and not todo:
        return load_run(run)
    clear_complete(run)
    if todo:  # chunks computed (again): the sample folders and figures may change
        batch.forget([p.stem for p in (run / ".units").glob("*.json") if not p.stem.startswith("chunk-")])
        for folder in run.glob("sample*"):
            if folder.is_dir():
                shutil.rmtree(folder)
    mapper = map_chunks or BatchMapper(progress=progress)
    with mapper if mapper.distributed and mapper.client is None else nullcontext():
        job = Job(
            _chunk_unit,
            evaluation_context,
            dict(args=args, device=str(ctx.device)),
            None if mapper.distributed else ctx,
            catch=(),
            name="evaluate",
        )
        batch.run(mapper, job, units)
        return finish_run(ctx, batch, n, report, mapper, job)


def _chunk_unit(ctx: EvalContext, k: int, run: Path) -> dict[str, Any]:
    """The unit of chunk ``k``: :func:`evaluate_chunk`'s results and arrays written to its files."""
    result, arrays = evaluate_chunk(ctx, k)
    write_chunk(run, k, result, arrays)
    bad = len(result["errors"])  # a chunk with unreadable images is read again by the next run
    return {
        "chunk": k,
        "samples": len(result["indices"]),
        "unreadable": bad,
        **({"incomplete": f"{bad} unreadable image(s)"} if bad else {}),
    }


def evaluate_detector(
    output_dir: str | None = None,
    *,
    detector_path: str | None = None,
    weights_path: str | None = None,
    test_config: str | None = None,
    test_dataset: str | None = None,
    gradcam_enabled: bool | None = None,
    layers: Sequence[str] | None = None,
    table_methods: str | Sequence[str] = CAM_METHODS,
    cluster: ClusterOptions | None = None,
    device: str | torch.device = "auto",
    **options: Any,
) -> EvalSummary:
    """``vizkit evaluate``: :func:`run_evaluation` with what is not given taken from the
    DeepfakeBench configs (:func:`config_defaults`), ``table_methods`` also as ``"a,b"``,
    ``device`` by :func:`vizkit.state.resolve_device` and the units on a Dask cluster when
    ``cluster`` is given; ``faithfulness`` turns Grad-CAM on unless ``gradcam_enabled`` says
    otherwise. ``options``: the other keywords of :func:`run_evaluation`."""
    if options.get("faithfulness") and gradcam_enabled is None:
        gradcam_enabled = True
    d = config_defaults(
        detector_path,
        test_config,
        test_dataset=test_dataset,
        gradcam_enabled=gradcam_enabled,
        output_dir=output_dir,
        layers=layers,
    )
    if isinstance(table_methods, str):
        table_methods = [m.strip() for m in table_methods.split(",") if m.strip()]
    with BatchMapper(cluster, progress=bool(options.get("progress"))) as mapper:
        return run_evaluation(
            d.output_dir,
            detector_path=detector_path,
            weights_path=weights_path,
            test_dataset=d.test_dataset,
            gradcam_enabled=d.gradcam_enabled,
            layers=d.layers,
            table_methods=table_methods,
            device=resolve_device(device),
            map_chunks=mapper,
            test_config=d.test_config,
            **options,
        )


# --------------------------------------------------------------------------------------
# explorer (reads the saved run, never recomputes)
# --------------------------------------------------------------------------------------
_DISPLAY_MIN = 224  # overlays of small models are upscaled to this size for legibility (render.display_image)


class DetectorGradCAMExplorer(Explorer):
    """Browse a finished run: sample x layer x method, optionally wrong predictions only. Every map
    comes from the run's chunk files; nothing is recomputed (a :class:`vizkit.widgets.Explorer`:
    ``interactive=False`` or no ipywidgets displays :meth:`static` instead of widgets)."""

    CONTROLS = (("show", "toggle"), ("sample", "dropdown"), ("layer", "dropdown"), ("method", "dropdown"))
    LAYOUT = (("show", "sample"), ("layer", "method"))

    def __init__(
        self,
        run_dir: str | os.PathLike,
        dataset: EvalDataset | None = None,
        size: int | None = None,
        cmap: str = RELEVANCE_CMAP,
        *,
        interactive: bool = True,
    ):
        self.summary = load_run(run_dir)
        if not self.summary.methods:
            raise InputError(f"{str(run_dir)!r} was evaluated without Grad-CAM: nothing to explore")
        self.dataset = dataset or run_dataset(self.summary.run_dir)
        self.maps = read_chunk_arrays(self.summary.run_dir, written_chunks(self.summary.run_dir))
        self.size = int(size or self.summary.metrics.get("input_size") or _DISPLAY_MIN)
        self.layer_names = [li.name for li in self.summary.layers]
        colours = {"cmap": cmap} if cmap else {}  # None: the explorers' default colour map
        super().__init__(interactive=interactive, figsize=(7, 3.4), **colours)

    def control_specs(self) -> list[Control]:
        """show (all / wrong only), sample, layer (one or combined, labelled "layer k"), method."""
        methods = self.summary.methods
        layers = [(layer_label(n), n) for n in self.layer_names] + [("layers combined", "layers combined")]
        return [
            Control("show", "toggle", "show", ["all", "wrong only"], "all"),
            Control("sample", "dropdown", "sample", self._options("all")),
            Control("layer", "dropdown", "layer", layers, self._default_layer()),
            Control("method", "dropdown", "method", methods, methods[0]),
        ]

    def _default_layer(self) -> str:
        """The layer the run's pointing game chooses for its first method (the last one without masks)."""
        chosen = shown_layer(self.summary.localization, self.summary.methods[0])
        if chosen is None:
            return self.layer_names[-1]
        return "layers combined" if chosen[0] == COMBINED else chosen[0]

    def _options(self, show: str) -> list[tuple[str, int]]:
        p = self.summary.predictions
        if show == "wrong only":
            p = p[~p["correct"].astype(bool)]
        return [
            (
                f"#{int(r.index)} {LABEL_NAMES[int(r.label)]}->{LABEL_NAMES[int(r.pred)]} p(fake)={r.prob:.2f}",
                int(r.index),
            )
            for r in p.itertuples()
        ]

    def on_change(self, label: str) -> None:
        """``show`` refilters the samples (keeping the list when no sample is wrong)."""
        if label == "show":
            options = self._options(self.show.value)
            if options:
                self.sample.options = options
                self.sample.value = options[0][1]

    def current_map(self, state: Mapping[str, Any] | None = None) -> np.ndarray:
        """The selected sample's map of the selected layer (or all layers combined) and method."""
        st = self.state if state is None else state
        i, method, layer = st["sample"], st["method"], st["layer"]
        if layer == "layers combined":
            return combined_map([self.maps[f"{method}|{n}"][i] for n in self.layer_names], self.size)
        return self.maps[f"{method}|{layer}"][i]

    def render(self, state: Mapping[str, Any]) -> HeatmapView | None:
        """The map over the sample's image, titled with its label and prediction (None: no sample)."""
        i = state["sample"]
        if i is None:
            return None
        row = self.summary.predictions.set_index("index").loc[i]
        display = display_image(self.dataset.image(i), self.size)
        return HeatmapView(
            self.current_map(state),
            display,
            map_title=f"{state['method']} @ {layer_label(state['layer'])}",
            overlay_title=sample_title({**row.to_dict(), "index": i}),
        )


# --------------------------------------------------------------------------------------
# notebook parameters
# --------------------------------------------------------------------------------------
def notebook_parameters() -> list:
    """The parameter spec of ``notebooks/03_detector_gradcam_eval.ipynb``."""
    from ..notebook import Param, positive
    from .registry import common_parameters

    def methods_ok(value: str) -> str | None:
        bad = [m for m in value.split(",") if m.strip() and m.strip() not in CAM_METHODS]
        return f"unknown method(s) {', '.join(bad)}: choose from {', '.join(CAM_METHODS)}" if bad else None

    return [
        Param("detector_path", (str,)),
        Param("weights_path", (str,)),
        Param("test_dataset", (str,)),
        Param("max_samples", (int,), check=lambda v: None if v >= 0 else "must be >= 0 (0 means all)"),
        Param("layers", (str,)),
        Param("method", (str,), choices=CAM_METHODS),
        Param("table_methods", (str,), check=methods_ok),
        Param("target", (str,), choices=TARGETS),
        Param("gradcam_samples", (int,), check=positive),
        Param("save_all_predictions", (bool,)),
        Param("num_compare", (int,), check=lambda v: None if v >= 0 else "must be >= 0"),
        Param("batch_size", (int,), check=positive),
        Param("faithfulness", (bool,)),
        Param("faithfulness_samples", (int,), check=lambda v: None if v >= 0 else "must be >= 0 (0 means all)"),
        Param("road_percentiles", (str,), check=_percentiles_ok),
        *common_parameters("output_dir", "overwrite", "interactive", "seed", "device"),
    ]


def _percentiles_ok(value: str) -> str | None:
    """None when ``value`` is comma-separated numbers in (0, 100), else the problem."""
    try:
        numbers = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        return f"{value!r} is not comma-separated numbers"
    return None if numbers and all(0 < v < 100 for v in numbers) else "needs numbers in (0, 100)"


def check_notebook_parameters(namespace: dict, before: Any) -> dict[str, Any]:
    """Validate the notebook's parameters, including the combinations."""
    from ..notebook import check_parameters

    p = check_parameters(namespace, before, notebook_parameters())
    for key in ("detector_path", "weights_path"):
        if p[key] and not Path(p[key]).exists():
            raise ParameterError(f"{key} {p[key]!r} does not exist")
    if p["detector_path"] and not p["weights_path"]:
        raise ParameterError("detector_path needs weights_path (the .pth the config describes)")
    resolve_device(p["device"])  # cuda without a GPU: one clear error
    return p
