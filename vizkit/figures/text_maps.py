"""Figures of an image's maps toward texts (an image-text model such as CLIP, explained toward
each text): one text's map beside the probability of every text (:func:`text_target_figure`), and
every text's overlay side by side (:func:`text_maps_figure`).

Example::

    from vizkit.figures.text_maps import text_maps_figure
    fig = text_maps_figure(display, ["red circle", "blue square"], maps, probs)   # maps [T, H, W]
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .. import render

__all__ = ["text_target_figure", "text_maps_figure"]


def text_target_figure(
    display: np.ndarray,
    heatmap: np.ndarray,
    names: Sequence[str],
    probs: Sequence[float],
    target: int,
    title: str,
    method: str = "gradcam",
) -> Figure:
    """Four panels in one row: the image ``display`` ``[H, W, 3]``, the ``heatmap`` ``[H, W]``
    (titled with ``method``), their overlay, and a bar of the probability of each text in
    ``names`` (``probs`` ``[T]``; bar ``target`` highlighted); ``title`` above them."""
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2), gridspec_kw={"width_ratios": [1, 1, 1, 1.5]})
    render.show_overlay(axes[0], display, heatmap, title="image", alpha=0.0, colorbar=False)
    render.show_heatmap(axes[1], heatmap, title=f"{method} heatmap")
    render.show_overlay(axes[2], display, heatmap, title="overlay")
    render.bar_chart(axes[3], list(names), list(probs), highlight=target, title="probability per text")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def text_maps_figure(
    display: np.ndarray, names: Sequence[str], maps: np.ndarray, probs: np.ndarray, columns: int = 6, title: str = ""
) -> Figure:
    """All texts' overlays side by side, each titled with its probability: ``maps`` ``[T, H, W]``
    over ``display`` ``[H, W, 3]``, ``probs`` ``[T]``, ``columns`` panels per row."""
    panels = [render.Panel(image=display, heatmap=m, title=f"{n}\np={p:.3f}") for n, m, p in zip(names, maps, probs)]
    rows = [panels[i : i + columns] for i in range(0, len(panels), columns)]
    return render.figure_grid(rows, suptitle=title)
