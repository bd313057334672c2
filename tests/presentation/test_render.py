"""Tests for vizkit.render."""

import matplotlib

matplotlib.use("Agg")

import imageio.v2 as imageio  # noqa: E402
import matplotlib.colors as mcolors  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from vizkit import render  # noqa: E402
from vizkit.render import Panel  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _rng_image(h=4, w=6, seed=0):
    return np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)


# ------------------------------------------------------------------ to_numpy_image


def test_to_numpy_image_tensor_single_channel():
    t = torch.tensor([[[0.0, 0.5], [0.25, 1.0]]])  # [1, 2, 2]
    out = render.to_numpy_image(t)
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], [[0.0, 0.5], [0.25, 1.0]])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_to_numpy_image_tensor_chw_and_out_of_range():
    t = torch.zeros(3, 2, 5)
    t[0] = 1.0  # red channel first -> must end up in out[..., 0]
    out = render.to_numpy_image(t)
    assert out.shape == (2, 5, 3)
    assert (out[..., 0] == 1).all() and (out[..., 1:] == 0).all()
    scaled = render.to_numpy_image(torch.tensor([[-2.0, 0.0], [2.0, 6.0]]))
    np.testing.assert_allclose(scaled[..., 1], [[0.0, 0.25], [0.5, 1.0]])


def test_to_numpy_image_uint8_rgba_composites_over_black():
    rgba = np.array([[[255, 0, 0, 255], [0, 255, 0, 0], [200, 100, 50, 128]]], dtype=np.uint8)
    out = render.to_numpy_image(rgba)
    assert out.shape == (1, 3, 3)
    np.testing.assert_allclose(out[0, 0], [1, 0, 0])
    np.testing.assert_allclose(out[0, 1], [0, 0, 0])  # fully transparent -> black
    np.testing.assert_allclose(out[0, 2], np.array([200, 100, 50]) / 255 * 128 / 255, rtol=1e-6)


def test_to_numpy_image_uint16_grey():
    grey = np.array([[0, 65535], [32768, 6553]], dtype=np.uint16)
    out = render.to_numpy_image(grey)
    np.testing.assert_allclose(out[..., 1], grey / 65535.0, rtol=1e-6)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_to_numpy_image_pil_l_and_palette():
    pil = Image.fromarray(np.array([[0, 51], [255, 102]], dtype=np.uint8), mode="L")
    out = render.to_numpy_image(pil)
    np.testing.assert_allclose(out[..., 2], [[0.0, 0.2], [1.0, 0.4]], rtol=1e-6)
    pal = Image.new("RGB", (3, 2), (255, 0, 0)).convert("P")
    np.testing.assert_allclose(render.to_numpy_image(pal)[1, 2], [1, 0, 0])


def test_to_numpy_image_rejects_bad_shape():
    with pytest.raises(ValueError, match="C in"):
        render.to_numpy_image(np.zeros((4, 4, 2)))


# ------------------------------------------------------------------ maps and colours


def test_normalize_map():
    np.testing.assert_allclose(render.normalize_map(np.array([[1.0, 3.0], [2.0, 5.0]])), [[0.0, 0.5], [0.25, 1.0]])
    const = render.normalize_map(np.full((3, 2), 7.0))
    assert const.shape == (3, 2) and (const == 0).all()
    assert render.normalize_map(torch.tensor([2.0, 4.0], requires_grad=True)).tolist() == [0, 1]


def test_colorize_matches_matplotlib_jet_rgb_order():
    out = render.colorize(np.array([[0.0, 1.0]]))
    jet = matplotlib.colormaps["jet"]
    assert out.shape == (1, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], jet(0.0)[:3], atol=1e-6)
    np.testing.assert_allclose(out[0, 1], jet(1.0)[:3], atol=1e-6)
    low, high = out[0, 0], out[0, 1]
    assert low[2] > 0.4 and low[2] > low[0]  # low = blue, stored in channel 2 (RGB)
    assert high[0] > 0.4 and high[0] > high[2]  # high = red, stored in channel 0


def test_colorize_rejects_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        render.colorize(np.zeros((2, 2, 1)))


# ------------------------------------------------------------------ overlay


def test_overlay_alpha_extremes_are_exact():
    img = _rng_image()
    hm = np.random.default_rng(1).random((4, 6))
    np.testing.assert_array_equal(render.overlay(img, hm, alpha=0.0), img)
    expected = render.colorize(render.normalize_map(hm))
    np.testing.assert_array_equal(render.overlay(img, hm, alpha=1.0), expected)
    half = render.overlay(img, hm, alpha=0.5)
    np.testing.assert_allclose(half, 0.5 * img + 0.5 * expected, atol=1e-6)


def test_overlay_resizes_heatmap_to_image():
    img = np.zeros((4, 6, 3), np.float32)
    hm = np.array([[0.0, 0.0], [0.0, 1.0]])  # hot bottom-right corner
    out = render.overlay(img, hm, alpha=1.0)
    assert out.shape == (4, 6, 3) and out.dtype == np.float32
    assert out[-1, -1, 0] > out[-1, -1, 2]  # red bottom-right
    assert out[0, 0, 2] > out[0, 0, 0]  # blue top-left


