"""vizkit.token_video on a hand-built trace (no model): a tiled image's mosaic is one picture
with dark seams between tiles, its thumbnail its own panel, each cell coloured by its own
position's weight; masked sinks; the contact sheet."""

from __future__ import annotations

import numpy as np
import pytest

from vizkit import token_video
from vizkit.positions import IMAGE, SPECIAL, PositionMap, Trace
from vizkit.token_video import FrameRenderer, contact_sheet, relevance_rgb, write_layer_videos


def _trace() -> Trace:
    """Prompt: text, special, a 4 x 4 mosaic of 2 x 2 tiles (positions 2..17, tile-major order as
    tiled families emit them), a 2 x 2 thumbnail (18..21), text; then 3 answer tokens."""
    prompt_len, total = 24, 27
    pm = PositionMap.empty(prompt_len, prompt_len)
    mosaic = np.zeros((4, 4), np.int64)
    tiles = np.zeros((4, 4), np.int64)
    pos = 2
    for t, (r0, c0) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2)]):  # each tile's 2 x 2 cells, row-major
        for r in range(2):
            for c in range(2):
                mosaic[r0 + r, c0 + c], tiles[r0 + r, c0 + c] = pos, t
                pos += 1
    pm.add_image(mosaic, tiles=tiles, thumbnail=np.arange(18, 22).reshape(2, 2))
    pm.mark_special([1])
    pm = pm.extend(total)
    rows = np.zeros((3, 2, total - 1), np.float32)
    for j in range(3):
        rows[j, :, : prompt_len + j] = 0.01
        rows[j, :, int(mosaic[3, 0])] = 0.5  # bottom-left cell of tile 2: the peak
        rows[j] /= rows[j].sum(-1, keepdims=True)
    pieces = ["USER:", "<m>"] + [""] * 20 + [" what", "?", " red", " star", "."]
    image = np.full((40, 40, 3), 128, np.uint8)
    return Trace(
        np.arange(total),
        prompt_len,
        pieces,
        pm,
        {0: rows},
        " red star.",
        "generate",
        "all",
        [image],
        special=np.zeros(total, bool),
    )


