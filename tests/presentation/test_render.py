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


def test_colour_scheme_constants():
    assert render.RELEVANCE_CMAP == "inferno" and render.SIGNED_CMAP == "RdBu_r"


def test_colorize_is_inferno_in_rgb_order():
    out = render.colorize(np.array([[0.0, 1.0]]))
    assert out.shape == (1, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], [0.001462, 0.000466, 0.013866], atol=1e-6)  # inferno(0): near black
    np.testing.assert_allclose(out[0, 1], [0.988362, 0.998364, 0.644924], atol=1e-6)  # inferno(1): pale yellow
    np.testing.assert_allclose(render.colorize(np.array([[0.5]]), cmap="viridis")[0, 0], [0.127568, 0.566949, 0.550556])


def test_colorize_rejects_non_2d():
    with pytest.raises(ValueError, match="2-D"):
        render.colorize(np.zeros((2, 2, 1)))


# ------------------------------------------------------------------ overlay


def test_overlay_opacity_is_alpha_times_value_by_hand():
    # pixel = (1 - alpha * v) * image + alpha * v * inferno(v); map [0, 0.5, 1] is already on [0, 1]
    img = np.array([[[0.2, 0.4, 0.6]] * 3], np.float32)
    out = render.overlay(img, np.array([[0.0, 0.5, 1.0]]), alpha=0.6)
    np.testing.assert_allclose(out[0, 0], [0.2, 0.4, 0.6], atol=1e-7)  # v = 0: the image's true colour
    # v = 0.5: opacity 0.3, inferno(0.5) = (0.735683, 0.215906, 0.330245)
    np.testing.assert_allclose(out[0, 1], [0.3607049, 0.3447718, 0.5190735], atol=1e-6)
    # v = 1: opacity 0.6, inferno(1) = (0.988362, 0.998364, 0.644924)
    np.testing.assert_allclose(out[0, 2], [0.6730172, 0.7590184, 0.6269544], atol=1e-6)
    # the default maximum opacity is 0.6; raw scores are min-max normalised first (10, 15, 20 -> 0, 0.5, 1)
    np.testing.assert_allclose(render.overlay(img, np.array([[10.0, 15.0, 20.0]])), out, atol=1e-6)


def test_overlay_keeps_colours_where_the_map_is_low():
    # a blue star and a red square on grey: with the map hot elsewhere, their pixels stay exact
    img = np.full((4, 4, 3), 0.5, np.float32)
    img[0, 0], img[3, 3] = (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)
    hm = np.zeros((4, 4))
    hm[1:3, 1:3] = 1.0
    out = render.overlay(img, hm, alpha=1.0)
    np.testing.assert_array_equal(out[0, 0], [0, 0, 1])
    np.testing.assert_array_equal(out[3, 3], [1, 0, 0])
    np.testing.assert_allclose(out[1, 1], [0.988362, 0.998364, 0.644924], atol=1e-6)  # alpha 1, v 1: the colour
    np.testing.assert_array_equal(render.overlay(img, hm, alpha=0.0), img)


def test_overlay_shared_scale():
    img = np.zeros((1, 3, 3), np.float32)
    out = render.overlay(img, np.array([[0.0, 1.0, 4.0]]), alpha=1.0, vmin=0.0, vmax=2.0)  # 0, 0.5, 1 (clipped)
    np.testing.assert_allclose(out[0, 1], 0.5 * np.array([0.735683, 0.215906, 0.330245]), atol=1e-6)
    np.testing.assert_allclose(out[0, 2], [0.988362, 0.998364, 0.644924], atol=1e-6)
    with pytest.raises(ValueError, match="vmin < vmax"):
        render.overlay(img, np.zeros((1, 3)), vmin=1.0, vmax=1.0)


