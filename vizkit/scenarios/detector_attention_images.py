"""Scenario 1's per-image files: the real-class and fake-class maps of each image, compared
(:func:`vizkit.metrics.comparison_numbers`, :func:`where_they_differ`), drawn (``{stem}_real_attention.png``,
``{stem}_fake_attention.png``, ``{stem}_comparison.png``, ``{stem}_layers.png``) and written with
a JSON sidecar (``{stem}.json``) by :func:`analyze_images` (a batch per forward pass) and seed
000's :func:`analyze_single_image`. The score: each class's logit, through gradient-weighted
attention (:class:`vizkit.models.vit_gradcam.CLIPViTGradCAM`).

Example::

    from vizkit.scenarios.detector_attention_images import analyze_images
    results, failures = analyze_images(detector, ["face.png"], "out", "last_4", "mean")
    results[0].sentence       # where the two class maps differ, in words
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import render
from ..errors import InputError, VizkitError
from ..evaluate import batched
from ..figures.class_maps import class_map_figure, map_comparison_figure, map_rows_figure, model_view
from ..io import unique_stems, write_json
from ..metrics import comparison_numbers
from ..models import Detector
from ..models.named_detector import load_detector_model
from ..models.vit_gradcam import LAYER_MODES, CLIPViTGradCAM, DetectorAttention
from ..state import model_device

__all__ = [
    "ImageResult",
    "where_they_differ",
    "class_figure",
    "comparison_figure",
    "layers_figure",
    "image_result",
    "save_image_result",
    "analyze_images",
    "analyze_single_image",
]

REGIONS = (
    ("upper left", "upper centre", "upper right"),
    ("centre left", "centre", "centre right"),
    ("lower left", "lower centre", "lower right"),
)


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
    mask: np.ndarray | None = None  # the manipulated region [H, W] when known: outlined on the figures

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


def class_figure(res: ImageResult, which: str) -> plt.Figure:
    """``{stem}_{real|fake}_attention.png``: the image, the class map and its overlay."""
    heat = res.real if which == "real" else res.fake
    k = res.class_names.index(which) if which in res.class_names else (0 if which == "real" else 1)
    title = (
        f"{res.stem}: {which} class, p = {res.probs[k]:.3f} (predicted {res.class_names[res.predicted]}); "
        f"{res.aggregation} over {len(res.layers)} layer(s), heads {res.head_fusion}"
    )
    return render.outline_panels(class_map_figure(res.image, heat, f"{which}-class attention", title), res.mask)


def comparison_figure(res: ImageResult) -> plt.Figure:
    """``{stem}_comparison.png``: real map, fake map, signed difference (centred), overlap."""
    n = res.numbers
    fig = map_comparison_figure(
        res.image,
        res.real,
        res.fake,
        (f"real class (p={res.probs[0]:.3f})", f"fake class (p={res.probs[-1]:.3f})"),
        f"{res.stem}: top-20 % IoU {n['top20_iou']:.2f}, mean overlap {n['overlap_mean']:.3f}\n{res.sentence}",
    )
    return render.outline_panels(fig, res.mask)


def layers_figure(
    result: DetectorAttention,
    index: int,
    image: np.ndarray,
    stem: str,
    modes: Sequence[str] = tuple(LAYER_MODES),
    mask: np.ndarray | None = None,
) -> plt.Figure:
    """``{stem}_layers.png``: rows real / fake, one column per layer mode with its own blocks (a mode
    selecting the same blocks as an earlier one, e.g. ``all_layers`` on a 4-block model, is named in
    the title instead of drawn twice); ``mask`` outlined when given."""
    from .detector_attention_eval import distinct_layer_modes

    modes, same = distinct_layer_modes(result, modes)
    names = result.class_names
    real = names.index("real") if "real" in names else 0
    fake = len(names) - 1 if "fake" not in names else names.index("fake")
    rows = [
        [(f"{name}: {m} ({len(result.layers_for(m))})", result.heatmap(k, layers=m)[index].numpy()) for m in modes]
        for k, name in ((real, "real"), (fake, "fake"))
    ]
    title = f"{stem}: layer modes ({result.aggregation}, heads {result.head_fusion})"
    if same:
        title += "; " + ", ".join(f"{m} = {k} (same blocks)" for m, k in same.items())
    return render.outline_panels(map_rows_figure(image, rows, title), mask)


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
                render.save_figure(
                    layers_figure(result, index, res.image, res.stem, mask=res.mask), out / f"{res.stem}_layers.png"
                )
            )
        res.files = {p.stem[len(res.stem) + 1 :]: p for p in written}
        written.append(write_json(out / f"{res.stem}.json", res.sidecar()))
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return {**res.files, "sidecar": written[-1]}


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
    masks: Sequence[Any] | None = None,
) -> tuple[list[ImageResult], list[tuple[str, str]]]:
    """Explain images (paths or arrays) in batches, writing the seed's files for each.

    ``masks``: per image its manipulated region ``[H, W]`` or None, outlined on its figures.

    An image that cannot be read is reported in the returned failures ``(name, error)`` and
    skipped; the others are written. Returns ``(results, failures)``.
    """
    gradcam = CLIPViTGradCAM(detector.model, target_layers, head_fusion, aggregation, detector.class_names, debug)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) if isinstance(p, (str, os.PathLike)) else None for p in images]
    names = list(stems) if stems is not None else unique_stems([p or f"image_{i}" for i, p in enumerate(paths)])
    loaded, failures = [], []
    by_name = dict(zip(names, masks if masks is not None else [None] * len(names)))
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
                result, i, model_view(im, result.cache.image_size), name, detector.real_index, detector.fake_index
            )
            res.mask = None if by_name[name] is None else np.asarray(by_name[name])
            save_image_result(res, result, i, out, multi_layer)
            results.append(res)
    return results, failures


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
