"""Metric cards: every map-quality score of some explanation methods on one model's samples, beside
the scores of random maps, as a table (Markdown) and a record (JSON-ready dict).

Pure over tensors and callables: the caller passes the model (``[B, C, H, W] -> [B, K]`` class
scores), the samples, their classes, optional ground-truth masks and one ``explain(model, inputs,
targets) -> [B, H, W]`` per method (:mod:`vizkit.zoo.cards` builds them for the zoo models).

Example::

    cards = [method_card(model, x, explain, classes, masks=masks, method=name) for name, explain in methods.items()]
    baseline = random_card(model, x, classes, masks=masks)
    text = card_markdown("mnist_vit", cards, baseline, intro=["..."])
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from .faithfulness import faithfulness_scores
from .maps import energy_pointing_game, pointing_game
from .perturbation import deletion_auc, insertion_auc
from .randomisation import map_similarity, parameter_randomisation
from .road import ROAD_PERCENTILES

__all__ = [
    "CARD_METRICS",
    "CARD_READING",
    "CardSettings",
    "MethodCard",
    "card_markdown",
    "card_record",
    "map_scores",
    "method_card",
    "normalise_maps",
    "random_card",
    "randomisation_scores",
]

Explain = Callable[[nn.Module, Tensor, Any], Tensor]


@dataclass(frozen=True)
class CardMetric:
    """A column of the card: its header, which direction is better and how to read it."""

    header: str
    better: str  # "higher" or "lower"
    reading: str


#: The card's columns, in order.
CARD_METRICS: dict[str, CardMetric] = {
    "pointing_game": CardMetric(
        "pointing",
        "higher",
        "the fraction of images whose map maximum lies inside the ground-truth mask; random maps score "
        "about the mask's share of the image.",
    ),
    "energy_in_mask": CardMetric(
        "energy in mask",
        "higher",
        "the share of the map's mass inside the mask (1 = all of it); random maps score about the mask's area share.",
    ),
    "deletion_auc": CardMetric(
        "deletion AUC",
        "lower",
        "the area under the class probability while the map's top pixels are set to 0 (the dataset mean "
        "after normalisation), most relevant first; low = the map finds what the model needs, but the "
        "deleted blob itself can change the prediction.",
    ),
    "insertion_auc": CardMetric(
        "insertion AUC",
        "higher",
        "the same curve while the map's top pixels are put back into a blank image; high = the top "
        "pixels alone restore the prediction.",
    ),
    "road_morf": CardMetric(
        "ROAD MoRF",
        "lower",
        "the mean change of the class score (logit) when the most relevant 10..90 % of the pixels are "
        "replaced by noisy linear interpolation of their neighbours (ROAD, Rong et al. 2022), which "
        "leaves no sharp-edged hole; more negative = the removed pixels mattered.",
    ),
    "road_lerf": CardMetric(
        "ROAD LeRF",
        "higher",
        "the same with the least relevant pixels removed first; near 0 (or above) = the map's "
        "low-ranked pixels really are unimportant.",
    ),
    "road_combined": CardMetric(
        "ROAD combined",
        "higher",
        "(LeRF - MoRF) / 2, one number for both orders: above the random maps' value = the map ranks "
        "pixels better than chance.",
    ),
    "confidence_drop": CardMetric(
        "conf. drop",
        "lower",
        "how far the class score (logit) falls when the image is multiplied by the map (0 if it rises), "
        "as pytorch-grad-cam's DropInConfidence; low = the map keeps what the model uses.",
    ),
    "confidence_increase": CardMetric(
        "conf. increase",
        "higher",
        "the fraction of images whose class score rises when multiplied by the map (IncreaseInConfidence).",
    ),
    "randomisation_final": CardMetric(
        "rand. sim. final",
        "lower",
        "the Spearman rank correlation (of absolute values) between the map of the trained model and "
        "the map after all its layers are re-initialised top-down (Adebayo et al. 2018); near 1 = the "
        "map does not depend on what the model learnt.",
    ),
    "randomisation_mean": CardMetric(
        "rand. sim. mean",
        "lower",
        "the same correlation averaged over all steps of the cascade (after the top layer, the top two, ...).",
    ),
    "seconds_per_image": CardMetric(
        "s / image", "lower", "wall-clock seconds the method takes per image (one batch, this machine)."
    ),
}


@dataclass(frozen=True)
class CardSettings:
    """How the scores of a card are computed (recorded in the card)."""

    percentiles: tuple[float, ...] = ROAD_PERCENTILES
    noise: float = 0.01
    seed: int = 0
    deletion_steps: int = 10
    randomisation_samples: int = 8
    similarity: str = "spearman"
    batch_size: int = 16


@dataclass
class MethodCard:
    """One row of a card: ``scores`` (the means shown), ``per_sample`` (``[B]`` lists), the randomisation
    cascade (``layers`` and ``similarity`` ``[steps][samples]``) and the seconds per image."""

    method: str
    scores: dict[str, float]
    per_sample: dict[str, list[float]]
    randomisation_layers: list[str] = field(default_factory=list)
    randomisation_similarity: list[list[float]] = field(default_factory=list)
    seconds_per_image: float | None = None


def normalise_maps(maps: Tensor) -> Tensor:
    """Per-image min-max scaling of ``[B, H, W]`` to [0, 1] (a constant map becomes 0), float32."""
    if maps.ndim != 3:
        raise InputError(f"maps must be [B, H, W], got {tuple(maps.shape)}")
    m = maps.detach().float()
    lo, hi = m.amin(dim=(1, 2), keepdim=True), m.amax(dim=(1, 2), keepdim=True)
    return torch.where(hi > lo, (m - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(m))


def _probability_auc(
    curve: Callable[..., Tensor], model: nn.Module, inputs: Tensor, maps: Tensor, targets: Tensor, steps: int
) -> Tensor:
    """``curve`` (deletion / insertion AUC) of the softmax probability of each image's class ``[B]``,
    one call per class (the score function sees images of one class at a time)."""
    out = torch.empty(inputs.shape[0])
    for c in targets.unique().tolist():
        rows = (targets == c).nonzero().flatten()

        def prob(x: Tensor, c: int = c) -> Tensor:
            return model(x).float().softmax(-1)[:, c]

        out[rows] = curve(prob, inputs[rows], maps[rows].to(inputs.device), steps=steps).float().cpu()
    return out


def map_scores(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor,
    targets: Tensor,
    *,
    masks: Tensor | None = None,
    settings: CardSettings = CardSettings(),
    normalise: bool = True,
) -> dict[str, Tensor]:
    """Every per-image score of ``maps`` ``[B, H, W]`` (min-max normalised per image first, unless
    ``normalise`` is False for maps already in [0, 1]) for ``inputs`` ``[B, C, H, W]`` and classes
    ``targets`` ``[B]``: ``{metric: [B]}`` (CPU float) with the keys of
    :data:`CARD_METRICS` except the randomisation and timing ones; pointing game and energy in mask
    only with ``masks`` ``[B, H, W]``. Deletion / insertion score the class probability (softmax of
    the model's output); ROAD and confidence change the class score itself (pytorch-grad-cam's
    definition), via :func:`vizkit.metrics.faithfulness_scores`."""
    targets = torch.as_tensor(targets).long().cpu()
    if (
        inputs.ndim != 4
        or tuple(maps.shape) != (inputs.shape[0], *inputs.shape[-2:])
        or targets.shape != maps.shape[:1]
    ):
        raise InputError(
            f"expected inputs [B, C, H, W], maps [B, H, W] and targets [B], got {tuple(inputs.shape)}, "
            f"{tuple(maps.shape)} and {tuple(targets.shape)}"
        )
    maps = (normalise_maps(maps) if normalise else maps.detach().float()).to(inputs.device)
    out: dict[str, Tensor] = {}
    if masks is not None:
        out["pointing_game"] = pointing_game(maps, masks.to(maps.device)).float().cpu()
        out["energy_in_mask"] = energy_pointing_game(maps, masks.to(maps.device)).float().cpu()
    with torch.no_grad():
        out["deletion_auc"] = _probability_auc(deletion_auc, model, inputs, maps, targets, settings.deletion_steps)
        out["insertion_auc"] = _probability_auc(insertion_auc, model, inputs, maps, targets, settings.deletion_steps)
    scores = faithfulness_scores(
        model,
        inputs,
        maps,
        targets.to(inputs.device),
        percentiles=settings.percentiles,
        noise=settings.noise,
        seed=settings.seed,
        batch_size=settings.batch_size,
    )
    out.update({k: v.float().cpu() for k, v in scores.items()})
    return out


def randomisation_scores(
    model: nn.Module, inputs: Tensor, explain: Explain, targets: Tensor, *, settings: CardSettings = CardSettings()
) -> tuple[list[str], Tensor]:
    """The cascading parameter randomisation of ``explain`` on the first ``settings.randomisation_samples``
    images (:func:`vizkit.metrics.parameter_randomisation`, every parameterised layer, top-down):
    ``(layers, similarity [steps, samples])``."""
    k = min(settings.randomisation_samples, inputs.shape[0])
    steps = parameter_randomisation(
        model,
        inputs[:k],
        explain,
        torch.as_tensor(targets)[:k].long().to(inputs.device),
        cascade=True,
        similarity=settings.similarity,
        seed=settings.seed,
    )
    return [name for name, _ in steps], torch.stack([s.float().cpu() for _, s in steps])


def _summary(per_sample: dict[str, Tensor]) -> dict[str, float]:
    return {k: float(v.float().nanmean()) for k, v in per_sample.items()}


def method_card(
    model: nn.Module,
    inputs: Tensor,
    explain: Explain,
    targets: Tensor,
    *,
    method: str,
    masks: Tensor | None = None,
    settings: CardSettings = CardSettings(),
    randomisation: bool = True,
) -> MethodCard:
    """The card row of one method: its maps ``explain(model, inputs, targets)`` (timed: seconds per
    image), :func:`map_scores` of them and, with ``randomisation``, :func:`randomisation_scores`
    (final step and mean over the steps, averaged over the samples; NaN for constant maps ignored)."""
    start = time.perf_counter()
    maps = explain(model, inputs, targets)
    seconds = (time.perf_counter() - start) / inputs.shape[0]
    if not isinstance(maps, Tensor) or maps.ndim != 3:
        raise InputError(f"explain for {method!r} must return maps [B, H, W], got {getattr(maps, 'shape', maps)}")
    per_sample = map_scores(model, inputs, maps, targets, masks=masks, settings=settings)
    card = MethodCard(method, _summary(per_sample), {k: v.tolist() for k, v in per_sample.items()})
    if randomisation:
        layers, sims = randomisation_scores(model, inputs, explain, targets, settings=settings)
        card.randomisation_layers, card.randomisation_similarity = layers, sims.tolist()
        card.scores["randomisation_final"] = float(sims[-1].nanmean())
        card.scores["randomisation_mean"] = float(sims.nanmean(dim=1).nanmean())
    card.seconds_per_image = seconds
    card.scores["seconds_per_image"] = seconds
    return card


def random_card(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    masks: Tensor | None = None,
    settings: CardSettings = CardSettings(),
) -> MethodCard:
    """The chance level of every score: :func:`map_scores` of uniform random maps ``[B, H, W]`` drawn
    from a ``torch.Generator`` seeded with ``settings.seed`` (the maps of
    :func:`vizkit.metrics.random_map_baseline`), and as randomisation "similarity" the rank
    correlation of those maps with a second independent draw (about 0)."""
    b, _, h, w = inputs.shape
    generator = torch.Generator().manual_seed(settings.seed)
    maps = torch.rand(b, h, w, generator=generator)
    per_sample = map_scores(model, inputs, maps, targets, masks=masks, settings=settings, normalise=False)
    card = MethodCard("random maps", _summary(per_sample), {k: v.tolist() for k, v in per_sample.items()})
    k = min(settings.randomisation_samples, b)
    other = torch.rand(b, h, w, generator=generator)
    similarity = map_similarity(maps[:k], other[:k], settings.similarity)
    card.scores["randomisation_final"] = card.scores["randomisation_mean"] = float(similarity.nanmean())
    return card


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.3f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"


def _best(cards: Sequence[MethodCard], key: str) -> list[str]:
    values = [(c.scores.get(key), c.method) for c in cards]
    values = [(v, m) for v, m in values if v is not None and not math.isnan(v)]
    if not values:
        return []
    sign = 1 if CARD_METRICS[key].better == "higher" else -1
    top = max(sign * v for v, _ in values)
    return [m for v, m in values if sign * v >= top - 1e-9]


#: The paragraph under "How to read this" in every card (:func:`card_markdown`).
CARD_READING = (
    "Each row scores one explanation method's maps of the explained class on the same held-out images; the "
    "last row scores uniform random maps, the chance level every other row should beat. Arrows give the "
    "better direction. Localisation (pointing, energy) needs ground-truth masks and rewards maps that agree "
    "with a human's idea of the evidence; the perturbation scores (deletion, insertion, ROAD, confidence) "
    "ask the model itself and reward maps that rank the pixels the model uses; the randomisation "
    "similarity checks that the map depends on the learnt weights at all. A method can win one family and "
    "lose another."
)


def card_markdown(title: str, cards: Sequence[MethodCard], baseline: MethodCard, *, intro: Sequence[str] = ()) -> str:
    """The card as Markdown: ``# title``, the ``intro`` paragraphs, the table (one row per method and
    the random maps, the columns of :data:`CARD_METRICS` that any row has, arrows for the better
    direction), the best method per metric (they disagree) and how to read each column."""
    rows = [*cards, baseline]
    keys = [k for k in CARD_METRICS if any(k in r.scores for r in rows)]
    arrow = {"higher": "↑", "lower": "↓"}
    lines = [f"# Metric card: {title}", ""]
    for paragraph in intro:
        lines += [paragraph, ""]
    lines.append(
        "| method | " + " | ".join(f"{CARD_METRICS[k].header} {arrow[CARD_METRICS[k].better]}" for k in keys) + " |"
    )
    lines.append("|---|" + "---:|" * len(keys))
    for r in rows:
        cells = [_fmt(r.scores.get(k)) for k in keys]
        lines.append(f"| {r.method} | " + " | ".join(cells) + " |")
    lines.append("")
    winners = []
    for k in keys:
        if k == "seconds_per_image":
            continue
        best = _best(cards, k)
        if best:
            winners.append(f"{CARD_METRICS[k].header}: {', '.join(best)}")
    if winners:
        lines += [
            "Best method per metric (the metrics do not agree; none of them is the truth): " + "; ".join(winners) + ".",
            "",
        ]
    lines += [
        "## How to read this",
        "",
        CARD_READING,
        "",
    ]
    lines += [f"- **{CARD_METRICS[k].header}**: {CARD_METRICS[k].reading}" for k in keys]
    return "\n".join(lines) + "\n"


def card_record(
    name: str, cards: Sequence[MethodCard], baseline: MethodCard, *, settings: CardSettings, meta: dict[str, Any]
) -> dict[str, Any]:
    """The card as a JSON-ready dict: settings, ``meta`` (model, data, samples ...), every row's scores,
    per-sample values and randomisation cascade, and the random-map row."""

    def row(c: MethodCard) -> dict[str, Any]:
        return {
            "scores": c.scores,
            "per_sample": c.per_sample,
            "randomisation": {"layers": c.randomisation_layers, "similarity": c.randomisation_similarity},
            "seconds_per_image": c.seconds_per_image,
        }

    return {
        "model": name,
        "meta": meta,
        "settings": {
            "percentiles": list(settings.percentiles),
            "noise": settings.noise,
            "seed": settings.seed,
            "deletion_steps": settings.deletion_steps,
            "randomisation_samples": settings.randomisation_samples,
            "similarity": settings.similarity,
            "batch_size": settings.batch_size,
        },
        "metrics": {k: {"header": m.header, "better": m.better, "reading": m.reading} for k, m in CARD_METRICS.items()},
        "methods": {c.method: row(c) for c in cards},
        "random_maps": row(baseline),
    }
