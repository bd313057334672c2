"""Scenario 4's faithfulness table: for each CAM method, on held-out scenes whose named object has a
mask, how well the maps toward the named object's text localise it and how faithful they are to
the model, beside the chance level of every score (:func:`faithfulness_table`).

The explained score is the image-text similarity ``logit_scale * cos`` of the named object's text
(:class:`TextScores` turns the CLIP into a classifier over the texts, so that ROAD and the
randomisation test of :mod:`vizkit.metrics` can score it). Scores per method:

- localisation on every scene: pointing game, energy in mask, IoU of the map's top 20 % with the mask;
- ROAD (Rong et al., 2022) MoRF / LeRF / combined and the confidence drop / increase
  (:func:`vizkit.metrics.faithfulness_scores`) on the first ``road_scenes`` scenes;
- the cascading parameter randomisation test (Adebayo et al., 2018;
  :func:`vizkit.metrics.parameter_randomisation`): the Spearman rank correlation of the maps before
  and after every parameterised layer of the image tower is re-initialised, top-down (0 = the map
  changed completely, as it should; near 1 = the map ignores what the model learnt), on the first
  ``randomisation_scenes`` scenes.

The last row is chance: the exact pointing / energy / top-region IoU of an uninformative map
(:mod:`vizkit.metrics.chance`) and ROAD / confidence of uniform random maps drawn as
:func:`vizkit.metrics.random_map_baseline` draws them. The ``below_chance`` column names the scores
on which a method does no better than that row.

Example::

    from vizkit import zoo
    from vizkit.scenarios.clip_text_faithfulness import faithfulness_table
    scenes = zoo.dataset("shapes_clip", "test")[:24]
    table = faithfulness_table(adapter, scenes, zoo.load("shapes_clip").class_names, ["gradcam", "eigencam"])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..errors import InputError
from ..evaluate import masks_like
from ..explain import cam
from ..metrics import (
    FAITHFULNESS_SCORES,
    at_or_below_chance,
    energy_pointing_game,
    faithfulness_scores,
    parameter_randomisation,
    pointing_chance,
    pointing_game,
    top_region_iou,
    top_region_iou_chance,
)
from ..models.clip import ClipAdapter
from ..state import model_device
from ..targets import ImageTextSimilarity

__all__ = [
    "CHANCE_ROW",
    "TABLE_METRICS",
    "SceneBatch",
    "TextScores",
    "scene_batch",
    "method_maps",
    "faithfulness_table",
    "table_reading",
    "layer_label",
]

#: the label of the chance row
CHANCE_ROW = "chance"
#: the score columns of :func:`faithfulness_table` and the direction in which each is better
TABLE_METRICS: dict[str, str] = {
    "pointing_game": "higher",
    "energy_in_mask": "higher",
    "top20_iou": "higher",
    **FAITHFULNESS_SCORES,
    "randomisation": "lower",
}
#: the scores whose chance row is a chance level a method should beat (randomisation's 0 is the ideal, not chance)
CHANCE_METRICS = tuple(k for k in TABLE_METRICS if k != "randomisation")


class TextScores(nn.Module):
    """A CLIP as a classifier over fixed texts: ``[B, 3, H, W] -> logit_scale * cos(image, text)`` ``[B, T]``.

    ``adapter.model`` is its submodule ``clip`` (so randomising the classifier's layers randomises the
    CLIP's own modules); ``text_features`` ``[T, D]`` are fixed (the text tower is not called)."""

    def __init__(self, adapter: ClipAdapter, text_features: Tensor):
        super().__init__()
        self.clip = adapter.model
        self._encode, self.logit_scale = adapter.encode_image, float(adapter.logit_scale)
        self.register_buffer("text_features", F.normalize(text_features.detach().float(), dim=-1))

    def forward(self, images: Tensor) -> Tensor:
        return self.logit_scale * F.normalize(self._encode(images).float(), dim=-1) @ self.text_features.T


@dataclass
class SceneBatch:
    """Scenes as the model sees them: ``inputs`` ``[N, 3, H, W]``, ``targets`` ``[N]`` (the named object's
    text index), ``masks`` ``[N, H, W]`` bool at the input size."""

    inputs: Tensor
    targets: Tensor
    masks: Tensor


def scene_batch(adapter: ClipAdapter, samples: Sequence[Any], texts: Sequence[str]) -> SceneBatch:
    """Preprocess ``samples`` (:class:`vizkit.zoo.Sample` with ``meta["text"]`` among ``texts`` and a
    non-empty ``mask``) into a :class:`SceneBatch` on the model's device."""
    if not samples:
        raise InputError("faithfulness needs at least one scene")
    missing = sorted({s.meta["text"] for s in samples} - set(texts))
    if missing:
        raise InputError(f"the scenes name objects that are not among the texts: {', '.join(map(repr, missing))}")
    if any(s.mask is None or not np.asarray(s.mask).any() for s in samples):
        raise InputError("every scene needs a non-empty mask of its named object")
    index = {t: i for i, t in reversed(list(enumerate(texts)))}
    device = model_device(adapter.model)
    x = torch.stack([adapter.preprocess(Image.fromarray(np.asarray(s.image))) for s in samples]).to(device)
    targets = torch.tensor([index[s.meta["text"]] for s in samples], device=device)
    return SceneBatch(x, targets, masks_like([s.mask for s in samples], tuple(x.shape[-2:])).to(device))


def method_maps(
    adapter: ClipAdapter,
    inputs: Tensor,
    targets: Tensor,
    text_features: Tensor,
    method: str,
    layers: Any = "auto",
    batch_size: int = 50,
) -> tuple[Tensor, list[str]]:
    """The ``method``'s maps of ``inputs`` ``[N, 3, H, W]`` toward texts ``targets`` ``[N]`` (rows of
    ``text_features`` ``[T, D]``), in chunks of ``batch_size``: ``([N, H, W] in [0, 1], layers)``."""
    maps, used = [], []
    for i in range(0, len(inputs), batch_size):
        target = ImageTextSimilarity(text_features, targets[i : i + batch_size].cpu(), adapter.logit_scale)
        exp = cam(
            adapter.model,
            inputs[i : i + batch_size],
            target,
            layers=layers,
            method=method,
            forward=adapter.encode_image,
        )
        maps.append(exp.heatmap.detach())
        used = exp.layers
    return torch.cat(maps), list(used)


def _explainer(
    adapter: ClipAdapter, targets: Tensor, text: Tensor, method: str, layers: Any, batch_size: int
) -> Callable[[nn.Module, Tensor], Tensor]:
    """``explain(model, inputs)`` for :func:`vizkit.metrics.parameter_randomisation`: the maps toward
    ``targets`` through ``adapter`` (whose modules the test randomises in place)."""

    def explain(model: nn.Module, inputs: Tensor) -> Tensor:
        return method_maps(adapter, inputs, targets, text, method, layers, batch_size)[0]

    return explain


def _chance_row(model: nn.Module, batch: SceneBatch, road_scenes: int, seed: int) -> dict[str, Any]:
    x, t = batch.inputs[:road_scenes], batch.targets[:road_scenes]
    generator = torch.Generator(device=x.device).manual_seed(seed)  # the maps random_map_baseline draws
    random_maps = torch.rand(x.shape[0], *x.shape[-2:], generator=generator, device=x.device)
    road = faithfulness_scores(model, x, random_maps, t, seed=seed)
    return {
        "method": CHANCE_ROW,
        "module": "",
        "scenes": len(batch.inputs),
        "pointing_game": float(pointing_chance(batch.masks.cpu()).mean()),
        "energy_in_mask": float(pointing_chance(batch.masks.cpu()).mean()),
        "top20_iou": float(top_region_iou_chance(batch.masks.cpu(), 0.2).mean()),
        **{k: float(v.float().mean()) for k, v in road.items()},
        "randomisation": 0.0,
    }


def faithfulness_table(
    adapter: ClipAdapter,
    samples: Sequence[Any],
    texts: Sequence[str],
    methods: Sequence[str],
    layers: Any = "auto",
    *,
    road_scenes: int = 24,
    randomisation_scenes: int = 8,
    randomisation_skip: Sequence[str] = ("scorecam",),
    seed: int = 0,
    batch_size: int = 50,
) -> pd.DataFrame:
    """One row per method and a last :data:`CHANCE_ROW` row: ``method``, ``module``, ``scenes``, the scores
    of :data:`TABLE_METRICS` (see the module docstring) and ``below_chance`` (the scores on which the
    method is at or below the chance row, comma-joined; randomisation has no chance level).

    Localisation over all ``samples``; ROAD and confidence over the first ``road_scenes``; the
    randomisation cascade over the first ``randomisation_scenes`` (NaN for the methods in
    ``randomisation_skip``: Score-CAM needs hundreds of forward passes per map, per step). The
    model is restored after the randomisation test (parameters and buffers)."""
    if road_scenes < 1 or randomisation_scenes < 0:
        raise InputError(
            f"road_scenes must be >= 1 and randomisation_scenes >= 0, got {road_scenes}, {randomisation_scenes}"
        )
    batch = scene_batch(adapter, samples, texts)
    text = adapter.text_features(list(texts))
    model = TextScores(adapter, text).eval()
    road_n, rand_n = min(road_scenes, len(samples)), min(randomisation_scenes, len(samples))
    rows = []
    for method in methods:
        maps, used = method_maps(adapter, batch.inputs, batch.targets, text, method, layers, batch_size)
        row: dict[str, Any] = {"method": method, "module": ", ".join(used), "scenes": len(samples)}
        row["pointing_game"] = float(pointing_game(maps, batch.masks).float().mean())
        row["energy_in_mask"] = float(energy_pointing_game(maps, batch.masks).float().mean())
        row["top20_iou"] = float(top_region_iou(maps, batch.masks.float(), 0.2).float().mean())
        scores = faithfulness_scores(model, batch.inputs[:road_n], maps[:road_n], batch.targets[:road_n], seed=seed)
        row.update({k: float(v.float().mean()) for k, v in scores.items()})
        row["randomisation"] = float("nan")
        if rand_n and method not in randomisation_skip:
            x, t = batch.inputs[:rand_n], batch.targets[:rand_n]
            steps = parameter_randomisation(
                model, x, _explainer(adapter, t, text, method, layers, batch_size), t, seed=seed
            )
            row["randomisation"] = float(steps[-1][1].nanmean())
        rows.append(row)
    chance = _chance_row(model, batch, road_n, seed)
    for row in rows:
        row["below_chance"] = ", ".join(
            k for k in CHANCE_METRICS if at_or_below_chance(row[k], chance[k], TABLE_METRICS[k] == "higher")
        )
    chance["below_chance"] = ""
    return pd.DataFrame([*rows, chance])


def layer_label(module: str, with_module: bool = False) -> str:
    """A transformer block's 0-based label: ``"visual.trunk.blocks.2"`` -> ``"layer 2"`` (with
    ``with_module``: ``"layer 2 (visual.trunk.blocks.2)"``); any other module ``m`` -> ``"layer m"``."""
    head, _, last = module.rpartition(".")
    if not (last.isdigit() and head.endswith("blocks")):
        return f"layer {module}"
    return f"layer {last} ({module})" if with_module else f"layer {last}"


#: what each column of :func:`faithfulness_table` means, for the report and the notebook
COLUMN_READING = (
    "pointing_game: the share of scenes whose map peaks inside the named object; energy_in_mask: the share of the "
    "map's mass inside it; top20_iou: the IoU of the map's top 20 % with it; road_morf / road_lerf: the mean change "
    "of the text's similarity when the most / least relevant 10-90 % of the pixels are replaced by noisy linear "
    "interpolation of their neighbours (ROAD; MoRF lower is better, LeRF higher), road_combined = (LeRF - MoRF) / 2 "
    "(higher is better); confidence_drop: how far the similarity falls when the image is multiplied by its map "
    "(lower is better); confidence_increase: the share of images whose similarity rises (higher is better); "
    "randomisation: the Spearman correlation of the map before and after every layer of the image tower is "
    "re-initialised, top-down (0 = the map changed completely, as a faithful map should; near 1 = it ignores what "
    "the model learnt). The chance row is what a map with no information scores: the named object's share of the "
    "image (pointing and energy), the expected top-20 % IoU of a random map, and ROAD and confidence of uniform "
    "random maps; below_chance names the scores on which a method does no better."
)


def table_reading(table: pd.DataFrame) -> list[str]:
    """Sentences that say what :func:`faithfulness_table`'s numbers mean: the columns
    (:data:`COLUMN_READING`), which method wins by which score and whether the scores agree
    (:func:`vizkit.report.metric_winners`), and which methods are at or below chance (with the reason
    for EigenCAM, which never sees the text)."""
    from ..report import metric_winners

    out = [COLUMN_READING, metric_winners(table, "method", TABLE_METRICS, exclude=(CHANCE_ROW,))]
    chance = table[table["method"] == CHANCE_ROW].iloc[0]
    methods = table[table["method"] != CHANCE_ROW]
    flagged = methods[methods["below_chance"] != ""]
    if len(flagged):
        out.append(
            "At or below chance: "
            + "; ".join(f"**{r['method']}** ({r['below_chance']})" for _, r in flagged.iterrows())
            + "."
        )
    for _, r in flagged[flagged["method"] == "eigencam"].iterrows():
        out.append(
            f"EigenCAM's map peaks inside the named object in {r['pointing_game']:.0%} of the scenes, against "
            f"{chance['pointing_game']:.0%} for a random pixel: it is the first principal component of the layer's "
            "activations, computed without the text, so every text gets the same map (it is not "
            "class-discriminative) and it shows what varies most across the image, not the named object."
        )
    skipped = methods[methods["randomisation"].isna()]["method"].tolist()
    if skipped:
        out.append(
            f"Randomisation not run for {', '.join(skipped)} (hundreds of forward passes per map, for each of the "
            "cascade's steps)."
        )
    return out
