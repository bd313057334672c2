"""vizkit.figures.layer_comparison: the input, one overlay per layer and the layers combined, drawn
from the exact arrays render.overlay / render.combined_map give."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vizkit import render  # noqa: E402
from vizkit.figures.layer_comparison import comparison_figure  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _inputs():
    display = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    a = np.zeros((8, 8), np.float32)  # at the display's size: no resampling, the numbers by hand
    a[0, 7] = 3.0
    b = np.zeros((8, 8), np.float32)
    b[7, 7], b[0, 7] = 4.0, 2.0
    return display, {"encoder.layers.1": a, "encoder.layers.3": b}


def test_panels_titles_and_pixels():
    display, maps = _inputs()
    fig = comparison_figure(display, maps, "predicted Fake (p = 0.912)", "gradcam++")
    axes = render.panel_axes(fig)
    assert [ax.get_title() for ax in axes] == ["input", "encoder.layers.1", "encoder.layers.3", "layers combined"]
    assert fig._suptitle.get_text() == "gradcam++: predicted Fake (p = 0.912)"
    drawn = [ax.get_images()[0].get_array() for ax in axes]
    np.testing.assert_allclose(drawn[0], display / 255.0, atol=1e-7)  # the input as it is
    np.testing.assert_array_equal(drawn[1], render.overlay(display, maps["encoder.layers.1"]))
    np.testing.assert_array_equal(drawn[2], render.overlay(display, maps["encoder.layers.3"]))
    combined = render.combined_map(list(maps.values()), 8)
    np.testing.assert_array_equal(drawn[3], render.overlay(display, combined))
    # by hand: normalised a = 1 at (0, 7); b = 1 at (7, 7), 0.5 at (0, 7); mean 0.75 and 0.5 there,
    # normalised again: 1 and 2/3, 0 elsewhere
    expected = np.zeros((8, 8), np.float32)
    expected[0, 7], expected[7, 7] = 1.0, 2 / 3
    np.testing.assert_allclose(combined, expected, atol=1e-6)


def test_one_layer_has_no_combined_panel():
    display, maps = _inputs()
    fig = comparison_figure(display, {"encoder.layers.1": maps["encoder.layers.1"]}, "t", "gradcam")
    assert [ax.get_title() for ax in render.panel_axes(fig)] == ["input", "encoder.layers.1"]
