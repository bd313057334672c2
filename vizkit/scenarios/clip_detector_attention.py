"""Scenario 1: gradient-weighted attention of a CLIP-ViT deepfake detector (seed 000; notebook
``01_clip_detector_attention.ipynb``, CLI ``vizkit detector-attention``).

What is explained: the logit of the *real* class and of the *fake* class of a detector
(``[B, 3, H, W] -> [B, C]``, class 1 = fake by default), through gradient-weighted attention
``Ā = fuse_heads((∇A ⊙ A)⁺)`` per layer (Chefer et al., "Generic attention-model explainability
for interpreting bi-modal and encoder-decoder transformers", ICCV 2021), combined over the
chosen layers either by Chefer's relevance propagation ``R ← R + Ā R`` (``aggregation=
"relevance"``) or by the plain per-layer mean of the CLS rows (``"mean"``, what scripts like the
seed's compute). Both classes come from ONE forward pass (:func:`vizkit.explain.attention_gradients`):
every layer mode, head fusion and aggregation is then computed from the cached attention and
gradients.

Here: the batch command (:func:`run_detector_attention`), the explorer and the notebook's
parameters. The scenario's other parts, all importable from here: the per-image files
(:mod:`.detector_attention_images`), the faithfulness table (:mod:`.detector_attention_eval`)
and the report (:mod:`.detector_attention_report`); the model side (:class:`CLIPViTGradCAM`,
:func:`load_detector_model`) is :mod:`vizkit.models.vit_gradcam` and :mod:`vizkit.models.named_detector`.

Example::

    from vizkit.scenarios import CLIPViTGradCAM, load_detector_model
    det = load_detector_model("face_forgery_detector")          # the zoo detector, offline
    gradcam = CLIPViTGradCAM(det.model, target_layers=[-4, -3, -2, -1], head_fusion="mean")
    x = det.preprocess(image)[None]                              # [1, 3, 64, 64]
    fake_map = gradcam(x, class_idx=1)                           # [1, 64, 64] in [0, 1]
    result = gradcam.explain(x)                                  # both classes, one pass
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..attention_math import AGGREGATIONS, HEAD_FUSIONS
from ..errors import InputError, VizkitError
from ..io import image_files
from ..metrics import comparison_numbers
from ..models import Detector
from ..models.load_detector import ZOO_DETECTORS
from ..models.named_detector import load_detector_model
from ..models.vit_gradcam import (
    DEFAULT_TARGET_LAYERS,
    LAYER_MODES,
    CLIPViTGradCAM,
    DetectorAttention,
    check_attention_options,
)
from ..render import RELEVANCE_CMAP
from ..state import resolve_device
from ..widgets import Control, Explorer, HeatmapView
from ..zoo.face_test_split import images_or_test_faces as notebook_images
from .detector_attention_eval import (
    chance_levels,
    distinct_layer_modes,
    faithfulness_table,
    held_out_masks,
    pair_top_iou_chance,
    recommended_variant,
)
from .detector_attention_images import REGIONS as REGIONS
from .detector_attention_images import (
    ImageResult,
    analyze_images,
    analyze_single_image,
    where_they_differ,
)
from .detector_attention_images import class_figure as class_figure
from .detector_attention_images import comparison_figure as comparison_figure
from .detector_attention_images import image_result as image_result
from .detector_attention_images import layers_figure as layers_figure
from .detector_attention_images import save_image_result as save_image_result
from .detector_attention_report import (
    ROAD_MEANING,
    faithfulness_observations,
    table_with_chance,
    write_attention_report,
)
from .registry import choices_ok, layers_ok, parse_layers

if TYPE_CHECKING:
    from ..distributed.chunks import ClusterOptions

__all__ = [
    "CLIPViTGradCAM",
    "check_attention_options",
    "run_detector_attention",
    "AttentionRun",
    "DetectorAttention",
    "DetectorModel",
    "ImageResult",
    "LAYER_MODES",
    "load_detector_model",
    "analyze_single_image",
    "analyze_images",
    "comparison_numbers",
    "where_they_differ",
    "faithfulness_table",
    "chance_levels",
    "held_out_masks",
    "distinct_layer_modes",
    "pair_top_iou_chance",
    "recommended_variant",
    "table_with_chance",
    "ROAD_MEANING",
    "faithfulness_observations",
    "write_attention_report",
    "DetectorAttentionExplorer",
    "zero_map_reason",
    "zero_map_share",
    "notebook_parameters",
    "check_notebook_parameters",
    "notebook_images",
    "parse_layers",
    "ZOO_DETECTORS",
    "DEFAULT_TARGET_LAYERS",
]

DetectorModel = Detector  # seed 000's name for the one detector type (vizkit.models.Detector)


# --------------------------------------------------------------------------------------
# explorer
# --------------------------------------------------------------------------------------
def zero_map_share(result: DetectorAttention, class_idx: int, layer: int, head_fusion: str) -> float:
    """Share of the images of ``result`` whose one-layer map (block ``layer``, 0-based, heads fused by
    ``head_fusion``; :meth:`DetectorAttention.layer_heatmap`) of class ``class_idx`` is zero everywhere."""
    maps = result.layer_heatmap(class_idx, result.layer_names[layer], head_fusion)  # [B, H, W]
    return float(maps.flatten(1).eq(0).all(dim=1).float().mean())


def zero_map_reason(heat: np.ndarray | torch.Tensor, head_fusion: str, layers: str) -> str | None:
    """Why the map ``heat`` ``[H, W]`` is zero everywhere, or None when it is not all zero.

    Per layer the map is the CLS row of ``fuse_heads((∇A ⊙ A)⁺)``: the clamp keeps only positive
    gradient x attention, so a head with no positive contribution at a patch gives 0 there; the
    minimum over heads is then 0 wherever ANY head gives 0, and the mean or maximum only where ALL do."""
    if bool(torch.as_tensor(heat).ne(0).any()):
        return None
    where = layers if layers.startswith("layer ") else f"the layers of {layers}"
    if head_fusion == "min":
        return (
            f"zero everywhere: at every patch at least one head has no positive gradient x attention in {where}, "
            "and the minimum over heads of the clamped values is then 0"
        )
    return (
        f"zero everywhere: no head has a positive gradient x attention at any patch in {where} "
        f"(the {head_fusion} over heads of the clamped values is 0)"
    )


class DetectorAttentionExplorer(Explorer):
    """Image x class (real / fake / difference) x head fusion x layers x aggregation, redrawn
    from the cached attention and gradients of one :class:`DetectorAttention` (no forward or
    backward pass when a control moves). A :class:`vizkit.widgets.Explorer`: ``interactive=False`` (or no
    ipywidgets) displays :meth:`static` instead of widgets."""

    CLASSES = ("real", "fake", "difference")
    #: the controls as the page shows them (label, kind): read by the notebook build and the browser test
    CONTROLS = (
        ("image", "slider"),
        ("class", "toggle"),
        ("heads", "dropdown"),
        ("layers", "dropdown"),
        ("combine", "toggle"),
    )
    LAYOUT = (("image", "class"), ("heads", "layers"), ("combine",))
    DESCRIPTION_WIDTH = "80px"

    def __init__(
        self,
        result: DetectorAttention,
        images: Sequence[np.ndarray],
        names: Sequence[str] | None = None,
        real_idx: int = 0,
        fake_idx: int = 1,
        cmap: str = RELEVANCE_CMAP,
        *,
        interactive: bool = True,
    ):
        self.result, self.images = result, [np.asarray(im) for im in images]
        self.names = list(names) if names else [f"image {i}" for i in range(len(self.images))]
        self.real_idx, self.fake_idx = real_idx, fake_idx
        colours = {"cmap": cmap} if cmap else {}  # None: the suite's relevance colormap (vizkit.widgets)
        super().__init__(interactive=interactive, figsize=(7, 3.4), **colours)

    def control_specs(self) -> list[Control]:
        """image, class, heads (fusion), layers (a mode or one layer), combine (aggregation)."""
        r = self.result
        layer_options = list(LAYER_MODES) + [f"layer {i}: {n}" for i, n in enumerate(r.layer_names)]
        return [
            Control("image", "slider", "image", min=0, max=len(self.images) - 1, value=0),
            Control("class", "toggle", "klass", list(self.CLASSES), "fake"),
            Control("heads", "dropdown", "fusion", list(HEAD_FUSIONS), r.head_fusion),
            Control("layers", "dropdown", "layers", layer_options, self._default_layers()),
            Control("combine", "toggle", "aggregation", list(AGGREGATIONS), r.aggregation),
        ]

    def _default_layers(self) -> str:
        """The layer mode that selects the result's target layers (``last_4_layers`` when none does)."""
        r = self.result
        return next((m for m in LAYER_MODES if r.layers_for(m) == list(r.target_layers)), "last_4_layers")

    def _map(self, state: Mapping[str, Any], class_idx: int) -> torch.Tensor:
        r, i, sel = self.result, state["image"], state["layers"]
        if sel.startswith("layer "):
            name = sel.split(": ", 1)[1]
            return r.layer_heatmap(class_idx, name, state["heads"])[i]
        return r.heatmap(class_idx, state["heads"], sel, state["combine"])[i]

    def current_map(self, state: Mapping[str, Any] | None = None) -> np.ndarray:
        """The ``[H, W]`` map the controls (or ``state``) select (the difference is fake - real, signed)."""
        st = self.state if state is None else state
        k = st["class"]
        if k == "difference":
            return (self._map(st, self.fake_idx) - self._map(st, self.real_idx)).numpy()
        return self._map(st, self.fake_idx if k == "fake" else self.real_idx).numpy()

    def render(self, state: Mapping[str, Any]) -> HeatmapView:
        """The selected class map over the image, titled with the image's probabilities and the selection."""
        i, k = state["image"], state["class"]
        probs = self.result.probs[i]
        title = (
            f"{self.names[i]}: p(real) {probs[self.real_idx]:.3f}, p(fake) {probs[self.fake_idx]:.3f} | "
            f"{k}, {state['layers']}, heads {state['heads']}, {state['combine']}"
        )
        heat = self.current_map(state)
        why = zero_map_reason(heat, state["heads"], state["layers"])
        if why:
            return HeatmapView(
                heat,
                self.images[i],
                map_title=f"{k} map: all zero",
                overlay_title="nothing to overlay",
                suptitle=f"{title} | {k} map {why}",
                diverging=k == "difference",
            )
        return HeatmapView(heat, self.images[i], map_title=f"{k} map", suptitle=title, diverging=k == "difference")


