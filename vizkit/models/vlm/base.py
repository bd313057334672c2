"""What every vision-language family adapter answers, and the position map it answers with.

A :class:`VLMFamily` reads, from the model's own config and the processor's own outputs (never a
hard-coded size), which positions of a prompt are image patches, of which image, which tile or
view, and their ``(row, col)`` in that image; positions it cannot place (separators, row breaks,
tile markers, newline tokens) are ``SPECIAL`` text-side tokens, never patches.

Kinds (``PositionMap.kind``): ``TEXT`` 0, ``IMAGE`` 1, ``GENERATED`` 2, ``SPECIAL`` 3.
Views (``PositionMap.view``): ``MOSAIC`` 0 — the high-resolution patches of an image, tiles
stitched into one ``grids[k] = (rows, cols)`` mosaic; ``THUMBNAIL`` 1 — a global / base view of a
tiled image (LLaVA-NeXT's base image, InternVL's and Idefics3's thumbnail), on its own
``thumbnail_grids[k]``; -1 for non-image positions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ...errors import InputError
from ...positions import GENERATED, IMAGE, KIND_NAMES, MOSAIC, SPECIAL, TEXT, THUMBNAIL, PositionMap

__all__ = [
    "TEXT",
    "IMAGE",
    "GENERATED",
    "SPECIAL",
    "KIND_NAMES",
    "MOSAIC",
    "THUMBNAIL",
    "PositionMap",
    "VLMFamily",
    "config_value",
    "token_id",
    "runs_of",
    "place_grid",
]


class VLMFamily:
    """One family of image-text models: subclass, set the class attributes, implement
    :meth:`position_map`, and :func:`vizkit.models.vlm.register` it.

    - ``model_types``: the ``config.json`` ``model_type`` values it reads;
    - ``model_class``: the transformers class that loads such a folder;
    - ``name``: how the documentation and messages call it; ``reads``: what its adapter reads;
    - ``limits``: what it does not do (both shown in docs/howto/vlm-families.md).
    """

    model_types: tuple[str, ...] = ()
    model_class: str = ""
    name: str = ""
    reads: str = ""
    limits: str = "batch size 1"

    def check(self, config: Any) -> None:
        """Refuse a variant of the family the adapter cannot place (one clear :class:`InputError`)."""

    def processor_kwargs(self, processor: Any) -> dict[str, Any]:
        """Keyword arguments the processor call needs so that a saved setting takes effect (a
        processor whose call-time defaults override its image processor's saved ones)."""
        return {}

    def position_map(
        self, config: Any, inputs: Mapping[str, Any], prompt_len: int | None = None, processor: Any = None
    ) -> PositionMap:
        """The :class:`PositionMap` of one prompt: ``inputs`` are the processor's outputs for it
        (``input_ids`` ``[1, T]`` or ``[T]``, ``image_grid_thw``, ``image_sizes``,
        ``pixel_values`` ... as that family's processor returns them)."""
        raise NotImplementedError

    def decoder_layers(self, model: torch.nn.Module) -> torch.nn.ModuleList:
        """The language model's ``nn.ModuleList`` of decoder blocks (each with ``.self_attn``)."""
        for path in (
            "model.language_model.layers",
            "language_model.model.layers",
            "model.language_model.model.layers",
            "language_model.layers",
            "model.layers",
        ):
            obj: Any = model
            try:
                for part in path.split("."):
                    obj = getattr(obj, part)
            except AttributeError:
                continue
            if isinstance(obj, torch.nn.ModuleList) and len(obj) and hasattr(obj[0], "self_attn"):
                return obj
        raise InputError(f"{type(model).__name__} has no decoder ModuleList of blocks with .self_attn")

    @staticmethod
    def input_ids(inputs: Mapping[str, Any]) -> np.ndarray:
        ids = inputs["input_ids"]
        ids = ids.tolist() if hasattr(ids, "tolist") else ids
        arr = np.asarray(ids, dtype=np.int64)
        if arr.ndim == 2:
            if arr.shape[0] != 1:
                raise InputError(f"position maps are per prompt: got a batch of {arr.shape[0]} (batch size 1 only)")
            arr = arr[0]
        return arr


def config_value(config: Any, *names: str, default: Any = None) -> Any:
    """The first of ``names`` set on ``config`` or its ``text_config`` / ``vision_config``."""
    for name in names:
        for c in (config, getattr(config, "text_config", None), getattr(config, "vision_config", None)):
            if c is not None and getattr(c, name, None) is not None:
                return getattr(c, name)
    return default


def token_id(config: Any, processor: Any, *names: str, token: str | None = None) -> int | None:
    """A special token's id: from the config (``image_token_id`` ...), else the processor's
    tokenizer (``token`` as text)."""
    value = config_value(config, *names)
    if value is not None:
        return int(value)
    tok = getattr(processor, "tokenizer", processor)
    if token is not None and tok is not None:
        i = tok.convert_tokens_to_ids(token)
        if i is not None and i != getattr(tok, "unk_token_id", None):
            return int(i)
    return None


def runs_of(ids: np.ndarray, value: int | Sequence[int]) -> list[np.ndarray]:
    """Maximal runs of consecutive positions whose id is ``value`` (or one of them)."""
    where = np.flatnonzero(np.isin(ids, np.atleast_1d(value)))
    return np.split(where, np.flatnonzero(np.diff(where) != 1) + 1) if len(where) else []


def place_grid(positions: np.ndarray, rows: int, cols: int, what: str) -> np.ndarray:
    """``positions`` as a ``[rows, cols]`` grid, or an :class:`InputError` saying the counts differ."""
    positions = np.asarray(positions, np.int64)
    if rows * cols != len(positions):
        raise InputError(
            f"{what}: {len(positions)} image token(s) do not fill a {rows} x {cols} grid ({rows * cols} cells)"
        )
    return positions.reshape(rows, cols)
