"""Figures of a real/fake detector's evaluation, from its predictions table (one row per image:
``index``, ``label`` 0/1, ``prob`` the fake probability, ``pred`` 0/1, ``correct``): the score
distribution per true class, and the most confident mistakes with their maps.

Example::

    from vizkit.figures.detector_eval import score_distribution_figure
    fig = score_distribution_figure(predictions)     # fake probability, one histogram per class
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import render

__all__ = ["score_distribution_figure", "worst_mistakes_figure"]


def score_distribution_figure(preds: pd.DataFrame) -> plt.Figure:
    """Seaborn step histogram (25 bins over [0, 1], counts) of the fake probability ``prob`` per
    true class (``label`` 0 real, 1 fake), the 0.5 threshold dashed."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    frame = preds.assign(true=preds["label"].map({0: "real", 1: "fake"}))
    sns.histplot(
        frame,
        x="prob",
        hue="true",
        hue_order=["real", "fake"],
        bins=25,
        binrange=(0, 1),
        stat="count",
        element="step",
        common_norm=False,
        ax=ax,
    )
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set_xlabel("fake probability")
    ax.set_title("score distribution per true class")
    fig.tight_layout()
    return fig


def worst_mistakes_figure(
    preds: pd.DataFrame,
    layer_maps: Mapping[str, Mapping[int, np.ndarray]],
    image: Callable[[int], np.ndarray],
    size: int,
    method: str,
    count: int = 8,
    class_names: Sequence[str] = ("Real", "Fake"),
) -> plt.Figure | None:
    """The ``count`` most confident wrong predictions (ties by ``index``), four per row, each the
    image ``image(index)`` (shown at ``size`` px, at least 224) under its layers-combined map
    (``layer_maps[layer][index]`` of every layer) titled ``#index True->Predicted p=confidence``;
    None when no prediction is wrong."""
    wrong = preds[~preds["correct"].astype(bool)].copy()
    if wrong.empty:
        return None
    wrong["confidence"] = np.where(wrong["pred"] == 1, wrong["prob"], 1 - wrong["prob"])
    wrong = wrong.sort_values(["confidence", "index"], ascending=[False, True]).head(count)
    panels = []
    for _, row in wrong.iterrows():
        i = int(row["index"])
        display = render.display_image(image(i), size)
        heat = render.combined_map([maps[i] for maps in layer_maps.values()], display.shape[0])
        title = f"#{i} {class_names[int(row['label'])]}->{class_names[int(row['pred'])]} p={row['confidence']:.2f}"
        panels.append(render.Panel(image=display, heatmap=heat, title=title))
    rows = [panels[i : i + 4] for i in range(0, len(panels), 4)]
    return render.figure_grid(rows, suptitle=f"worst mistakes ({method}, layers combined)")
