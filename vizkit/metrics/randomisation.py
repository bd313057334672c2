"""Model-parameter randomisation test (Adebayo et al., 2018): :func:`parameter_randomisation` (per
parameterised layer, cascading or independent) and :func:`randomization_sanity_check` (named modules,
a DataFrame)."""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import ConstantInputWarning, spearmanr
from torch import Tensor, nn

from ..errors import InputError
from ..targets import Target, TargetSpec, as_target

__all__ = [
    "SIMILARITIES",
    "map_similarity",
    "parameter_randomisation",
    "parameterised_layers",
    "randomization_sanity_check",
    "sanity_by_config",
]

#: the similarity measures between the original and the randomised model's maps
SIMILARITIES = ("spearman", "spearman_signed", "ssim")


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
    The cascade of :func:`parameter_randomisation` with given ``layers`` on a copy of the model
    (whole named modules are re-initialised here, children included).
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

    def compare(step: int, name: str) -> None:
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

    _randomise_steps(randomized, layer_names, True, seed, _randomize_, compare)
    return pd.DataFrame(rows, columns=["step", "layer", "sample", "spearman", "spearman_abs"])


def sanity_by_config(
    explain_fn: Callable[[nn.Module], Mapping[Hashable, Tensor]],
    model: nn.Module,
    layer_names: Sequence[str],
    seed: int = 0,
) -> dict[Hashable, float]:
    """:func:`randomization_sanity_check` of several map configurations at once (e.g. head fusions x
    layer choices computed from one cached pass): ``explain_fn(model)`` returns ``{config: [B, H, W]}``,
    the same configs in the same order at every call. Per config: the mean over the B samples of
    the Spearman correlation with the trained model's maps after the LAST cascading step (all of
    ``layer_names`` re-initialised); NaN when it is NaN for every sample (constant maps)."""
    keys: list[Hashable] = []
    batch: list[int] = []

    def stacked(m: nn.Module) -> Tensor:
        maps = explain_fn(m)
        if not keys:
            keys.extend(maps)
            batch.append(next(iter(maps.values())).shape[0])
        return torch.cat([maps[k] for k in keys])  # config-major [K * B, H, W]

    df = randomization_sanity_check(stacked, model, layer_names, seed=seed)
    last = df[df["step"] == df["step"].max()].copy()
    last["config"] = last["sample"] // batch[0]
    means = last.groupby("config")["spearman"].mean()
    return {k: float(means.get(i, np.nan)) for i, k in enumerate(keys)}


def _ssim(a: Tensor, b: Tensor, win: int = 7) -> Tensor:
    """Mean SSIM of maps ``[B, H, W]`` each min-max scaled to [0, 1], as
    ``skimage.metrics.structural_similarity(a, b, data_range=1)`` (uniform ``win`` x ``win`` window,
    sample covariance, border windows cropped): ``[B]``."""

    def scale(m: Tensor) -> Tensor:
        lo, hi = m.amin(dim=(1, 2), keepdim=True), m.amax(dim=(1, 2), keepdim=True)
        return (m - lo) / (hi - lo).clamp_min(1e-12)

    x, y = scale(a.double())[:, None], scale(b.double())[:, None]
    if min(x.shape[-2:]) < win:
        raise InputError(f"ssim needs maps of at least {win}x{win} pixels, got {tuple(a.shape[-2:])}")
    mean = lambda t: F.avg_pool2d(t, win, stride=1)  # noqa: E731
    ux, uy = mean(x), mean(y)
    norm = win * win / (win * win - 1)
    vx, vy, vxy = norm * (mean(x * x) - ux * ux), norm * (mean(y * y) - uy * uy), norm * (mean(x * y) - ux * uy)
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


def map_similarity(a: Tensor, b: Tensor, similarity: str = "spearman") -> Tensor:
    """Per-sample similarity of two map batches ``[B, H, W]``: ``[B]`` (float, on CPU).

    "spearman": Spearman rank correlation of the absolute values (Adebayo et al.'s default);
    "spearman_signed": of the signed values; "ssim": mean SSIM of the min-max scaled maps.
    A constant map gives NaN for the Spearman variants.
    """
    if similarity not in SIMILARITIES:
        raise InputError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    if a.shape != b.shape or a.ndim != 3:
        raise InputError(f"expected two maps [B, H, W] of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if similarity == "ssim":
        return _ssim(a, b)
    if similarity == "spearman":
        a, b = a.abs(), b.abs()
    x, y = a.flatten(1).numpy(), b.flatten(1).numpy()
    return torch.tensor([_spearman(u, v) for u, v in zip(x, y)], dtype=torch.float32)


def parameterised_layers(model: nn.Module, inputs: Tensor) -> list[str]:
    """Names of the modules that own parameters (``named_parameters(recurse=False)``: convolutions,
    linear layers incl. attention projections, norms, a ViT's own position embedding ...), top-down:
    in the reverse order of their first call in one forward pass of ``inputs`` (a forward pre-hook;
    modules that own parameters but are not called are left out)."""
    owners = {name: m for name, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None}
    called: list[str] = []
    handles = [
        m.register_forward_pre_hook(lambda mod, args, name=name: called.append(name)) for name, m in owners.items()
    ]
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
    return list(reversed(list(dict.fromkeys(called))))


def _randomize_own_(module: nn.Module) -> None:
    """Re-initialise the parameters ``module`` owns: ``reset_parameters()`` for a module without
    parameterised children, else normal(0, 0.02) weights and zero biases (as :func:`_randomize_`)."""
    with torch.no_grad():
        has_children = any(True for c in module.children() for _ in c.parameters())
        if callable(getattr(module, "reset_parameters", None)) and not has_children:
            module.reset_parameters()
            return
        for name, p in module.named_parameters(recurse=False):
            if name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02)


