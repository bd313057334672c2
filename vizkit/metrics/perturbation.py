"""Deletion / insertion curves (Petsiuk et al., 2018): :func:`deletion_auc`, :func:`insertion_auc`, and the
deletion AUC's two reference points for images with ground-truth masks (:func:`deletion_references`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["deletion_auc", "insertion_auc", "deletion_references"]


def _perturbation_curve(
    score_fn: Callable[[Tensor], Tensor],
    images: Tensor,
    heatmaps: Tensor,
    steps: int,
    baseline: float | Tensor,
    batch_size: int,
    return_curves: bool,
    insertion: bool,
) -> Tensor | tuple[Tensor, Tensor]:
    """Shared implementation of :func:`deletion_auc` / :func:`insertion_auc`."""
    if images.ndim != 4:
        raise ValueError(f"images must have shape [B, C, H, W], got {tuple(images.shape)}")
    b, _, h, w = images.shape
    if tuple(heatmaps.shape) != (b, h, w):
        raise ValueError(f"heatmaps must have shape [B, H, W] = {(b, h, w)}, got {tuple(heatmaps.shape)}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be >= 1, got steps={steps}, batch_size={batch_size}")
    base = torch.as_tensor(baseline, dtype=images.dtype, device=images.device)
    try:
        base = base.broadcast_to(images.shape)
    except RuntimeError as e:
        raise ValueError(
            f"baseline of shape {tuple(base.shape)} is not broadcastable to images {tuple(images.shape)}"
        ) from e

    # rank[b, p] = position of pixel p in the descending, stable ordering of heatmap b
    order = torch.argsort(heatmaps.reshape(b, -1).to(images.device), dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(h * w, device=order.device).expand(b, -1))
    # number of replaced pixels at step k = round(k / steps * H*W), rounding halves up
    counts = (2 * torch.arange(steps + 1, device=order.device) * h * w + steps) // (2 * steps)
    # top pixels are taken from `src`, the rest from `dst`
    src, dst = (images, base) if insertion else (base, images)

    total = b * (steps + 1)
    scores = []
    for start in range(0, total, batch_size):
        idx = torch.arange(start, min(start + batch_size, total), device=order.device)
        bi, ki = idx // (steps + 1), idx % (steps + 1)
        top = (rank[bi] < counts[ki, None]).view(-1, 1, h, w)
        out = score_fn(torch.where(top, src[bi], dst[bi]))
        if out.numel() != len(idx):
            raise ValueError(
                f"score_fn must return one score per image ([N]), got shape {tuple(out.shape)} for N={len(idx)}"
            )
        scores.append(out.detach().reshape(-1).float())
    curves = torch.cat(scores).view(b, steps + 1)
    auc = torch.trapezoid(curves, dx=1.0 / steps, dim=1)
    return (auc, curves) if return_curves else auc


# applied here, not as a @decorator line: mutmut (`make mutation`) does not mutate decorated functions
_perturbation_curve = torch.no_grad()(_perturbation_curve)


def deletion_auc(
    score_fn: Callable[[Tensor], Tensor],
    images: Tensor,
    heatmaps: Tensor,
    steps: int = 20,
    baseline: float | Tensor = 0.0,
    batch_size: int = 64,
    return_curves: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Deletion metric (lower is better): start from the image, replace pixels by the baseline.

    ``images`` ``[B, C, H, W]``, ``heatmaps`` ``[B, H, W]``; ``baseline`` a scalar or a tensor
    broadcastable to ``images`` (e.g. a blurred copy). Pixels are ranked by heatmap value
    (descending, stable); at step ``k = 0..steps`` the top ``round(k / steps * H*W)`` pixels
    (all channels) are replaced. ``score_fn(images [N, C, H, W]) -> [N]`` is called on chunks of
    ``batch_size`` of all ``B * (steps + 1)`` perturbed images. Returns the trapezoidal AUC
    ``[B]`` of the score curve over x = k / steps in [0, 1], and with ``return_curves=True``
    also the curves ``[B, steps + 1]``. Runs under ``torch.no_grad()``.
    """
    return _perturbation_curve(score_fn, images, heatmaps, steps, baseline, batch_size, return_curves, insertion=False)


def insertion_auc(
    score_fn: Callable[[Tensor], Tensor],
    images: Tensor,
    heatmaps: Tensor,
    steps: int = 20,
    baseline: float | Tensor = 0.0,
    batch_size: int = 64,
    return_curves: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Insertion metric (higher is better): start from the baseline, insert image pixels.

    Same arguments, ranking, batching and return values as :func:`deletion_auc`, but at step
    ``k`` the top ``round(k / steps * H*W)`` pixels come from the image and the rest from the
    baseline (e.g. a blurred or constant image).
    """
    return _perturbation_curve(score_fn, images, heatmaps, steps, baseline, batch_size, return_curves, insertion=True)


def deletion_references(
    score_fn: Callable[[Tensor], Tensor], images: Tensor, masks: Tensor, steps: int = 20, seed: int = 0
) -> tuple[float, float]:
    """Two reference points for a map's deletion AUC on ``images`` ``[B, C, H, W]`` with
    ground-truth masks ``[B, H, W]`` (1 = the region that matters): the mean :func:`deletion_auc`
    when pixels are deleted in the order of the mask (inside first; ties broken by ``1e-3`` times
    uniform noise) and when they are deleted in a random order (that noise alone). The noise is
    drawn on the CPU from a ``torch.Generator`` seeded with ``seed``. Returns ``(mask_order, random_order)``."""
    masks = masks.float()
    noise = torch.rand(masks.shape, generator=torch.Generator().manual_seed(seed)).to(masks.device)
    with torch.no_grad():
        mask_order = float(deletion_auc(score_fn, images, masks + 1e-3 * noise, steps=steps).mean())
        random_order = float(deletion_auc(score_fn, images, noise, steps=steps).mean())
    return mask_order, random_order
