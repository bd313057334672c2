"""vizkit.figures.class_maps: the model's view of an image and the class-map figures, read back
from the drawn axes."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from vizkit import render
from vizkit.figures.class_maps import class_map_figure, map_comparison_figure, map_rows_figure, model_view


@pytest.fixture
def image_and_maps():
    rng = np.random.default_rng(0)
    image = rng.random((6, 6, 3)).astype(np.float32)
    a = np.zeros((6, 6), np.float32)
    b = np.zeros((6, 6), np.float32)
    a[:3, :3], b[2:5, 2:5] = 1.0, 0.5
    return image, a, b


def test_model_view_resizes_by_area_only_when_needed():
    img = np.array([[0, 2, 4, 6], [2, 4, 6, 8], [10, 10, 20, 20], [30, 30, 40, 40]], np.uint8)
    out = model_view(np.repeat(img[..., None], 3, -1), (2, 2))
    # INTER_AREA at an integer factor: the mean of each 2 x 2 block, of the image / 255
    expected = np.array([[2.0, 6.0], [20.0, 30.0]]) / 255
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 1], expected, atol=1e-6)
    same = model_view(Image.fromarray(img), (4, 4))  # grey PIL: converted to RGB, not resized
    np.testing.assert_allclose(same[..., 2], img / 255, atol=1e-7)


def test_class_map_figure_draws_the_image_the_map_and_the_overlay(image_and_maps):
    image, a, _ = image_and_maps
    fig = class_map_figure(image, a, "fake-class attention", "face 1: fake class")
    try:
        ax = fig.axes
        assert len(ax) == 5  # three panels, the map's and the overlay's colour bars
        assert [x.get_ylabel() for x in ax[3:]] == ["raw value", "normalised per panel to [0, 1]"]
        np.testing.assert_allclose(ax[0].images[0].get_array(), image, atol=1e-6)  # alpha 0: the image itself
        np.testing.assert_array_equal(ax[1].images[0].get_array(), a)
        np.testing.assert_allclose(ax[2].images[0].get_array(), render.overlay(image, a), atol=1e-6)
        assert [x.get_title() for x in ax[:3]] == ["image", "fake-class attention", "overlay"]
        assert fig._suptitle.get_text() == "face 1: fake class"
    finally:
        plt.close(fig)


def test_map_comparison_figure_difference_and_overlap(image_and_maps):
    image, a, b = image_and_maps
    fig = map_comparison_figure(image, a, b, ("real (p=0.2)", "fake (p=0.8)"), "compared")
    try:
        ax = fig.axes
        np.testing.assert_allclose(ax[0].images[0].get_array(), render.overlay(image, a), atol=1e-6)
        np.testing.assert_allclose(ax[1].images[0].get_array(), render.overlay(image, b), atol=1e-6)
        diff = ax[2].images[0]
        np.testing.assert_array_equal(diff.get_array(), b - a)
        assert diff.get_clim() == (-1.0, 1.0) and diff.get_cmap().name == "RdBu_r"  # max |b - a| = 1 at a's block
        overlap = ax[3].images[0].get_array()
        assert overlap.sum() == pytest.approx(0.5) and overlap[2, 2] == 0.5  # one shared pixel, min(1, 0.5)
        titles = [x.get_title() for x in ax if x.get_title()]
        assert titles == ["real (p=0.2)", "fake (p=0.8)", "fake - real", "overlap min(real, fake)"]
    finally:
        plt.close(fig)
    fig = map_comparison_figure(image, a, a, ("x", "y"), "same", names=("cat", "dog"))
    try:
        assert fig.axes[2].images[0].get_clim() == (-1.0, 1.0)  # no difference: the bound falls back to 1
        assert fig.axes[2].get_title() == "dog - cat" and fig.axes[3].get_title() == "overlap min(cat, dog)"
    finally:
        plt.close(fig)


def test_map_rows_figure_one_overlay_per_cell(image_and_maps):
    image, a, b = image_and_maps
    fig = map_rows_figure(
        image, [[("real: last", a), ("real: all", b)], [("fake: last", b), ("fake: all", a)]], "modes"
    )
    try:
        assert len(render.panel_axes(fig)) == 4 and fig._suptitle.get_text() == "modes"
        assert [x.get_title() for x in render.panel_axes(fig)] == ["real: last", "real: all", "fake: last", "fake: all"]
        for ax, heat in zip(render.panel_axes(fig), (a, b, b, a)):
            np.testing.assert_allclose(ax.images[0].get_array(), render.overlay(image, heat), atol=1e-6)
    finally:
        plt.close(fig)