def _explain_call(explain: Callable[..., Tensor], target: Target) -> Callable[[nn.Module, Tensor], Tensor]:
    """``explain(model, inputs)``, or ``explain(model, inputs, target)`` if it takes a third argument."""
    try:
        params = inspect.signature(explain).parameters.values()
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)]
        takes_target = len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in positional)
    except (TypeError, ValueError):
        takes_target = False
    return (lambda m, x: explain(m, x, target)) if takes_target else (lambda m, x: explain(m, x))


def _randomise_steps(
    model: nn.Module,
    layers: Sequence[str],
    cascade: bool,
    seed: int,
    randomize: Callable[[nn.Module], None],
    on_step: Callable[[int, str], None],
) -> None:
    """Randomise ``layers`` of ``model`` in place one per step (cumulatively when ``cascade``, else
    each from the original state) and call ``on_step(step, name)`` after each; the global RNG is
    forked and seeded once with ``seed``. The caller restores the model."""
    original = None if cascade else {k: v.clone() for k, v in model.state_dict().items()}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for step, name in enumerate(layers):
            if original is not None:
                model.load_state_dict(original)
            randomize(model.get_submodule(name))
            on_step(step, name)


def parameter_randomisation(
    model: nn.Module,
    inputs: Tensor,
    explain: Callable[..., Tensor],
    targets: TargetSpec = None,
    *,
    cascade: bool = True,
    similarity: str = "spearman",
    layers: Sequence[str] | None = None,
    seed: int = 0,
) -> list[tuple[str, Tensor]]:
    """Model-parameter randomisation test (Adebayo et al., NeurIPS 2018): ``[(layer, similarity [B]), ...]``.

    ``explain(model, inputs) -> [B, H, W]`` (or ``explain(model, inputs, target)``: it then gets
    the target resolved once on the original model, so every step explains the same class;
    ``targets`` as :func:`vizkit.cam` takes them, None = the original predicted class). The
    reference is the map of the original model. Then the layers are randomised from the top
    (output side) down: ``layers`` (module names, top-down) or by default
    :func:`parameterised_layers` (every module owning parameters, attention projections and
    LayerNorms included). ``cascade=True``: cumulatively (step ``i`` has layers ``0..i``
    random); ``cascade=False``: one layer at a time, the others original. After each step the
    maps are recomputed and compared to the reference with :func:`map_similarity`
    (``similarity``: "spearman" of absolute values, "spearman_signed" or "ssim").

    A layer is re-initialised by its ``reset_parameters()`` (normal(0, 0.02) weights, zero
    biases without one), under a forked RNG seeded with ``seed`` (the global RNG is untouched;
    note that a LayerNorm at its initial values stays the same). The model is randomised in place
    and restored bit for bit afterwards (parameters and buffers), also when ``explain`` raises.
    """
    if not isinstance(inputs, Tensor) or inputs.ndim < 2:
        raise InputError(f"inputs must be a batched tensor, got {getattr(inputs, 'shape', type(inputs))}")
    if similarity not in SIMILARITIES:
        raise InputError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    known = dict(model.named_modules())
    names = parameterised_layers(model, inputs) if layers is None else list(layers)
    unknown = [n for n in names if n not in known]
    if unknown or not names or isinstance(layers, str):
        raise InputError(f"layers must be a non-empty list of module names of the model; unknown: {unknown}")
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with torch.no_grad():
            output = model(inputs)
        target = as_target(targets, inputs.shape[0], output)
        run = _explain_call(explain, target)

        def maps(m: nn.Module) -> Tensor:
            out = run(m, inputs)
            if not isinstance(out, Tensor) or out.ndim != 3 or out.shape[0] != inputs.shape[0]:
                raise InputError(f"explain must return a Tensor [B, H, W], got {getattr(out, 'shape', type(out))}")
            return out.detach()

        reference = maps(model)
        results: list[tuple[str, Tensor]] = []
        _randomise_steps(
            model,
            names,
            cascade,
            seed,
            _randomize_own_,
            lambda step, name: results.append((name, map_similarity(reference, maps(model), similarity))),
        )
        return results
    finally:
        model.load_state_dict(saved)
