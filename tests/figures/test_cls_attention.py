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
    layer_numbers,
    layers_figure,
    statistics_figure,
)
from vizkit.metrics.chance import uniform_attention_distance
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
        # 0-based: blocks.k
        assert len(render.panel_axes(fig)) == 4 and [a.get_title() for a in top] == ["layer 0", "layer 2"]
        for ax_map, ax_over, li in zip(top, bottom, (0, 2)):
            heat = cache.cls_map(1, li, None, "max")
            np.testing.assert_allclose(shown(ax_map), heat, atol=1e-7)
            np.testing.assert_allclose(shown(ax_over), render.overlay(image, heat, cmap="viridis"), atol=1e-6)
        assert fig.get_suptitle().startswith(f"Sample 7: CLS attention per layer (max over heads) - {cache.caption(1)}")
        # each raw map keeps its own colorbar of raw values; the overlays share one below the grid
        bars = [ax for ax in fig.axes if ax not in render.panel_axes(fig)]
        assert [b.get_ylabel() for b in bars[:2]] == ["raw value"] * 2
        assert len(bars) == 3 and bars[2].get_xlabel() == "normalised per panel to [0, 1]"
    finally:
        plt.close(fig)


def test_heads_figure_one_column_per_head_of_the_layer(cache):
    image = cache.images[0]
    fig = heads_figure(cache, 0, image, "Sample 0", layer=-1, heads=[0, 2])
    try:
        assert [a.get_title() for a in render.panel_axes(fig)] == [
            "head 0",
            "head 2",
            "head 0 overlay",
            "head 2 overlay",
        ]
        for ax, h in zip(render.panel_axes(fig)[:2], (0, 2)):
            np.testing.assert_allclose(shown(ax), cache.cls_map(0, 2, h), atol=1e-7)
        assert "each head in layer 2 -" in fig.get_suptitle()  # the last of blocks.0..2
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
            "layer 0",
            "layer 1",
            "layer 2",
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
        assert fig.get_suptitle().startswith(f"Sample 0: from layer 0 to layer 2 - {cache.caption(0)}\n")
    finally:
        plt.close(fig)


def test_layer_numbers_are_the_0_based_block_numbers():
    assert layer_numbers(["blocks.0", "blocks.3", "blocks.5"]) == [0, 3, 5]  # layers="0,3,5" keeps its labels
    assert layer_numbers(["encoder.layer.11", "head"]) == [11, 1]  # no number: the position


def test_layers_figure_labels_a_subset_by_block_number():
    torch.manual_seed(0)
    model = SimpleViT(ViTConfig(num_layers=4)).eval()
    images = (torch.rand(1, 28, 28) * 255).to(torch.uint8).numpy()
    sub = cache_attention(model, torch.from_numpy(images).float()[:, None] / 255.0, images, [3], layers=[1, 3])
    fig = layers_figure(sub, 0, images[0], "Sample 0")
    try:
        assert [a.get_title() for a in fig.axes[:2]] == ["layer 1", "layer 3"]
    finally:
        plt.close(fig)


def test_statistics_figure_boxes_span_each_statistic_beside_the_uniform_level(cache):
    a = cache.attn
    df = stats.attention_statistics(a.maps, a.grid, a.prefix_tokens, query="cls")
    reference = stats.uniform_statistics(a.grid, a.prefix_tokens)
    fig = statistics_figure(df, reference)
    try:
        assert [ax.get_title() for ax in fig.axes] == list(STATISTICS.values())
        assert "mean" not in STATISTICS  # (1 - CLS self-weight) / 16: near 1/16 by construction
        for ax, metric in zip(fig.axes, STATISTICS):
            assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]
            assert ax.get_legend() is None  # one legend for the figure, outside the panels
            uniform = [line for line in ax.lines if line.get_gid() == "uniform"]
            assert len(uniform) == 1 and list(uniform[0].get_ydata()) == pytest.approx([reference[metric]] * 2)
            # whiskers end at the extreme values within 1.5 IQR, fliers mark the rest: the lines span the data
            boxes = [line for line in ax.lines if line.get_gid() != "uniform"]
            ys = np.concatenate([np.asarray(line.get_ydata(), float) for line in boxes])
            assert ys.min() == pytest.approx(df[metric].min()) and ys.max() == pytest.approx(df[metric].max())
        lines = {a.get_gid(): a.get_ydata()[0] for a in fig.axes[2].lines + fig.axes[3].lines if a.get_gid()}
        assert lines["uniform"] == pytest.approx(uniform_attention_distance((4, 4)))  # 2.008 patches
        assert fig.axes[1].lines[-1].get_ydata()[0] == pytest.approx(np.log(17))
        legend = fig.legends[0]
        assert [t.get_text() for t in legend.get_texts()] == [
            "head 0",
            "head 1",
            "head 2",
            "head 3",
            "uniform attention",
        ]
        right = max(ax.get_position().x1 for ax in fig.axes)
        fig.canvas.draw()
        box = legend.get_window_extent().transformed(fig.transFigure.inverted())
        assert box.x0 >= right  # the legend covers no panel
        assert fig.get_suptitle() == "CLS attention statistics over 2 images, per layer and head"
    finally:
        plt.close(fig)
