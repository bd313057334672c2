"""Scenario 1's faithfulness table: every head fusion x layer mode x aggregation of the detector's
gradient-weighted attention, scored on held-out faces whose manipulated region is known. The
score explained: the fake-class logit (the real-class logit for the real faces' entropy). Per
combination: the pointing game and the energy inside the mask, the deletion AUC of the fake
probability (:func:`vizkit.evaluate.config_scores`), ROAD (:func:`vizkit.metrics.faithfulness_scores`,
Rong et al. 2022), the entropy of the maps and a weight re-initialisation sanity check
(:func:`vizkit.metrics.sanity_by_config`). Variants whose maps are identical (e.g. ``all_layers`` and
``last_4_layers`` on a 4-block model) are computed once and listed in ``table.attrs["same_as"]``; the
chance level of every metric is in ``table.attrs["chance"]`` (:func:`chance_levels`), the rows at or
below it in the ``below_chance`` column, and :func:`recommended_variant` picks the default by a
stated rule.

Example::

    from vizkit.scenarios.detector_attention_eval import faithfulness_table
    table = faithfulness_table(detector, fakes, reals, layer_modes=["last_layer", "all_layers"])
    table[["head_fusion", "layer_mode", "aggregation", "pointing", "deletion_auc"]]
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..attention_math import AGGREGATIONS, HEAD_FUSIONS
from ..errors import InputError
from ..evaluate import config_maps, config_scores
from ..metrics import (
    at_or_below_chance,
    deletion_references,
    faithfulness_scores,
    pointing_chance,
    random_map_baseline,
    sanity_by_config,
    top_region_iou_chance,
)
from ..models import Detector
from ..models.vit_gradcam import LAYER_MODES, CLIPViTGradCAM, DetectorAttention
from ..state import model_device
from ..stats import map_entropy

__all__ = [
    "faithfulness_table",
    "same_maps",
    "distinct_layer_modes",
    "chance_levels",
    "below_chance",
    "recommended_variant",
    "pair_top_iou_chance",
    "held_out_masks",
    "SANITY_LIMIT",
    "CHANCE_DIRECTIONS",
]

#: A variant passes the randomisation check when its maps keep a mean Spearman correlation below
#: this with the maps of the partly re-initialised model (1 = unchanged, 0 = fully changed).
SANITY_LIMIT = 0.5

#: The metrics a table row is compared with its chance level on, and the direction that is better.
CHANCE_DIRECTIONS = {
    "pointing": "higher",
    "energy_in_mask": "higher",
    "deletion_auc": "lower",
    "road_morf": "lower",
    "road_lerf": "higher",
    "road_combined": "higher",
}

#: The fewer ROAD percentiles the notebook uses (ROAD solves one sparse system per image, map and percentile).
ROAD_PERCENTILES = (10.0, 30.0, 50.0, 70.0, 90.0)


def _combo_maps(result: DetectorAttention, class_idx: int, combos: Sequence[tuple]) -> dict[tuple, torch.Tensor]:
    """Each ``(head fusion, layer mode, aggregation)``'s ``[B, H, W]`` map of class ``class_idx``."""
    return {(f, m, a): result.heatmap(class_idx, f, m, a) for f, m, a in combos}


def same_maps(maps: dict[tuple, torch.Tensor]) -> dict[tuple, tuple]:
    """``{variant: earlier variant}`` for every variant whose ``[B, H, W]`` maps equal (exactly) those
    of a variant before it in ``maps``' order; the first of each group is not a key."""
    kept: list[tuple] = []
    same: dict[tuple, tuple] = {}
    for key, m in maps.items():
        match = next((k for k in kept if maps[k].shape == m.shape and torch.equal(maps[k], m)), None)
        if match is None:
            kept.append(key)
        else:
            same[key] = match
    return same


