"""Mistral 3 (``model_type`` ``mistral3``, ``Mistral3ForConditionalGeneration``): Pixtral's row breaks
with a spatial merge.

Mistral-Small-3.1's layout (transformers 5.25): a Pixtral tower sees each image at its own size
(the processor's ``image_sizes[k]``, the resized ``(height, width)``, each a multiple of
``patch_size * spatial_merge_size``); ``Mistral3PatchMerger`` folds every ``m x m`` block of patches
(``m = spatial_merge_size``) into one token, block by block in row-major order over the merged grid
(``unfold`` with kernel and stride ``m``). The prompt holds, per image, ``rows = height // (patch_size
* m)`` rows of ``cols = width // (patch_size * m)`` ``[IMG]`` tokens, each row followed by
``[IMG_BREAK]``, the last by ``[IMG_END]`` (``PixtralProcessor.replace_image_token``, with its
``patch_size * spatial_merge_size``); break and end tokens are ``SPECIAL``.

Read: the config's ``image_token_id`` (``image_token_index``), ``vision_config.patch_size`` and
``spatial_merge_size``; the inputs' ``image_sizes``; the ``[IMG_BREAK]`` / ``[IMG_END]`` ids from the
processor (``image_break_token_id`` / ``image_end_token_id``) or its tokenizer. The parsing is
LLaVA-Pixtral's (:func:`.llava.place_pixtral_rows`) with a token step of ``patch_size * m`` pixels.
Anything that does not match token for token is one :class:`InputError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...errors import InputError
from . import register
from .base import PositionMap, VLMFamily, token_id
from .llava import _pair, place_pixtral_rows


@register
class Mistral3(VLMFamily):
    """Mistral 3: per-image ``image_sizes // (patch_size * spatial_merge_size)`` grid with row breaks."""

    model_types = ("mistral3",)
    model_class = "Mistral3ForConditionalGeneration"
    name = "Mistral 3"
    reads = (
        "config image_token_id, vision_config.patch_size, spatial_merge_size; the processor's image_sizes and "
        "[IMG_BREAK] / [IMG_END]"
    )
    limits = "batch size 1; [IMG_BREAK] / [IMG_END] are special positions"

    def check(self, config: Any) -> None:
        merge = getattr(config, "spatial_merge_size", None)
        if merge is None or int(merge) < 1:
            raise InputError(f"the Mistral 3 config has no usable spatial_merge_size ({merge!r})")
        if getattr(config.vision_config, "model_type", "") != "pixtral":
            raise InputError(
                f"Mistral 3 with a {getattr(config.vision_config, 'model_type', 'unknown')} vision "
                f"tower: vizkit places the Pixtral tower's row-break layout only"
            )

    def position_map(
        self, config: Any, inputs: Mapping[str, Any], prompt_len: int | None = None, processor: Any = None
    ) -> PositionMap:
        """Image ``k`` is the ``k``-th ``image_sizes`` entry and the ``k``-th ``[IMG_END]`` block of the prompt."""
        self.check(config)
        ids = self.input_ids(inputs)
        prompt_len = len(ids) if prompt_len is None else int(prompt_len)
        pm = PositionMap.empty(len(ids), prompt_len)
        image_id = token_id(config, processor, "image_token_id", "image_token_index", token="[IMG]")
        if image_id is None:
            raise InputError("the Mistral 3 config names no image token id (image_token_id / image_token_index)")
        merge = int(config.spatial_merge_size)
        ph, pw = _pair(config.vision_config.patch_size)
        place_pixtral_rows(
            pm,
            ids[:prompt_len],
            image_id,
            config,
            inputs,
            processor,
            (ph * merge, pw * merge),
            name="Mistral 3",
            owner="Mistral 3",
            step_text=f"patch {ph} x {pw} and spatial merge {merge}",
        )
        return pm
