"""LLaVA (``model_type`` ``llava``, ``LlavaForConditionalGeneration``): where its image patches sit.

Read from the model's config: ``image_token_id`` (``image_token_index``), ``vision_config.model_type``
(the tower), ``vision_config.image_size`` / ``patch_size`` and ``vision_feature_select_strategy``.

- A CLIP / SigLIP tower sees a fixed ``image_size`` square: each image is ``rows x cols =
  (image_size / patch_size)`` per side of ``<image>`` tokens, row-major. ``"default"`` drops the
  tower's CLS token; ``"full"`` keeps it as the image's FIRST token, a ``SPECIAL`` position (a tower
  without CLS, SigLIP, has no such token).
- A Pixtral tower (Pixtral-12B's layout, ``vision_config.model_type == "pixtral"``) sees each image at
  its own size: the grid is the processor's ``image_sizes[k] // vision_config.patch_size`` and the
  prompt holds, per image, ``rows`` rows of ``cols`` ``[IMG]`` tokens each followed by
  ``[IMG_BREAK]`` (the last by ``[IMG_END]``); break and end tokens are ``SPECIAL``. Their ids come
  from the processor (``image_break_token_id`` / ``image_end_token_id``) or its tokenizer. The
  row-break parsing, :func:`place_pixtral_rows`, is shared with Mistral 3 (``mistral3.py``).

Anything that does not match this layout token for token is one :class:`InputError`; a grid is
never guessed from a run's length.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...errors import InputError
from . import register
from .base import PositionMap, VLMFamily, place_grid, token_id

#: vision tower ``model_type`` -> how many tokens (CLS) it puts before the patch grid
TOWER_PREFIX = {"clip_vision_model": 1, "siglip_vision_model": 0, "pixtral": 0}


def _pair(value: Any) -> tuple[int, int]:
    """``image_size`` / ``patch_size`` as ``(height, width)`` (an int is square)."""
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def _ids(inputs: Mapping[str, Any], key: str) -> np.ndarray | None:
    value = inputs.get(key)
    if value is None:
        return None
    return np.asarray(value.tolist() if hasattr(value, "tolist") else value, dtype=np.int64)


@register
class Llava(VLMFamily):
    """LLaVA-1.5 style models: a CLIP / SigLIP tower's fixed square grid, or a Pixtral tower's
    per-image grid with row breaks."""

    model_types = ("llava",)
    model_class = "LlavaForConditionalGeneration"
    name = "LLaVA"
    reads = (
        "config image_token_id, vision_config (model_type, image_size, patch_size), "
        "vision_feature_select_strategy; Pixtral tower: the processor's image_sizes and [IMG_BREAK] / [IMG_END]"
    )
    limits = (
        "batch size 1; vision towers CLIP, SigLIP or Pixtral (Pixtral with strategy 'full'); "
        "the CLS token ('full' on CLIP) and Pixtral's [IMG_BREAK] / [IMG_END] are special positions"
    )

    def check(self, config: Any) -> None:
        vc = config.vision_config
        tower = getattr(vc, "model_type", "")
        strategy = getattr(config, "vision_feature_select_strategy", None)
        if strategy not in ("default", "full"):
            raise InputError(
                f"LLaVA vision_feature_select_strategy={strategy!r}: only 'default' (CLS dropped) and "
                f"'full' (CLS kept) are known"
            )
        if tower not in TOWER_PREFIX:
            raise InputError(
                f"LLaVA with a {tower or 'unknown'} vision tower: vizkit places image patches for the "
                f"towers {', '.join(sorted(TOWER_PREFIX))} only"
            )
        if strategy == "default" and TOWER_PREFIX[tower] == 0:
            raise InputError(
                f"LLaVA with a {tower} tower (no CLS token) and vision_feature_select_strategy "
                f"'default' drops a real patch: the image tokens cannot form a grid (use 'full')"
            )

    def position_map(
        self, config: Any, inputs: Mapping[str, Any], prompt_len: int | None = None, processor: Any = None
    ) -> PositionMap:
        """Image ``k`` is the ``k``-th image of the prompt (``pixel_values`` / ``image_sizes`` order)."""
        self.check(config)
        ids = self.input_ids(inputs)
        prompt_len = len(ids) if prompt_len is None else int(prompt_len)
        pm = PositionMap.empty(len(ids), prompt_len)
        image_id = token_id(config, processor, "image_token_id", "image_token_index")
        if image_id is None:
            raise InputError("the LLaVA config names no image token id (image_token_id / image_token_index)")
        if config.vision_config.model_type == "pixtral":
            self._pixtral(pm, ids[:prompt_len], image_id, config, inputs, processor)
        else:
            self._square(pm, ids[:prompt_len], image_id, config, inputs)
        return pm

    # -- CLIP / SigLIP: a fixed grid per image ------------------------------------------------
    @staticmethod
    def _square(pm: PositionMap, prompt: np.ndarray, image_id: int, config: Any, inputs: Mapping[str, Any]) -> None:
        vc = config.vision_config
        (sh, sw), (ph, pw) = _pair(vc.image_size), _pair(vc.patch_size)
        rows, cols = sh // ph, sw // pw
        lead = TOWER_PREFIX[vc.model_type] if config.vision_feature_select_strategy == "full" else 0
        per = lead + rows * cols
        where = np.flatnonzero(prompt == image_id)
        what = (
            f"{'CLS + ' if lead else ''}{rows} x {cols} patch grid (vision_config image_size {vc.image_size} / "
            f"patch_size {vc.patch_size}, strategy {config.vision_feature_select_strategy!r})"
        )
        if len(where) % per:
            raise InputError(
                f"the prompt holds {len(where)} image token(s), not a whole number of images of {per} "
                f"tokens each ({what})"
            )
        n_images = len(where) // per
        pixels = inputs.get("pixel_values")
        if pixels is not None and hasattr(pixels, "shape") and len(pixels.shape) == 4 and pixels.shape[0] != n_images:
            raise InputError(
                f"the prompt holds image tokens for {n_images} image(s) ({per} each: {what}) but "
                f"pixel_values holds {pixels.shape[0]}"
            )
        for k in range(n_images):
            chunk = where[k * per : (k + 1) * per]
            if np.any(np.diff(chunk) != 1):
                raise InputError(
                    f"image {k}'s {per} tokens are not contiguous (positions {int(chunk[0])}..{int(chunk[-1])}): {what}"
                )
            pm.mark_special(chunk[:lead])
            pm.add_image(place_grid(chunk[lead:], rows, cols, f"LLaVA image {k}"))

    # -- Pixtral: per-image grid, [IMG_BREAK] per row, [IMG_END] -------------------------------
    @staticmethod
    def _pixtral(
        pm: PositionMap, prompt: np.ndarray, image_id: int, config: Any, inputs: Mapping[str, Any], processor: Any
    ) -> None:
        ph, pw = _pair(config.vision_config.patch_size)
        place_pixtral_rows(
            pm,
            prompt,
            image_id,
            config,
            inputs,
            processor,
            (ph, pw),
            name="Pixtral",
            owner="a LLaVA model with a Pixtral tower",
            step_text=f"patch {ph} x {pw}",
        )


def place_pixtral_rows(
    pm: PositionMap,
    prompt: np.ndarray,
    image_id: int,
    config: Any,
    inputs: Mapping[str, Any],
    processor: Any,
    step: tuple[int, int],
    *,
    name: str,
    owner: str,
    step_text: str,
) -> None:
    """Pixtral's row-break layout (LLaVA with a Pixtral tower, Mistral 3): image ``k`` is
    ``image_sizes[k] // step`` = ``rows x cols`` tokens, ``rows`` rows of ``cols`` ``[IMG]`` each
    followed by ``[IMG_BREAK]``, the last by ``[IMG_END]`` (``SPECIAL``). ``step`` is the
    ``(height, width)`` in pixels of one image token (the patch, times the spatial merge if any);
    ``name`` / ``owner`` / ``step_text`` word the :class:`InputError` messages."""
    brk = getattr(processor, "image_break_token_id", None)
    end = getattr(processor, "image_end_token_id", None)
    brk = brk if brk is not None else token_id(config, processor, "image_break_token_id", token="[IMG_BREAK]")
    end = end if end is not None else token_id(config, processor, "image_end_token_id", token="[IMG_END]")
    if brk is None or end is None:
        raise InputError(
            f"{owner} needs its processor's [IMG_BREAK] and [IMG_END] token ids (pass the PixtralProcessor)"
        )
    sizes = _ids(inputs, "image_sizes")
    ends = np.flatnonzero(prompt == end)
    n_img = int(np.isin(prompt, [image_id, brk]).sum())
    if sizes is None:
        if n_img or len(ends):
            raise InputError(f"{owner} places its images from the processor's image_sizes: the inputs have none")
        return
    sizes = sizes.reshape(-1, 2)
    if len(ends) != len(sizes):
        raise InputError(f"the prompt holds {len(ends)} [IMG_END] token(s) but image_sizes lists {len(sizes)} image(s)")
    sh, sw = step
    start = 0
    for k, ((h, w), stop) in enumerate(zip(sizes, ends)):
        rows, cols = int(h) // sh, int(w) // sw
        if rows < 1 or cols < 1:
            raise InputError(
                f"{name} image {k}: image_sizes {int(h)} x {int(w)} is smaller than one image token "
                f"({step_text}: {sh} x {sw} pixels)"
            )
        layout = np.tile(np.r_[np.full(cols, image_id), brk], rows)
        layout[-1] = end
        first = int(stop) + 1 - len(layout)
        block = np.arange(first, int(stop) + 1)
        before = prompt[start : max(first, start)]
        if first < start or not np.array_equal(prompt[block], layout) or np.isin(before, [image_id, brk]).any():
            raise InputError(
                f"{name} image {k}: image_sizes {int(h)} x {int(w)} with {step_text} means "
                f"{rows} row(s) of {cols} [IMG] tokens, each followed by [IMG_BREAK] (the last by "
                f"[IMG_END]); the prompt's image tokens before position {int(stop)} do not match"
            )
        cells = block[prompt[block] == image_id]
        pm.mark_special(block[prompt[block] != image_id])
        pm.add_image(place_grid(cells, rows, cols, f"{name} image {k}"))
        start = int(stop) + 1
    if np.isin(prompt[start:], [image_id, brk]).any():
        raise InputError("image tokens after the last [IMG_END]: the prompt and image_sizes disagree")
