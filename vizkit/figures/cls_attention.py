"""Figures of a ViT classifier's CLS attention, read from an
:class:`~vizkit.attention_cache.AttentionCache` (no model runs): one sample's attention per layer
(:func:`layers_figure`), per head of one layer (:func:`heads_figure`), its evolution over the
layers beside rollout and gradient-weighted attention (:func:`layer_evolution_figure`), and the
distributions of the attention statistics per layer and head (:func:`statistics_figure`).

Example::

    from vizkit.figures.cls_attention import layers_figure
    fig = layers_figure(cache, 0, cache.images[0], "Sample 0")   # top: maps, bottom: overlays
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .. import render
from ..attention_cache import AttentionCache

__all__ = ["layers_figure", "heads_figure", "layer_evolution_figure", "statistics_figure"]

#: the four statistics of :func:`vizkit.stats.attention_statistics` and their panel titles
STATISTICS = {
    "max": "max CLS attention",
    "mean": "mean CLS attention",
    "entropy": "entropy of the CLS row (nats)",
    "distance": "mean attention distance (patches)",
}


def layers_figure(
    cache: AttentionCache,
    sample: int,
    image: np.ndarray,
    name: str,
    layers: Sequence[int] | None = None,
    head_fusion: str = "mean",
    cmap: str = render.RELEVANCE_CMAP,
) -> Figure:
    """CLS attention of ``sample`` in each of ``layers`` (default all; heads fused by
    ``head_fusion``): the maps on top, their overlays on ``image`` below; ``name`` opens the title."""
    idx = list(layers) if layers is not None else list(range(len(cache.layers)))
    fig, axes = plt.subplots(2, len(idx), figsize=(2.2 * len(idx), 4.8), squeeze=False)
    for col, li in enumerate(idx):
        heat = cache.cls_map(sample, li, None, head_fusion)
        render.show_heatmap(axes[0, col], heat, title=f"layer {li + 1}", cmap=cmap)
        render.show_overlay(axes[1, col], image, heat, title=f"layer {li + 1} overlay", cmap=cmap)
    fig.suptitle(
        f"{name}: CLS attention per layer ({head_fusion} over heads) - {cache.caption(sample)}\nred = high, blue = low",
        fontsize=10,
    )
    return fig


def heads_figure(
    cache: AttentionCache,
    sample: int,
    image: np.ndarray,
    name: str,
    layer: int = -1,
    heads: Sequence[int] | None = None,
    cmap: str = render.RELEVANCE_CMAP,
) -> Figure:
    """CLS attention of ``sample`` in each of ``heads`` (default all) of ``layer`` (an index,
    negative from the end): the maps on top, their overlays on ``image`` below."""
    li = layer % len(cache.layers)
    hs = list(heads) if heads is not None else list(range(cache.num_heads))
    fig, axes = plt.subplots(2, len(hs), figsize=(2.4 * len(hs), 5), squeeze=False)
    for col, h in enumerate(hs):
        heat = cache.cls_map(sample, li, h)
        render.show_heatmap(axes[0, col], heat, title=f"head {h + 1}", cmap=cmap)
        render.show_overlay(axes[1, col], image, heat, title=f"head {h + 1} overlay", cmap=cmap)
    fig.suptitle(f"{name}: CLS attention of each head in layer {li + 1} - {cache.caption(sample)}", fontsize=10)
    return fig


def layer_evolution_figure(
    cache: AttentionCache,
    sample: int,
    image: np.ndarray,
    name: str,
    head_fusion: str = "mean",
    cmap: str = render.RELEVANCE_CMAP,
) -> Figure:
    """Two rows over ``image``: the fused CLS attention of every layer side by side, then the raw
    last layer beside rollout and (when cached) the gradient-weighted attention."""
    n = len(cache.layers)

    def over(heat: np.ndarray, title: str) -> render.Panel:
        return render.Panel(image=image, heatmap=heat, title=title, cmap=cmap)

    first = [render.Panel(image=image, kind="image", title="input")]
    evolution = [over(cache.cls_map(sample, li, None, head_fusion), f"layer {li + 1}") for li in range(n)]
    last = [
        over(cache.cls_map(sample, n - 1, None, head_fusion), "raw last layer"),
        over(cache.rollout_map(sample, head_fusion), "rollout"),
    ]
    if cache.relevance is not None:
        last.append(over(cache.relevance[sample].numpy(), "gradient-weighted"))
    return render.figure_grid(
        [first + evolution, first + last],
        titles=["layer evolution", "last layer vs rollout"],
        suptitle=f"{name}: from layer 1 to layer {n} - {cache.caption(sample)}",
    )


def statistics_figure(df: Any) -> Figure:
    """Box plots of the per sample x layer x head statistics ``df`` (the table of
    :func:`vizkit.stats.attention_statistics`: ``sample``, ``layer_index``, ``head`` and the four
    :data:`STATISTICS`), one panel per statistic, layers along x (1-based), one box per head."""
    import seaborn as sns

    df = df.assign(layer_no=lambda d: d["layer_index"] + 1, head=lambda d: d["head"] + 1)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (metric, title) in zip(axes.flat, STATISTICS.items()):
        sns.boxplot(data=df, x="layer_no", y=metric, hue="head", ax=ax, fliersize=2, palette="tab10")
        ax.set_title(title)
        ax.set_xlabel("layer")
        ax.legend(title="head", fontsize=7, title_fontsize=7, ncols=2)
    fig.suptitle(f"Attention statistics over {df['sample'].nunique()} samples, per layer and head")
    fig.tight_layout()
    return fig