def test_overlay_resizes_heatmap_to_image():
    img = np.zeros((4, 6, 3), np.float32)
    hm = np.array([[0.0, 0.0], [0.0, 1.0]])  # hot bottom-right corner
    out = render.overlay(img, hm, alpha=1.0)
    assert out.shape == (4, 6, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[-1, -1], [0.988362, 0.998364, 0.644924], atol=1e-6)  # bilinear, edge = 1
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])  # v = 0: the black image unchanged


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
    cells = render.panel_axes(fig)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(cells) == 6 and len(bars) == 2  # one shared by the overlays, the heatmap's own
    assert sum(ax.axison for ax in cells) == 3
    assert sum(len(ax.images) for ax in cells) == 3
    assert bars[0].get_ylabel() == "raw value"  # the heatmap's own, at its right
    assert bars[1].get_xlabel() == "normalised per panel to [0, 1]"  # the overlays', below the grid
    assert len(render.figure_grid(panels, colorbar=False).axes) == 6
    with pytest.raises(ValueError, match="row titles"):
        render.figure_grid(panels, titles=["only one"])
    with pytest.raises(ValueError, match="needs heatmap"):
        Panel(image=img)
    with pytest.raises(ValueError, match="kind"):
        Panel(image=img, heatmap=hm, kind="nope")


def test_figure_grid_suptitle_clears_the_panel_titles():
    img, hm = _rng_image(8, 8), np.random.default_rng(6).random((2, 2))
    row = [Panel(img, hm, title=f"layer {i}\np = 0.3") for i in range(5)]
    fig = render.figure_grid([row, row[:1]], titles=["a", "b"], suptitle="worst mistakes")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    top = max(ax.title.get_window_extent(renderer).y1 for ax in render.panel_axes(fig) if ax.get_title())
    assert fig.get_suptitle() == "worst mistakes" and fig._suptitle.get_window_extent(renderer).y0 - top >= 8


def test_show_heatmap_colorbar_and_ticks_off():
    fig, ax = plt.subplots()
    im = render.show_heatmap(ax, np.eye(3), title="t")
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "raw value"  # colorbar by default
    assert im.get_cmap().name == "inferno" and im.get_clim() == (0.0, 1.0)
    assert len(ax.get_xticks()) == 0 and ax.get_title() == "t"
    fig, ax = plt.subplots()
    render.show_heatmap(ax, np.eye(3), colorbar=False)
    assert len(fig.axes) == 1


def test_show_overlay_colorbar_states_the_normalisation():
    fig, ax = plt.subplots()
    render.show_overlay(ax, _rng_image(), np.random.default_rng(4).random((2, 3)), title="o")
    assert len(fig.axes) == 2
    bar = fig.axes[1]
    assert bar.get_ylabel() == "normalised per panel to [0, 1]" and bar.get_ylim() == (0.0, 1.0)
    fig, ax = plt.subplots()
    render.show_overlay(ax, _rng_image(), np.ones((2, 3)), vmin=0.0, vmax=5.0)
    assert fig.axes[1].get_ylabel() == "value, shared scale 0 .. 5" and fig.axes[1].get_ylim() == (0.0, 5.0)


def test_show_signed_is_centred_at_zero():
    fig, ax = plt.subplots()
    diff = np.array([[-0.5, 0.0], [0.25, 2.0]])
    im = render.show_signed(ax, diff, title="fake - real")
    assert im.get_cmap().name == "RdBu_r" and im.get_clim() == (-2.0, 2.0)  # symmetric: max |diff| = 2
    rgba = im.to_rgba(np.array([[0.0]]))[0, 0]
    np.testing.assert_allclose(rgba, matplotlib.colormaps["RdBu_r"](0.5), atol=1e-6)  # 0 -> the centre colour
    assert fig.axes[1].get_ylabel() == "difference (white = 0)"
    fig, ax = plt.subplots()
    assert render.show_signed(ax, np.zeros((2, 2))).get_clim() == (-1.0, 1.0)  # all zero: bound 1


def test_draw_outline_contour_at_the_mask_boundary():
    fig, ax = plt.subplots()
    mask = np.zeros((8, 8))
    mask[2:5, 3:6] = 1  # rows 2..4, columns 3..5
    render.show_overlay(ax, _rng_image(8, 8), np.random.default_rng(5).random((8, 8)), mask=mask)
    (contours,) = ax.collections
    vertices = np.concatenate([p.vertices for p in contours.get_paths()])
    # the 0.5 level runs half-way between inside and outside pixel centres
    np.testing.assert_allclose(vertices.min(0), [2.5, 1.5])
    np.testing.assert_allclose(vertices.max(0), [5.5, 4.5])
    assert mcolors.to_hex(contours.get_edgecolor()[0]) == "#00ffff"
    assert ax.get_xlim() == (-0.5, 7.5)  # the image's extent is kept
    # a 4 x 4 mask over a 16 x 16 image: stretched by 4; touching the border it is closed at -0.5
    fig, ax = plt.subplots()
    small = np.zeros((4, 4))
    small[0:2, 0:1] = 1
    ax.imshow(np.zeros((16, 16, 3)))
    vertices = render.draw_outline(ax, small, shape=(16, 16)).get_paths()[0].vertices
    np.testing.assert_allclose(vertices.min(0), [-0.5, -0.5])
    np.testing.assert_allclose(vertices.max(0), [3.5, 7.5])