def distinct_layer_modes(result: DetectorAttention, modes: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """``(modes with their own blocks, {mode: earlier mode with the same blocks})``: on a model with
    at most 4 blocks ``all_layers`` selects the blocks of ``last_4_layers`` (computed from
    :meth:`DetectorAttention.layers_for`, not assumed)."""
    kept: list[str] = []
    same: dict[str, str] = {}
    for m in modes:
        match = next((k for k in kept if result.layers_for(k) == result.layers_for(m)), None)
        if match is None:
            kept.append(m)
        else:
            same[m] = match
    return kept, same


def held_out_masks(samples: Sequence[Any]) -> torch.Tensor:
    """The manipulation masks of samples with a ``mask`` ``[H, W]``, stacked: float ``[B, H, W]`` of 0 / 1."""
    return torch.stack([torch.as_tensor(np.asarray(s.mask, dtype=np.float32)) for s in samples])


def chance_levels(
    masks: torch.Tensor, deletion_random_order: float | None = None, road_random: dict[str, float] | None = None
) -> dict[str, float]:
    """The chance level of each metric of the table: pointing game and energy in the mask of a map
    with no information (:func:`vizkit.metrics.pointing_chance` of ``masks`` ``[B, H, W]``, mean over
    the fakes: the mask's share of the image), the deletion AUC of a random deletion order, ROAD of
    uniform random maps (:func:`vizkit.metrics.random_map_baseline`) and 0 for the randomisation
    Spearman (0 = the map changed completely with the weights; 1 = unchanged)."""
    area = float(pointing_chance(masks).mean())
    out = {"pointing": area, "energy_in_mask": area, "sanity_spearman": 0.0}
    if deletion_random_order is not None:
        out["deletion_auc"] = float(deletion_random_order)
    out.update({k: float(v) for k, v in (road_random or {}).items()})
    return out


def pair_top_iou_chance(size: tuple[int, int], fraction: float = 0.2) -> float:
    """Expected top-``fraction`` IoU (:func:`vizkit.metrics.top_region_iou`) of two maps of ``size``
    ``(H, W)`` with independent random values: :func:`vizkit.metrics.top_region_iou_chance` of a mask
    that is one random map's top region (the real-vs-fake "top-20 % IoU" a map pair needs to beat)."""
    h, w = size
    ranks = torch.arange(h * w, dtype=torch.float64).reshape(1, h, w)
    top = ranks >= torch.quantile(ranks.flatten(), 1.0 - fraction)
    return float(top_region_iou_chance(top, fraction)[0])


def below_chance(row: pd.Series, chance: dict[str, float]) -> str:
    """The metrics of one table row at or below their chance level (:data:`CHANCE_DIRECTIONS`), as
    ``"≤ chance: pointing, road_combined"``, or "" when every one is above chance."""
    low = [
        k
        for k, d in CHANCE_DIRECTIONS.items()
        if k in chance and k in row and pd.notna(row[k]) and at_or_below_chance(row[k], chance[k], d == "higher")
    ]
    return f"≤ chance: {', '.join(low)}" if low else ""


def recommended_variant(table: pd.DataFrame, sanity_limit: float = SANITY_LIMIT) -> tuple[pd.Series, str]:
    """The default variant read off a faithfulness table, and the rule in words with its numbers.

    Rule: among the rows that pass the randomisation check (``sanity_spearman < sanity_limit``) and
    are above chance on pointing and energy (no ``below_chance`` flag naming them), the highest
    energy in the mask, ties broken by pointing; when no row qualifies, the highest energy overall
    (the sentence says so)."""
    ok = table["sanity_spearman"] < sanity_limit
    if "below_chance" in table:
        ok &= ~table["below_chance"].str.contains("pointing|energy_in_mask", regex=True)
    pool = table[ok] if ok.any() else table
    best = pool.sort_values(["energy_in_mask", "pointing"], ascending=False, kind="stable").iloc[0]
    name = f"heads {best['head_fusion']}, {best['layer_mode']}, {best['aggregation']}"
    top = table.loc[table["energy_in_mask"].idxmax()]
    if ok.any():
        why = (
            f"Default **{name}**: of the {int(ok.sum())} of {len(table)} variants that pass the randomisation check "
            f"(Spearman < {sanity_limit} after re-initialising the last blocks) and score above chance, it puts "
            f"the most energy inside the manipulation mask ({best['energy_in_mask']:.3f}; pointing "
            f"{best['pointing']:.2f}; Spearman {best['sanity_spearman']:.2f})."
        )
        failed = table[~(table["sanity_spearman"] < sanity_limit)]
        if len(failed):
            worst = failed.loc[failed["sanity_spearman"].idxmax()]
            why += (
                f" Variants such as heads {worst['head_fusion']}, {worst['layer_mode']}, {worst['aggregation']} "
                f"keep Spearman {worst['sanity_spearman']:.2f} with the randomised model: they partly show "
                "the input, not what the detector learnt."
            )
    else:
        why = (
            f"No variant passes the randomisation check (Spearman < {sanity_limit}); **{name}** has the most "
            f"energy inside the mask ({top['energy_in_mask']:.3f}) but read every map with care."
        )
    return best, why


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
    road_samples: int = 16,
    road_percentiles: Sequence[float] = ROAD_PERCENTILES,
) -> pd.DataFrame:
    """Faithfulness of each head fusion x layer mode x aggregation on held-out faces.

    ``fakes`` carry ``image`` and ``mask`` (the manipulated region); ``reals`` carry ``image``.
    Per combination: the pointing game and energy inside the mask of the fake-class map on
    the fakes, the deletion AUC of the fake probability (lower = the map finds what the
    detector uses), the mean entropy of the real-class maps on real images and of the
    fake-class maps on fakes (nats), and the mean Spearman correlation of the fake-class maps
    after re-initialising the last ``sanity_blocks`` blocks (Adebayo et al. 2018; near 0 = the
    map depends on the weights, as it should). ``table.attrs`` hold the deletion AUC of two
    references: pixels deleted in the order of the masks, and at random.

    ROAD (``road_morf`` lower, ``road_lerf`` and ``road_combined`` higher is better): the change of
    the fake probability when the map's most / least relevant pixels are replaced by noisy linear
    imputation, averaged over ``road_percentiles``, on the first ``road_samples`` fakes (0 skips it).
    Only variants with distinct maps get a row: ``attrs["same_as"]`` maps each dropped variant
    ``"fusion / mode / aggregation"`` to the row it equals. ``attrs["chance"]``: :func:`chance_levels`;
    the ``below_chance`` column names the metrics at or below them.
    """
    if not fakes or not reals:
        raise InputError("the faithfulness table needs fake images with masks and real images")
    device = model_device(detector.model)
    real_k, fake_k = detector.real_index, detector.fake_index
    gradcam = CLIPViTGradCAM(detector.model, "all", class_names=detector.class_names)
    combos = [(f, m, a) for a in aggregations for m in layer_modes for f in head_fusions]
    xf = torch.stack([detector.preprocess(s.image) for s in fakes]).to(device)
    xr = torch.stack([detector.preprocess(s.image) for s in reals]).to(device)
    fake_maps = config_maps(lambda x: _combo_maps(gradcam.explain(x), fake_k, combos), xf, batch_size)
    real_maps = config_maps(lambda x: _combo_maps(gradcam.explain(x), real_k, combos), xr, batch_size)

    def fake_prob(images: torch.Tensor) -> torch.Tensor:
        return detector.model(images).float().softmax(-1)[:, fake_k]

    same = same_maps(fake_maps)
    combos = [c for c in combos if c not in same]
    fake_maps = {c: fake_maps[c] for c in combos}
    scores = config_scores(fakes, xf, fake_maps, fake_prob, deletion_steps=deletion_steps, batch_size=batch_size)
    n = len(gradcam.layer_names)
    n_layers = {m: n if LAYER_MODES[m] == "all" else min(n, 1 if LAYER_MODES[m] == "last" else 4) for m in layer_modes}
    table = pd.DataFrame(
        [
            {
                "head_fusion": f,
                "layer_mode": m,
                "aggregation": a,
                "layers": n_layers[m],
                "pointing": scores[(f, m, a)]["pointing"],
                "energy_in_mask": scores[(f, m, a)]["energy_in_mask"],
                "deletion_auc": scores[(f, m, a)]["deletion_auc"],
                "entropy_real_maps_real": float(map_entropy(real_maps[(f, m, a)]).nanmean()),
                "entropy_fake_maps_fake": scores[(f, m, a)]["entropy"],
            }
            for f, m, a in combos
        ]
    )
    xs = xf[:sanity_samples]

    def sanity_maps(model: nn.Module) -> dict[tuple, torch.Tensor]:
        return _combo_maps(CLIPViTGradCAM(model, "all", class_names=detector.class_names).explain(xs), fake_k, combos)

    sanity = sanity_by_config(sanity_maps, detector.model, gradcam.layer_names[::-1][:sanity_blocks], seed=0)
    table["sanity_spearman"] = [sanity[c] for c in combos]
    road_random: dict[str, float] = {}
    if road_samples > 0:
        xroad = xf[:road_samples]

        def prob_model(images: torch.Tensor) -> torch.Tensor:
            return detector.model(images).float().softmax(-1)

        road = {"percentiles": tuple(road_percentiles)}
        for key in ("road_morf", "road_lerf", "road_combined"):
            table[key] = np.nan
        t_road = time.perf_counter()
        for i, c in enumerate(combos):
            got = faithfulness_scores(prob_model, xroad, fake_maps[c][:road_samples].to(device), fake_k, **road)
            for key in ("road_morf", "road_lerf", "road_combined"):
                table.loc[i, key] = float(got[key].mean())
        keys = ("road_morf", "road_lerf", "road_combined")

        def road_columns(model: Any, x: torch.Tensor, maps: torch.Tensor, target: Any, **kw: Any) -> torch.Tensor:
            got = faithfulness_scores(model, x, maps, target, **kw)
            return torch.stack([got[k] for k in keys], dim=1)  # [B, 3]

        rnd = random_map_baseline(road_columns, prob_model, xroad, fake_k, seed=0, **road)
        road_random = dict(zip(keys, rnd.mean(0).tolist()))
        table.attrs["road_seconds"] = time.perf_counter() - t_road
    masks = held_out_masks(fakes).to(device)
    mask_order, random_order = deletion_references(fake_prob, xf, masks, steps=deletion_steps, seed=0)
    chance = chance_levels(masks, random_order, road_random)
    table["below_chance"] = [below_chance(row, chance) for _, row in table.iterrows()]
    table.attrs["deletion_auc_mask_order"] = mask_order
    table.attrs["deletion_auc_random_order"] = random_order
    table.attrs["chance"] = chance
    table.attrs["same_as"] = {" / ".join(k): " / ".join(v) for k, v in same.items()}
    table.attrs["road_samples"] = min(road_samples, len(fakes))
    return table
