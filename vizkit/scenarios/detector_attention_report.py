"""Scenario 1's report: ``attention_report.md`` (:func:`write_attention_report`: the run's
parameters, the detector, how the maps were made, per-image predictions, the faithfulness table)
and the sentences read off the faithfulness table (:func:`faithfulness_observations`). The score
behind every map: the real-class and fake-class logits of the detector.

Example::

    from vizkit.scenarios.detector_attention_report import faithfulness_observations, write_attention_report
    notes = faithfulness_observations(table)        # table: faithfulness_table(...)
    write_attention_report(run_dir, params, detector, results, table, notes)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..layers import find_blocks
from ..models import Detector
from ..report import Report, metric_winners
from .detector_attention_eval import CHANCE_DIRECTIONS, pair_top_iou_chance, recommended_variant
from .detector_attention_images import ImageResult

__all__ = ["faithfulness_observations", "write_attention_report", "table_with_chance", "ROAD_MEANING"]

#: What the ROAD columns mean, in one sentence (the report and the notebook print it).
ROAD_MEANING = (
    "ROAD (Rong et al. 2022) replaces the map's most (MoRF) or least (LeRF) relevant pixels by noisy linear "
    "imputation at each percentile and averages the change of the fake probability: a faithful map makes it "
    "fall when its top pixels go (road_morf low) and stay when its bottom pixels go (road_lerf high; "
    "road_combined = (LeRF - MoRF) / 2, higher is better); the chance row is uniform random maps."
)


def table_with_chance(table: pd.DataFrame) -> pd.DataFrame:
    """The faithfulness table with a last row ``chance`` holding ``table.attrs["chance"]`` (what a map
    with no information scores on each metric; blank where there is none)."""
    chance = table.attrs.get("chance", {})
    row = {c: chance.get(c, np.nan) for c in table.columns}
    row.update(head_fusion="chance", layer_mode="(random map)", aggregation="", layers=np.nan, below_chance="")
    out = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    out.attrs = dict(table.attrs)
    return out


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
    both = table.groupby("layer_mode")["aggregation"].transform("nunique") == 2  # modes with both aggregations
    by_agg = table[both].groupby("aggregation")["pointing"].mean()
    if len(by_agg) == 2:
        notes.append(
            f"Averaged over fusions and the layer modes with more than one block, Chefer's relevance propagation "
            f"points correctly on "
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
    same = table.attrs.get("same_as", {})
    if same:
        notes.append(
            "Identical maps, one row each: "
            + "; ".join(f"{k} = {v}" for k, v in same.items())
            + " (the same blocks, or one block where the aggregation has nothing to combine)."
        )
    if "road_combined" in table:
        rc = table.attrs.get("chance", {}).get("road_combined", np.nan)
        n = table.attrs.get("road_samples", "?")
        notes.append(
            f"ROAD on {n} fakes: road_combined from {table['road_combined'].min():.3f} to "
            f"{table['road_combined'].max():.3f} against {rc:.3f} for random maps; "
            f"{int((table['road_combined'] <= rc).sum())} of {len(table)} variants at or below it."
            + (
                " Removing the maps' top pixels raises p(fake) (road_morf > 0) while removing random pixels "
                "lowers it: the imputed region itself looks manipulated to this detector, so ROAD cannot rank "
                "these maps, and where it disagrees with pointing and energy it is the weaker witness here."
                if (table["road_morf"] > 0).all() and table.attrs.get("chance", {}).get("road_morf", 0) < 0
                else ""
            )
        )
    wins = metric_winners(table, ["head_fusion", "layer_mode", "aggregation"], _WINNER_METRICS)
    if wins:
        notes.append(wins)
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
    notes.append(recommended_variant(table)[1])
    return notes


_WINNER_METRICS = {
    "pointing": "higher",
    "energy_in_mask": "higher",
    **{k: v for k, v in CHANCE_DIRECTIONS.items() if k.startswith("road")},
}  # the randomisation Spearman is a pass / fail check (near 0 is good), not a score to maximise


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
        sized = [r for r in results if r.real.size]
        chance = pair_top_iou_chance(sized[0].real.shape) if sized else None
        rows = pd.DataFrame(
            [
                {
                    "image": r.stem,
                    "predicted": r.class_names[r.predicted],
                    **{f"p({n})": p for n, p in zip(r.class_names, r.probs)},
                    "top-20 % IoU": r.numbers["top20_iou"],
                    **({"≤ chance": "yes" if r.numbers["top20_iou"] <= chance else ""} if chance is not None else {}),
                    "where they differ": r.sentence,
                }
                for r in results
            ]
        )
        rep.table(rows, index=False, floatfmt=".3f")
        if chance is not None:
            rep.paragraph(
                f"Top-20 % IoU of the real- and the fake-class map; two maps with random values overlap by "
                f"{chance:.3f} on average (chance): a pair at or below it marks regions no more shared than by luck."
            )
    if failures:
        rep.heading("Images that could not be read").bullets([f"`{n}`: {e}" for n, e in failures])
    if table is not None:
        rep.heading("Faithfulness on held-out faces")
        rep.paragraph(
            "Pointing game and energy: the fake-class map on fakes against the manipulation mask. Deletion "
            "AUC: the fake probability as the map's top pixels are removed (lower is better). Entropy: "
            "spread of the maps (nats). Sanity: Spearman correlation with the maps of a model whose last "
            "blocks are re-initialised (near 0 is good: 0 = fully changed, 1 = unchanged). "
            + (ROAD_MEANING + " " if "road_combined" in table else "")
            + "The last row is the chance level of each metric (pointing and energy: the share of the image "
            "the mask covers; deletion: a random order); `below_chance` names the metrics a row does not beat."
        )
        rep.table(table_with_chance(table), index=False, floatfmt=".3f")
        rep.heading("Observations").bullets(list(notes))
    if figures:
        rep.heading("Figures")
        for f in figures:
            rep.figure(f, Path(f).stem.replace("_", " "), relative_to=out)
    return rep.write(Path(out) / "attention_report.md")
