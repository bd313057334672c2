"""Attention of a batch of classified images, captured once and read many times.

:func:`cache_attention` runs ONE batched forward pass of a ViT classifier recording every chosen
block's post-softmax attention (:func:`vizkit.explain.attention`), and, optionally, one backward
pass for the gradient-weighted attention relevance of each image's predicted class
(:func:`vizkit.explain.gradient_attention`, Chefer et al., ICCV 2021). The
:class:`AttentionCache` it returns answers the questions figures and widget explorers ask -- the
CLS attention of one sample, layer and head (or fused heads), attention rollout (Abnar & Zuidema,
ACL 2020) -- without running the model again.

Example::

    from vizkit.attention_cache import cache_attention
    cache = cache_attention(model, x, images, labels)       # x [S, C, H, W], images [S, H, W] uint8
    cache.cls_map(0, layer=-1)                               # [h, w]: sample 0, last layer, mean of heads
    cache.rollout_map(0, "max"), cache.caption(0)            # [h, w]; "label 7, predicted 7 (99.1%)"
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .attention_math import fuse_heads
from .explain import AttentionMaps, attention, gradient_attention, rollout

__all__ = ["AttentionCache", "cache_attention"]


@dataclass
class AttentionCache:
    """Everything the figures and widgets need, computed once.

    ``images`` ``[S, H, W]`` uint8 for display; ``inputs`` ``[S, C, H, W]`` model inputs;
    ``labels`` ``[S]`` (-1: unknown), ``preds`` ``[S]`` and ``probs`` ``[S, classes]``;
    ``attn`` per-layer ``[S, heads, N, N]``; ``relevance`` ``[S, h, w]`` gradient-weighted
    attention for the predicted class (optional).
    """

    images: np.ndarray
    inputs: torch.Tensor
    labels: torch.Tensor
    preds: torch.Tensor
    probs: torch.Tensor
    attn: AttentionMaps
    relevance: torch.Tensor | None = None
    _rollouts: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        return self.attn.layers

    @property
    def num_heads(self) -> int:
        return int(self.attn.maps[self.layers[0]].shape[1])

    def cls_map(self, sample: int, layer: int | str, head: int | None = None, head_fusion: str = "mean") -> np.ndarray:
        """CLS -> patch attention ``[h, w]`` of one sample: one head, or fused over heads."""
        per_head = self.attn.cls_attention(layer, head_fusion=None)[sample]  # [heads, h, w]
        if head is not None:
            return per_head[head].numpy()
        return fuse_heads(per_head[None], head_fusion)[0].numpy()

    def rollout_map(self, sample: int, head_fusion: str = "mean") -> np.ndarray:
        """Attention rollout ``[h, w]`` over all captured layers (cached per head fusion)."""
        if head_fusion not in self._rollouts:
            self._rollouts[head_fusion] = rollout(self.attn, head_fusion=head_fusion)
        return self._rollouts[head_fusion][sample].numpy()

    def caption(self, sample: int) -> str:
        """``"label 3, predicted 3 (97.5%)"`` (no label part when the label is -1)."""
        label = int(self.labels[sample])
        pred, conf = int(self.preds[sample]), float(self.probs[sample].max())
        truth = f"label {label}, " if label >= 0 else ""
        return f"{truth}predicted {pred} ({conf:.1%})"


def cache_attention(
    model: nn.Module,
    inputs: torch.Tensor,
    images: Any,
    labels: Sequence[int],
    layers: Any = "all",
    relevance: bool = True,
    head_fusion: str = "mean",
) -> AttentionCache:
    """The attention of a classifier's batch ``inputs`` ``[S, C, H, W]`` (on the model's device)
    from one forward pass; ``images`` (``[S, H, W]`` or ``[S, H, W, 3]``, for display) and
    ``labels`` ``[S]`` are kept beside it. With ``relevance``, one backward pass more: the
    gradient-weighted attention of each predicted class (heads fused by ``head_fusion``),
    area-resized to the patch grid ``[S, h, w]``."""
    attn = attention(model, inputs, layers=layers)
    probs = attn.output.softmax(-1).cpu()
    preds = probs.argmax(-1)
    rel = None
    if relevance:
        rel = gradient_attention(model, inputs, preds.tolist(), layers=layers, head_fusion=head_fusion)
        rel = F.interpolate(rel.heatmap[:, None], size=attn.grid, mode="area")[:, 0]
    return AttentionCache(
        images=np.asarray(images),
        inputs=inputs.cpu(),
        labels=torch.tensor([int(v) for v in labels]),
        preds=preds,
        probs=probs,
        attn=attn,
        relevance=rel,
    )
