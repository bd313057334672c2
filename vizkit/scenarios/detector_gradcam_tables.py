"""Scenario 3's tables as a reader sees them (report.md and the notebook): the detection metrics
with their definitions and chance levels, the localisation / faithfulness table per layer x method
with a chance row and a flag on every score at or below chance, the layer the run's own numbers
choose for its figures, and the layer key ("layer k", 0-based, -> module). The score: the
detector's fake probability (AUC, accuracy, EER, AP) and how its maps point at the manipulation.

Example::

    from vizkit.scenarios.detector_gradcam_tables import metrics_with_chance, score_table, shown_layer
    metrics_with_chance(summary.metrics)          # metric | value | chance | vs chance
    shown_layer(summary.localization, "gradcam")  # ("encoder.layers.3.layer_norm1", 0.93)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..figures.layer_comparison import layer_label
from ..metrics import FAITHFULNESS_SCORES, at_or_below_chance
from ..models.detector_layers import LayerInfo
from ..report import metric_winners

__all__ = [
    "METRIC_DEFINITIONS",
    "SCORE_DIRECTIONS",
    "CHANCE_MARGIN",
    "metrics_with_chance",
    "score_table",
    "shown_layer",
    "layer_scores",
    "layer_key",
    "faithfulness_sentence",
    "errors_at_threshold",
    "layer_label",
]

#: what each detection metric means, for the report and the notebook
METRIC_DEFINITIONS = [
    "**p(fake)**: the detector's softmax probability of the fake class; it predicts fake when p(fake) > 0.5 "
    "(the **threshold**: the larger of its two logits).",
    "**AUC** (area under the ROC curve): the probability that a random fake gets a higher p(fake) than a random "
    "real image; it does not depend on the threshold. 1 is perfect, 0.5 is chance (a coin).",
    "**accuracy**: the share of images on the right side of the threshold; chance is the share of the larger class.",
    "**EER** (equal error rate): the error rate at the threshold where the share of reals called fake equals the "
    "share of fakes called real; lower is better, 0.5 is chance.",
    "**AP** (average precision): the area under the precision-recall curve when the images are ranked by p(fake); "
    "chance is the share of fakes in the test set.",
    "**video AUC**: the AUC of the per-video mean p(fake), when frames are grouped by video.",
]

#: the direction in which each score of the localisation / faithfulness table is better
SCORE_DIRECTIONS = {
    "pointing_game": "higher",
    "pointing_game_tol1": "higher",
    "energy_in_mask": "higher",
    **FAITHFULNESS_SCORES,
    "randomisation_spearman": "lower",
}

#: a score within this of its chance level counts as "at chance"
CHANCE_MARGIN = 0.01


def metrics_with_chance(m: Mapping[str, Any]) -> pd.DataFrame:
    """The detection metrics of a run (``metrics.json``) beside their chance levels: columns
    ``metric``, ``value``, ``chance`` (AUC and video AUC 0.5, EER 0.5, accuracy the larger class's
    share, AP the share of fakes) and ``vs chance`` ("≤ chance" when no better than chance within
    :data:`CHANCE_MARGIN`, else "")."""
    n = max(int(m.get("samples") or 0), 1)
    fakes = int(m.get("fake") or 0)
    chance = {
        "AUC": ("auc", 0.5, True),
        "accuracy": ("accuracy", max(fakes, n - fakes) / n, True),
        "EER": ("eer", 0.5, False),
        "AP": ("ap", fakes / n, True),
        "video AUC": ("video_auc", 0.5, True),
    }
    rows = []
    for name, (key, level, higher) in chance.items():
        value = m.get(key)
        flag = value is not None and at_or_below_chance(float(value), level, higher, CHANCE_MARGIN)
        rows.append(
            {
                "metric": name,
                "value": "n/a" if value is None else round(float(value), 4),
                "chance": round(level, 4),
                "vs chance": "≤ chance" if flag else "",
            }
        )
    return pd.DataFrame(rows)


def score_table(
    loc: pd.DataFrame,
    chance: Mapping[str, float] | None = None,
    randomisation: Mapping[str, float] | None = None,
    digits: int = 3,
) -> pd.DataFrame:
    """The localisation / faithfulness table of a run as shown: ``layer`` labelled
    :func:`~vizkit.figures.layer_comparison.layer_label` ("layer k", "layers combined"), the scores,
    ``randomisation_spearman`` from ``randomisation`` (``{"method|layer": value}``) when given, a
    last row ``random map`` / ``chance`` holding ``chance`` (and 0 for the randomisation: a map that
    changed completely), and a column ``at or below chance`` naming the scores no better than their
    chance level (within :data:`CHANCE_MARGIN`). Rounded to ``digits``."""
    table = loc.copy()
    if randomisation:
        table["randomisation_spearman"] = [
            randomisation.get(f"{r.method}|{r.layer}", np.nan) for r in table.itertuples()
        ]
    chance = dict(chance or {})
    flags = []
    for _, row in table.iterrows():
        low = [
            k
            for k, level in chance.items()
            if k in table and pd.notna(row[k]) and k in SCORE_DIRECTIONS
            if at_or_below_chance(float(row[k]), level, SCORE_DIRECTIONS[k] == "higher", CHANCE_MARGIN)
        ]
        flags.append(", ".join(low))
    table["layer"] = [layer_label(str(n)) for n in table["layer"]]
    if chance:
        table["at or below chance"] = flags
        extra = {k: v for k, v in chance.items() if k in table}
        if "randomisation_spearman" in table:
            extra["randomisation_spearman"] = 0.0
        row = {"layer": "random map", "method": "chance", **extra, "at or below chance": ""}
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
    table = table.round(digits)
    for count in ("fakes", "images", "samples"):  # whole numbers, blank on the chance row
        if count in table:
            table[count] = ["" if pd.isna(v) else int(v) for v in table[count]]
    return table


def layer_scores(loc: pd.DataFrame | None, method: str, metric: str = "pointing_game") -> dict[str, float]:
    """``{layer name: score}`` of ``method``'s rows of a run's localisation table (the layers
    combined as ``"all layers"``); ``{}`` without a table or the score."""
    if loc is None or metric not in loc:
        return {}
    rows = loc[(loc["method"] == method) & loc[metric].notna()]
    return {str(r["layer"]): float(r[metric]) for _, r in rows.iterrows()}


def shown_layer(loc: pd.DataFrame | None, method: str, metric: str = "pointing_game") -> tuple[str, float] | None:
    """The layer (or ``"all layers"``) whose ``method`` map scores best by ``metric`` in this run
    (higher is better; ties: the first row), with its score: the map a figure shows. None when the
    run has no such score (no masks)."""
    scores = layer_scores(loc, method, metric)
    if not scores:
        return None
    best = max(scores, key=lambda k: scores[k])
    return best, scores[best]


def layer_key(layers: Sequence[LayerInfo]) -> pd.DataFrame:
    """The labels the figures use and what they mean: ``layer`` ("layer k", 0-based), ``name``
    (as requested), ``module`` (in the detector) and ``reads``, one row per layer."""
    return pd.DataFrame(
        [{"layer": layer_label(i.name), "name": i.name, "module": i.module, "reads": i.note} for i in layers]
    )


def faithfulness_sentence(table: pd.DataFrame) -> str:
    """What the numbers of :func:`score_table`'s table mean, and which method x layer wins by which
    score (:func:`vizkit.report.metric_winners`, the random map excluded): where they disagree it
    says so and picks none."""
    scores = {k: v for k, v in SCORE_DIRECTIONS.items() if k in table}
    higher = [k for k, v in scores.items() if v == "higher"]
    lower = [k for k, v in scores.items() if v == "lower"]
    meaning = f"Higher is better for {', '.join(higher)}" + (f"; lower for {', '.join(lower)}" if lower else "")
    if "randomisation_spearman" in scores:
        meaning += " (a Spearman of 0 after every weight is randomised: the map depends on what the detector learnt)"
    return meaning + ". " + metric_winners(table, ["method", "layer"], scores, exclude=("chance @ random map",))


def errors_at_threshold(preds: pd.DataFrame, threshold: float = 0.5) -> dict[str, int]:
    """The two kinds of error if images with p(fake) ``prob`` above ``threshold`` were called fake:
    ``{"fakes missed": ..., "reals called fake": ...}`` (``label`` 1 = fake). At 0.5 these are the
    detector's own mistakes (its confusion matrix)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    fake = preds["label"].astype(int) == 1
    called = preds["prob"].astype(float) > threshold
    return {"fakes missed": int((fake & ~called).sum()), "reals called fake": int((~fake & called).sum())}