def test_overlay_validation():
    img = _rng_image()
    for alpha in (-0.1, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            render.overlay(img, np.zeros((4, 6)), alpha=alpha)
    with pytest.raises(ValueError, match="2-D"):
        render.overlay(img, np.zeros((1, 4, 6)))


# ------------------------------------------------------------------ figures


def test_figure_grid_visible_axes_and_validation():
    img, hm = _rng_image(), np.random.default_rng(2).random((2, 3))
    panels = [
        [Panel(img, hm, title="overlay"), Panel(heatmap=hm, kind="heatmap"), None],
        [Panel(image=img, kind="image")],  # short row -> padded with empty cells
    ]
    fig = render.figure_grid(panels, titles=["a", "b"], suptitle="grid")
    assert len(fig.axes) == 6
    assert sum(ax.axison for ax in fig.axes) == 3
    assert sum(len(ax.images) for ax in fig.axes) == 3
    with pytest.raises(ValueError, match="row titles"):
        render.figure_grid(panels, titles=["only one"])
    with pytest.raises(ValueError, match="needs heatmap"):
        Panel(image=img)
    with pytest.raises(ValueError, match="kind"):
        Panel(image=img, heatmap=hm, kind="nope")


def test_show_heatmap_colorbar_and_ticks_off():
    fig, ax = plt.subplots()
    render.show_heatmap(ax, np.eye(3), title="t", colorbar=True)
    assert len(fig.axes) == 2  # colorbar axes added
    assert len(ax.get_xticks()) == 0 and ax.get_title() == "t"


def test_bar_chart_highlight():
    fig, ax = plt.subplots()
    bars = render.bar_chart(ax, ["cat", "dog", "fox"], [0.2, 0.7, 0.1], highlight=1, title="p")
    colours = [mcolors.to_hex(b.get_facecolor()) for b in bars]
    assert colours[1] != colours[0] and colours[0] == colours[2]
    labels = [t.get_text() for t in ax.texts]
    assert "0.700" in labels and len(labels) == 3
    with pytest.raises(ValueError, match="got 1 labels for 2 values"):
        render.bar_chart(ax, ["a"], [0.1, 0.2])
    with pytest.raises(ValueError, match="highlight"):
        render.bar_chart(ax, ["a"], [0.1], highlight=3)


def test_token_colors_and_strip():
    colours = render.token_colors([0.0, 0.5, 1.0])
    assert len(colours) == 3 and all(len(c) == 3 for c in colours)
    assert sum(colours[2]) < sum(colours[0])  # heavier weight -> darker red
    fig, ax = plt.subplots()
    texts = render.render_token_strip(ax, list("abcde"), [1, 2, 3, 4, 5], max_per_line=2)
    assert [t.get_text() for t in texts] == list("abcde")
    assert len({round(t.get_position()[1], 6) for t in texts}) == 3  # wrapped into 3 lines
    assert texts[-1].get_bbox_patch().get_facecolor()[:3] == pytest.approx(colours[2])
    with pytest.raises(ValueError, match="got 1 tokens for 2 weights"):
        render.render_token_strip(ax, ["a"], [1.0, 2.0])


def test_figure_to_array():
    fig, ax = plt.subplots(figsize=(2, 1), dpi=50)
    ax.imshow(np.ones((2, 2, 3)))
    arr = render.figure_to_array(fig)
    assert arr.shape == (50, 100, 3) and arr.dtype == np.uint8


# ------------------------------------------------------------------ files


def test_save_figure_and_image(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    out = render.save_figure(fig, tmp_path / "sub" / "fig.png")
    assert out.is_file() and out.stat().st_size > 0
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in out.parent.iterdir()] == ["fig.png"]

    img = np.zeros((3, 5, 3), np.float32)
    img[..., 0] = 1.0
    path = render.save_image(img, tmp_path / "img" / "red.png")
    back = np.asarray(Image.open(path))
    assert back.shape == (3, 5, 3) and (back[..., 0] == 255).all() and (back[..., 1:] == 0).all()
    u8 = np.random.default_rng(3).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(render.save_image(u8, path))), u8)
    assert [p.name for p in path.parent.iterdir()] == ["red.png"]


def test_write_video_pads_odd_frames(tmp_path):
    frames = [np.full((33, 47, 3), i / 4, np.float32) for i in range(5)]
    path = render.write_video(iter(frames), tmp_path / "v" / "out.mp4", fps=2)
    assert [p.name for p in path.parent.iterdir()] == ["out.mp4"]
    back = imageio.mimread(path, format="FFMPEG")
    assert len(back) == 5
    assert back[0].shape == (34, 48, 3)
    assert abs(float(back[4].mean()) - 255) < 6 and float(back[0].mean()) < 6


def test_write_video_failure_leaves_nothing(tmp_path):
    def broken():
        yield np.zeros((8, 8, 3), np.uint8)
        yield np.zeros((8, 8, 3), np.uint8)
        raise RuntimeError("boom")

    target = tmp_path / "bad.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        render.write_video(broken(), target)
    assert list(tmp_path.iterdir()) == []

    with pytest.raises(ValueError, match="shape"):
        render.write_video([np.zeros((8, 8, 3)), np.zeros((6, 8, 3))], target)
    with pytest.raises(ValueError, match="at least one frame"):
        render.write_video([], target)
    assert list(tmp_path.iterdir()) == []
