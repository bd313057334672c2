"""All perturbation-faithfulness scores of a batch of maps in one call: ROAD (MoRF, LeRF, combined)
and the confidence change of the map-weighted image, per sample, sharing the clean forward pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..targets import TargetSpec, as_target
from .batchnorm_folding import fold_batchnorm as _fold
from .road import ROAD_PERCENTILES, _check, _check_road_args, _forward, _road_changes

__all__ = ["FAITHFULNESS_SCORES", "faithfulness_scores"]

#: The keys of :func:`faithfulness_scores`, with the direction in which each is better.
FAITHFULNESS_SCORES = {
    "road_morf": "lower",
    "road_lerf": "higher",
    "road_combined": "higher",
    "confidence_drop": "lower",
    "confidence_increase": "higher",
}


def faithfulness_scores(
    model: nn.Module,
    inputs: Tensor,
    maps: Tensor,
    targets: TargetSpec = None,
    *,
    percentiles: Sequence[float] = ROAD_PERCENTILES,
    noise: float = 0.01,
    seed: int = 0,
    batch_size: int = 16,
    tol: float = 1e-4,
    channels_last: bool = False,
    fold_batchnorm: bool = False,
) -> dict[str, Tensor]:
    """ROAD and confidence change of ``maps`` ``[B, H, W]`` for ``inputs`` ``[B, C, H, W]``: ``{name: [B]}``.

    Keys (see :data:`FAITHFULNESS_SCORES` for which direction is better): ``road_morf``,
    ``road_lerf`` and ``road_combined`` as :func:`vizkit.metrics.road` with ``order`` "morf", "lerf"
    and "combined" (both orders imputed in one pass, with the noise of ``road(order="combined")``:
    equal to it and to the means of :func:`vizkit.metrics.road_curves`); ``confidence_drop`` and
    ``confidence_increase`` as :func:`vizkit.metrics.confidence_change` (maps in [0, 1], e.g.
    normalised per image; ROAD depends only on the maps' order). ``targets`` as :func:`vizkit.cam`
    takes them, resolved once on the clean images (None = their predicted class). Pure: the model is
    only called (under ``torch.no_grad()``, in its current mode), the global RNG is untouched.
    ``percentiles``, ``noise``, ``seed``, ``batch_size``, ``tol``, ``channels_last`` and ``fold_batchnorm``
    as :func:`vizkit.metrics.road_curves` takes them. Float tensors ``[B]`` on the inputs' device.
    """
    maps = _check(inputs, maps)
    percentiles = _check_road_args(("morf", "lerf"), percentiles, noise, batch_size)
    if fold_batchnorm:
        model = _fold(model)
    output = _forward(model, inputs, channels_last)
    target = as_target(targets, inputs.shape[0], output)
    before = target(output).float()
    curves = _road_changes(
        model,
        inputs,
        maps,
        target,
        before,
        percentiles=percentiles,
        orders=("morf", "lerf"),
        noise=noise,
        seed=seed,
        batch_size=batch_size,
        tol=tol,
        channels_last=channels_last,
    )
    morf, lerf = curves["morf"].mean(dim=1), curves["lerf"].mean(dim=1)
    weighted = _forward(model, inputs * maps[:, None].to(inputs.dtype), channels_last)
    change = target(weighted).float() - before
    return {
        "road_morf": morf,
        "road_lerf": lerf,
        "road_combined": (lerf - morf) / 2,
        "confidence_drop": (-change).clamp_min(0),
        "confidence_increase": (change > 0).float(),
    }


# applied here, not as a @decorator line: mutmut (`make mutation`) does not mutate decorated functions
faithfulness_scores = torch.no_grad()(faithfulness_scores)
