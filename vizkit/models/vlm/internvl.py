"""InternVL (``model_type`` ``internvl``, ``InternVLForConditionalGeneration``, transformers' own port).

The ``InternVLProcessor``'s ``GotOcr2ImageProcessor`` (``crop_to_patches``) picks, for an image of
ORIGINAL size ``(h, w)``, the tile grid ``cols x rows`` among ``min_patches .. max_patches`` tiles whose
aspect ratio is closest to the image's (its module's ``get_optimal_tiled_canvas``, called here, never
re-implemented), resizes the image to ``(rows * th, cols * tw)`` (``th x tw``: the image processor's
``size``) and cuts the tiles row by row; with more than one tile it appends the whole image resized
to one tile, the thumbnail, LAST. The tower (CLS dropped, ``vision_feature_select_strategy``
``"default"``) and the pixel shuffle (``InternVLModel.pixel_shuffle``, ``downsample_ratio``) make
each tile an ``s x s`` grid of tokens in row-major order, ``s = image_size / patch_size *
downsample_ratio``. The processor writes ``<img>`` + ``num_patches * s * s`` ``<IMG_CONTEXT>`` +
``</img>`` per image.

The tiles are stitched into ONE ``(rows * s, cols * s)`` ``MOSAIC`` (``tile`` ``r * cols + c``, the
first token of tile ``(r, c)`` at cell ``(r * s, c * s)``), the thumbnail is the ``THUMBNAIL`` view
(``s x s``); a one-tile image (no thumbnail) is its ``MOSAIC`` only. ``<img>`` / ``</img>`` are
``SPECIAL``.

The processor returns only ``input_ids``, ``attention_mask`` and ``pixel_values`` (it pops its
``num_patches``): ``num_patches`` is each span's length over ``s * s``, but a tile COUNT does not fix the
grid (6 tiles: 1 x 6, 2 x 3, 3 x 2 or 6 x 1), so a tiled image needs its original ``(height, width)``
in the inputs (``original_sizes``, as :func:`vizkit.models.vlm.trace.build_inputs` adds, or
``image_sizes``), and the processor (its image processor's ``size``, ``min_patches``,
``max_patches``). Read: config ``image_token_id``, ``downsample_ratio``, ``vision_config.image_size`` /
``patch_size``, ``vision_feature_select_strategy``; the ``<img>`` / ``</img>`` ids from the processor
(``start_image_token_id`` / ``end_image_token_id``) or its tokenizer; ``pixel_values``' patch count.
Anything that does not match is one :class:`InputError`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...errors import InputError
from . import register
from .base import PositionMap, VLMFamily, place_grid, token_id
from .idefics import stitch_tiles


def _square(value: Any, what: str) -> int:
    if isinstance(value, (list, tuple)):
        if int(value[0]) != int(value[-1]):
            raise InputError(
                f"InternVL vision_config.{what} {list(value)} is not square: the pixel shuffle needs a "
                f"square patch grid"
            )
        return int(value[0])
    return int(value)


def _sizes(inputs: Mapping[str, Any]) -> np.ndarray | None:
    for key in ("original_sizes", "image_sizes"):
        value = inputs.get(key)
        if value is not None:
            value = value.tolist() if hasattr(value, "tolist") else value
            return np.asarray(value, dtype=np.int64).reshape(-1, 2)
    return None


def _canvas(image_processor: Any) -> Any:
    """``get_optimal_tiled_canvas`` of the image processor's own module (else GOT-OCR2's)."""
    for module in (type(image_processor).__module__, "transformers.models.got_ocr2.image_processing_got_ocr2"):
        try:
            fn = getattr(importlib.import_module(module), "get_optimal_tiled_canvas", None)
        except ImportError:
            fn = None
        if fn is not None:
            return fn
    raise InputError(
        f"the installed transformers has no get_optimal_tiled_canvas for "
        f"{type(image_processor).__name__}: InternVL's tile grid cannot be derived"
    )


@register
class InternVL(VLMFamily):
    """InternVL: dynamic tiles stitched into a mosaic, plus a thumbnail when tiled."""

    model_types = ("internvl",)
    model_class = "InternVLForConditionalGeneration"
    name = "InternVL"
    reads = (
        "config image_token_id, downsample_ratio, vision_config (image_size, patch_size), "
        "vision_feature_select_strategy; <img> / </img> ids; the image processor's size, min_patches, "
        "max_patches and each image's original (height, width) (inputs original_sizes or image_sizes)"
    )
    limits = (
        "batch size 1; images only (no video frames); a tiled image needs its original size in the inputs; "
        "<img> / </img> are special positions; the thumbnail is the thumbnail view"
    )

    def check(self, config: Any) -> None:
        vc = config.vision_config
        size, patch = _square(vc.image_size, "image_size"), _square(vc.patch_size, "patch_size")
        strategy = getattr(config, "vision_feature_select_strategy", None)
        if strategy != "default":
            raise InputError(
                f"InternVL with vision_feature_select_strategy {strategy!r}: only 'default' (the tower's "
                f"CLS token dropped) gives the square patch grid the model reshapes"
            )
        ratio = float(config.downsample_ratio)
        side = size // patch * ratio
        if size % patch or side != int(side) or side < 1:
            raise InputError(
                f"InternVL vision_config image_size {size} / patch_size {patch} * downsample_ratio "
                f"{ratio} is not a whole number of tokens per side"
            )

    @staticmethod
    def side(config: Any) -> int:
        vc = config.vision_config
        return int(
            _square(vc.image_size, "image_size")
            // _square(vc.patch_size, "patch_size")
            * float(config.downsample_ratio)
        )

    def grid(self, processor: Any, size: Any, k: int, tiles: int) -> tuple[int, int]:
        """``(rows, cols)`` of the tiles of image ``k`` of original ``size`` (h, w), as the image processor chose."""
        ip = getattr(processor, "image_processor", None)
        if ip is None or getattr(ip, "size", None) is None:
            raise InputError(
                f"InternVL image {k} is cut into {tiles} tiles: its grid comes from the image processor's "
                f"size, min_patches and max_patches; pass the model's processor"
            )
        th, tw = int(ip.size["height"]), int(ip.size["width"])
        lo, hi = int(getattr(ip, "min_patches", 1) or 1), int(getattr(ip, "max_patches", 12) or 12)
        h, w = (int(x) for x in size)
        cols, rows = _canvas(ip)((h, w), (th, tw), lo, hi)
        if rows * cols != tiles:
            raise InputError(
                f"InternVL image {k}: its original size {h} x {w} with tiles of {th} x {tw}, "
                f"min_patches {lo} and max_patches {hi} gives {rows} x {cols} tiles, but the prompt holds "
                f"{tiles} tiles + a thumbnail: the inputs' original sizes or the processor do not match "
                f"the prompt"
            )
        return rows, cols

    def position_map(
        self, config: Any, inputs: Mapping[str, Any], prompt_len: int | None = None, processor: Any = None
    ) -> PositionMap:
        """Image ``k`` is the ``k``-th ``<img> .. </img>`` span (``pixel_values`` / ``original_sizes`` order)."""
        self.check(config)
        ids = self.input_ids(inputs)
        prompt_len = len(ids) if prompt_len is None else int(prompt_len)
        pm = PositionMap.empty(len(ids), prompt_len)
        prompt = ids[:prompt_len]
        image_id = token_id(config, processor, "image_token_id", token="<IMG_CONTEXT>")
        if image_id is None:
            raise InputError("the InternVL config names no image_token_id")
        if not np.any(prompt == image_id):
            return pm
        start = getattr(processor, "start_image_token_id", None)
        end = getattr(processor, "end_image_token_id", None)
        start = start if start is not None else token_id(config, processor, "start_image_token_id", token="<img>")
        end = end if end is not None else token_id(config, processor, "end_image_token_id", token="</img>")
        if start is None or end is None:
            raise InputError(
                "InternVL places its images between <img> and </img>: pass the model's processor (its "
                "tokenizer knows their ids)"
            )
        side = self.side(config)
        per = side * side
        spans: list[np.ndarray] = []
        starts, ends = np.flatnonzero(prompt == start), np.flatnonzero(prompt == end)
        for s in starts:
            after = ends[ends > s]
            if not len(after) or (len(starts[starts > s]) and starts[starts > s][0] < after[0]):
                raise InputError(f"<img> at position {int(s)} is not closed by </img>: the prompt is cut")
            inner = np.arange(s + 1, after[0])
            if not len(inner) or np.any(prompt[inner] != image_id):
                raise InputError(
                    f"the <img> .. </img> span at positions {int(s)}..{int(after[0])} holds other tokens "
                    f"than <IMG_CONTEXT>"
                )
            spans.append(inner)
        placed = int(sum(len(s) for s in spans))
        if placed != int((prompt == image_id).sum()):
            raise InputError(
                f"{int((prompt == image_id).sum()) - placed} <IMG_CONTEXT> token(s) lie outside any "
                f"<img> .. </img> span"
            )
        what = (
            f"{side} x {side} tokens per tile (vision_config image_size {config.vision_config.image_size} / "
            f"patch_size {config.vision_config.patch_size} * downsample_ratio {config.downsample_ratio})"
        )
        patches = []
        for k, span in enumerate(spans):
            if len(span) % per:
                raise InputError(
                    f"InternVL image {k}: {len(span)} <IMG_CONTEXT> tokens are not a whole number of tiles of {what}"
                )
            n = len(span) // per
            if n == 2:
                raise InputError(
                    f"InternVL image {k}: {len(span)} <IMG_CONTEXT> tokens are 2 tiles, but a tiled image "
                    f"has at least 2 tiles + a thumbnail ({what})"
                )
            patches.append(n)
        pixels = inputs.get("pixel_values")
        if (
            pixels is not None
            and hasattr(pixels, "shape")
            and len(pixels.shape) == 4
            and pixels.shape[0] != sum(patches)
        ):
            raise InputError(
                f"the prompt's {len(spans)} image(s) hold {sum(patches)} tile(s) ({patches}) but "
                f"pixel_values holds {int(pixels.shape[0])}"
            )
        sizes = _sizes(inputs)
        if any(n > 1 for n in patches):
            if sizes is None:
                raise InputError(
                    f"InternVL images of {patches} tiles: a tile count does not fix the tile grid; pass "
                    f"each image's original (height, width) as inputs['original_sizes'] (or "
                    f"'image_sizes'), as vizkit.models.vlm.trace.build_inputs does"
                )
            if len(sizes) != len(spans):
                raise InputError(
                    f"the prompt has {len(spans)} image span(s) but the inputs' original sizes list "
                    f"{len(sizes)} image(s)"
                )
        pm.mark_special(np.concatenate([starts, ends]).astype(np.int64))
        for k, (span, n) in enumerate(zip(spans, patches)):
            if n == 1:
                pm.add_image(place_grid(span, side, side, f"InternVL image {k}"))
                continue
            rows, cols = self.grid(processor, sizes[k], k, n - 1)
            tiles = [span[t * per : (t + 1) * per] for t in range(n - 1)]
            mosaic, tile = stitch_tiles(tiles, rows, cols, side)
            pm.add_image(mosaic, tiles=tile, thumbnail=span[-per:].reshape(side, side))
        return pm
