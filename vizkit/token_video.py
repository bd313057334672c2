"""Per-token attention frames of a :class:`vizkit.positions.Trace`, as an mp4 and a contact sheet
(one of each per captured layer: :func:`write_layer_videos`).

Frames are composed with PIL / numpy (no matplotlib per frame): on the left the text so far,
each earlier token's background coloured by the current step's attention through the suite's
relevance colormap (:data:`vizkit.render.RELEVANCE_CMAP`, black = none, pale yellow = the most),
the current token blue; on the right each image with its high-resolution patch mosaic coloured by
the attention over its patches (each cell's opacity proportional to its weight, as
:func:`vizkit.render.overlay` does; tiles already stitched by the family adapter), and -- for
tiled families -- the global thumbnail view as its own panel. A colorbar in the header.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .positions import GENERATED, IMAGE, SPECIAL, TEXT, Trace
from .render import CJK_FONTS, OVERLAY_ALPHA, RELEVANCE_CMAP, save_image, write_video

__all__ = [
    "relevance_rgb",
    "load_font",
    "FrameRenderer",
    "write_token_video",
    "write_layer_videos",
    "ffmpeg_problem",
    "contact_sheet",
    "image_views",
    "image_share",
    "relevance_figure",
    "layer_label",
    "head_label",
    "row_shares",
    "SHARE_LABELS",
]

_CURRENT = (30, 100, 230)  # the current token: blue


@lru_cache(maxsize=1)
def _relevance_lut() -> np.ndarray:
    """``[256, 3]`` uint8: :data:`vizkit.render.RELEVANCE_CMAP` at its 256 levels."""
    import matplotlib

    return (matplotlib.colormaps[RELEVANCE_CMAP](np.arange(256))[:, :3] * 255).round().astype(np.uint8)


def relevance_rgb(w: Any) -> np.ndarray:
    """uint8 RGB ``[..., 3]`` for weights in [0, 1] (clipped) through :data:`vizkit.render.RELEVANCE_CMAP`
    (its 256 levels, as matplotlib quantises it): black (0) -> pale yellow (1)."""
    w = np.clip(np.nan_to_num(np.asarray(w, dtype=np.float64)), 0, 1)
    return _relevance_lut()[np.minimum((w * 256).astype(np.intp), 255)]


def _ink(fill: Sequence[int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads on ``fill`` (RGB 0..255)."""
    return (0, 0, 0) if 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2] >= 128 else (255, 255, 255)


def _has_cjk(text: str) -> bool:
    return any(
        "\u2e80" <= ch <= "\u9fff"
        or "\uac00" <= ch <= "\ud7af"
        or "\uf900" <= ch <= "\ufaff"
        or "\u3040" <= ch <= "\u30ff"
        for ch in text
    )


def load_font(size: int = 14, cjk: bool = False):
    """A TrueType font: a CJK font (the render layer's list) when asked and installed, else
    DejaVu Sans (shipped with matplotlib); PIL's built-in font as a last resort. Missing glyphs
    draw as boxes, never an error."""
    from matplotlib import font_manager
    from PIL import ImageFont

    paths = []
    if cjk:
        installed = {f.name: f.fname for f in font_manager.fontManager.ttflist}
        paths += [installed[n] for n in CJK_FONTS if n in installed]
    paths.append(font_manager.findfont("DejaVu Sans"))
    for p in paths:
        try:
            return ImageFont.truetype(p, size)
        except OSError:
            continue
    return ImageFont.load_default()


def _to_rgb(image: Any) -> Any:
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(a).convert("RGB")


