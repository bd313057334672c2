"""Figures of an image's maps toward texts (an image-text model such as CLIP, explained toward
each text): one text's map beside the probability of every text (:func:`text_target_figure`), and
every text's map side by side on one shared colour scale (:func:`text_maps_figure`). Where a
ground-truth mask of the named object exists, its outline is drawn (:func:`vizkit.render.draw_outline`).

Example::

    from vizkit.figures.text_maps import text_maps_figure
    fig = text_maps_figure(display, ["red circle", "blue square"], maps, probs)   # maps [T, H, W], shared scale
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
    mask: np.ndarray | None = None,
) -> Figure:
    """Four panels in one row: the image ``display`` ``[H, W, 3]``, the ``heatmap`` ``[H, W]``
    (titled with ``method``, with a colour bar: the map is normalised to [0, 1] per image), their
    overlay, and a bar of the probability of each text in ``names`` (``probs`` ``[T]``; bar
    ``target`` highlighted); ``title`` above them. ``mask``: the target object's ground truth, outlined
    on the first three panels."""
    fig, axes = plt.subplots(
        1, 4, figsize=(15, 4.4), gridspec_kw={"width_ratios": [1, 1, 1, 1.5]}, layout="constrained"
    )
    render.show_overlay(axes[0], display, heatmap, title="image", alpha=0.0, colorbar=False)
    render.show_heatmap(axes[1], heatmap, title=f"{method} heatmap")
    render.show_overlay(axes[2], display, heatmap, title="overlay")
    if mask is not None:
        for ax in axes[:3]:
            render.draw_outline(ax, mask, shape=np.asarray(heatmap).shape)
    render.bar_chart(axes[3], list(names), list(probs), highlight=target, title="probability per text")
    fig.suptitle(title, fontsize=10)
    return fig


def text_maps_figure(
    display: np.ndarray,
    names: Sequence[str],
    maps: np.ndarray,
    probs: np.ndarray,
    columns: int = 6,
    title: str = "",
    masks: Sequence[np.ndarray | None] | None = None,
) -> Figure:
    """The image, then every text's map ``maps`` ``[T, H, W]`` on ONE colour scale from 0 to 1 (the
    maps are not rescaled per panel: pass them divided by their common maximum, as
    :func:`vizkit.scenarios.clip_text_explain.text_maps` returns them), each titled with its name,
    probability (``probs`` ``[T]``) and peak; one colour bar for all; ``columns`` panels per row.
    ``masks``: per text, the outline of the object it names in the image (None: not in the image)."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3 or len(maps) != len(names) or len(probs) != len(names):
        raise ValueError(f"expected {len(names)} maps [T, H, W] and probabilities, got {maps.shape} and {len(probs)}")
    if masks is not None and len(masks) != len(names):
        raise ValueError(f"expected one mask (or None) per text, got {len(masks)} for {len(names)} texts")
    panels = [render.Panel(image=display, title="image", kind="image")]
    panels += [
        render.Panel(heatmap=m, title=f"{n}\np={p:.3f} | peak {m.max():.2f}", kind="heatmap")
        for n, m, p in zip(names, maps, probs)
    ]
    rows = [panels[i : i + columns] for i in range(0, len(panels), columns)]
    fig = render.figure_grid(
        rows,
        suptitle=(title + "\n" if title else "") + "one colour scale: 1 = the largest value over all texts",
        colorbar=False,
    )
    axes = [ax for ax in fig.axes if ax.images]
    for k, ax in enumerate(axes[1:]):
        ax.images[0].set_clim(0.0, 1.0)
        if masks is not None and masks[k] is not None:
            render.draw_outline(ax, masks[k], shape=tuple(maps.shape[1:]))
    fig.colorbar(axes[1].images[0], ax=fig.axes, shrink=0.6, label="map value (shared scale)")
    return fig
