"""Gradient-weighted attention of a Hugging Face CLIP vision tower + linear head, written out from the
definitions: the reference the scenario-1 tests compare vizkit with (independent of vizkit's capture,
which hooks the attention modules, and of :mod:`vizkit.attention_math`).

The tower runs with eager attention and ``output_attentions=True``; each layer's attention gets its
gradient by autograd from the class logit; per layer ``Ā = fuse_heads((∇A ⊙ A)⁺)``; the layers are
combined by their plain mean or by Chefer's ``R ← R + Ā R`` from ``R = I``; the map is the CLS row
over the patches, clamped at 0."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

FUSE = {"mean": lambda t: t.mean(1), "max": lambda t: t.amax(1), "min": lambda t: t.amin(1)}


def class_maps(
    vision: torch.nn.Module,
    head: torch.nn.Module,
    x: torch.Tensor,
    classes: Sequence[int],
    fusion: str = "mean",
    aggregation: str = "relevance",
    layers: Sequence[int] | None = None,
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """``(logits [B, C], {class: raw map [B, h, w]})`` of ``head(vision(x).pooler_output)`` over the
    blocks ``layers`` (default all); the tower's attention implementation is set back afterwards."""
    before = vision.config._attn_implementation
    vision.set_attn_implementation("eager")
    try:
        with torch.enable_grad():
            out = vision(pixel_values=x, output_attentions=True)
            attns = list(out.attentions)  # [B, H, N, N] per layer, in the graph
            logits = head(out.pooler_output)
            grads = {k: torch.autograd.grad(logits[:, k].sum(), attns, retain_graph=True) for k in classes}
    finally:
        vision.set_attn_implementation(before)
    b, n = x.shape[0], attns[0].shape[-1]
    side = int(round((n - 1) ** 0.5))
    maps = {}
    for k in classes:
        chosen = range(len(attns)) if layers is None else layers
        bars = [FUSE[fusion]((grads[k][i] * attns[i]).clamp(min=0)).detach() for i in chosen]
        if aggregation == "mean":
            m = torch.stack(bars).mean(0)
        else:
            m = torch.eye(n).expand(b, n, n)
            for bar in bars:
                m = m + bar @ m
        maps[k] = m[:, 0, 1:].reshape(b, side, side).clamp(min=0)
    return logits.detach(), maps


def to_input_size(raw: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, h, w]`` -> ``[B, size, size]``: min-max normalised per map, then resized bilinearly."""
    lo, hi = raw.amin((1, 2), keepdim=True), raw.amax((1, 2), keepdim=True)
    return F.interpolate(((raw - lo) / (hi - lo))[:, None], size=(size, size), mode="bilinear", align_corners=False)[
        :, 0
    ]