def _overlay(
    picture: np.ndarray, weights: np.ndarray, grid: tuple[int, int], tiles: np.ndarray | None = None
) -> np.ndarray:
    """``picture`` ``[h, w, 3]`` float (0..255) blended with the ``grid`` cells coloured by ``weights``
    (row-major, in [0, 1]) at opacity ``OVERLAY_ALPHA * weight`` (a cell of weight 0 keeps the picture's
    colours), cell borders white; where ``tiles`` (the tile index of each cell, row-major) changes
    between neighbouring cells, a dark line: the seams of a stitched mosaic."""
    import cv2

    gh, gw = grid
    h, w = picture.shape[:2]
    unit = np.clip(np.asarray(weights, np.float32).reshape(gh, gw), 0, 1)
    cells = cv2.resize(relevance_rgb(unit), (w, h), interpolation=cv2.INTER_NEAREST)
    opacity = cv2.resize(OVERLAY_ALPHA * unit, (w, h), interpolation=cv2.INTER_NEAREST)[..., None]
    picture = np.asarray(picture, np.float32)
    blend = picture + opacity * (cells - picture)  # (1 - opacity) * picture + opacity * cells
    if gh <= h // 3 and gw <= w // 3:  # borders only while cells stay visible
        blend[np.linspace(0, h, gh + 1).round().astype(int).clip(0, h - 1), :] = 255
        blend[:, np.linspace(0, w, gw + 1).round().astype(int).clip(0, w - 1)] = 255
    if tiles is not None and len(np.unique(tiles)) > 1:
        t = np.asarray(tiles).reshape(gh, gw)
        ys, xs = np.linspace(0, h, gh + 1).round().astype(int), np.linspace(0, w, gw + 1).round().astype(int)
        for i in np.flatnonzero(np.any(t[1:] != t[:-1], axis=1)) + 1:
            blend[max(0, ys[i] - 1) : ys[i] + 1, :] = 30
        for j in np.flatnonzero(np.any(t[:, 1:] != t[:, :-1], axis=0)) + 1:
            blend[:, max(0, xs[j] - 1) : xs[j] + 1] = 30
    return blend.round().clip(0, 255).astype(np.uint8)


_SCALE_TOP = "max of text / of image"
"""The top label of the frames' colour scale: text and image are each scaled to their own largest weight."""


