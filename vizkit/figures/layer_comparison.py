"""One image explained at several layers, side by side: the input, one overlay per layer labelled
"layer k" (0-based block index, :func:`layer_label`) with the run's score of that layer when it is
known, the layer the run's numbers choose marked, and — only when no numbers choose a layer — the
layers combined (:func:`vizkit.render.combined_map`). The manipulation mask is outlined when given.

Example::

    from vizkit.figures.layer_comparison import comparison_figure
    fig = comparison_figure(display, {"encoder.layers.3": m3, "encoder.layers.5": m5},
                            "true Fake, predicted Fake, p(fake) = 0.912", "gradcam",
                            scores={"encoder.layers.3": 0.41, "encoder.layers.5": 0.93})
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np

from .. import render

__all__ = ["comparison_figure", "layer_label", "COMBINED"]

#: the name of the layers-combined map in a run's tables
COMBINED = "all layers"

_BLOCK = re.compile(r"(?:^|\.)(?:layers|blocks|layer|h)\.(\d+)(?:\.|$)")


def layer_label(name: str) -> str:
    """The label a figure or table shows for a layer name: ``"layer k"`` with k the 0-based block
    index in the name (``encoder.layers.3.layer_norm1`` -> ``layer 3``, ``blocks.0`` -> ``layer 0``),
    ``"layers combined"`` for :data:`COMBINED`, else the name itself (e.g. a CNN's ``layer4``)."""
    if name == COMBINED:
        return "layers combined"
    found = _BLOCK.search(name)
    return f"layer {found.group(1)}" if found else name


def comparison_figure(
    display: np.ndarray,
    maps: Mapping[str, np.ndarray],
    title: str,
    method: str,
    *,
    scores: Mapping[str, float] | None = None,
    score_name: str = "pointing",
    mask: np.ndarray | None = None,
) -> plt.Figure:
    """One row: ``display`` (uint8 ``S x S x 3``), then per layer its map (``h x w``, any scale; each
    normalised to its own [0, 1] and resized by the overlay) over it, titled :func:`layer_label`.
    ``scores``: the run's score of each layer (and of :data:`COMBINED`) for this method, e.g. its
    pointing game over the test set: each panel's title gets it and the best one is marked "(best)",
    a map that is zero everywhere "(all zero)"; the layers-combined panel is drawn only when it is
    the best, or when no ``scores`` are given and there is more than one layer. ``mask``: the
    manipulation mask at ``S x S``, outlined on every panel. The suptitle ``"{method}: {title}"``
    and a second line on how the maps are scaled."""
    best = max(scores, key=lambda k: scores[k]) if scores else None

    def label(layer: str, heat: np.ndarray) -> str:
        zero = "" if np.asarray(heat).any() else " (all zero)"
        if scores is None or layer not in scores:
            return layer_label(layer) + zero
        mark = " (best)" if layer == best else ""
        return f"{layer_label(layer)}{mark}{zero}\n{score_name} {scores[layer]:.0%}"

    panels = [render.Panel(image=display, kind="image", title="input")]
    panels += [render.Panel(image=display, heatmap=m, title=label(layer, m)) for layer, m in maps.items()]
    if len(maps) > 1 and (best == COMBINED or (best is None and scores is None)):
        combined = render.combined_map(list(maps.values()), display.shape[0])
        panels.append(render.Panel(image=display, heatmap=combined, title=label(COMBINED, combined)))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.7 * len(panels), 4.0), squeeze=False, layout="constrained")
    for ax, panel in zip(axes[0], panels):
        panel.draw(ax, colorbar=False)
        render.draw_outline(ax, mask)
    render.shared_colorbar(axes[0, 1:])
    note = "each map scaled to its own [0, 1]"
    if scores:
        note += f"; {score_name}: this run's score of the layer over the test set"
    if mask is not None and np.asarray(mask).any():
        note += "; cyan: the manipulated region"
    fig.suptitle(f"{method}: {title}\n{note}", fontsize="medium")
    return fig
