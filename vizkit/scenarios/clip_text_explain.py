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
import torch.nn.functional as F
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
from .clip_text_faithfulness import layer_label

__all__ = [
    "ClipGradCAMResult",
    "explain_clip",
    "shared_scale",
    "text_maps",
    "text_maps_table",
    "text_map_spread",
    "text_masks",
    "figure",
    "save_result",
    "output_stem",
]

#: the smallest short side of a written overlay file, in pixels (a 64-px overlay is unreadable)


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


def shared_scale(layer_maps: dict[str, torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Maps of one image toward several texts on ONE scale: ``layer_maps`` ``{layer: [T, h, w]}`` (the
    raw maps of :attr:`vizkit.Explanation.layer_maps`, after the ReLU) each resized bilinearly to
    ``size`` ``(H, W)`` and divided by its maximum over all texts and pixels, averaged over the
    layers and divided by the maximum of that: ``[T, H, W]`` in [0, 1], where 1 is the largest value
    of any text (not of each text). All-zero maps stay zero."""
    scaled = []
    for raw in layer_maps.values():
        up = F.interpolate(raw.float()[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
        up = up.clamp(min=0)
        top = up.max()
        scaled.append(up / top if top > 0 else up)
    mean = torch.stack(scaled).mean(0)
    top = mean.max()
    return mean / top if top > 0 else mean


def text_maps(
    adapter: ClipAdapter,
    image: Image.Image,
    texts: Sequence[str],
    method: str = "gradcam",
    layers: Any = "auto",
    scale: str = "shared",
    probability: bool = False,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The map of ``image`` toward EVERY text in one batched pass: ``([T, H, W] maps, [T] probs, layers)``.

    ``scale="shared"``: one scale for all texts (:func:`shared_scale`: a text the model barely
    matches gets a faint map); ``"per_text"``: each map normalised to its own maximum (as
    :func:`vizkit.cam` returns it: every text gets a peak of 1, whatever its probability).
    ``probability``: explain each text's softmax probability over the texts instead of its similarity."""
    if scale not in ("shared", "per_text"):
        raise InputError(f"scale must be 'shared' or 'per_text', got {scale!r}")
    x = adapter.preprocess(image)[None].repeat(len(texts), 1, 1, 1).to(model_device(adapter.model))
    text = adapter.text_features(texts)
    with torch.no_grad():
        sims = adapter.logit_scale * torch.nn.functional.normalize(adapter.encode_image(x[:1]).float(), dim=-1) @ text.T
    exp = cam(
        adapter.model,
        x,
        ImageTextSimilarity(text, torch.arange(len(texts)), adapter.logit_scale, probability=probability),
        layers=layers,
        method=method,
        forward=adapter.encode_image,
    )
    maps = exp.heatmap if scale == "per_text" else shared_scale(exp.layer_maps, tuple(x.shape[-2:]))
    return maps.cpu().numpy(), sims.softmax(-1)[0].cpu().numpy(), exp.layers


def text_maps_table(names: Sequence[str], maps: np.ndarray, probs: np.ndarray) -> Any:
    """One row per text, most probable first: ``text``, ``p`` (its probability) and ``peak`` (its map's
    maximum; on :func:`text_maps`'s shared scale 1 is the largest value of any text)."""
    import pandas as pd

    maps = np.asarray(maps)
    if maps.ndim != 3 or not len(names) == len(maps) == len(probs):
        raise InputError(f"expected one map [H, W] and one probability per text: {len(names)} texts, {maps.shape}")
    table = pd.DataFrame(
        {"text": list(names), "p": np.asarray(probs, float), "peak": maps.reshape(len(maps), -1).max(1)}
    )
    return table.sort_values("p", ascending=False, kind="stable").reset_index(drop=True)


def text_map_spread(maps: np.ndarray) -> float:
    """How much the maps ``[T, H, W]`` of one image differ between texts: the largest difference
    between any two texts' values at any pixel (0: every text gets the same map, the method does
    not depend on the text)."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or len(maps) < 2:
        raise InputError(f"expected maps [T, H, W] of at least two texts, got shape {maps.shape}")
    return float((maps.max(0) - maps.min(0)).max())


def text_masks(sample: Any, texts: Sequence[str]) -> list[np.ndarray | None]:
    """Per text, the mask of the object of a zoo shapes scene (:class:`vizkit.zoo.Sample` with
    ``meta["objects"]`` and ``masks``) that the text names ("a red circle"), or None when no object
    of the scene is named by it."""
    objects = sample.meta.get("objects", [])
    if len(objects) != len(sample.masks):
        raise InputError(f"the scene has {len(objects)} objects but {len(sample.masks)} masks")
    named: dict[str, np.ndarray] = {}
    for obj, mask in zip(objects, sample.masks):
        name = f"{obj['color']} {obj['shape']}"
        named.setdefault(f"{'an' if name[0] in 'aeiou' else 'a'} {name}", np.asarray(mask, dtype=bool))
    return [named.get(t) for t in texts]


def figure(result: ClipGradCAMResult, title: str | None = None, mask: np.ndarray | None = None) -> Figure:
    """Original, heatmap, overlay and the probability of every text (target highlighted); ``mask``:
    the target object's ground truth, outlined."""
    t = result.target
    layers = ", ".join(layer_label(n, with_module=True) for n in result.layers)  # "layer 2 (visual.trunk.blocks.2)"
    title = title or (
        f"target ({result.target_chosen}): {result.names[t]!r} - p = {result.probs[t]:.3f}; "
        f"explained score: image-text {result.score}; {layers}"
    )
    return text_target_figure(
        result.display, result.heatmap, result.names, result.probs, t, title, result.method, mask=mask
    )


def save_result(
    result: ClipGradCAMResult, output_dir: str | os.PathLike, stem: str, mask: np.ndarray | None = None
) -> dict[str, Path]:
    """Write ``<stem>.png`` (full figure) and ``<stem>_overlay.png`` (at least
    :data:`vizkit.render.MIN_SAVED_SIDE` pixels on its short side), each with ``mask`` outlined if given, and
    ``<stem>.json``; all or nothing."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"figure": out / f"{stem}.png", "overlay": out / f"{stem}_overlay.png", "sidecar": out / f"{stem}.json"}
    written: list[Path] = []
    try:
        written.append(render.save_figure(figure(result, mask=mask), paths["figure"]))
        written.append(render.save_overlay(result.display, result.heatmap, paths["overlay"], mask=mask))
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
