"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL (``model_type`` ``qwen2_vl``, ``qwen2_5_vl``, ``qwen3_vl``).

All three lay an image out the same way (transformers 5.25): ``<|vision_start|>``, then
``t * h * w / m**2`` ``<|image_pad|>`` tokens, then ``<|vision_end|>``, where ``image_grid_thw[k] =
(t, h, w)`` is the processor's patch grid of image ``k`` and ``m = vision_config.spatial_merge_size``;
the merged tokens come in row-major order over the ``(h / m, w / m)`` grid (the image processor
orders the patches ``(t, h/m, w/m, m, m)``; Qwen2.5-VL's window attention reorders inside the tower
and restores the order). Qwen3-VL's deepstack features are added onto the same image positions in
its first decoder layers and its timestamps (``<t seconds>`` text) belong to videos only, so neither
moves a patch.

Read: the config's ``image_token_id``, ``video_token_id``, ``vision_start_token_id``,
``vision_end_token_id`` and ``vision_config.spatial_merge_size``; the inputs' ``image_grid_thw``.
``<|vision_start|>`` / ``<|vision_end|>`` and video tokens are ``SPECIAL`` positions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...errors import InputError
from . import register
from .base import PositionMap, VLMFamily, config_value, place_grid


class QwenSpans(VLMFamily):
    """The shared adapter: one ``<|vision_start|> <|image_pad|>* <|vision_end|>`` span per image."""

    reads = (
        "config image_token_id, video_token_id, vision_start_token_id, vision_end_token_id, "
        "vision_config.spatial_merge_size; the processor's image_grid_thw"
    )
    limits = (
        "batch size 1; images only (video frames are special positions); vision start / end markers are "
        "special positions"
    )

    def position_map(
        self, config: Any, inputs: Mapping[str, Any], prompt_len: int | None = None, processor: Any = None
    ) -> PositionMap:
        """Image ``k`` is the ``k``-th image span of the prompt, on grid ``(h / m, w / m)`` of ``image_grid_thw[k]``."""
        ids = self.input_ids(inputs)
        prompt_len = len(ids) if prompt_len is None else int(prompt_len)
        pm = PositionMap.empty(len(ids), prompt_len)
        prompt = ids[:prompt_len]
        image_id, video_id, start_id, end_id = (
            config_value(config, name)
            for name in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
        )
        if image_id is None or start_id is None or end_id is None:
            raise InputError(f"the {self.name} config does not name its image / vision start / vision end token ids")
        merge = int(config.vision_config.spatial_merge_size)
        spans: list[np.ndarray] = []
        starts, ends = np.flatnonzero(prompt == start_id), np.flatnonzero(prompt == end_id)
        for s in starts:
            after = ends[ends > s]
            if not len(after) or (len(starts[starts > s]) and starts[starts > s][0] < after[0]):
                raise InputError(f"<|vision_start|> at position {int(s)} is not closed by a <|vision_end|>")
            inner = np.arange(s + 1, after[0])
            if len(inner) and np.all(prompt[inner] == image_id):
                spans.append(inner)
            elif np.any(prompt[inner] == image_id):
                raise InputError(
                    f"the vision span at positions {int(s)}..{int(after[0])} mixes image tokens with others"
                )
        pm.mark_special(np.concatenate([starts, ends]).astype(np.int64))
        if video_id is not None:
            pm.mark_special(np.flatnonzero(prompt == video_id))
        placed = int(sum(len(s) for s in spans))
        if placed != int((prompt == image_id).sum()):
            raise InputError(
                f"{int((prompt == image_id).sum()) - placed} image token(s) lie outside any "
                f"<|vision_start|> ... <|vision_end|> span"
            )
        thw = inputs.get("image_grid_thw")
        thw = np.asarray(
            thw.tolist() if hasattr(thw, "tolist") else (thw if thw is not None else []), dtype=np.int64
        ).reshape(-1, 3)
        if len(thw) != len(spans):
            raise InputError(f"the prompt has {len(spans)} image span(s) but image_grid_thw lists {len(thw)} image(s)")
        for k, ((t, h, w), span) in enumerate(zip(thw, spans)):
            if t != 1 or h % merge or w % merge:
                raise InputError(
                    f"image {k}: image_grid_thw {int(t)}, {int(h)}, {int(w)} is not one frame of a grid "
                    f"divisible by the spatial merge {merge}"
                )
            pm.add_image(
                place_grid(
                    span,
                    int(h) // merge,
                    int(w) // merge,
                    f"{self.name} image {k} (image_grid_thw {int(t)}, {int(h)}, {int(w)}, merge {merge})",
                )
            )
        return pm


@register
class Qwen2VL(QwenSpans):
    model_types = ("qwen2_vl",)
    model_class = "Qwen2VLForConditionalGeneration"
    name = "Qwen2-VL"


@register
class Qwen2_5VL(QwenSpans):
    model_types = ("qwen2_5_vl",)
    model_class = "Qwen2_5_VLForConditionalGeneration"
    name = "Qwen2.5-VL"


@register
class Qwen3VL(QwenSpans):
    model_types = ("qwen3_vl",)
    model_class = "Qwen3VLForConditionalGeneration"
    name = "Qwen3-VL"
    limits = QwenSpans.limits + "; deepstack features land on the same image positions (not drawn separately)"
