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
from .layer_comparison import COMBINED, layer_label

__all__ = ["score_distribution_figure", "worst_mistakes_figure"]


def score_distribution_figure(preds: pd.DataFrame) -> plt.Figure:
    """Seaborn step histogram (25 bins over [0, 1], counts) of the fake probability ``prob`` per
    true class (``label`` 0 real, 1 fake), the 0.5 threshold dashed and labelled."""
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
    ax.text(0.51, 0.97, "threshold 0.5", transform=ax.get_xaxis_transform(), va="top", fontsize="small", color="grey")
    ax.set_xlabel("fake probability (predicted fake at or above the threshold)")
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
    *,
    shown: str | None = None,
    why: str = "",
    mask: Callable[[int, int], np.ndarray | None] | None = None,
) -> plt.Figure | None:
    """The ``count`` most confident wrong predictions (ties by ``index``), four per row, each the image
    ``image(index)`` (shown at ``size`` px, at least 224) under one map: the layer ``shown`` (a key
    of ``layer_maps``; ``layer_maps[layer][index]``), or with ``shown`` None (or ``"all layers"``)
    the layers combined. Panel titles ``#index True->Predicted`` and ``p(fake) = ...`` (the fake
    probability ``prob``, as predictions.csv lists it); a map that is zero everywhere (no colour)
    says so in its title; the suptitle names the method, the layer
    (:func:`~vizkit.figures.layer_comparison.layer_label`) and ``why`` it is shown. ``mask(index,
    S)``: the manipulation mask at ``S x S`` (or None), outlined. None when no prediction is wrong."""
    wrong = preds[~preds["correct"].astype(bool)].copy()
    if wrong.empty:
        return None
    shown = None if shown == COMBINED else shown
    if shown is not None and shown not in layer_maps:
        raise ValueError(f"shown layer {shown!r} is not one of the maps' layers {list(layer_maps)}")
    wrong["confidence"] = np.where(wrong["pred"] == 1, wrong["prob"], 1 - wrong["prob"])
    wrong = wrong.sort_values(["confidence", "index"], ascending=[False, True]).head(count)
    nrows = -(-len(wrong) // 4)
    fig, axes = plt.subplots(nrows, 4, figsize=(3.0 * 4, 3.3 * nrows + 0.6), squeeze=False, layout="constrained")
    for ax in axes.flat[len(wrong) :]:
        ax.axis("off")
    for ax, (_, row) in zip(axes.flat, wrong.iterrows()):
        i = int(row["index"])
        display = render.display_image(image(i), size)
        if shown is None:
            heat = render.combined_map([maps[i] for maps in layer_maps.values()], display.shape[0])
        else:
            heat = layer_maps[shown][i]
        title = f"#{i} {class_names[int(row['label'])]}->{class_names[int(row['pred'])]}\np(fake) = {row['prob']:.2f}"
        if not np.asarray(heat).any():
            title += " (map all zero)"
        render.Panel(image=display, heatmap=heat, title=title).draw(ax, colorbar=False)
        render.draw_outline(ax, mask(i, display.shape[0]) if mask is not None else None)
    render.shared_colorbar(axes.flat[: len(wrong)])
    where = layer_label(shown) if shown is not None else "layers combined"
    lines = [f"worst mistakes: {method} at {where}" + (f" ({why})" if why else "")]
    lines.append("most confident wrong predictions; each map scaled to its own [0, 1]; cyan: manipulated region")
    fig.suptitle("\n".join(lines), fontsize="medium")
    return fig
