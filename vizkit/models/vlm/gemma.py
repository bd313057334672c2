"""Gemma 3 (``gemma3``, ``Gemma3ForConditionalGeneration``) and PaliGemma (``paligemma``,
``PaliGemmaForConditionalGeneration``): SigLIP towers on a fixed square.

Gemma 3 (transformers 5.25): every image (resized to ``vision_config.image_size``) is
``<start_of_image>`` + ``mm_tokens_per_image`` ``<image_soft_token>`` + ``<end_of_image>``
(``Gemma3Processor.full_image_sequence``, wrapped in ``"\\n\\n"``). ``Gemma3MultiModalProjector``
reshapes the tower's ``P x P`` patches (``P = image_size // patch_size``) row-major, average-pools them
with kernel ``P // s`` to ``s x s`` (``s = sqrt(mm_tokens_per_image)``) and flattens row-major: the
soft tokens are an ``s x s`` grid in row-major order. ``<start_of_image>`` / ``<end_of_image>`` are
``SPECIAL``.

Pan-and-scan (``do_pan_and_scan=True`` at the processor call): ``Gemma3ImageProcessor`` emits, per
image, the whole image then ``num_crops`` crops of the ORIGINAL picture, each resized to
``image_size`` and laid out as its own ``<start_of_image> ... <end_of_image>`` span, the prompt text
reading "Here is the original image <span> and here are some crops to help you see better <span>
<span> ...". The crops cut a landscape (or square) image into ``1 x n`` side-by-side crops and a
portrait one into ``n x 1`` stacked crops, in row-major order (its ``pan_and_scan`` code). The map
stitches the crops into ONE mosaic of ``(rows * s, cols * s)`` cells (``tile`` = crop index) and
shows the whole image as the ``THUMBNAIL`` view (``s x s``); an image without crops is a single
``s x s`` ``MOSAIC``. ``Gemma3Processor`` drops the image processor's ``num_crops`` from its
outputs and says nothing of the original sizes, so a pan-and-scan prompt needs the inputs'
``image_sizes`` (the ORIGINAL ``(height, width)`` of each image, as the caller has it); the crop
counts are then the inputs' ``num_crops`` if given, else the image processor's own pan-and-scan
function run on those sizes with the processor's settings (``Gemma3Processor.images_kwargs``: they
override the image processor's saved ones), checked against the prompt's span count.

PaliGemma: each image is ``(image_size / patch_size)**2`` image tokens (``image_token_index``), the
SigLIP patch grid in row-major order (the projector is a per-token linear layer); the processor puts
the images first, then ``<s>``, the text and ``"\\n"``. Consecutive images' tokens form one run,
split every ``rows * cols`` tokens.

Read: Gemma 3's config ``image_token_id``, ``boi_token_id``, ``eoi_token_id``, ``mm_tokens_per_image``,
``vision_config`` (``image_size``, ``patch_size``) and the inputs' ``image_sizes`` / ``num_crops``;
PaliGemma's config ``image_token_id`` (``image_token_index``) and ``vision_config`` (``image_size``,
``patch_size``). Anything that does not match is one :class:`InputError`; a grid is never guessed from
a run's length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ...errors import InputError
from . import register
from .base import PositionMap, VLMFamily, place_grid, runs_of, token_id
from .llava import _ids, _pair


def _original_sizes(inputs: Mapping[str, Any]) -> np.ndarray | None:
    """Each image's original (height, width): ``original_sizes`` (as
    :func:`vizkit.models.vlm.trace.build_inputs` adds) or ``image_sizes``."""
    sizes = _ids(inputs, "original_sizes")
    return sizes if sizes is not None else _ids(inputs, "image_sizes")


#: Gemma3ImageProcessor's pan-and-scan settings, as its processor passes them
PAN_AND_SCAN_KEYS = ("pan_and_scan_min_crop_size", "pan_and_scan_max_num_crops", "pan_and_scan_min_ratio_to_activate")


def _count(pixel_values: Any) -> int | None:
    """How many images ``pixel_values`` holds (``[N, C, H, W]``), or None."""
    shape = getattr(pixel_values, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) == 4 else None


def saved_pan_and_scan(processor: Any) -> dict[str, Any]:
    """The image processor's saved pan-and-scan settings as processor-call kwargs (``{}`` when its
    ``do_pan_and_scan`` is off). Gemma3Processor passes its own call defaults (pan-and-scan off)
    over the image processor's saved settings; passing these makes the saved ones take effect."""
    from transformers.models.gemma3.processing_gemma3 import Gemma3Processor

    ip = getattr(processor, "image_processor", None)
    if not getattr(ip, "do_pan_and_scan", False):
        return {}
    defaults = Gemma3Processor.images_kwargs
    return {
        "do_pan_and_scan": True,
        **{k: (getattr(ip, k, None) if getattr(ip, k, None) is not None else defaults[k]) for k in PAN_AND_SCAN_KEYS},
    }


