"""vizkit.figures.detector_eval: the score histogram's bin counts per true class, and the worst
mistakes' order, titles and maps, by hand."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from vizkit import render  # noqa: E402
from vizkit.figures.detector_eval import score_distribution_figure, worst_mistakes_figure  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _bin_counts(collection, bins: int = 25, most: int = 6) -> list[int]:
    """The step outline's height over each bin centre (counts are whole numbers)."""
    path = collection.get_paths()[0]
    centres = (np.arange(bins) + 0.5) / bins
    return [sum(path.contains_point((x, h - 0.5)) for h in range(1, most)) for x in centres]


def test_score_distribution_counts_per_class():
    preds = pd.DataFrame({"label": [0, 0, 0, 1, 1, 1, 1], "prob": [0.01, 0.03, 0.5, 0.97, 0.99, 0.41, 0.61]})
    ax = score_distribution_figure(preds).axes[0]
    legend = ax.get_legend()
    colour = {
        t.get_text(): mcolors.to_hex(h.get_facecolor()) for t, h in zip(legend.get_texts(), legend.legend_handles)
    }
    counts = {
        name: _bin_counts(c)
        for c in ax.collections
        for name, hx in colour.items()
        if mcolors.to_hex(c.get_facecolor()[0]) == hx
    }
    # bins of 0.04: real 0.01, 0.03 -> bin 0, 0.5 -> bin 12; fake 0.41 -> 10, 0.61 -> 15, 0.97, 0.99 -> 24
    real, fake = [0] * 25, [0] * 25
    real[0], real[12] = 2, 1
    fake[10], fake[15], fake[24] = 1, 1, 2
    assert counts == {"real": real, "fake": fake}
    assert [list(line.get_xdata()) for line in ax.lines] == [[0.5, 0.5]]  # the threshold
    assert ax.get_xlabel() == "fake probability (predicted fake at or above the threshold)"


def _predictions():
    return pd.DataFrame(
        {
            "index": [0, 1, 2, 3, 4, 5],
            "label": [1, 0, 1, 0, 1, 0],
            "prob": [0.2, 0.9, 0.9, 0.6, 0.1, 0.1],
            "pred": [0, 1, 1, 1, 0, 0],
            "correct": [False, False, True, False, False, True],
        }
    )


def test_worst_mistakes_order_titles_and_maps():
    preds = _predictions()
    rng = np.random.default_rng(0)
    images = {i: rng.integers(0, 256, (10, 12, 3), dtype=np.uint8) for i in range(6)}
    layer_maps = {
        "a": {i: rng.random((4, 4)).astype(np.float32) for i in range(6)},
        "b": {i: rng.random((2, 2)).astype(np.float32) for i in range(6)},
    }
    fig = worst_mistakes_figure(preds, layer_maps, images.__getitem__, 16, "gradcam", count=3)
    # wrong: #0 (conf 0.8), #1 (0.9), #3 (0.6), #4 (0.9): by confidence, ties by index, the first 3
    titles = [ax.get_title() for ax in render.panel_axes(fig)[:3]]
    # p(fake) is the fake probability of the predictions table, not the predicted class's probability
    assert titles == ["#1 Real->Fake\np(fake) = 0.90", "#4 Fake->Real\np(fake) = 0.10", "#0 Fake->Real\np(fake) = 0.20"]
    assert fig._suptitle.get_text().startswith("worst mistakes: gradcam at layers combined\n")
    display = render.display_image(images[4], 16)  # 16 px upscaled to 224 for legibility
    assert display.shape == (224, 224, 3)
    heat = render.combined_map([layer_maps["a"][4], layer_maps["b"][4]], 224)
    np.testing.assert_array_equal(render.panel_axes(fig)[1].get_images()[0].get_array(), render.overlay(display, heat))


def test_worst_mistakes_rows_of_four_and_none_without_mistakes():
    preds = _predictions()
    preds = pd.concat([preds, preds.iloc[[0]].assign(index=6, prob=0.45)], ignore_index=True)  # 5 mistakes
    maps = {"a": {i: np.eye(2, dtype=np.float32) for i in range(7)}}
    image = lambda i: np.zeros((4, 4, 3), np.uint8)  # noqa: E731
    fig = worst_mistakes_figure(preds, maps, image, 4, "gradcam++", class_names=("R", "F"))
    titles = [ax.get_title().split("\n")[0] for ax in render.panel_axes(fig)]
    assert titles == ["#1 R->F", "#4 F->R", "#0 F->R", "#3 R->F", "#6 F->R"] + [""] * 3
    assert [ax.axison for ax in render.panel_axes(fig)[5:]] == [False] * 3  # the second row padded with empty cells
    assert len(fig.axes) == len(render.panel_axes(fig)) + 1  # one colorbar shared by the five maps
    assert worst_mistakes_figure(preds.assign(correct=True), maps, image, 4, "gradcam") is None


def test_worst_mistakes_show_the_chosen_layer_with_the_mask_outlined():
    preds = _predictions()
    rng = np.random.default_rng(1)
    layer_maps = {
        "encoder.layers.0.layer_norm1": {i: rng.random((4, 4)).astype(np.float32) for i in range(6)},
        "encoder.layers.3.layer_norm1": {i: rng.random((4, 4)).astype(np.float32) for i in range(6)},
    }
    image = lambda i: np.zeros((224, 224, 3), np.uint8)  # noqa: E731
    masks = {0: np.zeros((224, 224), bool)}
    masks[0][100:120, 50:90] = True
    fig = worst_mistakes_figure(
        preds,
        layer_maps,
        image,
        224,
        "gradcam",
        count=3,
        shown="encoder.layers.3.layer_norm1",
        why="the best pointing game of this run: 93% of the fakes",
        mask=lambda i, s: masks.get(i),
    )
    assert fig._suptitle.get_text().split("\n")[0] == (
        "worst mistakes: gradcam at layer 3 (the best pointing game of this run: 93% of the fakes)"
    )
    heat = layer_maps["encoder.layers.3.layer_norm1"][4]  # the second panel: #4, the chosen layer's own map
    np.testing.assert_array_equal(
        render.panel_axes(fig)[1].get_images()[0].get_array(), render.overlay(np.zeros((224, 224, 3), np.uint8), heat)
    )
    assert [len(ax.collections) for ax in render.panel_axes(fig)[:3]] == [0, 0, 1]  # only #0 has a mask
    with pytest.raises(ValueError, match="shown layer 'nope'"):
        worst_mistakes_figure(preds, layer_maps, image, 224, "gradcam", shown="nope")
