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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import render
from ..attention_math import AGGREGATIONS, HEAD_FUSIONS
from ..errors import CaptureError, InputError, VizkitError
from ..evaluate import batched, localization
from ..explain import AttentionGradients, _to_input_size, attention_gradients
from ..io import image_files, unique_stems, write_json
from ..layers import find_blocks, resolve_layers
from ..metrics import deletion_auc, randomization_sanity_check, region_means, top_region_iou
from ..models import Detector, load_detector
from ..models.load_detector import ZOO_DETECTORS
from ..report import Report
from ..state import model_device, resolve_device
from ..stats import map_entropy
from ..widgets import Control, Explorer, HeatmapView

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
    "faithfulness_observations",
    "write_attention_report",
    "DetectorAttentionExplorer",
    "notebook_parameters",
    "check_notebook_parameters",
    "ZOO_DETECTORS",
    "DEFAULT_TARGET_LAYERS",
]

#: the seed's three layer modes ("y" to its multi-layer question) and their layer specs
LAYER_MODES: dict[str, str] = {"last_layer": "last", "last_4_layers": "last_4", "all_layers": "all"}
REGIONS = (
    ("upper left", "upper centre", "upper right"),
    ("centre left", "centre", "centre right"),
    ("lower left", "lower centre", "lower right"),
)


# --------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------
DetectorModel = Detector  # seed 000's name for the one detector type (vizkit.models.Detector)
#: seed 000's default layers: the last four blocks (all of them on a detector with fewer)
DEFAULT_TARGET_LAYERS = (-4, -3, -2, -1)


def load_detector_model(
    model: str | nn.Module | None = None,
    model_config: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    *,
    head: str | None = None,
    num_heads: int | None = None,
    device: str | torch.device = "cpu",
) -> Detector:
    """The detector to explain, by :func:`vizkit.models.load_detector`: the zoo's
    ``face_forgery_detector`` (default), or a user's files (a DeepfakeBench YAML + ``.pth``, a
    Hugging Face directory + head, a timm classifier). ``model`` may also be a zoo name, a path
    (weights file or model directory) or an ``nn.Module`` (then preprocess the images yourself)."""
    if isinstance(model, nn.Module):
        return Detector(
            model.to(device).eval(),
            _no_preprocess,
            _no_preprocess,
            ["real", "fake"],
            0,
            type(model).__name__,
            "module",
            "none",
        )
    spec = str(model) if model else ""
    if spec and not weights:
        weights = spec if spec.startswith("zoo:") or spec not in ZOO_DETECTORS else f"zoo:{spec}"
    return load_detector(model_config, weights, head=head, num_heads=num_heads, device=device)


def _no_preprocess(image: Any) -> torch.Tensor:
    raise InputError(
        "this detector was passed as a module: preprocess the images yourself and call "
        "CLIPViTGradCAM(model)(x) with a tensor [B, 3, H, W]"
    )


# --------------------------------------------------------------------------------------
# maps from one pass
# --------------------------------------------------------------------------------------
@dataclass
class DetectorAttention:
    """Both class maps of a batch, computed on demand from one cached pass.

    ``cache`` holds every block's attention ``[B, H, N, N]`` and its gradient for each class;
    ``probs`` ``[B, C]``; ``layer_names`` the blocks in forward order; ``target_layers`` the
    layers the default maps combine.
    """

    cache: AttentionGradients
    probs: torch.Tensor
    class_names: list[str]
    layer_names: list[str]
    target_layers: list[str]
    head_fusion: str = "mean"
    aggregation: str = "relevance"
    #: why the target layers differ from what was asked (a detector shallower than the default)
    note: str | None = None
    _memo: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def preds(self) -> torch.Tensor:
        return self.probs.argmax(-1)

    def layers_for(self, mode: str | Sequence[str] | None) -> list[str]:
        """The layers of a layer mode (``last_layer`` / ``last_4_layers`` / ``all_layers``), of a
        list of names, or (None) the target layers."""
        if mode is None:
            return list(self.target_layers)
        if isinstance(mode, str):
            if mode not in LAYER_MODES:
                raise VizkitError(f"unknown layer mode {mode!r}: choose one of {', '.join(LAYER_MODES)}")
            spec = LAYER_MODES[mode]
            n = len(self.layer_names)
            return (
                self.layer_names[-1:]
                if spec == "last"
                else self.layer_names[-min(4, n) :]
                if spec == "last_4"
                else list(self.layer_names)
            )
        return list(mode)

    def raw(
        self,
        class_idx: int,
        head_fusion: str | None = None,
        layers: str | Sequence[str] | None = None,
        aggregation: str | None = None,
    ) -> torch.Tensor:
        """Unnormalised ``[B, h, w]`` map of class ``class_idx`` at the patch grid."""
        names = self.layers_for(layers)
        key = (class_idx, head_fusion or self.head_fusion, tuple(names), aggregation or self.aggregation)
        if key not in self._memo:
            self._memo[key] = self.cache.relevance(class_idx, key[1], names, key[3])
        return self._memo[key]

    def heatmap(
        self,
        class_idx: int,
        head_fusion: str | None = None,
        layers: str | Sequence[str] | None = None,
        aggregation: str | None = None,
    ) -> torch.Tensor:
        """``[B, H, W]`` map of class ``class_idx`` at the input size in [0, 1] (normalised per
        image, then resized bilinearly: the same map as :func:`vizkit.gradient_attention`)."""
        raw = self.raw(class_idx, head_fusion, layers, aggregation)
        return _to_input_size(raw, self.cache.image_size)

    def layer_heatmap(self, class_idx: int, layer: str, head_fusion: str | None = None) -> torch.Tensor:
        """One layer's ``Ā`` CLS row, at the input size, normalised: ``[B, H, W]``."""
        m = self.cache.layer_map(class_idx, layer, head_fusion or self.head_fusion).clamp(min=0)
        return _to_input_size(m, self.cache.image_size)


