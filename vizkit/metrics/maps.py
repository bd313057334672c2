"""Localisation metrics of maps ``[B, H, W]``: :func:`pointing_game`, :func:`energy_pointing_game`,
:func:`top_region_iou`, :func:`region_means`; two maps of one image compared: :func:`comparison_numbers`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["pointing_game", "energy_pointing_game", "top_region_iou", "region_means", "comparison_numbers"]


def _check_maps_and_masks(heatmaps: Tensor, masks: Tensor) -> Tensor:
    """Validate ``[B, H, W]`` heatmaps/masks of equal shape, non-empty masks; return bool masks."""
    if heatmaps.ndim != 3:
        raise ValueError(f"heatmaps must have shape [B, H, W], got {tuple(heatmaps.shape)}")
    if masks.shape != heatmaps.shape:
        raise ValueError(f"masks shape {tuple(masks.shape)} does not match heatmaps shape {tuple(heatmaps.shape)}")
    masks = masks.to(heatmaps.device) != 0
    empty = (~masks.flatten(1).any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"mask of sample(s) {empty} is empty")
    return masks


def pointing_game(heatmaps: Tensor, masks: Tensor, tolerance: int = 0) -> Tensor:
    """Pointing game: is the heatmap's maximum inside the (dilated) mask?

    ``heatmaps`` ``[B, H, W]``, ``masks`` ``[B, H, W]`` (bool or 0/1). The mask is dilated by
    ``tolerance`` pixels with a ``(2*tolerance+1)`` square max-pool (Chebyshev distance).
    Ties: a sample is a hit if any maximal pixel lies in the dilated mask.
    Returns a bool tensor ``[B]``. Raises ValueError on shape mismatch or an empty mask.
    """
    masks = _check_maps_and_masks(heatmaps, masks)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if tolerance > 0:
        k = 2 * tolerance + 1
        masks = F.max_pool2d(masks[:, None].float(), kernel_size=k, stride=1, padding=tolerance)[:, 0] > 0
    is_max = heatmaps == heatmaps.amax(dim=(1, 2), keepdim=True)
    return (is_max & masks).flatten(1).any(dim=1)


def energy_pointing_game(heatmaps: Tensor, masks: Tensor) -> Tensor:
    """Energy-based pointing game: fraction of (non-negative) heatmap mass inside the mask.

    ``heatmaps`` ``[B, H, W]`` are clamped at 0; ``masks`` ``[B, H, W]``.
    Returns float ``[B]`` in [0, 1]; an all-zero heatmap scores 0.
    """
    masks = _check_maps_and_masks(heatmaps, masks)
    energy = heatmaps.float().clamp_min(0).flatten(1)
    total = energy.sum(dim=1)
    inside = (energy * masks.flatten(1)).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(total.dtype).tiny), torch.zeros_like(total))


def top_region_iou(a: Tensor, b: Tensor, fraction: float = 0.2) -> Tensor:
    """IoU of the top ``fraction`` regions of two maps ``[B, H, W]`` (per image: the pixels at or
    above the map's ``1 - fraction`` quantile; when that quantile is the map's minimum, the
    pixels above it). Returns ``[B]`` in [0, 1]."""
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"expected two maps [B, H, W] of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")

    def top(m: Tensor) -> Tensor:
        flat = m.flatten(1).float()
        q = torch.quantile(flat, 1.0 - fraction, dim=1, keepdim=True)
        # a plateau at the minimum (e.g. a map that is 0 outside a blob) is never "top" unless the
        # whole map is constant
        at_floor = (q <= flat.amin(1, keepdim=True)) & (flat.amax(1, keepdim=True) > q)
        return torch.where(at_floor, flat > q, flat >= q)

    ta, tb = top(a), top(b)
    inter, union = (ta & tb).sum(1).float(), (ta | tb).sum(1).float()
    return inter / union.clamp(min=1)


def region_means(maps: Tensor, rows: int = 3, cols: int = 3) -> Tensor:
    """Mean of each map ``[B, H, W]`` over a ``rows x cols`` grid of (nearly) equal regions
    (adaptive average pooling): ``[B, rows, cols]``."""
    if maps.ndim != 3:
        raise ValueError(f"expected maps [B, H, W], got shape {tuple(maps.shape)}")
    return F.adaptive_avg_pool2d(maps[:, None].float(), (rows, cols))[:, 0]


def comparison_numbers(a: Tensor, b: Tensor, top: float = 0.2) -> dict[str, Any]:
    """Numbers comparing two maps ``[H, W]`` of one image, each in [0, 1] (e.g. a real-class map
    ``a`` and a fake-class map ``b``): ``top20_iou`` the IoU of their top-``top`` regions
    (:func:`top_region_iou`; the key keeps its name for any ``top``), ``overlap_mean`` the mean of
    ``min(a, b)``, ``difference_mean`` the mean of ``b - a`` and ``difference_by_region`` the mean of
    ``b - a`` in each cell of a 3 x 3 grid (:func:`region_means`, a nested list, rows top to bottom)."""
    r, f = a[None].float(), b[None].float()
    cells = region_means(f - r)[0]
    return {
        "top20_iou": float(top_region_iou(r, f, top)[0]),
        "overlap_mean": float(torch.minimum(r, f).mean()),
        "difference_mean": float((f - r).mean()),
        "difference_by_region": cells.tolist(),
    }