def pan_and_scan_crops(processor: Any, height: int, width: int) -> int:
    """How many pan-and-scan crops Gemma 3's image processor cuts from a ``height x width`` image with
    the processor's settings (its own ``pan_and_scan`` code, run on a zero-stride stand-in image)."""
    from transformers.models.gemma3.image_processing_gemma3 import Gemma3ImageProcessor
    from transformers.models.gemma3.processing_gemma3 import Gemma3Processor

    ip = getattr(processor, "image_processor", None)
    defaults = getattr(processor, "images_kwargs", None) or Gemma3Processor.images_kwargs
    saved = saved_pan_and_scan(processor)
    settings = {k: saved[k] for k in PAN_AND_SCAN_KEYS} if saved else {}
    for key in () if saved else PAN_AND_SCAN_KEYS:
        value = defaults.get(key)
        settings[key] = value if value is not None else getattr(ip, key, None)
        if settings[key] is None:
            settings[key] = Gemma3Processor.images_kwargs[key]
    if hasattr(ip, "pan_and_scan_batched"):
        crops = ip.pan_and_scan_batched(torch.zeros(()).expand(1, height, width), **settings)
    elif hasattr(ip, "pan_and_scan"):
        crops = ip.pan_and_scan(np.broadcast_to(np.zeros((), np.uint8), (1, height, width)), **settings)
    else:
        crops = Gemma3ImageProcessor.pan_and_scan_batched(None, torch.zeros(()).expand(1, height, width), **settings)
    return len(crops)


