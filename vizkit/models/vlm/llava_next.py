"""LLaVA-NeXT and LLaVA-OneVision (``llava_next``, ``llava_onevision``): anyres tiling.

Per image ``k`` (the model's ``pack_image_features``, reproduced with transformers' own
``get_anyres_image_grid_shape`` and ``unpad_image`` of the family's modeling module), its ``<image>``
tokens are, in this order:

1. the BASE image (the whole picture resized to the tower's ``image_size``): ``s x s`` tokens,
   ``s = vision_config.image_size // patch_size``: the ``THUMBNAIL`` view;
2. the high-resolution tiles (``image_grid_pinpoints``' best fit for the processor's
   ``image_sizes[k]``, ``nph x npw`` tiles of ``s x s``) stitched into ONE ``(nph*s, npw*s)`` mosaic,
   unpadded back to the image's aspect ratio, row by row, each row followed by one
   ``image_newline`` token (the same ``<image>`` id): the ``MOSAIC`` view, newlines ``SPECIAL``.
   OneVision (``vision_aspect_ratio`` ``anyres_max_N``) then bilinearly shrinks a mosaic of more than
   about ``N`` tiles by ``ratio = sqrt(rows * cols / (N * s * s))`` to ``(rows // ratio, cols // ratio)``
   cells; a shrunk cell's tile is the tile under its centre.

OneVision with several images in one sample (``batch_num_images[0] > 1``: the processor got
``images=[[a, b]]``) tiles none of them: each image is its base ``s x s`` (the ``MOSAIC``, tile 0)
then one ``image_newline`` (``SPECIAL``); without ``batch_num_images`` every image is tiled, as in
the model. The CLS token of a CLIP tower is dropped (``"default"``); a SigLIP tower has none
(``"full"``); any other pairing breaks the model's own reshape and is refused.

Read: config ``image_token_id``, ``image_grid_pinpoints``, ``vision_config`` (``model_type``,
``image_size``, ``patch_size``), ``vision_feature_select_strategy``, OneVision's
``vision_aspect_ratio``; inputs ``image_sizes`` (original ``(height, width)``) and ``batch_num_images``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ...errors import InputError
from . import register
from .base import PositionMap, VLMFamily, place_grid, token_id

#: vision tower ``model_type`` -> CLS tokens before its patches
TOWER_PREFIX = {"clip_vision_model": 1, "siglip_vision_model": 0}


class Anyres(VLMFamily):
    """The shared anyres adapter; ``_module`` names the transformers modeling module whose helpers it calls."""

    _module = "transformers.models.llava_next.modeling_llava_next"
    reads = (
        "config image_token_id, image_grid_pinpoints, vision_config (image_size, patch_size), "
        "vision_feature_select_strategy; the processor's image_sizes"
    )
    limits = (
        "batch size 1; CLIP ('default') or SigLIP ('full') towers; image_newline tokens are special positions; "
        "the base image is the thumbnail view"
    )

    def check(self, config: Any) -> None:
        tower = getattr(config.vision_config, "model_type", "")
        strategy = getattr(config, "vision_feature_select_strategy", None)
        if tower not in TOWER_PREFIX:
            raise InputError(
                f"{self.name} with a {tower or 'unknown'} vision tower: vizkit places anyres tiles for "
                f"the towers {', '.join(sorted(TOWER_PREFIX))} only"
            )
        want = "default" if TOWER_PREFIX[tower] else "full"
        if strategy != want:
            raise InputError(
                f"{self.name} with a {tower} tower needs vision_feature_select_strategy {want!r} (the "
                f"tiles must be exactly image_size / patch_size square): the config says {strategy!r}"
            )
        if not getattr(config, "image_grid_pinpoints", None):
            raise InputError(f"the {self.name} config has no image_grid_pinpoints")

    def _shrink(self, config: Any, rows: int, cols: int, side: int) -> tuple[int, int] | None:
        """OneVision's anyres_max cap: the shrunk mosaic size, or None (LLaVA-NeXT never shrinks)."""
        return None

    def _tiled(self, config: Any, size: list[int], side: int) -> np.ndarray:
        """``[rows, cols]`` tile index of each mosaic cell of an image of original ``size`` (h, w)."""
        helpers = importlib.import_module(self._module)
        vc = config.vision_config
        nph, npw = helpers.get_anyres_image_grid_shape(list(size), config.image_grid_pinpoints, int(vc.image_size))
        rows, cols = nph * side, npw * side
        tile = (torch.arange(rows)[:, None] // side) * npw + torch.arange(cols)[None, :] // side
        tile = helpers.unpad_image(tile[None], list(size))[0]
        shrunk = self._shrink(config, *tile.shape, side)
        if shrunk is not None:
            tile = torch.nn.functional.interpolate(tile[None, None].float(), list(shrunk), mode="nearest-exact")[0, 0]
        return tile.long().numpy()

    def _patched(self, inputs: Mapping[str, Any], n: int) -> list[bool]:
        return [True] * n

    def position_map(
        self, config: Any, inputs: Mapping[str, Any], prompt_len: int | None = None, processor: Any = None
    ) -> PositionMap:
        """Image ``k`` is the ``k``-th ``image_sizes`` entry; its tokens come in the prompt in image order."""
        self.check(config)
        ids = self.input_ids(inputs)
        prompt_len = len(ids) if prompt_len is None else int(prompt_len)
        pm = PositionMap.empty(len(ids), prompt_len)
        image_id = token_id(config, processor, "image_token_id", "image_token_index")
        if image_id is None:
            raise InputError(f"the {self.name} config names no image token id (image_token_id / image_token_index)")
        where = np.flatnonzero(ids[:prompt_len] == image_id)
        sizes = inputs.get("image_sizes")
        sizes = np.asarray(
            sizes.tolist() if hasattr(sizes, "tolist") else (sizes if sizes is not None else []), dtype=np.int64
        ).reshape(-1, 2)
        if len(where) and not len(sizes):
            raise InputError(f"{self.name} places its tiles from the processor's image_sizes: the inputs have none")
        side = int(config.vision_config.image_size) // int(config.vision_config.patch_size)
        layouts = []
        for size, patched in zip(sizes.tolist(), self._patched(inputs, len(sizes))):
            tile = self._tiled(config, size, side) if patched else None
            count = side * side + (tile.shape[0] * (tile.shape[1] + 1) if tile is not None else 1)
            layouts.append((tile, count))
        need = sum(c for _, c in layouts)
        if need != len(where):
            raise InputError(
                f"the prompt holds {len(where)} image token(s) but the {len(sizes)} image(s) of image_sizes "
                f"{sizes.tolist()} with image_grid_pinpoints need {need} ({[c for _, c in layouts]})"
            )
        at = 0
        for k, (tile, count) in enumerate(layouts):
            chunk = where[at : at + count]
            at += count
            if np.any(np.diff(chunk) != 1):
                raise InputError(
                    f"image {k}'s {count} tokens are not contiguous (positions {int(chunk[0])}..{int(chunk[-1])})"
                )
            base = place_grid(chunk[: side * side], side, side, f"{self.name} image {k} base")
            rest = chunk[side * side :]
            if tile is None:  # untiled: the base is the only view, then one newline
                pm.mark_special(rest)
                pm.add_image(base)
                continue
            rows, cols = tile.shape
            lines = place_grid(rest, rows, cols + 1, f"{self.name} image {k} mosaic + newlines")
            pm.mark_special(lines[:, -1])
            pm.add_image(lines[:, :-1], tiles=tile, thumbnail=base)
        return pm


@register
class LlavaNext(Anyres):
    model_types = ("llava_next",)
    model_class = "LlavaNextForConditionalGeneration"
    name = "LLaVA-NeXT"


@register
class LlavaOnevision(Anyres):
    model_types = ("llava_onevision",)
    model_class = "LlavaOnevisionForConditionalGeneration"
    name = "LLaVA-OneVision"
    _module = "transformers.models.llava_onevision.modeling_llava_onevision"
    reads = Anyres.reads + ", vision_aspect_ratio; the processor's batch_num_images"
    limits = Anyres.limits + (
        "; a mosaic shrunk by anyres_max_N blends neighbouring cells (a cell's tile is the "
        "one under its centre); several images in one sample are untiled"
    )

    def _shrink(self, config: Any, rows: int, cols: int, side: int) -> tuple[int, int] | None:
        max_num_patches = int(str(getattr(config, "vision_aspect_ratio", "anyres_max_9")).removeprefix("anyres_max_"))
        ratio = math.sqrt(rows * cols / (max_num_patches * side**2))
        return (int(rows // ratio), int(cols // ratio)) if ratio > 1.1 else None

    def _patched(self, inputs: Mapping[str, Any], n: int) -> list[bool]:
        counts = inputs.get("batch_num_images")
        if counts is None:
            return [True] * n
        counts = [int(c) for c in (counts.tolist() if hasattr(counts, "tolist") else counts)]
        if sum(counts) != n:
            raise InputError(f"batch_num_images {counts} does not add up to the {n} image(s) of image_sizes")
        return [c == 1 for c in counts for _ in range(c)]