def test_mosaic_seams_thumbnail_panel_and_cell_colours():
    t = _trace()
    assert t.pmap.kind[1] == SPECIAL and (t.pmap.kind == IMAGE).sum() == 20
    r = FrameRenderer(t, 0, "mean", image_height=80, font_size=12)
    assert [(k, view) for k, view, _, _ in r.panels] == [(0, "mosaic"), (0, "thumbnail")]
    frame = r.frame(1)
    _, _, pic, x0 = r.panels[0]
    y0 = r.header_h
    h, w = pic.shape[:2]
    panel = frame[y0 : y0 + h, x0 : x0 + w].astype(int)
    assert np.all(panel[h // 2, :] == 30) and np.all(panel[:, w // 2] == 30)  # the seams between the 2 x 2 tiles
    assert not np.any(np.all(panel[h // 4, :] == 30))  # a row inside a tile: no seam
    cell = lambda rr, cc: panel[int((rr + 0.5) * h / 4), int((cc + 0.5) * w / 4)]  # noqa: E731
    # weight 1: opacity 0.6 of inferno(1) = (252, 255, 164) over grey 128 -> 0.4 * 128 + 0.6 * colour
    np.testing.assert_array_equal(cell(3, 0), [202, 204, 150])  # the peak lands on ITS cell of the stitched mosaic
    low = 0.01 / 0.5  # opacity 0.6 * 0.02: the grey nearly untouched
    expect_low = np.round((1 - 0.6 * low) * 128 + 0.6 * low * relevance_rgb(low).astype(float))
    np.testing.assert_allclose(cell(0, 3), expect_low, atol=1)
    assert np.abs(cell(0, 3) - 128).max() <= 2
    np.testing.assert_array_equal(relevance_rgb([0.0, 1.0]), [[0, 0, 4], [252, 255, 164]])  # inferno's ends
    _, _, pic2, x1 = r.panels[1]  # the thumbnail: its own panel, right of the mosaic
    assert x1 >= x0 + w and pic2.shape == pic.shape


def test_masked_sinks_and_contact_sheet():
    t = _trace()
    sinks = t.sinks(0)
    assert sinks.tolist() == [0, 12]  # position 0 and the peak cell, mosaic (3, 0) (an outlier of received attention)
    masked = t.head_rows(0, "mean", sinks="mask")
    assert np.all(masked[:, sinks] == 0)
    np.testing.assert_allclose(masked[:, : t.prompt_len].sum(1)[0], 1.0, atol=1e-6)
    keep, hide = FrameRenderer(t, 0, sinks="keep").frame(0), FrameRenderer(t, 0, sinks="mask").frame(0)
    assert not np.array_equal(keep, hide)
    r = FrameRenderer(t, 0)
    sheet = contact_sheet(r, count=3, columns=2)
    assert r.small_size >= 11  # the smallest text on the sheet: 11 px, frames at their own size
    assert sheet.shape == (2 * (keep.shape[0] + 4), 2 * (keep.shape[1] + 4), 3) and sheet.dtype == np.uint8
    np.testing.assert_array_equal(sheet[: keep.shape[0], : keep.shape[1]], r.frame(t.frame_tokens[0]))
    with pytest.raises(ValueError, match="below 10 px"):
        contact_sheet(r, scale=0.5)
    with pytest.raises(ValueError, match="sinks='drop'"):
        t.head_rows(0, sinks="drop")


def _two_layer_trace() -> Trace:
    """:func:`_trace` with a second captured layer (3) whose rows peak on the thumbnail's first cell."""
    t = _trace()
    rows = t.rows[0].copy()
    rows[:, :, 2:18] = 0.01
    rows[:, :, 18] = 0.5
    t.rows[3] = rows / rows.sum(-1, keepdims=True)
    return t


def _png(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def test_write_layer_videos_one_video_and_sheet_per_layer(tmp_path):
    import imageio.v2 as imageio

    t = _two_layer_trace()
    written, notes = write_layer_videos(t, [0, 3], "max", tmp_path, sinks="mask", fps=2)
    assert notes == [] and list(written) == [
        "video_layer0",
        "contact_sheet_layer0",
        "video_layer3",
        "contact_sheet_layer3",
    ]
    for i in (0, 3):
        r = FrameRenderer(t, i, "max", sinks="mask")
        assert written[f"video_layer{i}"] == tmp_path / f"combined_attention_visualization_layer{i}.mp4"
        assert written[f"contact_sheet_layer{i}"] == tmp_path / f"contact_sheet_layer{i}.png"
        np.testing.assert_array_equal(_png(written[f"contact_sheet_layer{i}"]), contact_sheet(r))
        frames = imageio.mimread(written[f"video_layer{i}"])
        assert len(frames) == len(t.frame_tokens) and frames[0].shape[:2] == r.frame(t.frame_tokens[0]).shape[:2]
    # the two layers' sheets differ: each is drawn from its own rows
    assert not np.array_equal(_png(written["contact_sheet_layer0"]), _png(written["contact_sheet_layer3"]))


def test_write_layer_videos_without_ffmpeg_writes_png_frames_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(token_video, "ffmpeg_problem", lambda: "no ffmpeg here")
    t = _two_layer_trace()
    written, notes = write_layer_videos(t, [3], "mean", tmp_path)
    folder = tmp_path / "combined_attention_visualization_layer3_frames"
    assert written["video_layer3"] == folder and len(notes) == 1 and notes[0].startswith("no ffmpeg here")
    r = FrameRenderer(t, 3, "mean")
    pngs = sorted(folder.iterdir())
    assert [p.name for p in pngs] == [f"frame_{n:05d}.png" for n in range(len(t.frame_tokens))]
    for p, j in zip(pngs, t.frame_tokens):
        np.testing.assert_array_equal(_png(p), r.frame(j))
