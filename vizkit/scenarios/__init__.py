"""The scenarios: one module per notebook, same stem (``notebooks/NN_<stem>.ipynb``).

=============================  ====================================================  =========
module                         what it explains                                      notebook
=============================  ====================================================  =========
``clip_detector_attention``    a detector's real/fake gradient-weighted attention    01
                               (seed 000)
``detector_attention_images``  scenario 1's per-image maps, figures and sidecars     01
``detector_attention_eval``    scenario 1's faithfulness table on held-out faces     01
``detector_attention_report``  scenario 1's report and its observations              01
``vit_mnist_attention``        a ViT digit classifier's CLS attention (seed 001)     02
``vit_mnist_report``           scenario 2's statistics, observations and report      02
``vit_mnist_params``           scenario 2's notebook parameters and their checks     02
``detector_gradcam_eval``      a detector's Grad-CAM on named layers, evaluation     03
                               explaining its mistakes (seed 002)
``detector_gradcam_params``    scenario 3's arguments, checks, notebook parameters   03
``detector_gradcam_report``    scenario 3's run outputs, sample folders, report.md   03
``detector_gradcam_run``       scenario 3's finished run read back                   03
``detector_gradcam_chunk``     scenario 3's unit: one chunk of the test set          03
``detector_gradcam_demo``      scenario 3's one-image CLI (``detector-gradcam``)     03
``detector_gradcam_wrapper``   scenario 3's seed wrapper (CLIPDetectorWithGradCAM)   03
``detector_gradcam_tables``    scenario 3's tables with chance levels, shown layer   03
``detector_gradcam_sanity``    scenario 3's randomisation check                      03
``clip_text_gradcam``          CLIP image-text similarity by Grad-CAM (seed 003)     04
``clip_text_explain``          scenario 4's explanation of a batch and its files     04
``clip_text_report``           scenario 4's pointing game and report                 04
``clip_text_faithfulness``     scenario 4's localisation, ROAD and randomisation     04
                               table beside chance
``cluster_tasks``              the batch commands on a Dask cluster (vizkit.batch):  -
                               the evaluation's mapper
``vlm_attention_video``        a VLM's per-token attention video (seed 004)          05
``vlm_ground_truth``           tiny_vlm: does the answer look at the named object?   05
``vlm_run_folder``             scenario 5's run folder of one sample                 05
``vlm_report``                 scenario 5's shares, sinks and relevance report       05
=============================  ====================================================  =========

Each notebook's scenario is declared once in :mod:`vizkit.scenarios.registry` (notebook, title,
explorer, parameters, validator; not a scenario itself, so not listed here).

Names load lazily: ``from vizkit.scenarios import AttentionVisualizer`` imports only the
module that defines it. Each public name here belongs to one module (:data:`_EXPORTS`; no name is
listed twice). Two scenario classes share the seed name ``AttentionVisualizer``; here they are:

* ``AttentionVisualizer``, also ``ViTAttentionVisualizer`` (:data:`ALIASES`):
  ``vit_mnist_attention.AttentionVisualizer``, scenario 2's ViT digit classifier (seed 001);
* ``VLMAttentionVisualizer``: ``vlm_attention_video.AttentionVisualizer``, scenario 5's seed API
  (seed 004, which calls it ``AttentionVisualizer``: import it under that name from its module).

The explorers (``DetectorAttentionExplorer``, ``AttentionExplorer``, ``DetectorGradCAMExplorer``,
``ClipExplorer``, ``VLMAttentionExplorer``) all extend :class:`vizkit.widgets.Explorer`.

Notebooks import from ``vizkit`` and ``vizkit.scenarios`` only: the
helpers every notebook uses (``baseline``, ``run_folder``, ``seed_everything``, ...) are
re-exported here from their one home (:data:`NOTEBOOK_HELPERS`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, tuple[str, ...]] = {
    "clip_detector_attention": (
        "CLIPViTGradCAM",
        "DetectorAttention",
        "DetectorModel",
        "DetectorAttentionExplorer",
        "load_detector_model",
        "check_attention_options",
        "run_detector_attention",
        "AttentionRun",
    ),
    "detector_attention_images": ("ImageResult", "analyze_single_image", "analyze_images"),
    "detector_attention_eval": ("faithfulness_table",),
    "detector_attention_report": ("faithfulness_observations", "write_attention_report"),
    "vit_mnist_attention": (
        "AttentionVisualizer",
        "AttentionCache",
        "AnalysisResult",
        "AttentionExplorer",
        "mnist_preprocess",
        "parse_index_list",
    ),
    "vit_mnist_report": ("observations", "layer_summary", "write_report"),
    "vit_mnist_params": (),
    "detector_gradcam_eval": (
        "CLIPDetectorWithGradCAM",
        "DetectorGradCAMExplorer",
        "run_evaluation",
        "evaluate_detector",
        "config_defaults",
        "ConfigDefaults",
        "evaluate_chunk",
        "gradcam_demo",
        "detector_metrics",
        "metrics_table",
        "metadata_text",
        "select_samples",
        "resolve_gradcam_layers",
        "default_layers",
        "load_eval_detector",
        "load_run",
        "EvalSummary",
        "resolve_test_set",
        "EvalDataset",
        "parse_label",
    ),
    "detector_gradcam_params": ("EvalArgs", "EvalContext", "check_eval_args"),
    "detector_gradcam_report": (),
    "detector_gradcam_run": ("run_dataset",),
    "detector_gradcam_chunk": (),
    "detector_gradcam_demo": (),
    "detector_gradcam_wrapper": (),
    "detector_gradcam_tables": (),
    "detector_gradcam_sanity": (),
    "cluster_tasks": ("EvaluationMapper",),
    "clip_text_gradcam": (
        "ClipExplorer",
        "load_clip_model",
        "load_class_texts",
        "load_image",
        "display_crop",
        "run_clip_gradcam",
        "ClipBatchRun",
        "visualize_clip_gradcam",
        "text_maps_figure",
        "candidate_layers",
    ),
    "clip_text_explain": ("ClipGradCAMResult", "explain_clip", "save_result", "output_stem", "text_maps"),
    "clip_text_report": ("pointing_table", "write_clip_report"),
    "clip_text_faithfulness": (),
    "vlm_attention_video": (
        "VLMAttentionVisualizer",
        "VLMAttentionExplorer",
        "PositionMap",
        "Trace",
        "load_vlm",
        "trace_sample",
        "run_video",
    ),
    "vlm_run_folder": ("create_video",),
    "vlm_ground_truth": ("explain_answer_attention", "ground_truth_table"),
    "vlm_report": ("token_shares",),
}
#: unambiguous second names: alias -> (module, the name it defines there)
ALIASES: dict[str, tuple[str, str]] = {"ViTAttentionVisualizer": ("vit_mnist_attention", "AttentionVisualizer")}
MODULES = tuple(_EXPORTS)
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
# what the notebooks need besides their scenario module: name -> the module that defines it
NOTEBOOK_HELPERS: dict[str, str] = {
    "baseline": "vizkit.notebook",
    "run_folder": "vizkit.runs",
    "seed_everything": "vizkit.state",
    "markdown_table": "vizkit.report",
    "image_files": "vizkit.io",
}

__all__ = [*MODULES, *_WHERE, *ALIASES, *NOTEBOOK_HELPERS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    if name in ALIASES:
        module, defined = ALIASES[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), defined)
    if name in NOTEBOOK_HELPERS:
        return getattr(importlib.import_module(NOTEBOOK_HELPERS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