@register
class Gemma3(VLMFamily):
    """Gemma 3: a pooled ``s x s`` grid per ``<start_of_image>`` span; pan-and-scan crops stitched
    into a mosaic with the whole image as the thumbnail."""

    model_types = ("gemma3",)
    model_class = "Gemma3ForConditionalGeneration"
    name = "Gemma 3"
    reads = (
        "config image_token_id, boi_token_id, eoi_token_id, mm_tokens_per_image, vision_config (image_size, "
        "patch_size); pan-and-scan: each image's original (height, width) (inputs original_sizes or "
        "image_sizes) and num_crops"
    )
    limits = (
        "batch size 1; sliding-window layers are captured as they run (their mask holds the window), but a "
        "generated sequence longer than the window is refused (the cache keeps only the window); "
        "<start_of_image> / <end_of_image> are special positions; pan-and-scan needs the "
        "original sizes in the inputs (num_crops too when the crop settings differ from the "
        "saved ones); vizkit's prompts pass the saved pan-and-scan settings to the processor; "
        "crops are drawn as equal tiles (the last crop may be narrower in the picture)"
    )

    @staticmethod
    def side(config: Any) -> int:
        """``s``: the pooled grid's side, ``sqrt(mm_tokens_per_image)``, checked against the tower's patches."""
        n = int(config.mm_tokens_per_image)
        s = math.isqrt(n)
        (ih, iw), (ph, pw) = _pair(config.vision_config.image_size), _pair(config.vision_config.patch_size)
        patches = ih // ph
        if s * s != n or ih != iw or ph != pw:
            raise InputError(
                f"Gemma 3 mm_tokens_per_image {n} with a {ih} x {iw} tower of {ph} x {pw} patches: "
                f"the pooled image tokens are not a square grid"
            )
        kernel = patches // s if s else 0
        if kernel < 1 or patches // kernel != s:
            raise InputError(
                f"Gemma 3: {patches} x {patches} patches (vision_config image_size {ih} / patch_size "
                f"{ph}) do not pool to {s} x {s} (mm_tokens_per_image {n})"
            )
        return s

    def check(self, config: Any) -> None:
        self.side(config)

    def processor_kwargs(self, processor: Any) -> dict[str, Any]:
        """The saved pan-and-scan settings (:func:`saved_pan_and_scan`)."""
        return saved_pan_and_scan(processor)

    def position_map(
        self, config: Any, inputs: Mapping[str, Any], prompt_len: int | None = None, processor: Any = None
    ) -> PositionMap:
        """Image ``k`` is the ``k``-th image given to the processor: its whole-image span, then its crops' spans."""
        s = self.side(config)
        ids = self.input_ids(inputs)
        prompt_len = len(ids) if prompt_len is None else int(prompt_len)
        pm = PositionMap.empty(len(ids), prompt_len)
        prompt = ids[:prompt_len]
        image_id = token_id(config, processor, "image_token_id", "image_token_index", token="<image_soft_token>")
        boi = token_id(config, processor, "boi_token_id", "boi_token_index", token="<start_of_image>")
        eoi = token_id(config, processor, "eoi_token_id", "eoi_token_index", token="<end_of_image>")
        if image_id is None or boi is None or eoi is None:
            raise InputError("the Gemma 3 config does not name its image / start-of-image / end-of-image token ids")
        spans = self._spans(prompt, image_id, boi, eoi, s * s)
        pm.mark_special(np.flatnonzero(np.isin(prompt, [boi, eoi])))
        crops = self._crops(inputs, processor, prompt, spans)
        sizes = _original_sizes(inputs)
        at = 0
        for k, n in enumerate(crops):
            whole = place_grid(spans[at], s, s, f"Gemma 3 image {k}")
            if not n:
                pm.add_image(whole)
                at += 1
                continue
            h, w = (int(x) for x in sizes.reshape(-1, 2)[k])
            rows, cols = (1, n) if w >= h else (n, 1)  # Gemma3ImageProcessor: landscape / square 1 x n, portrait n x 1
            cells = np.stack([place_grid(spans[at + 1 + c], s, s, f"Gemma 3 image {k} crop {c}") for c in range(n)])
            mosaic = cells.reshape(rows, cols, s, s).transpose(0, 2, 1, 3).reshape(rows * s, cols * s)
            tiles = np.repeat(np.repeat(np.arange(n).reshape(rows, cols), s, axis=0), s, axis=1)
            pm.add_image(mosaic, tiles=tiles, thumbnail=whole)
            at += 1 + n
        return pm

    @staticmethod
    def _spans(prompt: np.ndarray, image_id: int, boi: int, eoi: int, per: int) -> list[np.ndarray]:
        """The soft-token positions of each ``<start_of_image>`` span, in prompt order (markers made special later)."""
        starts = np.flatnonzero(prompt == boi)
        spans = []
        for b in starts:
            inner = np.arange(b + 1, b + 1 + per)
            end = b + 1 + per
            if end >= len(prompt) or not np.all(prompt[inner] == image_id) or prompt[end] != eoi:
                raise InputError(
                    f"<start_of_image> at position {int(b)} is not followed by {per} image soft tokens "
                    f"(mm_tokens_per_image) and <end_of_image>"
                )
            spans.append(inner)
        placed = per * len(spans)
        total = int((prompt == image_id).sum())
        if total != placed or int((prompt == eoi).sum()) != len(spans):
            raise InputError(
                f"the prompt holds {total} image soft token(s) and {int((prompt == eoi).sum())} "
                f"<end_of_image>, but its {len(spans)} <start_of_image> span(s) account for {placed} "
                f"and {len(spans)}"
            )
        return spans

    def _crops(
        self, inputs: Mapping[str, Any], processor: Any, prompt: np.ndarray, spans: list[np.ndarray]
    ) -> list[int]:
        """Per image, how many pan-and-scan crop spans follow its whole-image span."""
        n_spans = len(spans)
        pixels = _count(inputs.get("pixel_values"))
        if pixels is not None and pixels != n_spans:
            raise InputError(f"the prompt holds {n_spans} image span(s) but pixel_values holds {pixels} image(s)")
        sizes, given = _original_sizes(inputs), _ids(inputs, "num_crops")
        sizes = None if sizes is None else sizes.reshape(-1, 2)
        if given is not None:
            crops = [int(c) for c in given.reshape(-1)]
            how = f"num_crops {crops}"
        elif sizes is not None:
            if len(sizes) == n_spans:  # one span per image: no crops
                crops = [0] * n_spans
            else:
                crops = [pan_and_scan_crops(processor, int(h), int(w)) for h, w in sizes]
            how = f"image_sizes {sizes.tolist()} (crops {crops} by the processor's pan-and-scan settings)"
        else:
            if self._pan_and_scan_text(prompt, spans, processor):
                raise InputError(
                    'this Gemma 3 prompt was made with pan-and-scan ("here are some crops"): give the '
                    "inputs image_sizes, each image's ORIGINAL (height, width) (the processor does not "
                    "return them), so that its crops can be placed"
                )
            crops = [0] * n_spans
            how = "no image_sizes / num_crops (no pan-and-scan)"
        need = len(crops) + sum(crops)
        if need != n_spans:
            raise InputError(
                f"the prompt holds {n_spans} <start_of_image> span(s) but {len(crops)} image(s) with "
                f"{how} need {need} (each image's whole span + one per crop); when pan-and-scan ran "
                f"with other settings, pass num_crops (Gemma3ImageProcessor's, run with those settings)"
            )
        if sizes is not None and len(sizes) != len(crops):
            raise InputError(f"image_sizes lists {len(sizes)} image(s) but {how} means {len(crops)}")
        if any(crops) and sizes is None:
            raise InputError(
                f"Gemma 3 pan-and-scan crops ({how}) are placed from each image's ORIGINAL size: give the "
                f"inputs image_sizes, one (height, width) per image (the processor does not return them)"
            )
        return crops

    @staticmethod
    def _pan_and_scan_text(prompt: np.ndarray, spans: list[np.ndarray], processor: Any) -> bool:
        """Whether the text between two image spans is Gemma3Processor's pan-and-scan wording."""
        tok = getattr(processor, "tokenizer", None)
        if tok is None or len(spans) < 2:
            return False
        for a, b in zip(spans[:-1], spans[1:]):
            if "here are some crops" in tok.decode(prompt[a[-1] + 2 : b[0] - 1].tolist()).lower():
                return True
        return False


