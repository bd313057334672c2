"""Scenario 5's ground truth on the zoo's ``tiny_vlm``: does the answer's attention over the image
peak on the object the question names? :func:`explain_answer_attention` (every layer's maps from
one teacher-forced forward) and :func:`ground_truth_table` (per layer x head, against a random
pixel), shown in scenario 5's report and notebook. The score: the pointing game -- the
fraction of questions whose attention over the 6 x 6 image grid peaks inside the named object's
mask.

Example::

    from vizkit.scenarios.vlm_ground_truth import ground_truth_table
    table, info = ground_truth_table(n=200)   # per layer x head; info["random_pixel"] is chance
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..explain import attention
from ..zoo.common import Sample
from ..zoo.tiny_vlm import (
    GRID,
    IMAGE_SIZE,
    NUM_IMAGE_TOKENS,
    Encoder,
    answer_position,
    decoder_layer_names,
    generate_ids,
    image_offset,
    preprocess,
)

__all__ = [
    "explain_answer_attention",
    "ground_truth_table",
    "choose_heads",
    "table_value",
    "FUSED_VIEWS",
    "sample_object_mask",
    "trace_object_mass",
]


def explain_answer_attention(
    model,
    tokenizer,
    samples: Sequence[Sample],
    layers: Sequence[str] | None = None,
    query: str = "predict",
    max_new_tokens: int = 32,
) -> dict[str, Any]:
    """The decoder's attention from the answer over the image tokens, as heatmaps.

    Generates each solution greedily, then runs ONE forward pass on (prompt + solution) with
    ``vizkit.attention`` hooked on the decoder ``layers`` (default: all), with the model's
    attention implementation left as it is. Sequences are right-padded, so the 36 image
    tokens sit at ``image_offset .. +35`` in every row. The query row is the token that
    predicts the answer (``query="predict"``: the ":" of "Answer:") or the answer token itself
    (``query="answer"``). Its attention over the image tokens, averaged over heads and layers,
    is reshaped to the 6x6 grid and upsampled bilinearly to 48x48.

    Measured on the shipped model (96 test questions, ``tests/zoo/test_tiny_vlm.py``): this
    map's peak falls on the asked-about object for 84.4 % of questions from the ":" and
    92.7 % from the answer token (a random pixel: 4.9 %). The decoder was trained with one
    head supervised to look at that object (:mod:`vizkit.zoo.train.tiny_vlm`); before that
    supervision the same measurement gave 10 % and 35 %: the model looked the object up
    earlier, at the reasoning token ("The star is" -> "red"), and the answer after "Answer:"
    copied it from the text, so attention per generated token is the faithful view.

    Returns ``maps`` (layer -> ``[B, heads, T, T]``), ``input_ids``, ``attention_mask``,
    ``query_positions`` ``[B]``, ``grid_maps`` ``[B, 6, 6]``, ``heatmaps`` ``[B, 48, 48]`` and
    the decoded ``solutions``.
    """
    enc = Encoder(tokenizer)
    layers = list(layers) if layers is not None else decoder_layer_names(model)
    images = [s.image for s in samples]
    sols = generate_ids(model, tokenizer, images, [s.question for s in samples], max_new_tokens)
    prompts = [enc.prompt_ids(s.question) for s in samples]
    ids, att, _ = enc.batch(prompts, sols)
    qpos = []
    for p, sol in zip(prompts, sols):
        k = answer_position(tokenizer, sol)
        if k is None:
            k = len(sol) - 1  # no "Answer:" generated: fall back to the last token
        qpos.append(len(p) + k - (1 if query == "predict" else 0))
    px = torch.stack([preprocess(im) for im in images])
    model.eval()
    attn = attention(
        model, px, layers=layers, forward=lambda x: model(input_ids=ids, attention_mask=att, pixel_values=x)
    )
    off = image_offset(tokenizer)
    rows = torch.stack([attn.maps[n] for n in layers]).mean((0, 2))  # [B, T, T] (layers, heads averaged)
    q = torch.tensor(qpos)
    over_image = rows[torch.arange(len(q)), q, off : off + NUM_IMAGE_TOKENS]
    grid_maps = over_image.reshape(-1, *GRID)
    heat = F.interpolate(grid_maps[:, None], size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)[:, 0]
    return {
        "maps": attn.maps,
        "input_ids": ids,
        "attention_mask": att,
        "query_positions": q,
        "grid_maps": grid_maps,
        "heatmaps": heat,
        "solutions": tokenizer.batch_decode(sols, skip_special_tokens=True),
    }


#: the fused views compared with every single head in :func:`ground_truth_table`
FUSED_VIEWS = ("mean", "max")


def _view_rows(m: torch.Tensor, view: Any) -> torch.Tensor:
    """``m`` ``[B, heads, T, T]`` -> ``[B, T, T]``: one head (an int) or the heads fused by ``mean`` / ``max``."""
    if view == "mean":
        return m.mean(1)
    if view == "max":
        return m.amax(1)
    return m[:, int(view)]


@torch.no_grad()
def ground_truth_table(
    n: int = 200, start: int = 0, split: str = "test", batch_size: int = 50, max_new_tokens: int = 32
) -> tuple[Any, dict[str, Any]]:
    """tiny_vlm, per decoder layer and head view (each head, and the heads fused by mean and by max):
    does the answer token's attention over the 6x6 image grid land on the object the question names?
    Over the held-out questions among ``split`` items ``start .. start+n-1`` that name one object.

    The model generates each solution; one teacher-forced forward on (prompt + solution) gives
    every layer's maps (:func:`explain_answer_attention`). Columns: the pointing game (does the map's
    peak fall inside the object's mask) from the answer token's own row (``answer token``) and from
    the step that produced it (``producing step``, what the video shows for that token); ``object
    mass``: the share of the producing step's attention over the image that falls on the object
    (:func:`vizkit.metrics.attention_mass.mass_on_mask`); ``chance``: what a map without information
    scores on both (a random pixel's hit rate = uniform attention's mass = the mask's area fraction, the
    8x8-pixel patches tile the image); ``at or below chance``: the columns at or below it.
    Returns ``(table, info)``.
    """
    import pandas as pd

    from .. import zoo
    from ..evaluate import batched, masks_like
    from ..metrics import at_or_below_chance, pointing_chance, pointing_game
    from ..metrics.attention_mass import mass_on_mask, patch_coverage, uniform_mass_on_mask
    from ..models.load_common import hub_offline
    from ..zoo import vlm_data

    with hub_offline():  # no "Loading weights" progress bar
        bundle = zoo.load("tiny_vlm")
    samples = [s for s in vlm_data.dataset(split, n=n, start=start) if s.mask is not None]
    layers = decoder_layer_names(bundle.model)
    heads = bundle.model.config.text_config.num_attention_heads
    views: list[Any] = [*range(heads), *FUSED_VIEWS]
    hits: dict[tuple[int, Any, str], list[torch.Tensor]] = {}
    chance, uniform = [], []
    for _, chunk in batched(samples, batch_size):
        res = explain_answer_attention(
            bundle.model, bundle.tokenizer, chunk, layers, query="answer", max_new_tokens=max_new_tokens
        )
        masks = masks_like([s.mask for s in chunk], (IMAGE_SIZE, IMAGE_SIZE))
        cov = patch_coverage(masks, GRID)
        chance.append(pointing_chance(masks))
        uniform.append(uniform_mass_on_mask(cov))
        q = res["query_positions"]
        off = int(bundle.meta.get("image_offset", 4))
        b = torch.arange(len(chunk))
        for li, name in enumerate(layers):
            m = res["maps"][name]
            for view in views:
                fused = _view_rows(m, view)
                for label, rows in (("answer token", q), ("producing step", q - 1)):
                    over = fused[b, rows, off : off + NUM_IMAGE_TOKENS]
                    heat = F.interpolate(over.reshape(-1, 1, *GRID), size=(IMAGE_SIZE, IMAGE_SIZE), mode="nearest")
                    hits.setdefault((li, view, label), []).append(pointing_game(heat[:, 0], masks).float())
                    if label == "producing step":
                        hits.setdefault((li, view, "object mass"), []).append(mass_on_mask(over, cov))
    level = float(torch.cat(chance).mean())
    if abs(level - float(torch.cat(uniform).mean())) > 1e-9:  # pragma: no cover - the grid tiles the image
        raise AssertionError("the pointing chance and uniform attention's object mass differ")
    columns = ("answer token", "producing step", "object mass")
    rows = []
    for li in range(len(layers)):
        for view in views:
            row: dict[str, Any] = {"layer": li, "head": view}
            row.update({c: float(torch.cat(hits[li, view, c]).double().mean()) for c in columns})
            rows.append(row)
    table = pd.DataFrame(rows)
    sup = bundle.meta.get("train", {})
    table["chance"] = level
    table["at or below chance"] = [
        ", ".join(c for c in columns if at_or_below_chance(r[c], level)) for r in table.to_dict("records")
    ]
    table["trained with attention supervision"] = [
        "yes" if (int(sup.get("attn_sup_layer", 1)) == r["layer"] and r["head"] == 0 and sup.get("attn_sup")) else ""
        for r in table.to_dict("records")
    ]
    info = {
        "questions": len(samples),
        "drawn": n,
        "split": split,
        "start": start,
        "random_pixel": level,
        "supervised": f"layer {sup.get('attn_sup_layer', 1)} head 0",
    }
    return table, info


def choose_heads(table: Any, layers: Sequence[int], column: str = "object mass") -> dict[int, Any]:
    """The head view (a head index, ``"mean"`` or ``"max"``) of each of ``layers`` with the highest
    ``column`` in a :func:`ground_truth_table` (ties: the first row, heads before the fused views); a
    layer the table does not hold gets ``"mean"``."""
    out: dict[int, Any] = {}
    for layer in layers:
        rows = table[table["layer"] == int(layer)]
        best = rows.iloc[int(rows[column].to_numpy().argmax())]["head"] if len(rows) else "mean"
        out[int(layer)] = best if isinstance(best, str) else int(best)
    return out


def table_value(table: Any, layer: int, head: Any, column: str = "object mass") -> float:
    """One number of a :func:`ground_truth_table`: ``column`` of ``layer`` and head view ``head``."""
    same = table["head"].map(lambda h: isinstance(h, str) == isinstance(head, str) and h == head)
    rows = table[(table["layer"] == int(layer)) & same]
    if len(rows) != 1:
        raise KeyError(f"the table has no row for layer {layer}, head {head!r}")
    return float(rows.iloc[0][column])


def sample_object_mask(sample: dict[str, Any]) -> Any:
    """The mask ``[48, 48]`` bool of the object a tiny_vlm benchmark sample's question names (its ``id`` is
    ``"<split>-<index>"``, :func:`vizkit.zoo.vlm_data.write_benchmark`), or None: another benchmark, a
    question that names no object (a count, a "no"), or an entry whose problem is not that item's."""
    from ..zoo import vlm_data

    split, _, index = str(sample.get("id", "")).rpartition("-")
    if split not in vlm_data.SPLIT_IDS or not index.isdigit():
        return None
    item = vlm_data.item(split, int(index))
    if item.question != sample.get("problem") or item.mask is None:
        return None
    return np.asarray(item.mask, bool)


def trace_object_mass(trace: Any, layer: int, head: Any, mask: Any, image: int = 0) -> np.ndarray:
    """``[N]``: per answer token of ``trace``, the share of ``layer``'s row (``head``: an index, ``"mean"`` or
    ``"max"``) over image ``image``'s patch grid that falls on ``mask`` ``[H, W]`` (the grid must divide it):
    :func:`~vizkit.metrics.attention_mass.mass_on_mask`. Its chance level, uniform attention over the
    patches, is the mask's area fraction."""
    from ..metrics.attention_mass import mass_on_mask, patch_coverage

    rows = trace.head_rows(layer, head)  # [N, K]
    grid = tuple(int(g) for g in trace.pmap.grids[image])
    pos = trace.pmap.image_positions[image]
    cov = patch_coverage(torch.as_tensor(np.asarray(mask))[None], grid)  # [1, P]
    over = torch.as_tensor(np.asarray(rows[:, pos], np.float64))
    return mass_on_mask(over, cov.expand(len(over), -1)).numpy()
