"""Scenario 4: Grad-CAM of a CLIP image encoder toward a text (seed 003).

The explained score is the image-text similarity of the target text, ``logit_scale * cos``
(or, with ``probability=True``, its softmax probability over all class texts). The target is
the given text index, or the most similar text. Layers default to ``"auto"`` on the image
encoder (ResNet / ConvNeXt: last stage; EfficientNet: last convolutional block; ViT: the last
block read at its input; any other encoder: the last module with a spatial output).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from . import render
from .errors import InputError, VizkitError
from .explain import cam
from .methods import get_method
from .models.clip import ClipAdapter
from .targets import ImageTextSimilarity


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


def load_class_texts(class_texts: Sequence[str] | None = None, class_texts_file: str | os.PathLike | None = None
                     ) -> tuple[list[str], list[str]]:
    """``(names, texts)`` from a list (names = texts) or a JSON file ``{"name": "description"}``.

    Exactly one source must be given; an empty list, a malformed or empty JSON file is an error.
    """
    if (class_texts is None or len(class_texts) == 0) == (class_texts_file is None):
        if class_texts is not None and len(class_texts) == 0 and class_texts_file is None:
            raise InputError("the list of class texts is empty: give at least one text")
        raise InputError("give the class texts either as a list (--class-texts) or as a JSON file "
                         "(--class-texts-file), not both and not neither")
    if class_texts_file is None:
        texts = [str(t) for t in class_texts]
        if any(not t.strip() for t in texts):
            raise InputError("a class text is empty")
        return texts, texts
    path = Path(class_texts_file)
    if not path.is_file():
        raise InputError(f"class texts file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"class texts file {str(path)!r} is not valid JSON: {err}") from err
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise InputError(f"class texts file {str(path)!r} must hold one JSON object "
                         '{"name": "description", ...} with string names and descriptions')
    if not data:
        raise InputError(f"class texts file {str(path)!r} holds no class texts")
    return list(data), list(data.values())


def load_image(path: str | os.PathLike) -> Image.Image:
    """An RGB PIL image; grey, RGBA, palette and 16-bit images are converted, not rejected."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {str(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            image = im.copy()
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"cannot read image {str(path)!r}: {err}") from err
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(image, dtype=np.float64)
        hi = 65535.0 if a.max() > 255 else 255.0
        image = Image.fromarray(np.clip(a / hi * 255.0, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        a = np.asarray(image, dtype=np.float64)
        a = (a - a.min()) / (a.max() - a.min() + 1e-12)
        image = Image.fromarray((a * 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def display_crop(image: Image.Image, size: int) -> np.ndarray:
    """The region the model sees, for display: short side resized to ``size``, centre crop; HxWx3 float."""
    w, h = image.size
    scale = size / min(w, h)
    im = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0


def explain_clip(adapter: ClipAdapter, images: Sequence[Image.Image], names: Sequence[str], texts: Sequence[str],
                 target_text_idx: int | None = None, method: str = "gradcam", layers: Any = "auto",
                 probability: bool = False, image_paths: Sequence[str] | None = None) -> list[ClipGradCAMResult]:
    """Grad-CAM of each image toward its target text; one batched forward and backward."""
    get_method(method)
    if target_text_idx is not None and not 0 <= target_text_idx < len(texts):
        raise InputError(f"target text index {target_text_idx} is out of range: there are {len(texts)} class texts "
                         f"(valid 0..{len(texts) - 1})")
    model = adapter.model
    device = next(model.parameters()).device
    x = torch.stack([adapter.preprocess(im) for im in images]).to(device)
    text = adapter.text_features(texts)
    with torch.no_grad():
        image_features = torch.nn.functional.normalize(adapter.encode_image(x).float(), dim=-1)
    sims = adapter.logit_scale * image_features @ text.T  # [B, T]
    probs = sims.softmax(-1)
    chosen = "given" if target_text_idx is not None else "most similar"
    target = torch.full((len(images),), target_text_idx) if target_text_idx is not None else sims.argmax(-1).cpu()
    explanation = cam(model, x, ImageTextSimilarity(text, target, adapter.logit_scale, probability=probability),
                      layers=layers, method=method, forward=adapter.encode_image)
    paths = list(image_paths) if image_paths is not None else [""] * len(images)
    return [ClipGradCAMResult(paths[b], list(names), list(texts), probs[b].tolist(), sims[b].tolist(), int(target[b]),
                              chosen, "probability" if probability else "similarity", explanation.method,
                              explanation.layers, explanation.heatmap[b].cpu().numpy(),
                              display_crop(images[b], x.shape[-1]))
            for b in range(len(images))]


def figure(result: ClipGradCAMResult, title: str | None = None) -> plt.Figure:
    """Original, heatmap, overlay and the probability of every text (target highlighted)."""
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2), gridspec_kw={"width_ratios": [1, 1, 1, 1.5]})
    render.show_overlay(axes[0], result.display, result.heatmap, title="image", alpha=0.0)
    render.show_heatmap(axes[1], result.heatmap, title=f"{result.method} heatmap")
    render.show_overlay(axes[2], result.display, result.heatmap, title="overlay")
    render.bar_chart(axes[3], result.names, result.probs, highlight=result.target, title="probability per text")
    t = result.target
    fig.suptitle(title or (f"target ({result.target_chosen}): {result.names[t]!r} - p = {result.probs[t]:.3f}; "
                           f"explained score: image-text {result.score}; layer {', '.join(result.layers)}"), fontsize=10)
    fig.tight_layout()
    return fig


def save_result(result: ClipGradCAMResult, output_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """Write ``<stem>.png`` (full figure), ``<stem>_overlay.png`` and ``<stem>.json``; all or nothing."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"figure": out / f"{stem}.png", "overlay": out / f"{stem}_overlay.png", "sidecar": out / f"{stem}.json"}
    written: list[Path] = []
    try:
        written.append(render.save_figure(figure(result), paths["figure"]))
        written.append(render.save_image(render.overlay(result.display, result.heatmap), paths["overlay"]))
        tmp = paths["sidecar"].with_name(f".{paths['sidecar'].name}.tmp")
        tmp.write_text(json.dumps(result.sidecar(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, paths["sidecar"])
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


def visualize_clip_gradcam(model: Any, image_path: str | os.PathLike, class_texts: Sequence[str] | None,
                           save_path: str | os.PathLike, target_text_idx: int | None = None, method: str = "gradcam",
                           target_layer: Any = "auto", class_texts_file: str | None = None, probability: bool = False,
                           tokenizer: Any = None, processor: Any = None) -> ClipGradCAMResult:
    """Seed 003's function: explain one image toward the target text and save the figure at
    ``save_path`` (plus ``<save_path stem>_overlay.png`` and a ``.json`` sidecar beside it).

    ``model`` is a :class:`ClipAdapter`, a zoo name such as ``"shapes_clip"``, or a CLIP model
    (open_clip with ``tokenizer``, HF ``CLIPModel`` with ``processor``, or a custom model with
    ``encode_image`` / ``encode_text``).
    """
    from .models.clip import adapt_clip

    if isinstance(model, str):
        from .clip_models import load_clip_model

        adapter = load_clip_model(model)
    elif isinstance(model, ClipAdapter):
        adapter = model
    else:
        adapter = adapt_clip(model, tokenizer=tokenizer, processor=processor)
    names, texts = load_class_texts(class_texts, class_texts_file)
    image = load_image(image_path)
    result = explain_clip(adapter, [image], names, texts, target_text_idx, method, target_layer or "auto",
                          probability, [str(image_path)])[0]
    save_path = Path(save_path)
    stem = save_path.name[:-4] if save_path.name.lower().endswith(".png") else save_path.name
    save_result(result, save_path.parent, stem)
    return result