# --------------------------------------------------------------------------------------
# the batch command
# --------------------------------------------------------------------------------------
@dataclass
class AttentionRun:
    """What :func:`run_detector_attention` did: per-image results, the images that could not be
    read ``(name, error)``, the run folder, its report, the fake class index and notes (e.g.
    fewer layers than the default)."""

    results: list[ImageResult]
    failures: list[tuple[str, str]]
    folder: Path
    report: Path
    fake_index: int
    notes: list[str]


def _attention_units(detector: Detector, payloads: Sequence[tuple[str, str, dict]], out: Path) -> list[Any]:
    """Images ``(path, stem, options)`` in one forward pass: per image its sidecar, or its read error."""
    o = payloads[0][2]
    results, failures = analyze_images(
        detector,
        [Path(p) for p, _, _ in payloads],
        out,
        o["layers"],
        o["head_fusion"],
        o["aggregation"],
        o["multi_layer"],
        [s for _, s, _ in payloads],
        len(payloads),
        debug=o["debug"],
    )
    done = {**{r.stem: r.sidecar() for r in results}, **{name: VizkitError(err) for name, err in failures}}
    return [done[stem] for _, stem, _ in payloads]


def _from_sidecar(side: dict[str, Any], out: Path) -> ImageResult:
    """An :class:`ImageResult` read back from an image's sidecar (its maps stay in the figures)."""
    e = np.zeros((0, 0), np.float32)
    return ImageResult(
        side["image"],
        e,
        side["probabilities"],
        side["predicted_index"],
        side["class_names"],
        e,
        e,
        side["comparison"],
        side["where_they_differ"],
        side["layers"],
        side["head_fusion"],
        side["aggregation"],
        {k: out / v for k, v in side["files"].items()},
        side.get("layers_note"),
    )


