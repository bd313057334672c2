"""Model-parameter randomisation test (Adebayo et al., 2018)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import ConstantInputWarning, spearmanr
from torch import Tensor, nn

__all__ = ["randomization_sanity_check"]


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
