"""How much of an attention row over an image's patch grid falls on a ground-truth object.

:func:`patch_coverage` turns a pixel mask into the fraction of each patch it covers;
:func:`mass_on_mask` renormalises the attention over the image patches to sum to 1 and adds up
each patch's weight times its coverage: a real share in [0, 1]. Uniform attention over the patches
scores the mask's area fraction exactly (when the patches tile the image): the chance level,
:func:`uniform_mass_on_mask`.

Example::

    cov = patch_coverage(masks, (6, 6))          # [B, 36], masks [B, 48, 48]
    mass = mass_on_mask(rows, cov)               # [B], rows [B, 36] (attention over the patches)
    chance = uniform_mass_on_mask(cov)           # [B]: what uniform attention scores
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["patch_coverage", "mass_on_mask", "uniform_mass_on_mask"]


def patch_coverage(masks: Tensor, grid: tuple[int, int]) -> Tensor:
    """``masks`` ``[B, H, W]`` (bool or 0/1) -> ``[B, gh * gw]`` float64: the fraction of each patch of the
    ``gh x gw`` grid (row-major, the order of the image tokens) that the mask covers. ``H`` and ``W`` must be
    multiples of the grid."""
    if masks.ndim != 3:
        raise ValueError(f"masks must have shape [B, H, W], got {tuple(masks.shape)}")
    gh, gw = grid
    h, w = masks.shape[1:]
    if gh < 1 or gw < 1 or h % gh or w % gw:
        raise ValueError(f"a {h}x{w} mask does not split into a {gh}x{gw} patch grid")
    m = (masks != 0).double()[:, None]
    return F.avg_pool2d(m, kernel_size=(h // gh, w // gw))[:, 0].flatten(1)


def mass_on_mask(rows: Tensor, coverage: Tensor) -> Tensor:
    """The share of each attention row ``rows`` ``[B, P]`` (non-negative weights over the ``P`` image
    patches) that falls on the mask: ``sum_p (a_p / sum_q a_q) * coverage_p``, ``coverage`` ``[B, P]`` from
    :func:`patch_coverage`. Returns float64 ``[B]`` in [0, 1]; a row with no weight on the image scores 0."""
    if rows.shape != coverage.shape or rows.ndim != 2:
        raise ValueError(f"rows {tuple(rows.shape)} and coverage {tuple(coverage.shape)} must both be [B, P]")
    a = rows.double()
    if bool((a < 0).any()):
        raise ValueError("attention rows must be non-negative")
    total = a.sum(-1, keepdim=True)
    dist = torch.where(total > 0, a / total.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(a))
    return (dist * coverage.double()).sum(-1)


def uniform_mass_on_mask(coverage: Tensor) -> Tensor:
    """The chance level of :func:`mass_on_mask`: the mass uniform attention over the patches puts on the
    mask, the mean coverage ``[B]`` (the mask's area fraction when the patches tile the image)."""
    return coverage.double().mean(-1)
