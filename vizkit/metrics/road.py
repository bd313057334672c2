"""Faithfulness of maps by perturbing the input: ROAD (Rong et al., ICML 2022) and the confidence
change of the map-weighted image (pytorch-grad-cam's ``DropInConfidence`` / ``IncreaseInConfidence``).

Both are defined exactly as in pytorch-grad-cam (``pytorch_grad_cam.metrics``), whose results they
reproduce, but batched: ROAD imputes all masks of a chunk at once on the inputs' device
(:func:`vizkit.metrics.imputation.noisy_linear_impute`) and runs every percentile's imputed images
through the model in as few forward passes as ``batch_size`` allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..errors import InputError
from ..targets import Target, TargetSpec, as_target
from .batchnorm_folding import fold_batchnorm as _fold
from .imputation import noisy_linear_impute

__all__ = ["ROAD_PERCENTILES", "ConfidenceChange", "confidence_change", "random_map_baseline", "road", "road_curves"]

#: pytorch-grad-cam's default percentiles of the ROAD averages.
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
_ORDERS = ("morf", "lerf", "combined")


def _check(inputs: Tensor, maps: Tensor) -> Tensor:
    """Validate ``inputs`` ``[B, C, H, W]`` and ``maps`` ``[B, H, W]``; return the maps on the inputs' device."""
    if not isinstance(inputs, Tensor) or inputs.ndim != 4 or not inputs.is_floating_point():
        raise InputError(f"inputs must be a float tensor [B, C, H, W], got {getattr(inputs, 'shape', type(inputs))}")
    b, _, h, w = inputs.shape
    if not isinstance(maps, Tensor) or tuple(maps.shape) != (b, h, w):
        raise InputError(
            f"maps must be a tensor [B, H, W] = {[b, h, w]} (one map per image at input resolution; "
            f"upsample token maps first), got {list(getattr(maps, 'shape', [type(maps).__name__]))}"
        )
    if not bool(torch.isfinite(maps).all()):
        raise InputError("maps contain NaN or infinite values")
    return maps.to(inputs.device)


