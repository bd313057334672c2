"""Chance levels: what a map that knows nothing about the image scores on each localisation metric.

A metric table means little without the number a random map reaches on the same masks. These are exact
expectations, not simulations:

- :func:`pointing_chance` — the pointing game (:func:`~vizkit.metrics.pointing_game`) of a map whose
  maximum falls on a uniformly random pixel: the fraction of the image the (dilated) mask covers. A
  constant map has the same energy-pointing score (:func:`~vizkit.metrics.energy_pointing_game`).
- :func:`top_region_iou_chance` — :func:`~vizkit.metrics.top_region_iou` between a mask and a map whose
  top region is a uniformly random set of pixels of the same size (a hypergeometric expectation).
- :func:`uniform_attention_distance` — :func:`~vizkit.stats.mean_attention_distance` of attention spread
  evenly over all patches: a head "more global" than this is not looking anywhere in particular.
- :func:`at_or_below_chance` — the flag a report puts on a row.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["pointing_chance", "top_region_iou_chance", "uniform_attention_distance", "at_or_below_chance"]


def _bool_masks(masks: Tensor) -> Tensor:
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape [B, H, W], got {tuple(masks.shape)}")
    masks = masks != 0
    empty = (~masks.flatten(1).any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"mask of sample(s) {empty} is empty: a chance level needs a non-empty mask")
    return masks


def pointing_chance(masks: Tensor, tolerance: int = 0) -> Tensor:
    """Probability that a uniformly random pixel lies in the mask dilated by ``tolerance`` pixels.

    ``masks`` ``[B, H, W]`` (bool or 0/1), dilated as :func:`~vizkit.metrics.pointing_game` does (a
    ``2 * tolerance + 1`` square). Returns float64 ``[B]``: the expected pointing-game hit rate of a
    map with no information, and the energy-pointing score of a constant map (``tolerance=0``)."""
    masks = _bool_masks(masks)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    if tolerance > 0:
        k = 2 * tolerance + 1
        masks = F.max_pool2d(masks[:, None].float(), kernel_size=k, stride=1, padding=tolerance)[:, 0] > 0
    return masks.flatten(1).double().mean(dim=1)


def _top_count(n: int, fraction: float) -> int:
    """Pixels of a map with distinct values at or above its ``1 - fraction`` quantile (linear interpolation,
    as ``torch.quantile``): index ``ceil((1 - fraction) * (n - 1))`` and above of the sorted values, except that
    a quantile at the minimum keeps only the pixels above it (``n - 1``)."""
    first = math.ceil((1.0 - fraction) * (n - 1) - 1e-9)
    return n - max(first, 1) if n > 1 else 1


def top_region_iou_chance(masks: Tensor, fraction: float = 0.2) -> Tensor:
    """Expected :func:`~vizkit.metrics.top_region_iou` of a mask and a map with distinct random values.

    The mask's own top region is the mask (its values are 0/1); the random map's is a uniformly random
    set of ``k`` pixels (``k`` from :func:`top_region_iou`'s quantile rule on ``N = H * W`` pixels). With
    ``m`` mask pixels the overlap ``I`` is hypergeometric and the result is ``E[I / (k + m - I)]``, summed
    exactly over ``I``. ``masks`` ``[B, H, W]``; returns float64 ``[B]``."""
    masks = _bool_masks(masks)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = masks[0].numel()
    k = _top_count(n, fraction)
    out = []
    for m in masks.flatten(1).sum(dim=1).tolist():
        i = torch.arange(max(0, k + m - n), min(k, m) + 1, dtype=torch.float64)
        log_pmf = (
            _log_choose(torch.tensor(float(m)), i)
            + _log_choose(torch.tensor(float(n - m)), k - i)
            - _log_choose(torch.tensor(float(n)), torch.tensor(float(k)))
        )
        out.append(float((log_pmf.exp() * i / (k + m - i)).sum()))
    return torch.tensor(out, dtype=torch.float64)


def _log_choose(n: Tensor, r: Tensor) -> Tensor:
    n = n.double()
    r = torch.as_tensor(r, dtype=torch.float64)
    return torch.lgamma(n + 1) - torch.lgamma(r + 1) - torch.lgamma(n - r + 1)


def uniform_attention_distance(grid: tuple[int, int], patch_size: float = 1.0) -> float:
    """:func:`~vizkit.stats.mean_attention_distance` of attention spread evenly over the ``h x w`` patch grid:
    the mean over query patches of the mean Euclidean distance (in patches, times ``patch_size``) to every
    patch, itself included. A 4 x 4 grid gives 2.008 patches."""
    h, w = grid
    if h < 1 or w < 1:
        raise ValueError(f"grid must be two positive sizes (rows, cols), got {grid}")
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()], dim=-1).double()
    return float(torch.cdist(coords, coords).mean()) * patch_size


def at_or_below_chance(value: float, chance: float, higher_is_better: bool = True, margin: float = 0.0) -> bool:
    """True when ``value`` does no better than ``chance`` (within ``margin``): ``value <= chance + margin``
    for a score where higher is better, ``value >= chance - margin`` otherwise."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    return value <= chance + margin if higher_is_better else value >= chance - margin