def check_attention_options(
    model: nn.Module, target_layers: Any = None, head_fusion: str = "mean", aggregation: str = "relevance"
) -> tuple[list[str], list[str], str | None]:
    """Check the options of :class:`CLIPViTGradCAM` on ``model`` before any image is read:
    ``(block names, target layers, note)``; ``note`` says why the target layers differ from the
    default (a detector with fewer than 4 blocks). A :class:`VizkitError` names what is wrong."""
    if head_fusion not in HEAD_FUSIONS:
        raise VizkitError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, got {head_fusion!r}")
    if aggregation not in AGGREGATIONS:
        raise VizkitError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    blocks = find_blocks(model)
    if not blocks:
        raise CaptureError(
            f"No attention weights found: {type(model).__name__} has no transformer blocks with "
            "attention (scenario 1 explains ViT / CLIP-ViT detectors; for a CNN use vizkit.cam)"
        )
    layer_names = [n for n, _ in blocks]
    note: str | None = None
    if target_layers is None:
        n = len(layer_names)
        target_layers = "last_4"
        if n < 4:
            note = (
                f"the detector has {n} transformer block(s), fewer than the default's 4 "
                f"(-4 -3 -2 -1): the maps combine all {n}"
            )
    spec = list(target_layers) if isinstance(target_layers, (list, tuple)) else target_layers
    last_k = re.fullmatch(r"last_(\d+)", spec.strip().lower()) if isinstance(spec, str) else None
    if last_k:  # "last_4" on a model with fewer blocks means all of them, as the layer modes do
        targets = layer_names[-min(int(last_k.group(1)), len(layer_names)) :]
    else:
        targets = [n for n, _ in resolve_layers(model, spec)]
    outside = [n for n in targets if n not in layer_names]
    if outside:
        raise VizkitError(
            f"target layer(s) {', '.join(outside)} are not transformer blocks of "
            f"{type(model).__name__}; blocks: {layer_names[0]} .. {layer_names[-1]}"
        )
    return layer_names, targets, note


class CLIPViTGradCAM:
    """Seed 000's class: gradient-weighted attention of a ViT classifier over ``target_layers``.

    ``target_layers``: block indices (``[-4, -3, -2, -1]``: the last four), names, or
    ``"last"`` / ``"last_4"`` / ``"all"``; None (default): the seed's last four blocks, or all
    of them on a detector with fewer (``note`` says so); ``head_fusion``: mean / max / min; ``aggregation``:
    ``"relevance"`` (Chefer) or ``"mean"``. Works on any ViT classifier whose blocks vizkit finds
    (HF CLIP / ViT, timm, open_clip); the class count is the model's.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any = None,
        head_fusion: str = "mean",
        aggregation: str = "relevance",
        class_names: Sequence[str] | None = None,
        debug: bool = False,
    ):
        self.model, self.head_fusion, self.aggregation, self.debug = model, head_fusion, aggregation, debug
        self.layer_names, self.target_layers, self.note = check_attention_options(
            model, target_layers, head_fusion, aggregation
        )
        self.class_names = list(class_names) if class_names else None

    def _debug_info(self, result: DetectorAttention) -> str:
        c = result.cache
        return (
            f"Target layers: {self.target_layers}\nAttention weights keys: {list(c.attentions)}\n"
            f"Attention gradients keys: {[list(g) for g in c.gradients]}\ngrid {c.grid}, prefix tokens "
            f"{c.prefix_tokens}, heads {next(iter(c.attentions.values())).shape[1]}"
        )

    def explain(self, x: torch.Tensor, classes: Sequence[int] | None = None) -> DetectorAttention:
        """Every class's maps (``classes``: default all) from one forward pass of ``x`` ``[B, 3, H, W]``."""
        if classes is None:
            if self.class_names:
                classes = list(range(len(self.class_names)))
            else:  # the class count from one image (pass classes or class_names to skip this)
                with torch.no_grad():
                    classes = list(range(int(self.model(x[:1].to(model_device(self.model))).shape[-1])))
        classes = list(classes)
        cache = attention_gradients(self.model, x, classes, layers="all")
        logits = cache.output
        if logits is None or logits.ndim != 2:
            raise VizkitError(f"{type(self.model).__name__} does not return logits [B, C]: wrap it so it does")
        names = self.class_names or (
            ["real", "fake"] if logits.shape[-1] == 2 else [f"class {i}" for i in range(logits.shape[-1])]
        )
        if classes != list(range(len(classes))):
            cache = _reindex(cache, classes)  # gradients[k] belong to class k
        result = DetectorAttention(
            cache,
            logits.float().softmax(-1).cpu(),
            names,
            list(cache.layers),
            list(self.target_layers),
            self.head_fusion,
            self.aggregation,
            self.note,
        )
        if self.debug:
            print(self._debug_info(result))
        return result

    def __call__(self, x: torch.Tensor, class_idx: int | None = None) -> torch.Tensor:
        """``[B, H, W]`` map in [0, 1] of class ``class_idx`` (default: the predicted class of the
        first image) over the target layers."""
        if class_idx is None:
            with torch.no_grad():
                class_idx = int(self.model(x[:1].to(model_device(self.model))).argmax(-1)[0])
        res = self.explain(x, [class_idx])
        return res.heatmap(class_idx)


