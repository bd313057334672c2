"""vizkit.figures.cls_attention: each panel shows the cached map it names, read back from the figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from vizkit import render, stats
from vizkit.attention_cache import cache_attention
from vizkit.figures.cls_attention import (
    STATISTICS,
    heads_figure,
    layer_evolution_figure,
    layers_figure,
    statistics_figure,
)
from vizkit.models.vit import SimpleViT, ViTConfig


@pytest.fixture(scope="module")
def cache():
    torch.manual_seed(0)
    model = SimpleViT(ViTConfig(num_layers=3)).eval()  # 4 x 4 patches, 4 heads
    images = (torch.rand(2, 28, 28) * 255).to(torch.uint8).numpy()
    return cache_attention(model, torch.from_numpy(images).float()[:, None] / 255.0, images, [5, 6])


def shown(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


def test_layers_figure_maps_on_top_overlays_below(cache):
    image = cache.images[1]
    fig = layers_figure(cache, 1, image, "Sample 7", layers=[0, 2], head_fusion="max", cmap="viridis")
    try:
        top, bottom = render.panel_axes(fig)[:2], render.panel_axes(fig)[2:]
        assert len(render.panel_axes(fig)) == 4 and [a.get_title() for a in top] == ["layer 1", "layer 3"]
        for ax_map, ax_over, li in zip(top, bottom, (0, 2)):
            heat = cache.cls_map(1, li, None, "max")
            np.testing.assert_allclose(shown(ax_map), heat, atol=1e-7)
            np.testing.assert_allclose(shown(ax_over), render.overlay(image, heat, cmap="viridis"), atol=1e-6)
        assert fig.get_suptitle().startswith(f"Sample 7: CLS attention per layer (max over heads) - {cache.caption(1)}")
    finally:
        plt.close(fig)


def test_heads_figure_one_column_per_head_of_the_layer(cache):
    image = cache.images[0]
    fig = heads_figure(cache, 0, image, "Sample 0", layer=-1, heads=[0, 2])
    try:
        assert [a.get_title() for a in render.panel_axes(fig)] == [
            "head 1",
            "head 3",
            "head 1 overlay",
            "head 3 overlay",
        ]
        for ax, h in zip(render.panel_axes(fig)[:2], (0, 2)):
            np.testing.assert_allclose(shown(ax), cache.cls_map(0, 2, h), atol=1e-7)
        assert "each head in layer 3" in fig.get_suptitle()
    finally:
        plt.close(fig)


def test_layer_evolution_figure_rows(cache):
    image = cache.images[0]
    fig = layer_evolution_figure(cache, 0, image, "Sample 0", head_fusion="mean")
    try:
        drawn = [a for a in render.panel_axes(fig) if a.images]
        titles = [a.get_title() for a in drawn]
        assert titles == [
            "input",
            "layer 1",
            "layer 2",
            "layer 3",
            "input",
            "raw last layer",
            "rollout",
            "gradient-weighted",
        ]
        expected = [cache.cls_map(0, li) for li in range(3)]
        expected += [cache.cls_map(0, 2), cache.rollout_map(0), cache.relevance[0].numpy()]
        overlays = drawn[1:4] + drawn[5:]
        for ax, heat in zip(overlays, expected):
            np.testing.assert_allclose(shown(ax), render.overlay(image, heat), atol=1e-6)
        assert fig.get_suptitle() == f"Sample 0: from layer 1 to layer 3 - {cache.caption(0)}"
    finally:
        plt.close(fig)


def test_statistics_figure_boxes_span_each_statistic(cache):
    a = cache.attn
    df = stats.attention_statistics(a.maps, a.grid, a.prefix_tokens, query="cls")
    fig = statistics_figure(df)
    try:
        assert [ax.get_title() for ax in fig.axes] == list(STATISTICS.values())
        for ax, metric in zip(fig.axes, STATISTICS):
            assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3"]
            assert [t.get_text() for t in ax.get_legend().get_texts()] == ["1", "2", "3", "4"]
            # whiskers end at the extreme values within 1.5 IQR, fliers mark the rest: the lines span the data
            ys = np.concatenate([np.asarray(line.get_ydata(), float) for line in ax.lines])
            assert ys.min() == pytest.approx(df[metric].min()) and ys.max() == pytest.approx(df[metric].max())
        assert fig.get_suptitle() == "Attention statistics over 2 samples, per layer and head"
    finally:
        plt.close(fig)