def _percentile(sorted_values: Tensor, p: float) -> Tensor:
    """``np.percentile(values, p)`` per row of ``sorted_values`` ``[B, N]`` (method "linear", the same
    float arithmetic as NumPy, so that pixels tied with the threshold are classified alike): ``[B]``."""
    n = sorted_values.shape[1]
    virtual = (n - 1) * (float(p) / 100)
    lo = min(int(virtual // 1), n - 1)
    hi = min(lo + 1, n - 1)
    gamma = virtual - lo if virtual < n - 1 else 0.0
    a, b = sorted_values[:, lo], sorted_values[:, hi]
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def _keep_masks(maps: Tensor, order: str, percentiles: Sequence[float]) -> Tensor:
    """Pixels kept (not imputed) per percentile: ``[P, B, H, W]`` bool. MoRF removes the pixels at or
    above the map's p-th percentile, LeRF those at or above the p-th percentile of ``1 - map``."""
    values = maps if order == "morf" else 1 - maps
    flat = values.flatten(1).sort(dim=1).values
    return torch.stack([values < _percentile(flat, p)[:, None, None] for p in percentiles])


def _scorer(target: Target, rows: Tensor) -> Target | None:
    """The target for a batch of copies of images ``rows``, or None if it cannot take rows (a plain callable)."""
    try:
        return target.take(rows)
    except NotImplementedError:
        return None


def _forward(model: nn.Module, images: Tensor, channels_last: bool) -> Any:
    """``model(images)``, the images in the channels-last memory format if asked (faster CPU convolutions)."""
    return model(images.contiguous(memory_format=torch.channels_last) if channels_last else images)


def _check_road_args(orders: Sequence[str], percentiles: Sequence[float], noise: float, batch_size: int) -> list:
    bad = [o for o in orders if o not in ("morf", "lerf")]
    if bad or not orders:
        raise InputError(f"orders must be a non-empty subset of ('morf', 'lerf'), got {tuple(orders)}")
    percentiles = list(percentiles)
    if not percentiles or any(not 0 <= float(p) <= 100 for p in percentiles):
        raise InputError(f"percentiles must be a non-empty list of numbers in [0, 100], got {percentiles}")
    if noise < 0 or batch_size < 1:
        raise InputError(f"noise must be >= 0 and batch_size >= 1, got noise={noise}, batch_size={batch_size}")
    return percentiles


def _road_changes(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor,
    target: Target,
    before: Tensor,
    *,
    percentiles: list,
    orders: Sequence[str],
    noise: float,
    seed: int,
    batch_size: int,
    tol: float,
    channels_last: bool,
) -> dict[str, Tensor]:
    """:func:`road_curves` once the clean scores ``before`` ``[B]`` and the resolved ``target`` are known."""
    b = inputs.shape[0]
    generator = torch.Generator(device=inputs.device).manual_seed(seed)
    keep = torch.cat([_keep_masks(maps, o, percentiles) for o in orders])  # [S, B, H, W], S = orders x percentiles
    steps = keep.shape[0]
    per_chunk = max(1, batch_size // b)
    after = []
    for start in range(0, steps, per_chunk):
        chunk = keep[start : start + per_chunk]
        k = chunk.shape[0]
        rows = torch.arange(b, device=inputs.device).repeat(k)
        imputed = noisy_linear_impute(inputs[rows], chunk.flatten(0, 1), noise=noise, generator=generator, tol=tol)
        scorer = _scorer(target, rows)
        if scorer is not None:
            after.append(scorer(_forward(model, imputed, channels_last)).float().view(k, b))
        else:
            after += [
                target(_forward(model, imputed[i * b : (i + 1) * b], channels_last)).float()[None] for i in range(k)
            ]
    change = (torch.cat(after) - before).view(len(orders), len(percentiles), b)
    return {o: change[i].T for i, o in enumerate(orders)}


def road_curves(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor,
    targets: TargetSpec = None,
    *,
    percentiles: Sequence[float] = ROAD_PERCENTILES,
    orders: Sequence[str] = ("morf", "lerf"),
    noise: float = 0.01,
    seed: int = 0,
    batch_size: int = 16,
    tol: float = 1e-4,
    channels_last: bool = False,
    fold_batchnorm: bool = False,
) -> dict[str, Tensor]:
    """Per-percentile ROAD score changes: ``{order: [B, P]}`` for each of ``orders`` ("morf", "lerf").

    Entry ``[b, i]`` is ``target(model(imputed)) - target(model(inputs))`` for image ``b`` with the
    pixels selected at ``percentiles[i]`` replaced by ROAD's noisy linear imputation (see
    :func:`road`). Imputation and forward passes run in chunks of at most ``batch_size`` images
    (whole copies of the batch; at least one; on a CPU small batches are faster per image). A plain
    callable target is called once per percentile on the outputs of a batch aligned with ``inputs``;
    class targets are batched freely. ``tol``: relative residual at which the imputation's solver
    stops (1e-4 kept resnet18 scores at 224 px within ~1e-5 of scipy's exact solve).
    ``channels_last=True`` passes every batch to the model in the channels-last memory format
    (about 15 % faster for CNNs on a CPU; leave it off for models that ``view`` their input).
    ``fold_batchnorm=True`` makes the forward passes with a copy of the (eval-mode) model whose BatchNorms
    are folded into the convolutions before them (:func:`~vizkit.metrics.batchnorm_folding.fold_batchnorm`:
    the same scores up to float rounding, faster on a CPU; the model must be traceable by torch.fx).
    """
    maps = _check(inputs, maps)
    percentiles = _check_road_args(orders, percentiles, noise, batch_size)
    if fold_batchnorm:
        model = _fold(model)
    output = _forward(model, inputs, channels_last)
    target = as_target(targets, inputs.shape[0], output)
    before = target(output).float()
    return _road_changes(
        model,
        inputs,
        maps,
        target,
        before,
        percentiles=percentiles,
        orders=orders,
        noise=noise,
        seed=seed,
        batch_size=batch_size,
        tol=tol,
        channels_last=channels_last,
    )


# applied here, not as a @decorator line: mutmut (`make mutation`) does not mutate decorated functions
road_curves = torch.no_grad()(road_curves)


def road(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor,
    targets: TargetSpec = None,
    *,
    percentiles: Sequence[float] = ROAD_PERCENTILES,
    order: str = "combined",
    noise: float = 0.01,
    seed: int = 0,
    batch_size: int = 16,
    tol: float = 1e-4,
    channels_last: bool = False,
    fold_batchnorm: bool = False,
) -> Tensor:
    """ROAD, RemOve And Debias (Rong et al., ICML 2022), as pytorch-grad-cam defines it: ``[B]``.

    ``inputs`` ``[B, C, H, W]`` (as the model takes them, e.g. normalised), ``maps`` ``[B, H, W]``
    at input resolution, ``targets`` as :func:`vizkit.cam` takes them (None = the predicted class of
    the unperturbed image, an int, one class per image, or a callable ``output -> [B]``).

    For each percentile ``p``: MoRF (most relevant first) replaces the pixels whose map value is
    ``>= np.percentile(map, p)`` (so ``p = 10`` removes the top 90 %), LeRF (least relevant first)
    those with ``1 - map >= np.percentile(1 - map, p)``; the replaced pixels (all channels) get the
    weighted mean of their 8 neighbours (noisy linear imputation, one sparse linear system per
    mask) plus ``noise * N(0, 1)``. The score of a percentile is ``target(imputed) - target(image)``.

    ``order``: "morf" = mean over the percentiles of the MoRF changes
    (``ROADMostRelevantFirstAverage``; lower is better), "lerf" = the same for LeRF
    (``ROADLeastRelevantFirstAverage``; higher is better), "combined" = (LeRF - MoRF) / 2
    (``ROADCombined``; higher is better). The noise comes from a ``torch.Generator`` seeded with
    ``seed``; the global RNG is untouched. Runs under ``torch.no_grad()`` in the model's current
    mode (use eval). ``batch_size`` bounds the images imputed and forwarded at once; ``tol``,
    ``channels_last`` and ``fold_batchnorm`` see :func:`road_curves`.
    Returns float ``[B]`` on the inputs' device. Raises :class:`vizkit.errors.InputError` for maps
    of the wrong shape, an unknown order or percentiles outside [0, 100].
    """
    if order not in _ORDERS:
        raise InputError(f"order must be one of {_ORDERS}, got {order!r}")
    orders = ("morf", "lerf") if order == "combined" else (order,)
    curves = road_curves(
        model,
        inputs,
        maps,
        targets,
        percentiles=percentiles,
        orders=orders,
        noise=noise,
        seed=seed,
        batch_size=batch_size,
        tol=tol,
        channels_last=channels_last,
        fold_batchnorm=fold_batchnorm,
    )
    means = {o: c.mean(dim=1) for o, c in curves.items()}
    return (means["lerf"] - means["morf"]) / 2 if order == "combined" else means[order]


class ConfidenceChange(NamedTuple):
    """Result of :func:`confidence_change`: two float tensors ``[B]``."""

    drop: Tensor  # max(score(image) - score(image * map), 0)
    increase: Tensor  # 1.0 where score(image * map) > score(image), else 0.0


def confidence_change(model: nn.Module, inputs: Tensor, maps: Tensor, targets: TargetSpec = None) -> ConfidenceChange:
    """Confidence change of the map-weighted image, as pytorch-grad-cam's ``DropInConfidence`` and
    ``IncreaseInConfidence``.

    ``inputs`` ``[B, C, H, W]``, ``maps`` ``[B, H, W]`` (usually in [0, 1]); the model sees
    ``inputs * maps[:, None]``. With ``d = target(model(inputs * map)) - target(model(inputs))``:
    ``drop = max(-d, 0)`` (lower is better) and ``increase = float(d > 0)`` (averaged over a
    dataset: the fraction of images whose score rises; higher is better). ``targets`` as in
    :func:`road` (None = predicted class of the unperturbed image). Returns
    :class:`ConfidenceChange` of float tensors ``[B]``.
    """
    maps = _check(inputs, maps)
    output = model(inputs)
    target = as_target(targets, inputs.shape[0], output)
    before = target(output).float()
    change = target(model(inputs * maps[:, None].to(inputs.dtype))).float() - before
    return ConfidenceChange(drop=(-change).clamp_min(0), increase=(change > 0).float())


# applied here, not as a @decorator line: mutmut (`make mutation`) does not mutate decorated functions
confidence_change = torch.no_grad()(confidence_change)


def random_map_baseline(
    metric: Any,
    model: nn.Module,
    inputs: Tensor,
    targets: TargetSpec = None,
    *,
    seed: int = 0,
    repeats: int = 1,
    **kwargs: Any,
) -> Any:
    """Chance level of a map metric: ``metric(model, inputs, maps, targets, **kwargs)`` on uniform
    random maps ``[B, H, W]`` in [0, 1) (from a ``torch.Generator`` seeded with ``seed``; the global
    RNG is untouched), averaged over ``repeats`` draws. ``metric`` is e.g. :func:`road` or
    :func:`confidence_change` or :func:`~vizkit.metrics.faithfulness_scores`; the result has the metric's type
    (``[B]``, a tuple of ``[B]`` or a dict of ``[B]``)."""
    if not isinstance(inputs, Tensor) or inputs.ndim != 4:
        raise InputError(f"inputs must be a tensor [B, C, H, W], got {getattr(inputs, 'shape', type(inputs))}")
    if repeats < 1:
        raise InputError(f"repeats must be >= 1, got {repeats}")
    b, _, h, w = inputs.shape
    generator = torch.Generator(device=inputs.device).manual_seed(seed)
    results = [
        metric(model, inputs, torch.rand(b, h, w, generator=generator, device=inputs.device), targets, **kwargs)
        for _ in range(repeats)
    ]
    first = results[0]
    if isinstance(first, Tensor):
        return torch.stack(results).float().mean(0)
    if isinstance(first, dict):
        return {k: torch.stack([r[k] for r in results]).float().mean(0) for k in first}
    return type(first)(*(torch.stack([r[i] for r in results]).float().mean(0) for i in range(len(first))))