def run_detector_attention(
    image_paths: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    *,
    model_config: str | None = None,
    weights: str | None = None,
    head: str | None = None,
    num_heads: int | None = None,
    target_layers: Any = None,
    head_fusion: str = "mean",
    aggregation: str = "relevance",
    multi_layer: bool = False,
    batch_size: int = 16,
    overwrite: bool = False,
    debug: bool = False,
    device: str | torch.device = "auto",
    cluster: ClusterOptions | None = None,
    params: dict[str, Any] | None = None,
    progress: bool = True,
) -> AttentionRun:
    """``vizkit detector-attention``: explain the images (files or folders) with the detector of
    ``model_config`` + ``weights`` (none: the zoo's), writing the seed's files per image and
    ``attention_report.md`` (``params``: its parameter table). The options are checked
    (:func:`check_attention_options`) before the output folder is made; an unreadable image is
    reported in ``failures`` and skipped. ``target_layers``: block indices or names, or
    last / last_4 / all (a list is joined as one spec); ``device`` by
    :func:`vizkit.state.resolve_device`; ``cluster``: batches of images on a Dask cluster."""
    from ..batch import Job, resolved, run_inputs

    files = image_files(image_paths)
    if batch_size < 1:
        raise InputError(f"--batch-size must be positive, got {batch_size}")
    layers = (
        parse_layers(",".join(map(str, target_layers)) if isinstance(target_layers, (list, tuple)) else target_layers)
        if target_layers
        else None
    )
    spec = dict(
        model_config=model_config, weights=weights, head=head, num_heads=num_heads, device=str(resolve_device(device))
    )
    detector = load_detector_model(**spec)
    note = check_attention_options(detector.model, layers, head_fusion, aggregation)[2]
    manifest = {
        "command": "detector-attention",
        **{k: resolved(spec[k]) for k in ("model_config", "weights", "head")},
        "num_heads": num_heads,
        "target_layers": layers,
        "head_fusion": head_fusion,
        "aggregation": aggregation,
        "multi_layer": multi_layer,
    }
    opts = dict(layers=layers, head_fusion=head_fusion, aggregation=aggregation, multi_layer=multi_layer, debug=debug)
    job = Job(
        _attention_units,
        load_detector_model,
        spec,
        None if cluster is not None else detector,
        grouped=True,
        catch=(VizkitError,),
        name="detector-attention",
    )
    batch, outcomes = run_inputs(
        output_dir,
        "detector-attention",
        manifest,
        files,
        job,
        lambda f, stem: (str(f), stem, opts),
        overwrite=overwrite,
        cluster=cluster,
        progress=progress,
        group=lambda todo: min(batch_size, -(-todo // 8)),  # at most batch_size, 8+ tasks
        columns=["predicted_class", "where_they_differ"],
    )
    out, failures = batch.folder, [(o.key, o.error) for o in outcomes if not o.ok]
    results = [_from_sidecar(o.record, out) for o in outcomes if o.ok]
    report = write_attention_report(out, dict(params or {}), detector, results, failures=failures)
    return AttentionRun(results, failures, out, report, detector.fake_index, [note] if note else [])


# --------------------------------------------------------------------------------------
# notebook parameters
# --------------------------------------------------------------------------------------
def notebook_parameters() -> list:
    """The parameter spec of ``notebooks/01_clip_detector_attention.ipynb``."""
    from ..notebook import Param, positive
    from .registry import common_parameters

    return [
        Param("model", (str,), help="face_forgery_detector (the zoo) or a weights file / HF directory"),
        Param("model_config", (str,), help="DeepfakeBench detector YAML"),
        Param("images", (str, list, tuple), help="an image, a folder, a list, or empty for zoo test faces"),
        Param("num_images", (int,), check=positive),
        Param("target_layers", (str, list, tuple), check=layers_ok),
        Param("head_fusion", (str,), choices=HEAD_FUSIONS),
        Param("aggregation", (str,), choices=AGGREGATIONS),
        Param("layer_modes", (str,), check=choices_ok(LAYER_MODES, "layer mode")),
        Param("faithfulness_samples", (int,), check=lambda v: None if v >= 0 else "must be >= 0 (0 skips the table)"),
        Param("road_samples", (int,), check=lambda v: None if v >= 0 else "must be >= 0 (0 skips ROAD)"),
        *common_parameters("output_dir", "overwrite", "interactive", "seed", "device"),
    ]


def check_notebook_parameters(namespace: dict, before: Any) -> dict[str, Any]:
    """Validate the notebook's parameters, including the combinations."""
    from ..notebook import ParameterError, check_parameters

    p = check_parameters(namespace, before, notebook_parameters())
    spec = p["model"][4:] if p["model"].startswith("zoo:") else p["model"]
    if spec not in ZOO_DETECTORS and not Path(spec).exists():
        raise ParameterError(
            f"model={p['model']!r} is neither a zoo detector ({', '.join(ZOO_DETECTORS)}) nor an "
            "existing weights file or model directory"
        )
    if p["model_config"] and not Path(p["model_config"]).is_file():
        raise ParameterError(f"model_config {p['model_config']!r} does not exist")
    paths = (
        [p["images"]]
        if isinstance(p["images"], str) and p["images"]
        else (list(p["images"]) if not isinstance(p["images"], str) else [])
    )
    missing = [q for q in paths if not Path(q).exists()]
    if missing:
        raise ParameterError(f"images not found: {', '.join(map(repr, missing))}")
    resolve_device(p["device"])  # cuda without a GPU: one clear error
    return p
