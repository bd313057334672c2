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
        image, heatmap, over, bars = render.panel_axes(fig)[:4]
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


def test_text_target_figure_outlines_the_mask_and_has_a_colour_bar(display):
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    fig = text_target_figure(display, maps(3)[1], NAMES, PROBS, target=1, title="t", mask=mask)
    try:
        image, heatmap, over, bars = render.panel_axes(fig)[:4]
        assert len(fig.axes) > len(render.panel_axes(fig))  # the map's colour bar
        for ax in (image, heatmap, over):
            assert ax.collections, "the mask's outline is drawn on the image, the map and the overlay"
        assert not bars.collections
    finally:
        plt.close(fig)


def test_text_maps_figure_one_shared_scale_for_every_text(display):
    names = [f"text {k}" for k in range(5)]
    probs = np.array([0.1, 0.2, 0.3, 0.15, 0.25])
    shared = maps(5) * np.array([1.0, 0.5, 0.25, 0.0, 0.75], np.float32)[:, None, None]  # peaks 1, .5, .25, 0, .75
    mask = np.zeros((8, 8), bool)
    mask[1:3, 1:3] = True
    fig = text_maps_figure(display, names, shared, probs, columns=3, title="all texts", masks=[None, mask, *[None] * 3])
    try:
        assert (
            fig.get_suptitle().startswith("all texts\n")
            and "1 = the largest value over all texts" in fig.get_suptitle()
        )
        drawn = [a for a in fig.axes if a.images]
        assert len(drawn) == 6  # the image, then one map per text (2 rows of 3)
        np.testing.assert_allclose(drawn[0].images[0].get_array(), display, atol=1e-6)
        assert drawn[0].get_title() == "image"
        peaks = [1.0, 0.5, 0.25, 0.0, 0.75]
        assert [a.get_title() for a in drawn[1:]] == [
            f"text {k}\np={p:.3f} | peak {q:.2f}" for k, (p, q) in enumerate(zip(probs, peaks))
        ]
        for k, ax in enumerate(drawn[1:]):
            # the map itself, not rescaled per panel, on the colour scale 0..1 of every panel
            np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), shared[k])
            assert ax.images[0].get_clim() == (0.0, 1.0)
            assert bool(ax.collections) == (k == 1)  # only text 1 names an object with a mask
        # one colour bar for all panels: an extra axes whose image is the first map's scale
        assert len(fig.axes) == 7
    finally:
        plt.close(fig)


def test_text_maps_figure_rejects_mismatched_inputs(display):
    with pytest.raises(ValueError, match="expected 2 maps"):
        text_maps_figure(display, ["a", "b"], maps(3), [0.5, 0.5])
    with pytest.raises(ValueError, match="one mask"):
        text_maps_figure(display, ["a", "b"], maps(2), [0.5, 0.5], masks=[None])


def test_render_draw_outline_resizes_the_mask_to_the_panel():
    fig, ax = plt.subplots()
    try:
        mask = np.zeros((4, 4), bool)
        mask[1:3, 1:3] = True
        ax.imshow(np.zeros((8, 8)))
        render.draw_outline(ax, mask, shape=(8, 8))
        assert ax.collections
        (xs, ys) = np.concatenate([p.vertices for c in ax.collections for p in c.get_paths()]).T
        # the 2 x 2 square of the 4-px mask is the 4 x 4 square 2..5 at 8 px: its outline lies between
        assert 1.0 <= xs.min() and xs.max() <= 6.0 and 1.0 <= ys.min() and ys.max() <= 6.0
        empty = plt.figure().add_subplot()
        render.draw_outline(empty, np.zeros((4, 4), bool))
        assert not empty.collections
    finally:
        plt.close("all")