def _reindex(cache: AttentionGradients, classes: Sequence[int]) -> AttentionGradients:
    """Gradients, scores and classes indexed by class id (missing ids hold None)."""
    n = max(classes) + 1
    grads: list[Any] = [None] * n
    scores: list[Any] = [None] * n
    cls: list[Any] = [None] * n
    for i, k in enumerate(classes):
        grads[k], scores[k], cls[k] = cache.gradients[i], cache.scores[i], cache.classes[i]
    return AttentionGradients(
        cache.attentions,
        grads,
        scores,
        cls,
        cache.layers,
        cache.grid,
        cache.prefix_tokens,
        cache.image_size,
        cache.output,
    )


# --------------------------------------------------------------------------------------
# comparing the two class maps
# --------------------------------------------------------------------------------------
def comparison_numbers(real: torch.Tensor, fake: torch.Tensor, top: float = 0.2) -> dict[str, Any]:
    """Numbers comparing a real-class and a fake-class map ``[H, W]`` (each in [0, 1]): the
    IoU of their top-``top`` regions, the mean of their overlap ``min(real, fake)``, the mean
    signed difference ``fake - real`` and, per cell of a 3 x 3 grid, the mean difference."""
    r, f = real[None].float(), fake[None].float()
    cells = region_means(f - r)[0]
    return {
        "top20_iou": float(top_region_iou(r, f, top)[0]),
        "overlap_mean": float(torch.minimum(r, f).mean()),
        "difference_mean": float((f - r).mean()),
        "difference_by_region": cells.tolist(),
    }


def where_they_differ(numbers: dict[str, Any], class_names: Sequence[str] = ("real", "fake")) -> str:
    """One sentence naming the regions (3 x 3 grid of the image) where the two maps differ most."""
    cells = np.asarray(numbers["difference_by_region"])
    hi, lo = np.unravel_index(cells.argmax(), cells.shape), np.unravel_index(cells.argmin(), cells.shape)
    real, fake = class_names
    stronger_fake = f"{REGIONS[hi[0]][hi[1]]} ({cells[hi]:+.2f})" if cells[hi] > 0.05 else None
    stronger_real = f"{REGIONS[lo[0]][lo[1]]} ({cells[lo]:+.2f})" if cells[lo] < -0.05 else None
    iou = f"their top-20 % regions overlap with IoU {numbers['top20_iou']:.2f}"
    if stronger_fake and stronger_real:
        return (
            f"The {fake}-class map is stronger in the {stronger_fake}, "
            f"the {real}-class map in the {stronger_real}; {iou}."
        )
    if stronger_fake or stronger_real:
        who, where = (fake, stronger_fake) if stronger_fake else (real, stronger_real)
        return f"The {who}-class map is stronger in the {where}; {iou}."
    return f"The two maps agree: no region of a 3 x 3 grid differs by more than 0.05; {iou}."