class FrameRenderer:
    """The frames of one trace for one ``layer``, ``head`` (``mean`` / ``max`` / index) and
    ``sinks`` choice (``keep``, or ``mask``: the layer's sink positions removed and each row
    renormalised, :meth:`Trace.head_rows`).

    ``frame(j)`` (``j`` an answer-token index) is a uint8 ``[H, W, 3]`` image. Text tokens are
    scaled by the largest weight among the shown text tokens; image cells by the largest weight
    over every image position (mosaics and thumbnails), so panels compare.
    """

    def __init__(
        self,
        trace: Trace,
        layer: int,
        head: Any = "mean",
        sinks: str = "keep",
        text_width: int = 520,
        image_height: int = 300,
        font_size: int = 14,
    ):
        self.trace, self.layer, self.head, self.sinks = trace, layer, head, sinks
        self.rows = trace.head_rows(layer, head, sinks=sinks)
        self.font = load_font(font_size, cjk=_has_cjk("".join(trace.pieces)))
        self.small_size = max(11, font_size - 3)
        self.small = load_font(self.small_size)
        self.text_w, self.line_h = text_width, font_size + 8
        self.header_h = 2 * self.line_h + 6
        pm = trace.pmap
        # panels: (image index, "mosaic" | "thumbnail", picture, x offset)
        self.panels: list[tuple[int, str, np.ndarray, int]] = []
        x = text_width + 16
        for k in range(pm.num_images):
            im = _to_rgb(trace.images[k]) if k < len(trace.images) else _to_rgb(np.full((64, 64, 3), 128, np.uint8))
            w = max(32, round(im.width * image_height / im.height))
            pic = np.asarray(im.resize((w, image_height)), dtype=np.float32)
            views = ["mosaic"] + (["thumbnail"] if pm.thumbnail_grids[k] is not None else [])
            for view in views:
                self.panels.append((k, view, pic, x))
                x += w + 12
        self.width = max(x, text_width + 40)
        self.height = max(self.header_h + image_height + 2 * self.line_h + 8, 420)
        self._layout()
        self.scale_image = self._scale_image()

    def _layout(self) -> None:
        """Where each shown item goes: (position, text, x, y, width, is_chip)."""
        t, pm = self.trace, self.trace.pmap
        items: list[tuple[int, str, bool]] = []
        for p in range(len(t.input_ids)):
            if pm.kind[p] == IMAGE:
                first = pm.image_positions[pm.image[p]]
                if len(first) and p == int(first.min()):
                    items.append((p, f"[image {int(pm.image[p])}]", True))
                continue
            if p < t.prompt_len and (t.special[p] or pm.kind[p] == SPECIAL):
                continue
            items.append((p, t.pieces[p], False))
        x, y, left, right = 8, 0, 8, self.text_w - 8
        self.items = []
        for p, text, chip in items:
            parts = text.split("\n")
            for n, part in enumerate(parts):
                if n > 0:
                    x, y = left, y + self.line_h
                if not part and not (chip or len(parts) == 1):
                    continue
                shown = part if part.strip() or not part else part.replace(" ", "\u00a0")
                w = max(4, int(math.ceil(self.font.getlength(shown))))
                if x + w > right and x > left:
                    x, y = left, y + self.line_h
                self.items.append((p, shown, x, y, w, chip))
                x += w

    def title(self, j: int) -> str:
        """The first line of frame ``j``: layer, head view (:func:`layer_label`, :func:`head_label`), sinks, token."""
        t = self.trace
        masked = " | sinks masked" if self.sinks == "mask" else ""
        piece = t.pieces[t.prompt_len + j]
        token = f"token {j} of {t.num_answer_tokens}: {piece!r}"  # 0-based, as the explorer's slider
        return f"{layer_label(self.layer)} | {head_label(self.head)}{masked} | {token}"

    def frame(self, j: int) -> np.ndarray:
        from PIL import Image, ImageDraw

        t, pm = self.trace, self.trace.pmap
        p = t.prompt_len + j  # the produced token's position; its row covers positions < p
        row = self.rows[j]
        canvas = Image.new("RGB", (self.width, self.height), (255, 255, 255))
        d = ImageDraw.Draw(canvas)
        d.text((8, 4), self.title(j), fill=(0, 0, 0), font=self.font)
        shares = row_shares(t, row, j)
        d.text(
            (8, 4 + self.line_h),
            "attention share: " + " | ".join(f"{name} {v:.2f}" for name, v in shares.items()),
            fill=(60, 60, 60),
            font=self.small,
        )
        canvas.paste(self.scale_image, (self.width - self.scale_image.width - 8, 4 + self.line_h))
        shown = [it for it in self.items if it[0] <= p]
        text_pos = np.array([it[0] for it in shown if it[0] < p and not it[5]], dtype=np.int64)
        cur_y = shown[-1][3] if shown else 0
        top = max(0, cur_y + self.line_h - (self.height - self.header_h - 4))
        scale = float(row[text_pos].max()) if len(text_pos) else 1.0
        for pos, text, x, y, w, chip in shown:
            yy = self.header_h + y - top
            if yy < self.header_h - 2:
                continue
            if pos == p:
                fill, ink = _CURRENT, (255, 255, 255)
            elif chip:
                fill, ink = (200, 200, 200), (0, 0, 0)
            else:
                fill = tuple(int(v) for v in relevance_rgb(row[pos] / scale if scale > 0 else 0.0))
                ink = _ink(fill)
            d.rectangle((x, yy, x + w, yy + self.line_h - 2), fill=fill)
            d.text((x, yy + 2), text, fill=ink, font=self.font)
        out = np.asarray(canvas).copy()
        weights = {}
        for k, view, _, _ in self.panels:
            pos = pm.image_positions[k] if view == "mosaic" else pm.thumbnail_positions[k]
            weights[k, view] = row[pos] if len(pos) and pos.max() < p else np.zeros(len(pos))
        peak = max((float(w.max()) for w in weights.values() if len(w)), default=0.0) or 1.0
        y0 = self.header_h
        for k, view, pic, x0 in self.panels:
            grid = pm.grids[k] if view == "mosaic" else pm.thumbnail_grids[k]
            h, w = pic.shape[:2]
            tiles = pm.tile[pm.image_positions[k]] if view == "mosaic" else None
            out[y0 : y0 + h, x0 : x0 + w] = _overlay(pic, weights[k, view] / peak, grid, tiles)
        canvas = Image.fromarray(out)
        d = ImageDraw.Draw(canvas)
        row_total = float(np.asarray(row[:p], np.float64).sum()) or 1.0  # shares, as row_shares (max over heads too)
        for k, view, pic, x0 in self.panels:
            grid = pm.grids[k] if view == "mosaic" else pm.thumbnail_grids[k]
            what = f"image {k}" if view == "mosaic" else f"image {k}, global view"
            d.text(
                (x0, y0 + pic.shape[0] + 4),
                f"{what} ({grid[0]}x{grid[1]}): share {float(weights[k, view].sum()) / row_total:.2f}",
                fill=(0, 0, 0),
                font=self.small,
            )
        return np.asarray(canvas)

    def _scale_image(self, width: int = 120) -> Any:
        """The colour scale drawn at each header's right: "0", the gradient, "max of text / of image" (text
        tokens scaled by the largest shown text weight, image cells by the largest image weight, as the label
        says: a text coloured bright can still hold a share near 0); rendered once."""
        from PIL import Image, ImageDraw

        zero, top = int(self.small.getlength("0")), int(self.small.getlength(_SCALE_TOP))
        image = Image.new("RGB", (zero + width + top + 12, self.line_h), (255, 255, 255))
        d = ImageDraw.Draw(image)
        d.text((0, 0), "0", fill=(0, 0, 0), font=self.small)
        image.paste(
            Image.fromarray(np.repeat(relevance_rgb(np.linspace(0, 1, width))[None], 12, axis=0)), (zero + 6, 2)
        )
        d.text((zero + width + 12, 0), _SCALE_TOP, fill=(0, 0, 0), font=self.small)
        return image

    def frames(self) -> Iterator[np.ndarray]:
        for j in self.trace.frame_tokens:
            yield self.frame(j)


