"""Attention math as pure tensor functions: head fusion, rollout, gradient-weighted relevance.

Conventions: attention ``[B, H, N, N]`` is post-softmax, row ``i`` = query token ``i``;
token 0 is the CLS token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import VizkitError

HEAD_FUSIONS = ("mean", "max", "min")
#: how per-layer gradient-weighted attention is combined: Chefer's relevance propagation, or
#: the plain mean over the layers that scripts like seed 000's compute
AGGREGATIONS = ("relevance", "mean")


def fuse_heads(attn: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """``[B, H, N, N]`` -> ``[B, N, N]`` by the mean, max or min over heads."""
    if attn.ndim != 4:
        raise VizkitError(f"expected attention [B, H, N, N], got shape {tuple(attn.shape)}")
    if head_fusion == "mean":
        return attn.mean(1)
    if head_fusion == "max":
        return attn.amax(1)
    if head_fusion == "min":
        return attn.amin(1)
    raise VizkitError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, got {head_fusion!r}")


def select_heads(attn: torch.Tensor, heads: str | int = "all") -> torch.Tensor:
    """``[B, H, q, K]`` attention rows -> ``[B, H', q, K]``: every head (``"all"``, ``H' = H``), their mean or
    max (``H' = 1``, the mean in float32), or head ``heads`` (an index in ``-H .. H - 1``, ``H' = 1``)."""
    if heads == "all":
        return attn
    if heads in ("mean", "max"):
        return fuse_heads(attn.float() if heads == "mean" else attn, heads)[:, None]
    n = attn.shape[1]
    if not -n <= heads < n:
        raise VizkitError(f"head {heads} is out of range for {n} heads (0..{n - 1})")
    return attn[:, heads % n : heads % n + 1]


def discard_lowest(attn: torch.Tensor, ratio: float, keep_token: int = 0) -> torch.Tensor:
    """Zero the lowest ``ratio`` of the entries of ``[B, N, N]`` attention, per image.

    The row and the column of ``keep_token`` (the CLS token) are never discarded; the ratio
    is a fraction of the remaining ``(N-1)^2`` entries. Which of several tied entries are zeroed is
    ``torch.topk``'s choice.
    """
    if not 0.0 <= ratio < 1.0:
        raise VizkitError(f"discard_ratio must be in [0, 1), got {ratio}")
    b, n, _ = attn.shape
    k = int(ratio * (n - 1) ** 2)
    if k == 0:
        return attn
    protected = torch.zeros(n, n, dtype=torch.bool, device=attn.device)
    protected[keep_token, :] = True
    protected[:, keep_token] = True
    flat = attn.reshape(b, n * n).masked_fill(protected.reshape(1, -1), float("inf"))
    lowest = flat.topk(k, dim=-1, largest=False, sorted=False).indices
    return attn.reshape(b, n * n).scatter(1, lowest, 0.0).reshape(b, n, n)


def rollout_matrix(
    attentions: Sequence[torch.Tensor], head_fusion: str = "mean", discard_ratio: float = 0.0
) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020) over ``[B, H, N, N]`` maps in layer order.

    Per layer: fuse heads, discard the lowest ``discard_ratio``, add the residual
    ``(A + I) / 2``, renormalise every row to sum to 1; then ``R = A_l @ R``. Returns
    ``[B, N, N]``.
    """
    if not attentions:
        raise VizkitError("rollout needs at least one attention map")
    result = None
    for attn in attentions:
        if attn.ndim != 4 or attn.shape[-1] != attn.shape[-2]:
            raise VizkitError(
                f"rollout needs attention maps [B, H, N, N] (N query = N key tokens), got {tuple(attn.shape)}"
            )
        a = discard_lowest(fuse_heads(attn.float(), head_fusion), discard_ratio)
        eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        a = (a + eye) / 2
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    return result


def gradient_weighted(attn: torch.Tensor, grad: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """One layer's gradient-weighted attention ``Ā = fuse_heads((∇A ⊙ A)⁺)``: ``[B, H, N, N]``
    attention and its gradient -> ``[B, N, N]``."""
    return fuse_heads((grad.float() * attn.float()).clamp(min=0), head_fusion)


def _check_pairs(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor]) -> None:
    if len(attentions) != len(gradients) or not attentions:
        raise VizkitError("relevance needs one gradient per attention map (and at least one)")


def relevance_matrix(
    attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor], head_fusion: str = "mean"
) -> torch.Tensor:
    """Gradient-weighted attention relevance (Chefer et al., ICCV 2021), layers in order.

    Per layer ``Ā = fuse_heads((∇A ⊙ A)⁺)`` and ``R ← R + Ā R`` starting from ``R = I``.
    Inputs are ``[B, H, N, N]`` each; returns ``[B, N, N]``.
    """
    _check_pairs(attentions, gradients)
    b, _, n, _ = attentions[0].shape
    r = torch.eye(n, device=attentions[0].device).expand(b, n, n).clone()
    for attn, grad in zip(attentions, gradients):
        r = r + gradient_weighted(attn, grad, head_fusion) @ r
    return r


def mean_relevance_matrix(
    attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor], head_fusion: str = "mean"
) -> torch.Tensor:
    """The plain aggregation: the mean over layers of ``Ā = fuse_heads((∇A ⊙ A)⁺)`` (no
    propagation through the layers). Inputs ``[B, H, N, N]`` each; returns ``[B, N, N]``."""
    _check_pairs(attentions, gradients)
    return torch.stack([gradient_weighted(a, g, head_fusion) for a, g in zip(attentions, gradients)]).mean(0)


def aggregate(
    attentions: Sequence[torch.Tensor],
    gradients: Sequence[torch.Tensor],
    head_fusion: str = "mean",
    aggregation: str = "relevance",
) -> torch.Tensor:
    """``[B, N, N]`` by :func:`relevance_matrix` (``"relevance"``) or :func:`mean_relevance_matrix` (``"mean"``)."""
    if aggregation == "relevance":
        return relevance_matrix(attentions, gradients, head_fusion)
    if aggregation == "mean":
        return mean_relevance_matrix(attentions, gradients, head_fusion)
    raise VizkitError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