@register
class PaliGemma(VLMFamily):
    """PaliGemma: ``(image_size / patch_size)**2`` image tokens per image, row-major, before the text."""

    model_types = ("paligemma",)
    model_class = "PaliGemmaForConditionalGeneration"
    name = "PaliGemma"
    reads = "config image_token_id (image_token_index), vision_config (image_size, patch_size)"
    limits = "batch size 1"

    def position_map(
        self, config: Any, inputs: Mapping[str, Any], prompt_len: int | None = None, processor: Any = None
    ) -> PositionMap:
        """Image ``k`` is the ``k``-th image of ``pixel_values``; its tokens are the ``k``-th block of the prompt's."""
        ids = self.input_ids(inputs)
        prompt_len = len(ids) if prompt_len is None else int(prompt_len)
        pm = PositionMap.empty(len(ids), prompt_len)
        image_id = token_id(config, processor, "image_token_id", "image_token_index")
        if image_id is None:
            raise InputError("the PaliGemma config names no image token id (image_token_id / image_token_index)")
        vc = config.vision_config
        (ih, iw), (ph, pw) = _pair(vc.image_size), _pair(vc.patch_size)
        rows, cols = ih // ph, iw // pw
        per = rows * cols
        what = f"{rows} x {cols} patch grid (vision_config image_size {vc.image_size} / patch_size {vc.patch_size})"
        blocks = []
        for run in runs_of(ids[:prompt_len], image_id):
            if len(run) % per:
                raise InputError(
                    f"a run of {len(run)} image token(s) at positions {int(run[0])}..{int(run[-1])} is "
                    f"not a whole number of images of {per} tokens each ({what})"
                )
            blocks.extend(run.reshape(-1, per))
        pixels = _count(inputs.get("pixel_values"))
        if pixels is not None and pixels != len(blocks):
            raise InputError(
                f"the prompt holds image tokens for {len(blocks)} image(s) ({per} each: {what}) but "
                f"pixel_values holds {pixels}"
            )
        for k, block in enumerate(blocks):
            pm.add_image(place_grid(block, rows, cols, f"PaliGemma image {k}"))
        return pm
