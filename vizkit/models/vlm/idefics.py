"""Idefics3 and SmolVLM (``idefics3``, ``smolvlm``): tiles with ``<row_r_col_c>`` markers and a global image.

The image processor (``Idefics3ImageProcessor`` / ``SmolVLMImageProcessor``) resizes an image,
resizes it again up to multiples of ``max_image_size`` and cuts it into ``rows x cols`` tiles,
row by row (``split_images``), then appends the whole image squashed to one tile: the global image.
The tower sees each tile at ``vision_config.image_size``; the connector's pixel shuffle
(``Idefics3Connector.pixel_shuffle``) folds every ``scale_factor x scale_factor`` block of patches
into one token, row-major over an ``s x s`` grid, ``s = image_size / patch_size / scale_factor``.
The processor (``replace_image_token`` / ``get_image_prompt_string``) writes, per image:

- split (``rows, cols > 0``): for each tile in row-major order ``<fake_token_around_image>``
  ``<row_r_col_c>`` and ``s * s`` ``<image>`` tokens, ``"\\n"`` after each row of tiles, then
  ``"\\n"`` ``<fake_token_around_image><global-img>`` + ``s * s`` ``<image>`` +
  ``<fake_token_around_image>``;
- unsplit (``rows = cols = 0``, e.g. ``do_image_splitting=False``): only the global image block.

The tiles are stitched into ONE ``(rows * s, cols * s)`` ``MOSAIC`` (the first token of tile
``(r, c)`` at cell ``(r * s, c * s)``; ``tile`` = ``r * cols + c``, the tile's index in
``pixel_values``), the global image is the ``THUMBNAIL`` view (``s x s``); an unsplit image's global
image is its ``MOSAIC`` (tile 0), with no thumbnail. Markers (``<fake_token_around_image>``,
``<row_r_col_c>``, ``<global-img>``) and the row-break newlines inside an image block are ``SPECIAL``.

The processor does not return its ``rows`` / ``cols`` (it pops them): they are read from the
``<row_r_col_c>`` markers in ``input_ids``, checked token for token against the layout above and
against the number of tiles in ``pixel_values`` (``pixel_attention_mask``). Read: the config's
``image_token_id``, ``scale_factor``, ``vision_config.image_size`` / ``patch_size``; the marker ids
from the processor's tokenizer (its added ``<row_r_col_c>`` tokens). Anything that does not match
is one :class:`InputError`; a grid is never guessed from a run's length.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ...errors import InputError
from . import register
from .base import PositionMap, VLMFamily, config_value, runs_of, token_id

_ROW_COL = re.compile(r"<row_(\d+)_col_(\d+)>")


def _side(value: Any) -> int:
    """A square ``image_size`` / ``patch_size`` as one int (a non-square pair is refused by ``check``)."""
    return int(value[0]) if isinstance(value, (list, tuple)) else int(value)


def stitch_tiles(tiles: list[np.ndarray], rows: int, cols: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """``rows * cols`` tiles (each ``side * side`` positions, row-major, tiles in row-major order)
    as one ``(rows * side, cols * side)`` mosaic of positions and the tile index of each cell."""
    mosaic = np.zeros((rows * side, cols * side), np.int64)
    for t, run in enumerate(tiles):
        r, c = divmod(t, cols)
        mosaic[r * side : (r + 1) * side, c * side : (c + 1) * side] = np.asarray(run).reshape(side, side)
    tile = (np.arange(rows * side)[:, None] // side) * cols + np.arange(cols * side)[None, :] // side
    return mosaic, tile


def real_tiles(inputs: Mapping[str, Any]) -> int | None:
    """How many tiles (crops + global images) ``pixel_values`` ``[1, N, C, H, W]`` holds: the tiles
    with any unpadded pixel in ``pixel_attention_mask`` (the model drops all-padding ones), or N."""
    pixels = inputs.get("pixel_values")
    if pixels is None or not hasattr(pixels, "shape") or len(pixels.shape) != 5:
        return None
    mask = inputs.get("pixel_attention_mask")
    if mask is not None and hasattr(mask, "shape") and tuple(mask.shape[:2]) == tuple(pixels.shape[:2]):
        return int(torch.as_tensor(mask)[0].reshape(pixels.shape[1], -1).any(-1).sum())
    return int(pixels.shape[1])


@register
class Idefics3(VLMFamily):
    """Idefics3: ``rows x cols`` tiles stitched into a mosaic plus a global thumbnail."""

    model_types = ("idefics3",)
    model_class = "Idefics3ForConditionalGeneration"
    name = "Idefics3"
    reads = (
        "config image_token_id, scale_factor, vision_config (image_size, patch_size); the <row_r_col_c> / "
        "<global-img> / <fake_token_around_image> markers in input_ids (ids from the processor's tokenizer); "
        "pixel_values / pixel_attention_mask tile count"
    )
    limits = (
        "batch size 1; images only (no video frames); markers and row-break newlines are special positions; "
        "the global image is the thumbnail view (the mosaic of an unsplit image)"
    )

    def check(self, config: Any) -> None:
        vc = config.vision_config
        size, patch = vc.image_size, vc.patch_size
        scale = config_value(config, "scale_factor")
        for what, value in (("image_size", size), ("patch_size", patch)):
            if isinstance(value, (list, tuple)) and int(value[0]) != int(value[-1]):
                raise InputError(
                    f"{self.name} vision_config.{what} {list(value)} is not square: the connector's pixel "
                    f"shuffle needs a square patch grid"
                )
        if scale is None or int(scale) < 1:
            raise InputError(f"the {self.name} config has no scale_factor (the connector's pixel shuffle)")
        grid = _side(size) // _side(patch)
        if _side(size) % _side(patch) or grid % int(scale):
            raise InputError(
                f"{self.name} vision_config image_size {size} / patch_size {patch} = {grid} patches per "
                f"side, not a multiple of scale_factor {scale}"
            )

    def decoder_layers(self, model: torch.nn.Module) -> torch.nn.ModuleList:
        layers = getattr(getattr(getattr(model, "model", None), "text_model", None), "layers", None)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) and hasattr(layers[0], "self_attn"):
            return layers
        return super().decoder_layers(model)

    @staticmethod
    def _markers(config: Any, processor: Any) -> tuple[int | None, int | None, dict[int, tuple[int, int]]]:
        """``<fake_token_around_image>`` and ``<global-img>`` ids, and ``{id: (r, c)}`` (1-based) of
        the ``<row_r_col_c>`` tokens the tokenizer knows."""
        tok = getattr(processor, "tokenizer", processor)
        fake = getattr(processor, "fake_image_token_id", None)
        fake = (
            fake
            if fake is not None
            else token_id(config, processor, "fake_image_token_id", token="<fake_token_around_image>")
        )
        glob = getattr(processor, "global_image_token_id", None)
        glob = glob if glob is not None else token_id(config, processor, "global_image_token_id", token="<global-img>")
        row_col: dict[int, tuple[int, int]] = {}
        if tok is not None:
            names = dict(getattr(tok, "get_added_vocab", dict)() or {})
            names.update(
                {
                    f"<row_{r}_col_{c}>": None
                    for r in range(1, 7)
                    for c in range(1, 7)
                    if f"<row_{r}_col_{c}>" not in names
                }
            )
            unk = getattr(tok, "unk_token_id", None)
            for text, i in names.items():
                m = _ROW_COL.fullmatch(text)
                if m is None:
                    continue
                i = tok.convert_tokens_to_ids(text) if i is None else i
                if i is not None and i != unk:
                    row_col[int(i)] = (int(m.group(1)), int(m.group(2)))
        return fake, glob, row_col

    def position_map(
        self, config: Any, inputs: Mapping[str, Any], prompt_len: int | None = None, processor: Any = None
    ) -> PositionMap:
        """Image ``k`` is the ``k``-th image block of the prompt (``pixel_values`` order)."""
        self.check(config)
        ids = self.input_ids(inputs)
        prompt_len = len(ids) if prompt_len is None else int(prompt_len)
        pm = PositionMap.empty(len(ids), prompt_len)
        prompt = ids[:prompt_len]
        image_id = token_id(config, processor, "image_token_id", token="<image>")
        if image_id is None:
            raise InputError(f"the {self.name} config names no image_token_id")
        runs = runs_of(prompt, image_id)
        if not runs:
            return pm
        fake, glob, row_col = self._markers(config, processor)
        if fake is None or glob is None or not row_col:
            raise InputError(
                f"{self.name} reads its tiles from the <fake_token_around_image>, <global-img> and "
                f"<row_r_col_c> markers: pass the model's processor (its tokenizer knows their ids)"
            )
        vc = config.vision_config
        scale = int(config_value(config, "scale_factor"))
        side = _side(vc.image_size) // _side(vc.patch_size) // scale
        per = side * side
        what = (
            f"{side} x {side} tokens per tile (vision_config image_size {vc.image_size} / patch_size "
            f"{vc.patch_size} / scale_factor {scale})"
        )
        tok = getattr(processor, "tokenizer", processor)
        markers = np.array([image_id, fake, glob, *row_col], np.int64)

        def gap(lo: int, hi: int, where: str) -> np.ndarray:
            """Positions ``lo..hi-1`` between tiles: the processor's row-break newline(s), nothing else."""
            span = np.arange(lo, hi)
            text = tok.decode(prompt[span].tolist()) if tok is not None and len(span) else ""
            if not len(span) or np.isin(prompt[span], markers).any() or text.strip():
                raise InputError(
                    f"{self.name}: {where} (positions {lo}..{hi - 1}) the processor writes a newline; "
                    f"the prompt holds {text!r}"
                )
            return span

        images: list[dict[str, Any]] = []
        current: list[tuple[int, int, np.ndarray]] = []  # the open image's tiles (r, c, positions)
        for run in runs:
            a = int(run[0])
            if len(run) != per:
                raise InputError(
                    f"{self.name}: a run of {len(run)} <image> tokens at position {a}, not one tile of {per} ({what})"
                )
            head = prompt[a - 2 : a] if a >= 2 else np.zeros(0, np.int64)
            if len(head) != 2 or head[0] != fake or (head[1] != glob and int(head[1]) not in row_col):
                raise InputError(
                    f"{self.name}: the <image> tokens at position {a} are not preceded by "
                    f"<fake_token_around_image> and a <row_r_col_c> or <global-img> marker"
                )
            if head[1] != glob:
                r, c = row_col[int(head[1])]
                current.append((r, c, run))
                continue
            end = int(run[-1]) + 1
            if end >= prompt_len or prompt[end] != fake:
                raise InputError(
                    f"{self.name}: the global image at positions {a}..{end - 1} is not closed by "
                    f"<fake_token_around_image>"
                )
            images.append({"tiles": current, "global": run, "special": [a - 2, a - 1, end]})
            current = []
        if current:
            r, c, run = current[-1]
            raise InputError(
                f"{self.name}: the tile <row_{r}_col_{c}> at position {int(run[0])} is not followed by "
                f"its image's global image (<fake_token_around_image><global-img>): the prompt is cut"
            )

        for k, img in enumerate(images):
            tiles, special = img["tiles"], list(img["special"])
            if not tiles:
                pm.mark_special(special)
                pm.add_image(img["global"].reshape(side, side))
                continue
            rows, cols = max(r for r, _, _ in tiles), max(c for _, c, _ in tiles)
            order = [(r, c) for r, c, _ in tiles]
            if order != [(r, c) for r in range(1, rows + 1) for c in range(1, cols + 1)]:
                raise InputError(
                    f"{self.name} image {k}: the tile markers {order} are not <row_1_col_1> .. "
                    f"<row_{rows}_col_{cols}> in row-major order"
                )
            for t, (r, c, run) in enumerate(tiles):
                a = int(run[0])
                special += [a - 2, a - 1]
                nxt = int(tiles[t + 1][2][0]) - 2 if t + 1 < len(tiles) else int(img["global"][0]) - 2
                if c < cols and nxt != int(run[-1]) + 1:
                    raise InputError(
                        f"{self.name} image {k}: tile <row_{r}_col_{c}> is not followed at once by the "
                        f"next tile of its row"
                    )
                if c == cols:
                    special += gap(int(run[-1]) + 1, nxt, f"image {k}: after tile row {r}").tolist()
            mosaic, tile = stitch_tiles([run for _, _, run in tiles], rows, cols, side)
            pm.mark_special(special)
            pm.add_image(mosaic, tiles=tile, thumbnail=img["global"].reshape(side, side))

        need = sum(len(img["tiles"]) + 1 for img in images)
        have = real_tiles(inputs)
        if have is not None and have != need:
            grids = [
                f"{max(r for r, _, _ in i['tiles'])} x {max(c for _, c, _ in i['tiles'])} + global"
                if i["tiles"]
                else "global only"
                for i in images
            ]
            raise InputError(
                f"the prompt's {len(images)} image(s) ({', '.join(grids)}) need {need} tile(s) but "
                f"pixel_values holds {have}"
            )
        return pm


@register
class SmolVLM(Idefics3):
    """SmolVLM: the Idefics3 layout (``<global-img>`` etc. named on its tokenizer)."""

    model_types = ("smolvlm",)
    model_class = "SmolVLMForConditionalGeneration"
    name = "SmolVLM"