# --------------------------------------------------------------------------------------
# figures and files per image
# --------------------------------------------------------------------------------------
@dataclass
class ImageResult:
    """One explained image: its maps (input size, [0, 1]), probabilities and comparison."""

    stem: str
    image: np.ndarray
    probs: list[float]
    predicted: int
    class_names: list[str]
    real: np.ndarray
    fake: np.ndarray
    numbers: dict[str, Any]
    sentence: str
    layers: list[str]
    head_fusion: str
    aggregation: str
    files: dict[str, Path] = field(default_factory=dict)
    layers_note: str | None = None

    def sidecar(self) -> dict[str, Any]:
        return {
            "image": self.stem,
            "class_names": self.class_names,
            "probabilities": self.probs,
            "predicted_class": self.class_names[self.predicted],
            "predicted_index": self.predicted,
            "layers": self.layers,
            **({"layers_note": self.layers_note} if self.layers_note else {}),
            "head_fusion": self.head_fusion,
            "aggregation": self.aggregation,
            "comparison": self.numbers,
            "where_they_differ": self.sentence,
            "files": {k: v.name for k, v in self.files.items()},
        }


def _display(image: Any, size: tuple[int, int]) -> np.ndarray:
    """The image as the model sees it (resized to the input size), float HxWx3 in [0, 1]."""
    import cv2

    arr = render.to_numpy_image(np.asarray(image.convert("RGB")) if hasattr(image, "convert") else image)
    return arr if arr.shape[:2] == tuple(size) else cv2.resize(arr, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def class_figure(res: ImageResult, which: str) -> plt.Figure:
    """``{stem}_{real|fake}_attention.png``: the image, the class map and its overlay."""
    heat = res.real if which == "real" else res.fake
    k = res.class_names.index(which) if which in res.class_names else (0 if which == "real" else 1)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    render.show_overlay(axes[0], res.image, heat, title="image", alpha=0.0)
    render.show_heatmap(axes[1], heat, title=f"{which}-class attention", colorbar=True)
    render.show_overlay(axes[2], res.image, heat, title="overlay")
    fig.suptitle(
        f"{res.stem}: {which} class, p = {res.probs[k]:.3f} (predicted {res.class_names[res.predicted]}); "
        f"{res.aggregation} over {len(res.layers)} layer(s), heads {res.head_fusion}",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def comparison_figure(res: ImageResult) -> plt.Figure:
    """``{stem}_comparison.png``: real map, fake map, signed difference (centred), overlap."""
    fig, axes = plt.subplots(1, 4, figsize=(14, 4))
    render.show_overlay(axes[0], res.image, res.real, title=f"real class (p={res.probs[0]:.3f})")
    render.show_overlay(axes[1], res.image, res.fake, title=f"fake class (p={res.probs[-1]:.3f})")
    diff = res.fake - res.real
    bound = float(np.abs(diff).max()) or 1.0
    im = axes[2].imshow(diff, cmap="RdBu_r", vmin=-bound, vmax=bound)
    fig.colorbar(im, ax=axes[2], fraction=0.046, pad=0.04)
    axes[2].set_title("fake - real")
    axes[2].set_xticks([])
    axes[2].set_yticks([])
    render.show_heatmap(axes[3], np.minimum(res.real, res.fake), title="overlap min(real, fake)", colorbar=True)
    n = res.numbers
    fig.suptitle(
        f"{res.stem}: top-20 % IoU {n['top20_iou']:.2f}, mean overlap {n['overlap_mean']:.3f}\n{res.sentence}",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def layers_figure(
    result: DetectorAttention, index: int, image: np.ndarray, stem: str, modes: Sequence[str] = tuple(LAYER_MODES)
) -> plt.Figure:
    """``{stem}_layers.png``: rows real / fake, one column per layer mode."""
    rows = []
    for k, name in (
        (result.class_names.index("real") if "real" in result.class_names else 0, "real"),
        (len(result.class_names) - 1 if "fake" not in result.class_names else result.class_names.index("fake"), "fake"),
    ):
        rows.append(
            [
                render.Panel(
                    image=image,
                    heatmap=result.heatmap(k, layers=m)[index].numpy(),
                    title=f"{name}: {m} ({len(result.layers_for(m))})",
                )
                for m in modes
            ]
        )
    return render.figure_grid(rows, suptitle=f"{stem}: layer modes ({result.aggregation}, heads {result.head_fusion})")


def image_result(
    result: DetectorAttention, index: int, image: np.ndarray, stem: str, real_idx: int = 0, fake_idx: int = 1
) -> ImageResult:
    """The maps and numbers of image ``index`` of a batch."""
    real = result.heatmap(real_idx)[index]
    fake = result.heatmap(fake_idx)[index]
    numbers = comparison_numbers(real, fake)
    probs = result.probs[index].tolist()
    return ImageResult(
        stem,
        image,
        probs,
        int(np.argmax(probs)),
        list(result.class_names),
        real.numpy(),
        fake.numpy(),
        numbers,
        where_they_differ(numbers, (result.class_names[real_idx], result.class_names[fake_idx])),
        list(result.target_layers),
        result.head_fusion,
        result.aggregation,
        layers_note=result.note,
    )


def save_image_result(
    res: ImageResult, result: DetectorAttention, index: int, output_dir: Path, multi_layer: bool = True
) -> dict[str, Path]:
    """Write the seed's files for one image; all or nothing (a failure removes what it wrote)."""
    out = Path(output_dir)
    written: list[Path] = []
    try:
        for which in ("real", "fake"):
            written.append(render.save_figure(class_figure(res, which), out / f"{res.stem}_{which}_attention.png"))
        written.append(render.save_figure(comparison_figure(res), out / f"{res.stem}_comparison.png"))
        if multi_layer:
            written.append(
                render.save_figure(layers_figure(result, index, res.image, res.stem), out / f"{res.stem}_layers.png")
            )
        res.files = {p.stem[len(res.stem) + 1 :]: p for p in written}
        written.append(write_json(out / f"{res.stem}.json", res.sidecar()))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return {**res.files, "sidecar": written[-1]}


# --------------------------------------------------------------------------------------
# one image, many images
# --------------------------------------------------------------------------------------
def analyze_images(
    detector: Detector,
    images: Sequence[Any],
    output_dir: str | os.PathLike,
    target_layers: Any = None,
    head_fusion: str = "mean",
    aggregation: str = "relevance",
    multi_layer: bool = True,
    stems: Sequence[str] | None = None,
    batch_size: int = 16,
    progress: bool = False,
    debug: bool = False,
) -> tuple[list[ImageResult], list[tuple[str, str]]]:
    """Explain images (paths or arrays) in batches, writing the seed's files for each.

    An image that cannot be read is reported in the returned failures ``(name, error)`` and
    skipped; the others are written. Returns ``(results, failures)``.
    """
    gradcam = CLIPViTGradCAM(detector.model, target_layers, head_fusion, aggregation, detector.class_names, debug)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) if isinstance(p, (str, os.PathLike)) else None for p in images]
    names = list(stems) if stems is not None else unique_stems([p or f"image_{i}" for i, p in enumerate(paths)])
    loaded, failures = [], []
    for name, p, item in zip(names, paths, images):
        try:
            loaded.append((name, detector.read(p) if p is not None else np.asarray(item)))
        except VizkitError as err:
            failures.append((name, str(err)))
    results = []
    for _, chunk in batched(loaded, batch_size, progress="detector-attention" if progress else False, unit="image"):
        x = torch.stack([detector.preprocess(im) for _, im in chunk]).to(model_device(detector.model))
        result = gradcam.explain(x)
        for i, (name, im) in enumerate(chunk):
            res = image_result(
                result, i, _display(im, result.cache.image_size), name, detector.real_index, detector.fake_index
            )
            save_image_result(res, result, i, out, multi_layer)
            results.append(res)
    return results, failures


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


def analyze_single_image(
    config_path: str | os.PathLike | None,
    weights_path: str | os.PathLike | None,
    image_path: str | os.PathLike,
    output_dir: str | os.PathLike = "attention_results",
    target_layers: Any = None,
    head_fusion: str = "mean",
    multi_layer: bool = True,
    num_heads: int | None = None,
) -> ImageResult:
    """Seed 000's function: explain one image with the detector of ``config_path`` +
    ``weights_path`` (both None: the zoo detector) and write the seed's files to ``output_dir``."""
    detector = load_detector_model(None, config_path, weights_path, num_heads=num_heads)
    results, failures = analyze_images(
        detector, [Path(image_path)], output_dir, target_layers, head_fusion, multi_layer=multi_layer
    )
    if failures:
        raise InputError(failures[0][1])
    return results[0]


# --------------------------------------------------------------------------------------
# faithfulness over held-out faces with masks
# --------------------------------------------------------------------------------------
def _combos(head_fusions: Sequence[str], layer_modes: Sequence[str], aggregations: Sequence[str]) -> list[tuple]:
    return [(f, m, a) for a in aggregations for m in layer_modes for f in head_fusions]


def _maps_over(
    gradcam: CLIPViTGradCAM, x: torch.Tensor, class_idx: int, combos: Sequence[tuple], batch_size: int
) -> dict[tuple, torch.Tensor]:
    """Every combo's ``[N, H, W]`` map of class ``class_idx`` (one pass per batch for all combos)."""
    out: dict[tuple, list[torch.Tensor]] = {c: [] for c in combos}
    for start, _ in batched(range(len(x)), batch_size):
        res = gradcam.explain(x[start : start + batch_size])
        for f, m, a in combos:
            out[(f, m, a)].append(res.heatmap(class_idx, f, m, a))
    return {c: torch.cat(v) for c, v in out.items()}


def faithfulness_table(
    detector: Detector,
    fakes: Sequence[Any],
    reals: Sequence[Any],
    head_fusions: Sequence[str] = HEAD_FUSIONS,
    layer_modes: Sequence[str] = tuple(LAYER_MODES),
    aggregations: Sequence[str] = AGGREGATIONS,
    deletion_steps: int = 10,
    sanity_samples: int = 16,
    sanity_blocks: int = 2,
    batch_size: int = 50,
) -> pd.DataFrame:
    """Faithfulness of each head fusion x layer mode x aggregation on held-out faces.

    ``fakes`` carry ``image`` and ``mask`` (the manipulated region); ``reals`` carry ``image``.
    Per combination: the pointing game and energy inside the mask of the fake-class map on
    the fakes, the deletion AUC of the fake probability (lower = the map finds what the
    detector uses), the mean entropy of the real-class maps on real images and of the
    fake-class maps on fakes (nats), and the mean Spearman correlation of the fake-class maps
    after re-initialising the last ``sanity_blocks`` blocks (Adebayo et al. 2018; near 0 = the
    map depends on the weights, as it should).
    """
    if not fakes or not reals:
        raise InputError("the faithfulness table needs fake images with masks and real images")
    device = model_device(detector.model)
    real_k, fake_k = detector.real_index, detector.fake_index
    gradcam = CLIPViTGradCAM(detector.model, "all", class_names=detector.class_names)
    combos = _combos(head_fusions, layer_modes, aggregations)
    xf = torch.stack([detector.preprocess(s.image) for s in fakes]).to(device)
    xr = torch.stack([detector.preprocess(s.image) for s in reals]).to(device)
    fake_maps = _maps_over(gradcam, xf, fake_k, combos, batch_size)
    real_maps = _maps_over(gradcam, xr, real_k, combos, batch_size)
    index = {id(s): i for i, s in enumerate(fakes)}

    def fake_prob(images: torch.Tensor) -> torch.Tensor:
        return detector.model(images).float().softmax(-1)[:, fake_k]

    def inputs(chunk: Sequence[Any]) -> torch.Tensor:
        return xf[[index[id(s)] for s in chunk]]

    rows = []
    for combo in combos:
        maps = fake_maps[combo]
        loc = localization(
            fakes,
            inputs,
            lambda x, chunk, maps=maps: maps[[index[id(s)] for s in chunk]],
            score=fake_prob,
            deletion_steps=deletion_steps,
            batch_size=batch_size,
        )
        f, m, a = combo
        rows.append(
            {
                "head_fusion": f,
                "layer_mode": m,
                "aggregation": a,
                "layers": 0,
                "pointing": loc.pointing(),
                "energy_in_mask": float(loc.energy.mean()),
                "deletion_auc": float(loc.deletion.mean()),
                "entropy_real_maps_real": float(map_entropy(real_maps[combo]).nanmean()),
                "entropy_fake_maps_fake": float(map_entropy(maps).nanmean()),
            }
        )
    table = pd.DataFrame(rows)
    n_layers = {
        m: len(gradcam.layer_names)
        if LAYER_MODES[m] == "all"
        else min(len(gradcam.layer_names), 1 if LAYER_MODES[m] == "last" else 4)
        for m in layer_modes
    }
    table["layers"] = table["layer_mode"].map(n_layers)
    table["sanity_spearman"] = _sanity(detector, gradcam, xf[:sanity_samples], fake_k, combos, sanity_blocks)
    # references for the deletion AUC: pixels removed in the order of the ground-truth mask, and at random
    masks = torch.stack([torch.as_tensor(np.asarray(s.mask, dtype=np.float32)) for s in fakes]).to(device)
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(masks.shape, generator=gen).to(device)
    with torch.no_grad():
        table.attrs["deletion_auc_mask_order"] = float(
            deletion_auc(fake_prob, xf, masks + 1e-3 * noise, steps=deletion_steps).mean()
        )
        table.attrs["deletion_auc_random_order"] = float(
            deletion_auc(fake_prob, xf, noise, steps=deletion_steps).mean()
        )
    return table


def _sanity(
    detector: Detector, gradcam: CLIPViTGradCAM, x: torch.Tensor, class_idx: int, combos: Sequence[tuple], blocks: int
) -> list[float]:
    """Per combo: the mean Spearman correlation between the maps of the trained model and of a
    copy whose last ``blocks`` transformer blocks are re-initialised (cascading, top-down)."""
    names = gradcam.layer_names[::-1][:blocks]
    b = len(x)

    def explain_fn(model: nn.Module) -> torch.Tensor:
        g = CLIPViTGradCAM(model, "all", class_names=detector.class_names)
        res = g.explain(x)
        return torch.cat([res.heatmap(class_idx, f, m, a) for f, m, a in combos])  # combo-major [K * B, H, W]

    df = randomization_sanity_check(explain_fn, detector.model, names, seed=0)
    last = df[df["step"] == df["step"].max()].copy()
    last["combo"] = last["sample"] // b
    means = last.groupby("combo")["spearman"].mean()
    return [float(means.get(i, np.nan)) for i in range(len(combos))]


def faithfulness_observations(table: pd.DataFrame) -> list[str]:
    """Sentences generated from the faithfulness table."""
    notes = []
    best = table.loc[table["pointing"].idxmax()]
    notes.append(
        f"The fake-class map points inside the manipulated region most often with heads fused by "
        f"{best['head_fusion']}, {best['layer_mode']} and {best['aggregation']} aggregation: "
        f"{best['pointing']:.1%} of the fakes (energy inside the mask {best['energy_in_mask']:.1%})."
    )
    low = table.loc[table["deletion_auc"].idxmin()]
    ref = ""
    if "deletion_auc_mask_order" in table.attrs:
        m, r = table.attrs["deletion_auc_mask_order"], table.attrs["deletion_auc_random_order"]
        ref = (
            f" For reference, deleting the ground-truth manipulated region first gives {m:.3f} and a random "
            f"order {r:.3f}"
            + (
                "; a blob of deleted pixels itself looks manipulated to this detector, so "
                "deletion says little about these maps."
                if r < m
                else "."
            )
        )
    spread = table["deletion_auc"].max() - table["deletion_auc"].min()
    if spread < 0.01:
        notes.append(
            f"The deletion AUC does not separate the variants (all {table['deletion_auc'].mean():.3f} within "
            f"{spread:.3f}): removing the map's top pixels first hardly lowers the fake probability." + ref
        )
    else:
        notes.append(
            f"Deleting pixels in the order of the map lowers the fake probability fastest for "
            f"{low['head_fusion']} / {low['layer_mode']} / {low['aggregation']} (deletion AUC "
            f"{low['deletion_auc']:.3f}; the worst combination {table['deletion_auc'].max():.3f})." + ref
        )
    by_agg = table.groupby("aggregation")["pointing"].mean()
    if len(by_agg) == 2:
        notes.append(
            f"Averaged over fusions and layer modes, Chefer's relevance propagation points correctly on "
            f"{by_agg.get('relevance', np.nan):.1%} of the fakes and the plain per-layer mean on "
            f"{by_agg.get('mean', np.nan):.1%}."
        )
    er, ef = table["entropy_real_maps_real"].mean(), table["entropy_fake_maps_fake"].mean()
    verdict = (
        "holds for this model: real-class maps on real faces are more spread out"
        if er > ef
        else "does not hold for this model: real-class maps on real faces are not more spread out"
    )
    notes.append(
        f"The seed's claim that real-class maps spread over the face while fake-class maps concentrate "
        f"on the artifact {verdict} (mean entropy {er:.2f} vs {ef:.2f} nats)."
    )
    s = table["sanity_spearman"]
    notes.append(
        f"After re-initialising the last blocks the maps keep a mean rank correlation of {s.mean():.2f} "
        f"(range {s.min():.2f} to {s.max():.2f}) with the trained model's: "
        + (
            "they depend on the learnt weights (sanity check passed)."
            if s.max() < 0.5
            else "some maps barely change with the weights; read them with care."
        )
    )
    return notes


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------
def write_attention_report(
    out: Path,
    params: dict[str, Any],
    detector: Detector,
    results: Sequence[ImageResult],
    table: pd.DataFrame | None = None,
    notes: Sequence[str] = (),
    failures: Sequence[tuple[str, str]] = (),
    figures: Sequence[Path] = (),
) -> Path:
    """``attention_report.md``: parameters, model, per-image predictions, faithfulness table."""
    rep = Report("Gradient-weighted attention of a deepfake detector")
    rep.heading("Run parameters").parameters(params)
    rep.heading("Model").bullets(
        [
            f"source: `{detector.info.get('source')}`",
            f"input pipeline: {detector.pipeline}",
            f"classes: {', '.join(detector.class_names)}",
            f"transformer blocks: {len(find_blocks(detector.model))}",
        ]
    )
    if results:
        r0 = results[0]
        how = "Chefer relevance propagation" if r0.aggregation == "relevance" else "the plain per-layer mean"
        rep.heading("How the maps were made").paragraph(
            f"Per layer, gradient-weighted attention Ā = fuse_heads((∇A ⊙ A)⁺) with heads fused by "
            f"**{r0.head_fusion}**; the per-image figures combine {len(r0.layers)} layer(s) "
            f"({', '.join(r0.layers)}) by **{how}** "
            "(aggregation). Real and fake maps come from one forward pass."
            + (f" Note: {r0.layers_note}." if r0.layers_note else "")
        )
        rep.heading("Predictions")
        rows = pd.DataFrame(
            [
                {
                    "image": r.stem,
                    "predicted": r.class_names[r.predicted],
                    **{f"p({n})": p for n, p in zip(r.class_names, r.probs)},
                    "top-20 % IoU": r.numbers["top20_iou"],
                    "where they differ": r.sentence,
                }
                for r in results
            ]
        )
        rep.table(rows, index=False, floatfmt=".3f")
    if failures:
        rep.heading("Images that could not be read").bullets([f"`{n}`: {e}" for n, e in failures])
    if table is not None:
        rep.heading("Faithfulness on held-out faces")
        rep.paragraph(
            "Pointing game and energy: the fake-class map on fakes against the manipulation mask. Deletion "
            "AUC: the fake probability as the map's top pixels are removed (lower is better). Entropy: "
            "spread of the maps (nats). Sanity: Spearman correlation with the maps of a model whose last "
            "blocks are re-initialised (near 0 is good)."
        )
        rep.table(table, index=False, floatfmt=".3f")
        rep.heading("Observations").bullets(list(notes))
    if figures:
        rep.heading("Figures")
        for f in figures:
            rep.figure(f, Path(f).stem.replace("_", " "), relative_to=out)
    return rep.write(Path(out) / "attention_report.md")


# --------------------------------------------------------------------------------------
# explorer
# --------------------------------------------------------------------------------------
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
        cmap: str = "jet",
        *,
        interactive: bool = True,
    ):
        self.result, self.images = result, [np.asarray(im) for im in images]
        self.names = list(names) if names else [f"image {i}" for i in range(len(self.images))]
        self.real_idx, self.fake_idx = real_idx, fake_idx
        super().__init__(interactive=interactive, cmap=cmap, figsize=(7, 3.4))

    def control_specs(self) -> list[Control]:
        """image, class, heads (fusion), layers (a mode or one layer), combine (aggregation)."""
        r = self.result
        layer_options = list(LAYER_MODES) + [f"layer {i}: {n}" for i, n in enumerate(r.layer_names)]
        return [
            Control("image", "slider", "image", min=0, max=len(self.images) - 1, value=0),
            Control("class", "toggle", "klass", list(self.CLASSES), "fake"),
            Control("heads", "dropdown", "fusion", list(HEAD_FUSIONS), r.head_fusion),
            Control("layers", "dropdown", "layers", layer_options, "last_4_layers"),
            Control("combine", "toggle", "aggregation", list(AGGREGATIONS), r.aggregation),
        ]

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
        return HeatmapView(
            self.current_map(state), self.images[i], map_title=f"{k} map", suptitle=title, diverging=k == "difference"
        )


