"""Metric cards of the zoo models (``python -m vizkit.zoo card``): for each model, the explanation
methods its scenario offers, scored on held-out samples by :mod:`vizkit.metrics.card` and written to
``data/zoo/cards/<model>.md`` and ``<model>.json``.

Each model becomes a :class:`CardTask`: a module ``[B, C, H, W] -> [B, K]`` class scores, the
samples (the first ``n`` of the test split that have a ground-truth mask), the explained class per
sample, the masks and one ``explain(model, inputs, targets) -> [B, H, W]`` per method:

- ``mnist_vit`` (scenario 2): the last layer's CLS attention and attention rollout (both blind to
  the class), gradient-weighted attention (Chefer et al.) of the predicted digit; masks = the ink.
- ``shapes_clip`` / ``shapes_clip_cnn`` (scenario 4): the CLIP as a zero-shot classifier over its 24
  class texts (``logit_scale * cos``), the CAM methods of :mod:`vizkit.methods` at the scenario's
  "auto" layer toward the named object's text (Score-CAM left out: 3-6 s per image here, its
  randomisation cascade alone would take the better part of an hour); masks = that object.
- ``face_forgery_detector`` (scenarios 1 and 3): Grad-CAM and Grad-CAM++ at the layer the zoo build
  scores, gradient-weighted attention aggregated by relevance propagation and by the plain layer
  mean, for the fake class on fake faces; masks = the manipulated region.
- ``tiny_vlm`` has no card: its maps explain generated answer tokens (scenario 5), not one class
  score of the image, so ROAD and the other image-perturbation scores do not apply as defined here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import VizkitError
from ..explain import attention, attention_gradients, cam, gradient_attention, rollout
from ..io import data_root, write_json, write_text
from ..metrics.card import CardSettings, MethodCard, card_markdown, card_record, method_card, random_card

__all__ = ["CARD_MODELS", "CardTask", "build_card", "card_task", "cards_dir"]

Explain = Callable[[nn.Module, Tensor, Any], Tensor]

#: the zoo models that have a card, and their default sample counts (a card takes about a minute on one CPU core)
CARD_MODELS: dict[str, int] = {"mnist_vit": 32, "shapes_clip": 24, "shapes_clip_cnn": 24, "face_forgery_detector": 24}
CAM_CARD_METHODS = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam")


def cards_dir() -> Path:
    """Where the cards live: ``data/zoo/cards/``."""
    return data_root() / "zoo" / "cards"


@dataclass
class CardTask:
    """What a card scores: ``model`` (``[B, C, H, W] -> [B, K]``, eval mode), ``inputs`` ``[N, C, H, W]``,
    ``targets`` ``[N]`` (the explained class), ``masks`` ``[N, H, W]`` bool, ``methods`` (name ->
    explain) and the card's ``intro`` paragraphs and ``meta``."""

    name: str
    model: nn.Module
    inputs: Tensor
    targets: Tensor
    masks: Tensor | None
    methods: dict[str, Explain]
    intro: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def _to_input(maps: Tensor, inputs: Tensor) -> Tensor:
    """Token-grid maps ``[B, h, w]`` bilinearly resized to the inputs' ``[B, H, W]``."""
    return F.interpolate(maps[:, None].float(), size=inputs.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def _last_attention(model: nn.Module, inputs: Tensor, targets: Any) -> Tensor:
    return _to_input(attention(model, inputs).cls_attention(-1, "mean"), inputs)


def _rollout(model: nn.Module, inputs: Tensor, targets: Any) -> Tensor:
    return _to_input(rollout(attention(model, inputs), head_fusion="mean"), inputs)


def _gradient_attention(model: nn.Module, inputs: Tensor, targets: Any) -> Tensor:
    return gradient_attention(model, inputs, targets).heatmap


def _gradient_attention_mean(model: nn.Module, inputs: Tensor, targets: Any) -> Tensor:
    return attention_gradients(model, inputs, [targets]).explanation(0, "mean", aggregation="mean").heatmap


def _cam(method: str, layers: Any) -> Explain:
    def explain(model: nn.Module, inputs: Tensor, targets: Any) -> Tensor:
        return cam(model, inputs, targets, layers=layers, method=method).heatmap

    return explain


def _with_masks(samples: Sequence[Any], n: int) -> list[Any]:
    chosen = [s for s in samples if s.mask is not None and np.asarray(s.mask).any()][:n]
    if len(chosen) < n:
        raise VizkitError(f"only {len(chosen)} samples with a mask, {n} asked for")
    return chosen


def _masks(samples: Sequence[Any]) -> Tensor:
    return torch.from_numpy(np.stack([np.asarray(s.mask, dtype=bool) for s in samples]))


def _mnist_vit(n: int) -> CardTask:
    from . import dataset, load

    bundle = load("mnist_vit")
    samples = _with_masks(dataset("mnist_vit", "test"), n)
    x = torch.stack([bundle.preprocess(s.image) for s in samples])
    with torch.no_grad():
        predicted = bundle.model(x).argmax(-1)
    return CardTask(
        "mnist_vit",
        bundle.model,
        x,
        predicted,
        _masks(samples),
        {"attention (last layer)": _last_attention, "rollout": _rollout, "gradient attention": _gradient_attention},
        [
            f"The zoo's MNIST ViT (7x7 patches, 6 layers) on the first {n} test digits; explained: the predicted "
            "digit (attention and rollout do not depend on the class). Ground truth: the ink (pixels of at least "
            "half intensity, about 13 % of the image). Token maps (4x4) are resized bilinearly to 28x28.",
        ],
        {"data": "test split, first samples", "target": "predicted class", "mask": "ink"},
    )


class ZeroShotClassifier(nn.Module):
    """A CLIP as a classifier over fixed texts: ``[B, 3, H, W] -> logit_scale * cos(image, text)`` ``[B, T]``."""

    def __init__(self, clip: nn.Module, text_features: Tensor, logit_scale: float):
        super().__init__()
        self.clip = clip
        self.register_buffer("text_features", F.normalize(text_features.detach(), dim=-1))
        self.logit_scale = float(logit_scale)

    def forward(self, images: Tensor) -> Tensor:
        return self.logit_scale * F.normalize(self.clip.encode_image(images), dim=-1) @ self.text_features.T


def _shapes_clip(name: str, n: int) -> CardTask:
    from . import dataset, load
    from .shapes_clip import text_features

    bundle = load(name)
    model = ZeroShotClassifier(
        bundle.model,
        text_features(bundle.model, bundle.tokenizer, bundle.class_names),
        float(bundle.model.logit_scale.detach().exp()),
    ).eval()
    samples = _with_masks(dataset(name, "test"), n)
    x = torch.stack([bundle.preprocess(s.image) for s in samples])
    tower = "a small ResNet" if name.endswith("cnn") else "a hybrid ViT (8x8 tokens, 3 blocks)"
    return CardTask(
        name,
        model,
        x,
        torch.tensor([s.label for s in samples]),
        _masks(samples),
        {m: _cam(m, "auto") for m in CAM_CARD_METHODS},
        [
            f"The zoo's shapes CLIP with {tower} image tower, as a zero-shot classifier over its 24 class texts "
            f"(logit_scale x cosine similarity), on the first {n} test scenes (1-3 shapes at 64 px); explained: "
            "the text of the scene's named object, as in scenario 4; ground truth: that object's pixels. CAM "
            f"methods at the scenario's 'auto' layer ({bundle.meta.get('cam_layer_auto', 'auto')}); Score-CAM "
            "is left out (3-6 s per image here, an hour for its randomisation cascade).",
        ],
        {"data": "test split, first scenes", "target": "named object's text", "mask": "named object"},
    )


def _face_forgery(n: int) -> CardTask:
    from . import dataset, load

    bundle = load("face_forgery_detector")
    fakes = _with_masks([s for s in dataset("face_forgery_detector", "test") if s.label == 1], n)
    x = torch.stack([bundle.preprocess(s.image) for s in fakes])
    layer = bundle.meta.get("metrics", {}).get("explain", {}).get("cam_layer", "backbone.encoder.layers.3.layer_norm1")
    fake = bundle.class_names.index("fake")
    return CardTask(
        "face_forgery_detector",
        bundle.model,
        x,
        torch.full((n,), fake),
        _masks(fakes),
        {
            "gradcam": _cam("gradcam", [layer]),
            "gradcam++": _cam("gradcam++", [layer]),
            "gradient attention (relevance)": _gradient_attention,
            "gradient attention (layer mean)": _gradient_attention_mean,
        },
        [
            f"The zoo's CLIP-ViT face forgery detector (64 px, 8x8 patches, 4 layers) on the first {n} fake faces "
            "of the test split; explained: the fake class; ground truth: the manipulated region. Grad-CAM and "
            f"Grad-CAM++ at {layer} (scenario 3), gradient-weighted attention of all layers combined by "
            "relevance propagation or by their mean (scenario 1).",
        ],
        {"data": "test split, first fakes", "target": "fake class", "mask": "manipulated region", "cam_layer": layer},
    )


def card_task(name: str, samples: int | None = None) -> CardTask:
    """The :class:`CardTask` of zoo model ``name`` on its first ``samples`` held-out samples with a mask
    (default :data:`CARD_MODELS`)."""
    if name not in CARD_MODELS:
        raise VizkitError(f"no metric card for {name!r}: cards exist for {', '.join(CARD_MODELS)}")
    n = CARD_MODELS[name] if samples is None else samples
    if n < 1:
        raise VizkitError(f"samples must be >= 1, got {n}")
    if name == "mnist_vit":
        return _mnist_vit(n)
    if name == "face_forgery_detector":
        return _face_forgery(n)
    return _shapes_clip(name, n)


def build_card(
    name: str,
    out: str | Path | None = None,
    *,
    samples: int | None = None,
    settings: CardSettings = CardSettings(),
    methods: Sequence[str] | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> tuple[Path, Path, dict[str, Any]]:
    """Score every method of ``name``'s :class:`CardTask` (or only ``methods``) and the random maps,
    write ``<out>/<name>.md`` and ``<name>.json`` atomically (default ``data/zoo/cards``); return both
    paths and the record."""
    task = card_task(name, samples)
    chosen = list(task.methods) if methods is None else list(methods)
    unknown = [m for m in chosen if m not in task.methods]
    if unknown:
        raise VizkitError(f"unknown method(s) {unknown} for {name}: choose from {', '.join(task.methods)}")
    cards: list[MethodCard] = []
    for method in chosen:
        log(f"{name}: {method}")
        card = method_card(
            task.model,
            task.inputs,
            task.methods[method],
            task.targets,
            method=method,
            masks=task.masks,
            settings=settings,
        )
        cards.append(card)
    log(f"{name}: random maps")
    baseline = random_card(task.model, task.inputs, task.targets, masks=task.masks, settings=settings)
    steps = len(cards[0].randomisation_layers) if cards else 0
    n, k = len(task.inputs), min(settings.randomisation_samples, len(task.inputs))
    percentiles = ", ".join(f"{p:g}" for p in settings.percentiles)
    intro = [
        *task.intro,
        f"Samples: {n} for every score, the first {k} of them for the randomisation cascade ({steps} "
        f"parameterised layers re-initialised top-down). ROAD: percentiles {percentiles}, noise "
        f"{settings.noise:g}, seed {settings.seed}; "
        f"deletion / insertion: {settings.deletion_steps} steps to a zero (mean-colour) image. Seconds per image: "
        f"wall-clock at {torch.get_num_threads()} torch thread(s) on a shared machine (compare within the card).",
    ]
    meta = {**task.meta, "samples": int(task.inputs.shape[0]), "input_shape": list(task.inputs.shape[1:])}
    record = card_record(name, cards, baseline, settings=settings, meta=meta)
    folder = Path(out) if out is not None else cards_dir()
    md = write_text(folder / f"{name}.md", card_markdown(name, cards, baseline, intro=intro))
    js = write_json(folder / f"{name}.json", record)
    return md, js, record
