"""Figures of a ViT classifier's CLS attention, read from an
:class:`~vizkit.attention_cache.AttentionCache` (no model runs): one sample's attention per layer
(:func:`layers_figure`), per head of one layer (:func:`heads_figure`), its evolution over the
layers beside rollout and gradient-weighted attention (:func:`layer_evolution_figure`), and the
distributions of the attention statistics per layer and head, beside the level of uniform
attention (:func:`statistics_figure`). Layers are labelled 0-based, "layer k" being block ``k``
(:func:`layer_numbers`); heads are 0-based too. Maps are drawn in the default relevance colour map
of :mod:`vizkit.render` (``cmap`` to change it).

Example::

    from vizkit.figures.cls_attention import layers_figure
    fig = layers_figure(cache, 0, cache.images[0], "Sample 0")   # top: maps, bottom: overlays
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from .. import render
from ..attention_cache import AttentionCache

__all__ = ["layer_numbers", "layers_figure", "heads_figure", "layer_evolution_figure", "statistics_figure"]

#: the statistics of :func:`vizkit.stats.attention_statistics` the figure shows, and their panel titles
#: (the mean CLS->patch weight is left out: it is (1 - CLS self-weight) / 16, near 1/16 by construction)
STATISTICS = {
    "max": "largest CLS->patch weight",
    "entropy": "entropy of the CLS row (nats)",
    "cls_distance": "CLS-row distance (patches): spread of the maps shown",
    "distance": "mean attention distance of the patch queries (patches)",
}


def layer_numbers(layers: Sequence[str]) -> list[int]:
    """The 0-based block number of each captured module (``"blocks.4"`` -> 4: "layer 4"); a name without a
    trailing number gets its position in ``layers``."""
    out = []
    for position, name in enumerate(layers):
        found = re.search(r"(\d+)$", str(name))
        out.append(int(found.group(1)) if found else position)
    return out


def layers_figure(
    cache: AttentionCache,
    sample: int,
    image: np.ndarray,
    name: str,
    layers: Sequence[int] | None = None,
    head_fusion: str = "mean",
    cmap: str = render.RELEVANCE_CMAP,
) -> Figure:
    """CLS attention of ``sample`` in each of ``layers`` (positions in ``cache.layers``, default all; heads
    fused by ``head_fusion``): the maps on top, their overlays on ``image`` below; ``name`` opens the title."""
    idx = list(layers) if layers is not None else list(range(len(cache.layers)))
    numbers = layer_numbers(cache.layers)
    heats = [cache.cls_map(sample, li, None, head_fusion) for li in idx]
    return _maps_and_overlays(
        heats,
        image,
        [f"layer {numbers[li]}" for li in idx],
        f"{name}: CLS attention per layer ({head_fusion} over heads) - {cache.caption(sample)}",
        cmap,
    )


def _maps_and_overlays(
    heats: Sequence[np.ndarray], image: np.ndarray, titles: Sequence[str], suptitle: str, cmap: str
) -> Figure:
    """Two rows: the raw maps ``[h, w]`` (each with its own colorbar of raw values) and their overlays on
    ``image`` (each normalised over itself; one shared colorbar below the grid says so)."""
    maps = [render.Panel(heatmap=h, kind="heatmap", title=t, cmap=cmap) for h, t in zip(heats, titles)]
    overlays = [render.Panel(image=image, heatmap=h, title=f"{t} overlay", cmap=cmap) for h, t in zip(heats, titles)]
    fig = render.figure_grid(
        [maps, overlays],
        titles=["attention (raw)", "overlay"],
        figsize=(2.4 * len(heats) + 0.6, 5.6),
        suptitle=f"{suptitle}\ntop: raw values; bottom: each map scaled from its own minimum to its own maximum",
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
    """CLS attention of ``sample`` in each of ``heads`` (0-based, default all) of ``layer`` (a position in
    ``cache.layers``, negative from the end): the maps on top, their overlays on ``image`` below."""
    li = layer % len(cache.layers)
    hs = list(heads) if heads is not None else list(range(cache.num_heads))
    number = layer_numbers(cache.layers)[li]
    return _maps_and_overlays(
        [cache.cls_map(sample, li, h) for h in hs],
        image,
        [f"head {h}" for h in hs],
        f"{name}: CLS attention of each head in layer {number} - {cache.caption(sample)}",
        cmap,
    )


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
    n, numbers = len(cache.layers), layer_numbers(cache.layers)

    def over(heat: np.ndarray, title: str) -> render.Panel:
        return render.Panel(image=image, heatmap=heat, title=title, cmap=cmap)

    first = [render.Panel(image=image, kind="image", title="input")]
    evolution = [over(cache.cls_map(sample, li, None, head_fusion), f"layer {numbers[li]}") for li in range(n)]
    last = [
        over(cache.cls_map(sample, n - 1, None, head_fusion), "raw last layer"),
        over(cache.rollout_map(sample, head_fusion), "rollout"),
    ]
    if cache.relevance is not None:
        last.append(over(cache.relevance[sample].numpy(), "gradient-weighted"))
    return render.figure_grid(
        [first + evolution, first + last],
        titles=["layer evolution", "last layer vs rollout"],
        suptitle=f"{name}: from layer {numbers[0]} to layer {numbers[-1]} - {cache.caption(sample)}\n"
        "each map scaled from its own minimum to its own maximum",
    )


def statistics_figure(df: Any, reference: Mapping[str, float] | None = None) -> Figure:
    """Box plots of the per sample x layer x head statistics ``df`` (the table of
    :func:`vizkit.stats.attention_statistics` with ``query="cls"``: ``sample``, ``layer``, ``layer_index``,
    ``head`` and the :data:`STATISTICS`), one panel per statistic, layers along x (0-based block numbers),
    one box per head (0-based). ``reference`` (e.g. :func:`vizkit.stats.uniform_statistics`) draws each
    statistic's value under uniform attention as a dashed line (``gid="uniform"``). One legend, outside
    the panels."""
    import seaborn as sns

    order = df.drop_duplicates("layer_index").sort_values("layer_index")
    numbers = dict(zip(order["layer_index"], layer_numbers(list(order["layer"]))))
    df = df.assign(layer_no=df["layer_index"].map(numbers))
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    handles: dict[str, Any] = {}
    for ax, (metric, title) in zip(axes.flat, STATISTICS.items()):
        sns.boxplot(data=df, x="layer_no", y=metric, hue="head", ax=ax, fliersize=1.5, palette="colorblind")
        if reference is not None and metric in reference:
            value = reference[metric]
            ax.axhline(value, color="black", linestyle="--", linewidth=1.2, gid="uniform", label="uniform attention")
            low, high = ax.get_ylim()
            ax.set_ylim(low, max(high, value + 0.09 * (high - low)))  # room for the label above the line
            ax.annotate(
                f"uniform {value:.3f}",
                (1.0, value),
                xycoords=("axes fraction", "data"),
                xytext=(-3, 3),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=8,
            )
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(f"head {label}" if label.isdigit() else label, handle)
        ax.get_legend().remove()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer (0-based)")
        ax.set_ylabel("")
    fig.suptitle(f"CLS attention statistics over {df['sample'].nunique()} images, per layer and head")
    fig.tight_layout(rect=(0, 0, 0.84, 1))
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(0.845, 0.5), fontsize=9)
    return fig