# --------------------------------------------------------------------------------------
# notebook parameters
# --------------------------------------------------------------------------------------
def _layers_ok(value: Any) -> str | None:
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
    """``"-4,-3"`` -> ``[-4, -3]``; ``"last_4"`` / ``"all"`` / names pass through."""
    if isinstance(value, str):
        v = value.strip()
        if v.lower() in ("all", "last") or v.lower().startswith("last_"):
            return v.lower()
        parts = [p.strip() for p in v.split(",") if p.strip()]
        return [int(p) if p.lstrip("-").isdigit() else p for p in parts]
    return list(value)


def _modes_ok(value: str) -> str | None:
    bad = [m for m in value.split(",") if m.strip() and m.strip() not in LAYER_MODES]
    return f"unknown layer mode(s) {', '.join(bad)}: choose from {', '.join(LAYER_MODES)}" if bad else None


def notebook_parameters() -> list:
    """The parameter spec of ``notebooks/01_clip_detector_attention.ipynb``."""
    from ..notebook import Param, positive
    from .registry import common_parameters

    return [
        Param("model", (str,), help="face_forgery_detector (the zoo) or a weights file / HF directory"),
        Param("model_config", (str,), help="DeepfakeBench detector YAML"),
        Param("images", (str, list, tuple), help="an image, a folder, a list, or empty for zoo test faces"),
        Param("num_images", (int,), check=positive),
        Param("target_layers", (str, list, tuple), check=_layers_ok),
        Param("head_fusion", (str,), choices=HEAD_FUSIONS),
        Param("aggregation", (str,), choices=AGGREGATIONS),
        Param("layer_modes", (str,), check=_modes_ok),
        Param("faithfulness_samples", (int,), check=lambda v: None if v >= 0 else "must be >= 0 (0 skips the table)"),
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


def notebook_images(images: Any, num_images: int, seed: int = 0) -> tuple[list[Any], list[str], list[Any]]:
    """``(images, names, samples)``: the user's files (a path, a folder or a list), or, when empty,
    ``num_images`` zoo test faces alternating real and fake (samples carry labels and masks)."""
    if images:
        files = image_files([images] if isinstance(images, (str, os.PathLike)) else list(images))
        return list(files), unique_stems(files), [None] * len(files)
    from .. import zoo

    test = zoo.dataset("face_forgery_detector", "test")
    reals = [s for s in test if s.label == 0]
    fakes = [s for s in test if s.label == 1]
    rng = np.random.default_rng(seed)
    ri, fi = rng.permutation(len(reals)), rng.permutation(len(fakes))
    chosen = [(fakes[fi[k // 2]] if k % 2 == 0 else reals[ri[k // 2]]) for k in range(num_images)]
    names = [f"{'fake' if s.label else 'real'}_{s.meta.get('index', k)}" for k, s in enumerate(chosen)]
    return [s.image for s in chosen], unique_stems(names), chosen
