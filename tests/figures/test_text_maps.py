"""vizkit.figures.text_maps: what each panel shows, read back from the matplotlib figure."""

from __future__ import annotations

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pytest

from vizkit import render
from vizkit.figures.text_maps import text_maps_figure, text_target_figure

NAMES = ["red circle", "blue square", "green star"]
PROBS = [0.125, 0.625, 0.25]


@pytest.fixture
def display():
    rng = np.random.default_rng(0)
    return rng.random((8, 8, 3)).astype(np.float32)


def maps(count: int) -> np.ndarray:
    """``count`` [8, 8] maps, map k peaking at pixel (k, k)."""
    out = np.zeros((count, 8, 8), np.float32)
    for k in range(count):
        out[k, k, k] = 1.0
    return out


def test_text_target_figure_panels(display):
    heat = maps(3)[1]
    fig = text_target_figure(display, heat, NAMES, PROBS, target=1, title="the title", method="layercam")
    try:
        image, heatmap, over, bars = fig.axes[:4]
        assert fig.get_suptitle() == "the title"
        assert [a.get_title() for a in (image, heatmap, over, bars)] == [
            "image",
            "layercam heatmap",
            "overlay",
            "probability per text",
        ]
        # the image panel is the overlay at alpha 0 (the image itself), the map panel the raw map
        np.testing.assert_allclose(image.images[0].get_array(), display, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(heatmap.images[0].get_array()), heat)
        np.testing.assert_allclose(over.images[0].get_array(), render.overlay(display, heat), atol=1e-6)
        widths = [p.get_width() for p in bars.patches]
        assert widths == pytest.approx(PROBS)
        red = [p.get_facecolor()[:3] == mcolors.to_rgb("tab:red") for p in bars.patches]
        assert red == [False, True, False]
        assert [t.get_text() for t in bars.get_yticklabels()] == NAMES
    finally:
        plt.close(fig)


def test_text_maps_figure_one_overlay_per_text_in_rows(display):
    names = [f"text {k}" for k in range(5)]
    probs = np.array([0.1, 0.2, 0.3, 0.15, 0.25])
    fig = text_maps_figure(display, names, maps(5), probs, columns=2, title="all texts")
    try:
        assert fig.get_suptitle() == "all texts"
        drawn = [a for a in render.panel_axes(fig) if a.images]
        assert len(render.panel_axes(fig)) == 6 and len(drawn) == 5  # 3 rows of 2, the last cell empty
        assert [a.get_title() for a in drawn] == [f"text {k}\np={p:.3f}" for k, p in enumerate(probs)]
        for k, ax in enumerate(drawn):
            np.testing.assert_allclose(ax.images[0].get_array(), render.overlay(display, maps(5)[k]), atol=1e-6)
    finally:
        plt.close(fig)
