"""vizkit.figures.layer_comparison: the input, one overlay per layer ("layer k") and the layers
combined, drawn from the exact arrays render.overlay / render.combined_map give; the run's scores
in the titles with the best marked (the combined panel only when it is the best); the mask outline."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from vizkit import render  # noqa: E402
from vizkit.figures.layer_comparison import comparison_figure, layer_label  # noqa: E402


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
    assert [ax.get_title() for ax in axes] == ["input", "layer 1", "layer 3", "layers combined"]
    assert fig._suptitle.get_text() == "gradcam++: predicted Fake (p = 0.912)\neach map scaled to its own [0, 1]"
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
    assert [ax.get_title() for ax in render.panel_axes(fig)] == ["input", "layer 1"]


def test_layer_labels_are_zero_based_block_indices():
    assert layer_label("encoder.layers.3.layer_norm1") == "layer 3"
    assert layer_label("encoder.layers.0") == "layer 0"
    assert layer_label("blocks.11.norm1") == "layer 11"
    assert layer_label("all layers") == "layers combined"
    assert layer_label("layer4") == "layer4"  # a CNN stage: no block index, the name itself


def test_scores_in_titles_best_marked_and_no_combined_panel_unless_best():
    display, maps = _inputs()
    scores = {"encoder.layers.1": 0.36, "encoder.layers.3": 0.93, "all layers": 0.5}
    fig = comparison_figure(display, maps, "t", "gradcam", scores=scores)
    assert [ax.get_title() for ax in render.panel_axes(fig)] == [
        "input",
        "layer 1\npointing 36%",
        "layer 3 (best)\npointing 93%",
    ]
    fig = comparison_figure(display, maps, "t", "gradcam", scores={**scores, "all layers": 0.95})
    assert render.panel_axes(fig)[-1].get_title() == "layers combined (best)\npointing 95%"
    zero = {"encoder.layers.1": np.zeros((8, 8), np.float32)}
    fig = comparison_figure(display, zero, "t", "gradcam", scores={"encoder.layers.1": 0.0})
    assert render.panel_axes(fig)[1].get_title() == "layer 1 (best) (all zero)\npointing 0%"
    assert "pointing: this run's score of the layer over the test set" in fig.get_suptitle()


def test_one_colorbar_for_all_maps_stating_the_per_panel_scale():
    display, maps = _inputs()
    fig = comparison_figure(display, maps, "t", "gradcam")
    (bar,) = [ax for ax in fig.axes if ax not in render.panel_axes(fig)]  # one, not one per panel
    assert bar.get_xlabel() == "normalised per panel to [0, 1]"
    assert "pointing" not in fig.get_suptitle() and "cyan" not in fig.get_suptitle()  # no scores, no mask


def test_mask_outline_on_every_panel():
    display, maps = _inputs()
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    fig = comparison_figure(display, maps, "t", "gradcam", mask=mask)
    assert fig._suptitle.get_text().endswith("cyan: the manipulated region")
    for ax in render.panel_axes(fig):
        (contour,) = ax.collections
        # the 0.5 level of the 3 x 3 square: half a pixel outside the pixel centres 2..4
        vertices = np.concatenate([p.vertices for p in contour.get_paths()])
        assert vertices[:, 0].min() == pytest.approx(1.5) and vertices[:, 0].max() == pytest.approx(4.5)
    ax = plt.figure().add_subplot()
    assert render.draw_outline(ax, None) is None and render.draw_outline(ax, np.zeros((4, 4))) is None
    assert not ax.collections