def test_outline_panels_stretches_the_mask_over_every_image_panel_and_skips_no_mask():
    fig, (a, b, c) = plt.subplots(1, 3)
    a.imshow(np.zeros((8, 8)))
    b.imshow(np.zeros((16, 16, 3)))  # c has no image: no outline
    mask = np.zeros((4, 4))
    mask[1:3, 1:3] = 1
    assert render.outline_panels(fig, mask) is fig
    (va,), (vb,) = ([p.vertices for p in ax.collections[0].get_paths()] for ax in (a, b))
    np.testing.assert_allclose([va.min(0), va.max(0)], [[1.5, 1.5], [5.5, 5.5]])  # 2 px a mask pixel
    np.testing.assert_allclose([vb.min(0), vb.max(0)], [[3.5, 3.5], [11.5, 11.5]])  # 4 px a mask pixel
    assert not c.collections
    fig2, ax2 = plt.subplots()
    ax2.imshow(np.zeros((8, 8)))
    render.outline_panels(fig2, None)
    render.outline_panels(fig2, np.zeros((4, 4)))
    assert not ax2.collections
    plt.close("all")


def test_shared_colorbar_one_bar_for_panels_drawn_without_their_own():
    fig, axes = plt.subplots(1, 3, layout="constrained")
    for ax in axes:
        render.Panel(image=_rng_image(4, 4), heatmap=np.eye(4), title="t").draw(ax, colorbar=False)
    bar = render.shared_colorbar(axes)
    assert len(fig.axes) == 4 and render.panel_axes(fig) == list(axes)
    assert bar.ax.get_xlabel() == "normalised per panel to [0, 1]" and bar.mappable.get_clim() == (0.0, 1.0)
    assert bar.mappable.get_cmap().name == render.RELEVANCE_CMAP
    fig, axes = plt.subplots(1, 2)
    bar = render.shared_colorbar(axes, "viridis", -2.0, 3.0, location="right")
    assert bar.mappable.get_clim() == (-2.0, 3.0) and bar.ax.get_ylabel() == "value, shared scale -2 .. 3"
    plt.close("all")


def test_outline_pixels():
    mask = np.zeros((5, 5))
    mask[1:4, 1:4] = 1
    ring = render.outline_pixels(mask)
    assert ring.sum() == 8 and not ring[2, 2] and ring[1, 1]
    assert render.outline_pixels(mask, (10, 10)).sum() == 6 * 4 - 4  # a 6 x 6 square's border


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
    assert colours[2] == pytest.approx((0.988362, 0.998364, 0.644924))  # heaviest -> inferno's pale yellow
    assert colours[0] == pytest.approx((0.001462, 0.000466, 0.013866))
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


def test_save_overlay_upsamples_small_images(tmp_path):
    img = np.zeros((64, 96, 3), np.float32)
    img[..., 2] = 1.0  # blue
    hm = np.zeros((8, 12))
    hm[0, 0] = 1.0
    mask = np.zeros((64, 96))
    mask[32:, 48:] = 1
    path = render.save_overlay(img, hm, tmp_path / "o" / "overlay.png", mask=mask)
    back = np.asarray(Image.open(path))
    assert back.shape == (224, 336, 3)  # short side 64 -> 224, aspect kept
    np.testing.assert_array_equal(back[200, 20], [0, 0, 255])  # map 0 there: the image's blue, untouched
    np.testing.assert_array_equal(back[112, 200], [0, 255, 255])  # the mask's top edge (row 112) in cyan
    np.testing.assert_array_equal(back[150, 250], [0, 0, 255])  # inside the mask: not recoloured
    assert [p.name for p in path.parent.iterdir()] == ["overlay.png"]
    big = np.asarray(Image.open(render.save_overlay(np.zeros((300, 240, 3)), hm, tmp_path / "big.png")))
    assert big.shape == (300, 240, 3)  # large enough: saved at its own size


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
