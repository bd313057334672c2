"""Scenario 4's explanation of one batch of images toward texts: :func:`explain_clip` (Grad-CAM or
a relative of one CLIP image encoder toward each image's target text), its
:class:`ClipGradCAMResult`, the maps toward every text (:func:`text_maps`), and the files of one
result (:func:`figure`, :func:`save_result`, :func:`output_stem`). The score: the image-text
similarity of the target text, ``logit_scale * cos`` (or its softmax probability over the texts).

Example::

    from vizkit.scenarios.clip_text_explain import explain_clip, save_result
    [res] = explain_clip(adapter, [image], ["circle", "square"], ["a red circle", "a blue square"])
    save_result(res, "out", "clip_gradcam_scene")   # scene.png, scene_overlay.png, scene.json
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image

from .. import render
from ..errors import InputError
from ..explain import cam
from ..figures.text_maps import text_target_figure
from ..io import write_json
from ..methods import get_method
from ..models.clip import ClipAdapter
from ..render import display_crop
from ..state import model_device
from ..targets import ImageTextSimilarity

__all__ = ["ClipGradCAMResult", "explain_clip", "text_maps", "figure", "save_result", "output_stem"]


@dataclass
class ClipGradCAMResult:
    """One image explained toward one text. ``heatmap`` ``[H, W]`` in [0, 1]; ``probs`` ``[T]``."""

    image_path: str
    names: list[str]
    texts: list[str]
    probs: list[float]
    similarities: list[float]
    target: int
    target_chosen: str  # "given" or "most similar"
    score: str  # "similarity" or "probability"
    method: str
    layers: list[str]
    heatmap: np.ndarray
    display: np.ndarray

    def sidecar(self) -> dict[str, Any]:
        """What the JSON sidecar holds (everything but the arrays)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("heatmap", "display")}
        d["target_name"] = self.names[self.target]
        d["target_text"] = self.texts[self.target]
        return d


def explain_clip(
    adapter: ClipAdapter,
    images: Sequence[Image.Image],
    names: Sequence[str],
    texts: Sequence[str],
    target_text_idx: int | None = None,
    method: str = "gradcam",
    layers: Any = "auto",
    probability: bool = False,
    image_paths: Sequence[str] | None = None,
    layout: Any = None,
) -> list[ClipGradCAMResult]:
    """Grad-CAM of each image toward its target text; one batched forward and backward.
    ``layout``: where the target layer's channels are (see :func:`vizkit.cam`)."""
    get_method(method)
    if target_text_idx is not None and not 0 <= target_text_idx < len(texts):
        raise InputError(
            f"target text index {target_text_idx} is out of range: there are {len(texts)} class texts "
            f"(valid 0..{len(texts) - 1})"
        )
    model = adapter.model
    device = model_device(model)
    x = torch.stack([adapter.preprocess(im) for im in images]).to(device)
    text = adapter.text_features(texts)
    chosen = "given" if target_text_idx is not None else "most similar"
    # one forward: the target reads every text's similarity from the explained pass itself
    target_fn = ImageTextSimilarity(text, target_text_idx, adapter.logit_scale, probability=probability)
    explanation = cam(model, x, target_fn, layers=layers, method=method, forward=adapter.encode_image, layout=layout)
    sims = target_fn.observed.float().cpu()  # [B, T]
    probs = sims.softmax(-1)
    target = target_fn.index.expand(len(images)) if target_fn.index.ndim == 0 else target_fn.index
    paths = list(image_paths) if image_paths is not None else [""] * len(images)
    return [
        ClipGradCAMResult(
            paths[b],
            list(names),
            list(texts),
            probs[b].tolist(),
            sims[b].tolist(),
            int(target[b]),
            chosen,
            "probability" if probability else "similarity",
            explanation.method,
            explanation.layers,
            explanation.heatmap[b].cpu().numpy(),
            display_crop(images[b], x.shape[-1]),
        )
        for b in range(len(images))
    ]


def text_maps(
    adapter: ClipAdapter, image: Image.Image, texts: Sequence[str], method: str = "gradcam", layers: Any = "auto"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The map of ``image`` toward EVERY text in one batched pass: ``([T, H, W] maps, [T] probs, layers)``."""
    x = adapter.preprocess(image)[None].repeat(len(texts), 1, 1, 1).to(model_device(adapter.model))
    text = adapter.text_features(texts)
    with torch.no_grad():
        sims = adapter.logit_scale * torch.nn.functional.normalize(adapter.encode_image(x[:1]).float(), dim=-1) @ text.T
    exp = cam(
        adapter.model,
        x,
        ImageTextSimilarity(text, torch.arange(len(texts)), adapter.logit_scale),
        layers=layers,
        method=method,
        forward=adapter.encode_image,
    )
    return exp.heatmap.cpu().numpy(), sims.softmax(-1)[0].cpu().numpy(), exp.layers


def figure(result: ClipGradCAMResult, title: str | None = None) -> Figure:
    """Original, heatmap, overlay and the probability of every text (target highlighted)."""
    t = result.target
    title = title or (
        f"target ({result.target_chosen}): {result.names[t]!r} - p = {result.probs[t]:.3f}; "
        f"explained score: image-text {result.score}; layer {', '.join(result.layers)}"
    )
    return text_target_figure(result.display, result.heatmap, result.names, result.probs, t, title, result.method)


def save_result(result: ClipGradCAMResult, output_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """Write ``<stem>.png`` (full figure), ``<stem>_overlay.png`` and ``<stem>.json``; all or nothing."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"figure": out / f"{stem}.png", "overlay": out / f"{stem}_overlay.png", "sidecar": out / f"{stem}.json"}
    written: list[Path] = []
    try:
        written.append(render.save_figure(figure(result), paths["figure"]))
        written.append(render.save_overlay(result.display, result.heatmap, paths["overlay"]))
        write_json(paths["sidecar"], result.sidecar())
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return paths


def output_stem(image_path: str | os.PathLike, output_name: str | None, batch: bool) -> str:
    """``clip_gradcam_<image stem>``; ``--output-name NAME`` -> ``NAME`` (``NAME_<image stem>`` in a batch)."""
    image_stem = Path(image_path).stem
    if not output_name:
        return f"clip_gradcam_{image_stem}"
    name = Path(output_name).name
    name = name[:-4] if name.lower().endswith(".png") else name
    return f"{name}_{image_stem}" if batch else name
