"""Quality metrics for saliency / explanation maps.

- localisation: :func:`pointing_game`, :func:`energy_pointing_game`
- faithfulness: :func:`deletion_auc`, :func:`insertion_auc`
- sanity: :func:`randomization_sanity_check` (Adebayo et al., 2018)

Heatmaps are ``[B, H, W]`` at image resolution; images are ``[B, C, H, W]``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import ConstantInputWarning, spearmanr
from torch import Tensor, nn

__all__ = [
    "pointing_game",
    "energy_pointing_game",
    "deletion_auc",
    "insertion_auc",
    "randomization_sanity_check",
    "top_region_iou",
    "region_means",
]


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


@torch.no_grad()
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


def _randomize_(module: nn.Module) -> None:
    """Re-initialise ``module`` in place: ``reset_parameters()`` where a (sub)module has it,
    else normal(0, 0.02) for its own weights and zeros for its own biases."""
    with torch.no_grad():
        for m in module.modules():
            if callable(getattr(m, "reset_parameters", None)):
                m.reset_parameters()
                continue
            for name, p in m.named_parameters(recurse=False):
                if name.endswith("bias"):
                    p.zero_()
                else:
                    p.normal_(0.0, 0.02)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation; NaN if either input is constant."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return float(spearmanr(a, b).statistic)


def randomization_sanity_check(
    explain_fn: Callable[[nn.Module], Tensor],
    model: nn.Module,
    layer_names: Sequence[str],
    seed: int = 0,
) -> pd.DataFrame:
    """Cascading model-parameter randomisation test (Adebayo et al., 2018).

    ``explain_fn(model) -> [B, H, W]`` computes maps for fixed inputs with the given model.
    The reference is ``explain_fn(model)``; then, on a deep copy, the modules ``layer_names``
    (names as in ``model.named_modules()``, given top-down, i.e. output side first) are
    re-initialised one after another, cumulatively (at step ``i`` layers ``0..i`` are random),
    with the RNG seeded once by ``torch.manual_seed(seed)`` (the global RNG state is restored
    afterwards). After each step the maps are recomputed and compared per sample to the
    reference with Spearman's rank correlation of the flattened maps (``spearman``) and of
    their absolute values (``spearman_abs``); NaN if a map is constant.

    Returns a DataFrame with columns ``step``, ``layer``, ``sample``, ``spearman``,
    ``spearman_abs`` (``len(layer_names) * B`` rows). ``model`` itself is left unchanged.
    """
    if isinstance(layer_names, str) or len(layer_names) == 0:
        raise ValueError("layer_names must be a non-empty sequence of module names")
    known = dict(model.named_modules())
    unknown = [n for n in layer_names if n not in known]
    if unknown:
        raise ValueError(f"unknown layer name(s) {unknown}; see model.named_modules()")

    def explain(m: nn.Module) -> np.ndarray:
        maps = explain_fn(m)
        if not isinstance(maps, Tensor) or maps.ndim != 3:
            raise ValueError(f"explain_fn must return a Tensor [B, H, W], got {getattr(maps, 'shape', type(maps))}")
        return maps.detach().double().cpu().numpy().reshape(maps.shape[0], -1)

    reference = explain(model)
    randomized = copy.deepcopy(model)
    rows = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for step, name in enumerate(layer_names):
            _randomize_(randomized.get_submodule(name))
            maps = explain(randomized)
            if maps.shape != reference.shape:
                raise ValueError(
                    f"explain_fn returned maps of {maps.shape} at step {step}, reference was {reference.shape}"
                )
            for sample, (ref, cur) in enumerate(zip(reference, maps)):
                rows.append(
                    {
                        "step": step,
                        "layer": name,
                        "sample": sample,
                        "spearman": _spearman(ref, cur),
                        "spearman_abs": _spearman(np.abs(ref), np.abs(cur)),
                    }
                )
    return pd.DataFrame(rows, columns=["step", "layer", "sample", "spearman", "spearman_abs"])