def ffmpeg_problem() -> str | None:
    """Why an mp4 cannot be written (None when imageio-ffmpeg finds an ffmpeg binary)."""
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as err:
        return f"imageio-ffmpeg found no ffmpeg ({err})"
    return None if exe and Path(exe).exists() else f"the ffmpeg binary {exe!r} does not exist"


def write_token_video(renderer: FrameRenderer, path: str | Path, fps: int = 4) -> tuple[Path, str | None]:
    """The renderer's frames as an mp4 at ``path`` (atomically, :func:`vizkit.render.write_video`);
    without ffmpeg, PNG frames in ``<stem>_frames/``. Returns ``(what was written, why not an mp4)``."""
    path = Path(path)
    problem = ffmpeg_problem()
    if problem is None:
        return write_video(renderer.frames(), path, fps=fps), None
    folder = path.with_name(path.stem + "_frames")
    folder.mkdir(parents=True, exist_ok=True)
    for n, frame in enumerate(renderer.frames()):
        save_image(frame, folder / f"frame_{n:05d}.png")
    return folder, f"{problem}: wrote the frames as PNGs into {folder} instead of {path.name}"


def contact_sheet(renderer: FrameRenderer, count: int = 8, columns: int = 2, scale: float = 1.0) -> np.ndarray:
    """``count`` evenly spaced frames tiled ``columns`` wide, each scaled by ``scale``: ``[H, W, 3]`` uint8.

    The smallest text must stay readable: ``scale`` times the renderer's small font size must be at
    least 10 px (at the default 1.0 the frames keep their own size)."""
    import cv2

    if renderer.small_size * scale < 10:
        raise ValueError(
            f"scale {scale} shrinks the {renderer.small_size}-px text below 10 px; use at least "
            f"{10 / renderer.small_size:.2f}"
        )
    tokens = list(renderer.trace.frame_tokens)
    pick = sorted({tokens[int(round(i))] for i in np.linspace(0, len(tokens) - 1, min(count, len(tokens)))})
    thumbs = [cv2.resize(renderer.frame(j), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for j in pick]
    h, w = thumbs[0].shape[:2]
    rows = -(-len(thumbs) // columns)
    sheet = np.full((rows * (h + 4), min(columns, len(thumbs)) * (w + 4), 3), 255, np.uint8)
    for n, th in enumerate(thumbs):
        r, c = divmod(n, columns)
        sheet[r * (h + 4) : r * (h + 4) + h, c * (w + 4) : c * (w + 4) + w] = th
    return sheet


def write_layer_videos(
    trace: Trace, layers: Sequence[int], head: Any, folder: str | Path, *, sinks: str = "keep", fps: int = 4
) -> tuple[dict[str, Path], list[str]]:
    """Per layer ``i`` of ``layers`` (its rows' ``head``: ``"mean"``, ``"max"`` or an index; a dict
    ``{layer: head}`` gives each layer its own), into
    ``folder``: the video ``combined_attention_visualization_layer{i}.mp4`` (:func:`write_token_video`)
    and ``contact_sheet_layer{i}.png`` (:func:`contact_sheet`). Returns ``({"video_layer{i}": path,
    "contact_sheet_layer{i}": path, ...}, notes)``: why a layer's video is PNG frames, one note each."""
    folder = Path(folder)
    written: dict[str, Path] = {}
    notes: list[str] = []
    for i in layers:
        r = FrameRenderer(trace, i, head[i] if isinstance(head, dict) else head, sinks=sinks)
        video, why = write_token_video(r, folder / f"combined_attention_visualization_layer{i}.mp4", fps=fps)
        written[f"video_layer{i}"] = video
        if why:
            notes.append(why)
        written[f"contact_sheet_layer{i}"] = save_image(contact_sheet(r), folder / f"contact_sheet_layer{i}.png")
    return written, notes


def image_views(trace: Trace, values: np.ndarray) -> list[tuple[int, str, np.ndarray]]:
    """``values`` ``[K]`` (one per position) on every image view: ``(image, "mosaic" |
    "thumbnail", [rows, cols])`` in image order, the thumbnail after its mosaic."""
    pm = trace.pmap
    out = []
    for k in range(pm.num_images):
        out.append((k, "mosaic", pm.image_grid(values, k)))
        if pm.thumbnail_grids[k] is not None:
            out.append((k, "thumbnail", pm.image_grid(values, k, thumbnail=True)))
    return out


def image_share(trace: Trace, values: np.ndarray) -> float:
    """The share of ``values`` ``[K]`` on image positions, among positions ``0 .. K - 2`` (the
    query's own entry, last, left out: relevance starts from the identity there)."""
    v = np.asarray(values, np.float64)[:-1]
    total = v.sum()
    return float(v[trace.pmap.kind[: len(v)] == IMAGE].sum() / total) if total > 0 else 0.0


def relevance_figure(
    trace: Trace,
    attention: np.ndarray,
    relevance: np.ndarray,
    token: int,
    attention_title: str = "attention",
    relevance_title: str = "relevance",
):
    """A figure, one row per image view: the image, ``attention`` ``[K]`` and ``relevance``
    ``[K]`` on its patch cells (nearest upsampling, each panel min-max scaled; the column
    titles give each map's share on image positions, :func:`image_share`), for answer token
    ``token``."""
    import cv2

    from .render import Panel, figure_grid

    piece = trace.pieces[trace.prompt_len + token].strip() or repr(trace.pieces[trace.prompt_len + token])
    rows, labels = [], []
    att_views, rel_views = image_views(trace, attention), image_views(trace, relevance)
    for (k, view, a), (_, _, r) in zip(att_views, rel_views):
        im = _to_rgb(trace.images[k]) if k < len(trace.images) else _to_rgb(np.full((64, 64, 3), 128, np.uint8))
        pic = np.asarray(im, np.float32) / 255.0
        size = (pic.shape[1], pic.shape[0])

        def up(g: np.ndarray, size: tuple[int, int] = size) -> np.ndarray:
            return cv2.resize(g.astype(np.float32), size, interpolation=cv2.INTER_NEAREST)

        rows.append(
            [
                Panel(image=pic, kind="image", title=f"image {k}" + (" (global view)" if view == "thumbnail" else "")),
                Panel(
                    image=pic,
                    heatmap=up(a),
                    title=f"{attention_title}\n{image_share(trace, attention):.0%} on image positions",
                ),
                Panel(
                    image=pic,
                    heatmap=up(r),
                    title=f"{relevance_title}\n{image_share(trace, relevance):.0%} on image positions",
                ),
            ]
        )
        labels.append("")
    return figure_grid(rows, suptitle=f"answer token {token}: {piece!r}")


def layer_label(layer: int) -> str:
    """How a decoder layer is named on frames, in the explorer and in tables: ``"layer k"``, ``k`` the
    0-based index of the model's decoder layers (as ``model.layers[k]``)."""
    return f"layer {int(layer)}"


def head_label(head: Any) -> str:
    """How a head view is named on frames and in the explorer: ``"head h"`` (0-based) for one head,
    ``"mean over heads"`` / ``"max over heads"`` for the fused rows."""
    if isinstance(head, str):
        if head in ("mean", "max"):
            return f"{head} over heads"
        raise ValueError(f"head {head!r}: use mean, max or a head index")
    return f"head {int(head)}"


#: the position kinds :func:`row_shares` reports, in order, with the word used for them everywhere
SHARE_LABELS: tuple[tuple[str, int], ...] = (
    ("image", IMAGE),
    ("prompt", TEXT),
    ("special", SPECIAL),
    ("answer", GENERATED),
)


def row_shares(trace: Trace, row: np.ndarray, j: int) -> dict[str, float]:
    """The attention mass of answer token ``j``'s row ``row`` ``[K]`` on each kind of earlier position
    (:data:`SHARE_LABELS`: image patches, prompt text, special markers, earlier answer tokens), as shares:
    the row over the positions it covers (``< prompt_len + j``) is renormalised to sum to 1 first, so a
    row fused by ``max`` over heads (which sums to more than 1) gives shares too; a softmax row of one head
    or the mean of heads already sums to 1 and is unchanged. The shares sum to 1 (0 for an all-zero row)."""
    p = trace.prompt_len + j
    r, kinds = np.asarray(row[:p], np.float64), trace.pmap.kind[:p]
    total = r.sum()
    if total <= 0:
        return {name: 0.0 for name, _ in SHARE_LABELS}
    return {name: float(r[kinds == kind].sum() / total) for name, kind in SHARE_LABELS}
