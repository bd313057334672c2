"""What each position of a multimodal token sequence is, and one traced answer's captured rows.

Pure data (numpy), no model library: the VLM family adapters (:mod:`vizkit.models.vlm`) build a
:class:`PositionMap`; generate-time capture fills a :class:`Trace`; rendering and reports read
both. :meth:`Trace.save` writes the documented ``attention.npz`` (docs/howto/vlm-video.md).

Kinds (``PositionMap.kind``): ``TEXT`` 0, ``IMAGE`` 1, ``GENERATED`` 2, ``SPECIAL`` 3.
Views (``PositionMap.view``): ``MOSAIC`` 0 -- the high-resolution patches of an image, tiles
stitched into one ``grids[k] = (rows, cols)`` mosaic; ``THUMBNAIL`` 1 -- a global / base view of a
tiled image (LLaVA-NeXT's base image, InternVL's and Idefics3's thumbnail), on its own
``thumbnail_grids[k]``; -1 for non-image positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TEXT",
    "IMAGE",
    "GENERATED",
    "SPECIAL",
    "KIND_NAMES",
    "MOSAIC",
    "THUMBNAIL",
    "PositionMap",
    "Trace",
    "SINK_MODES",
]

#: what a position of a multimodal sequence is (``PositionMap.kind``, ``attention.npz``'s ``kind``):
#: prompt text, an image patch, a generated token, a special position (markers, separators, CLS)
TEXT, IMAGE, GENERATED, SPECIAL = 0, 1, 2, 3
#: the names of those kinds, indexed by kind
KIND_NAMES = ("text", "image", "generated", "special")
#: which view of an image a patch belongs to: the high-resolution mosaic (tiles stitched) or a tiled
#: family's global thumbnail
MOSAIC, THUMBNAIL = 0, 1


@dataclass
class PositionMap:
    """What each position ``t`` of a sequence is (all arrays ``[T]``).

    - ``kind[t]``: ``TEXT`` / ``IMAGE`` / ``GENERATED`` / ``SPECIAL``;
    - ``image[t]``: the image index (-1 if not an image patch);
    - ``tile[t]``: the tile / crop index inside that image's mosaic (0 for untiled images, -1
      for the thumbnail view and non-image positions);
    - ``view[t]``: ``MOSAIC`` / ``THUMBNAIL`` (-1 if not an image patch);
    - ``row[t]``, ``col[t]``: the patch's cell in the mosaic (or in the thumbnail grid);
    - ``grids[k] = (rows, cols)``: image ``k``'s mosaic; ``image_positions[k]`` its positions in
      row-major mosaic order (``len == rows * cols``);
    - ``thumbnail_grids[k]`` / ``thumbnail_positions[k]``: the same for its thumbnail view
      (``None`` / empty when the family has none);
    - ``prompt_len``: positions ``>= prompt_len`` are generated.
    """

    kind: np.ndarray
    image: np.ndarray
    tile: np.ndarray
    view: np.ndarray
    row: np.ndarray
    col: np.ndarray
    grids: list[tuple[int, int]]
    image_positions: list[np.ndarray]
    prompt_len: int
    thumbnail_grids: list[tuple[int, int] | None] = field(default_factory=list)
    thumbnail_positions: list[np.ndarray] = field(default_factory=list)

    @classmethod
    def empty(cls, n: int, prompt_len: int) -> "PositionMap":
        """A map of ``n`` positions, all text before ``prompt_len`` and generated after, no image yet."""
        kind = np.where(np.arange(n) < prompt_len, TEXT, GENERATED).astype(np.int8)
        minus = lambda: np.full(n, -1, np.int32)  # noqa: E731
        return cls(kind, minus(), minus(), np.full(n, -1, np.int8), minus(), minus(), [], [], int(prompt_len))

    def __len__(self) -> int:
        return len(self.kind)

    @property
    def num_images(self) -> int:
        return len(self.grids)

    def label(self, t: int) -> str:
        k = int(self.kind[t])
        if k == IMAGE:
            where = (
                "thumbnail "
                if self.view[t] == THUMBNAIL
                else (f"tile {int(self.tile[t])} " if self.tile[t] > 0 else "")
            )
            return f"image {int(self.image[t])} {where}({int(self.row[t])}, {int(self.col[t])})"
        return KIND_NAMES[k]

    def add_image(
        self, mosaic: np.ndarray, tiles: np.ndarray | None = None, thumbnail: np.ndarray | None = None
    ) -> int:
        """Add an image: ``mosaic`` ``[rows, cols]`` of positions (row-major cells), ``tiles`` the
        tile index of each cell (default 0), ``thumbnail`` ``[r, c]`` of its thumbnail view's
        positions. Returns the image index."""
        k = len(self.grids)
        mosaic = np.asarray(mosaic, np.int64)
        rows, cols = mosaic.shape
        flat = mosaic.reshape(-1)
        self.kind[flat] = IMAGE
        self.image[flat] = k
        self.view[flat] = MOSAIC
        self.tile[flat] = 0 if tiles is None else np.asarray(tiles).reshape(-1)
        self.row[flat] = np.repeat(np.arange(rows), cols)
        self.col[flat] = np.tile(np.arange(cols), rows)
        self.grids.append((int(rows), int(cols)))
        self.image_positions.append(flat)
        if thumbnail is not None:
            th = np.asarray(thumbnail, np.int64)
            tr, tc = th.shape
            tf = th.reshape(-1)
            self.kind[tf] = IMAGE
            self.image[tf] = k
            self.view[tf] = THUMBNAIL
            self.tile[tf] = -1
            self.row[tf] = np.repeat(np.arange(tr), tc)
            self.col[tf] = np.tile(np.arange(tc), tr)
            self.thumbnail_grids.append((int(tr), int(tc)))
            self.thumbnail_positions.append(tf)
        else:
            self.thumbnail_grids.append(None)
            self.thumbnail_positions.append(np.zeros(0, np.int64))
        return k

    def mark_special(self, positions: Sequence[int] | np.ndarray) -> None:
        """Prompt positions the family cannot place on an image (separators, markers, row breaks)."""
        p = np.asarray(positions, np.int64)
        self.kind[p[p < self.prompt_len]] = SPECIAL

    def extend(self, total: int) -> "PositionMap":
        """The map of the prompt followed by ``total - len(self)`` generated positions."""
        n = total - len(self.kind)
        if n < 0:
            raise ValueError(f"cannot shrink a position map of {len(self.kind)} positions to {total}")
        pad = lambda a, v: np.concatenate([a, np.full(n, v, a.dtype)])  # noqa: E731
        return PositionMap(
            pad(self.kind, GENERATED),
            pad(self.image, -1),
            pad(self.tile, -1),
            pad(self.view, -1),
            pad(self.row, -1),
            pad(self.col, -1),
            list(self.grids),
            list(self.image_positions),
            self.prompt_len,
            list(self.thumbnail_grids),
            list(self.thumbnail_positions),
        )

    def image_grid(self, values: np.ndarray, k: int, thumbnail: bool = False) -> np.ndarray:
        """``[rows, cols]``: ``values`` ``[K]`` (one per position, e.g. an attention or relevance
        row; ``K`` must cover the image's positions) laid out on image ``k``'s mosaic, or on its
        thumbnail grid."""
        grid = self.thumbnail_grids[k] if thumbnail else self.grids[k]
        if grid is None:
            raise ValueError(f"image {k} has no thumbnail view")
        pos = self.thumbnail_positions[k] if thumbnail else self.image_positions[k]
        values = np.asarray(values)
        if len(values) <= int(pos.max(initial=-1)):
            raise ValueError(f"{len(values)} values do not reach image {k}'s last position {int(pos.max())}")
        return values[pos].reshape(grid)

    def text_mask(self) -> np.ndarray:
        return self.kind == TEXT

    def arrays(self) -> dict[str, np.ndarray]:
        """The map as plain arrays (the ``attention.npz`` keys, docs/howto/vlm-video.md)."""
        thumbs = [g if g is not None else (0, 0) for g in self.thumbnail_grids]
        return {
            "kind": self.kind,
            "image": self.image,
            "tile": self.tile,
            "view": self.view,
            "row": self.row,
            "col": self.col,
            "grids": np.array(self.grids, np.int64).reshape(-1, 2),
            "thumbnail_grids": np.array(thumbs, np.int64).reshape(-1, 2),
        }


#: what ``--sinks`` accepts: keep the sink positions in the rows, or mask them (rows renormalised)
SINK_MODES = ("keep", "mask")


@dataclass
class Trace:
    """One sample's tokens and captured attention rows.

    - ``input_ids`` ``[T]``: the full sequence (prompt + answer); ``prompt_len``;
    - ``pieces``: the text of every position (special tokens as themselves, image tokens ``""``);
    - ``pmap``: its :class:`PositionMap` (``len == T``);
    - ``rows[layer]`` ``[N, H', K]``: row ``j`` is the attention of the query at position
      ``prompt_len - 1 + j`` -- the step that produced answer token ``j`` -- over positions
      ``0 .. prompt_len - 1 + j`` (zeros beyond); ``H'`` is every head (``heads == "all"``) or one;
    - ``text``: the answer; ``mode``: ``generate`` or ``solution`` (teacher-forced);
    - ``start``: the answer token where the video starts (the start phrase);
    - ``special`` ``[T]`` bool: the tokenizer's special tokens (not drawn in the text panel).
    """

    input_ids: np.ndarray
    prompt_len: int
    pieces: list[str]
    pmap: PositionMap
    rows: dict[int, np.ndarray]
    text: str
    mode: str
    heads: Any
    images: list[Any]
    problem: str = ""
    start: int = 0
    special: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    notes: list[str] = field(default_factory=list)

    @property
    def num_answer_tokens(self) -> int:
        return len(self.input_ids) - self.prompt_len

    @property
    def frame_tokens(self) -> range:
        """Answer-token indices shown as frames: from the start phrase to the end."""
        return range(self.start, self.num_answer_tokens)

    def head_rows(self, layer: int, head: Any = "mean", sinks: str = "keep") -> np.ndarray:
        """``[N, K]``: the rows of ``layer`` fused over heads (``mean`` / ``max``) or of one head.

        ``sinks="mask"``: the layer's :meth:`sinks` are set to 0 and each row renormalised to
        sum to 1 over the rest (the distribution the sinks hide)."""
        r = self.rows[layer]
        if head == "mean":
            out = r.mean(1)
        elif head == "max":
            out = r.max(1)
        else:
            out = r[:, 0] if self.heads != "all" else r[:, int(head)]
        if sinks not in SINK_MODES:
            raise ValueError(f"sinks={sinks!r}: use {' or '.join(SINK_MODES)}")
        if sinks == "mask":
            out = out.copy()
            out[:, self.sinks(layer)] = 0.0
            total = out.sum(1, keepdims=True)
            out = np.divide(out, total, out=np.zeros_like(out), where=total > 0)
        return out

    def received(self, layer: int) -> np.ndarray:
        """``[K]``: the attention each position receives, averaged over the answer rows that can
        see it and over heads."""
        r = self.rows[layer].mean(1)  # [N, K]
        seen = self.prompt_len + np.arange(len(r))  # row j sees positions < prompt_len + j
        visible = np.arange(r.shape[1])[None, :] < seen[:, None]
        count = visible.sum(0)
        return np.divide(r.sum(0), count, out=np.zeros(r.shape[1]), where=count > 0)

    def sinks(self, layer: int, max_sinks: int = 5) -> np.ndarray:
        """The attention-sink positions of ``layer`` (docs/howto/vlm-video.md, "Attention sinks"): position 0, and
        the prompt positions whose received attention (:meth:`received`) is an outlier, above
        ``Q3 + 3 * IQR`` of all prompt positions' received attention -- at most ``max_sinks``,
        strongest first (position 0 always kept)."""
        rec = self.received(layer)[: self.prompt_len]
        q1, q3 = np.percentile(rec, [25, 75])
        outliers = np.flatnonzero(rec > q3 + 3 * (q3 - q1))
        order = [0] + [int(t) for t in outliers[np.argsort(-rec[outliers], kind="stable")] if t != 0]
        return np.array(order[: max(1, max_sinks)], np.int64)

    def sink_share(self, layer: int, head: Any = "mean") -> np.ndarray:
        """``[N]``: the share of each answer row that lands on the layer's sinks."""
        return self.head_rows(layer, head)[:, self.sinks(layer)].sum(1)

    def top_positions(self, values: np.ndarray, k: int = 5) -> list[tuple[int, str, str, float]]:
        """The ``k`` positions with the largest ``values`` ``[K]`` (a row over positions ``0 .. K -
        1``; the last, the query itself, left out), largest first: ``(position, label, text, value)``
        with the position map's label (``text`` / ``image 0 (2, 3)`` / ...) and the token's text."""
        v = np.asarray(values, np.float64)[:-1]
        order = np.argsort(-v, kind="stable")[:k]
        return [(int(t), self.pmap.label(int(t)), self.pieces[int(t)], float(v[t])) for t in order]

    def arrays(self) -> dict[str, np.ndarray]:
        """The ``attention.npz`` arrays (docs/howto/vlm-video.md, "attention.npz")."""
        out = {f"rows_layer{i}": r for i, r in self.rows.items()}
        out.update(self.pmap.arrays())
        out.update(
            layers=np.array(sorted(self.rows), np.int64),
            input_ids=self.input_ids,
            prompt_len=np.int64(self.prompt_len),
            start=np.int64(self.start),
            query_positions=np.arange(self.num_answer_tokens, dtype=np.int64) + self.prompt_len - 1,
            pieces=np.array(self.pieces, dtype=np.str_),
            heads=np.array(str(self.heads)),
        )
        for i in self.rows:
            out[f"sinks_layer{i}"] = self.sinks(i)
        return out

    def save(self, path: str | Path) -> Path:
        """Write :meth:`arrays` as a compressed ``.npz`` at ``path``, atomically."""
        from .io import save_npz

        return save_npz(path, self.arrays())
