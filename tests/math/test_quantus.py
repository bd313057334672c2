"""vizkit's map metrics against Quantus 0.6.0 (a peer library, installed with ``--no-deps``: see the
Makefile) on the same model, inputs, maps and masks, for each quantity the two define the same way.

The model is the zoo's MNIST ViT (one input channel: Quantus broadcasts a one-channel map over the
input's channels and would rank each pixel once per channel otherwise); the maps are its
gradient-weighted attention plus a tiny tie-breaking ramp (Quantus sorts with an unstable
``argsort``, vizkit with a stable one: ties would be ordered differently).

Definitional differences, and what is compared instead:

- ROAD: Quantus scores the *accuracy* (does the prediction stay the label?) after removing the top
  ``int(N * q / 100)`` pixels; vizkit (as pytorch-grad-cam) the *change of the class score* after
  removing the pixels at or above the map's p-th percentile. Compared: the same quantity, by giving
  vizkit the accuracy as its target and the percentage whose count equals vizkit's removed pixels.
- Deletion vs Quantus's ``PixelFlipping``: the same curve (the class probability as the top pixels
  are set to a baseline), but Quantus leaves out the unperturbed point and integrates with ``dx=1``;
  compared: the curves. ``RegionPerturbation`` (patches, differences to the original score) has no
  vizkit counterpart.
- Energy in mask: Quantus's ``AttributionLocalisation`` (unweighted, positive part) and
  ``RelevanceMassAccuracy`` are vizkit's ``energy_pointing_game`` on non-negative maps.
- Model parameter randomisation: Quantus ``MPRT`` re-initialises every module with
  ``reset_parameters`` in reverse registration order, re-seeding the global RNG before each; vizkit
  every parameter owner in reverse call order under one forked RNG. Compared on a model whose
  modules reset deterministically and are registered in call order: the per-layer similarities.
"""

from __future__ import annotations

import numpy as np
import pytest
import quantus
import torch
from quantus.functions.perturb_func import noisy_linear_imputation
from torch import nn

from vizkit.explain import gradient_attention
from vizkit.metrics import (
    deletion_auc,
    energy_pointing_game,
    parameter_randomisation,
    pointing_game,
    road_curves,
)
from vizkit.metrics.imputation import noisy_linear_impute
from vizkit.metrics.road import _keep_masks


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def mnist():
    """The zoo ViT, 6 test digits with their ink masks, the predicted classes and tie-free maps in [0, 1]."""
    from vizkit import zoo

    torch.set_num_threads(1)
    bundle = zoo.load("mnist_vit")
    samples = zoo.dataset("mnist_vit", "test")[:6]
    x = torch.stack([bundle.preprocess(s.image) for s in samples])
    masks = torch.from_numpy(np.stack([s.mask for s in samples]))
    with torch.no_grad():
        y = bundle.model(x).argmax(-1)
    maps = gradient_attention(bundle.model, x, y).heatmap
    maps = 0.999 * maps + 0.001 * torch.linspace(0, 1, 28 * 28).view(1, 28, 28)  # no ties
    return bundle.model, x, y, masks, maps


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def test_noisy_linear_imputation_equals_quantus():
    g = torch.Generator().manual_seed(0)
    image = torch.randn(3, 30, 26, generator=g, dtype=torch.float64)
    removed = torch.randperm(30 * 26, generator=g)[:500].sort().values
    keep = torch.ones(30 * 26, dtype=torch.bool)
    keep[removed] = False
    theirs = noisy_linear_imputation(_np(image), _np(removed), noise=0.0)
    ours = noisy_linear_impute(image[None].float(), keep.view(1, 30, 26), tol=1e-7)[0]
    assert np.abs(_np(ours) - theirs).max() < 1e-4
    assert np.abs(theirs - _np(image)).max() > 0.5  # the imputation changed something


def test_road_accuracy_curve_equals_quantus_road(mnist):
    model, x, y, _, maps = mnist
    n = 28 * 28
    percentiles = [10, 30, 50, 70, 90]
    keep = _keep_masks(maps, "morf", percentiles)  # [P, B, H, W]
    removed = (~keep).flatten(2).sum(2)  # pixels removed per percentile and image
    assert (removed == removed[:, :1]).all()  # tie-free maps: the same count for every image
    percentages = [(int(c) + 0.5) * 100 / n for c in removed[:, 0]]  # int(n * q / 100) == c
    metric = quantus.ROAD(percentages=percentages, noise=0.0, normalise=False, disable_warnings=True)
    theirs = metric(model=model, x_batch=_np(x), y_batch=_np(y), a_batch=_np(maps[:, None]), device="cpu")
    curves = road_curves(
        model, x, maps, lambda out: (out.argmax(-1) == y).float(), percentiles=percentiles, orders=("morf",), noise=0
    )
    ours = (curves["morf"] + 1).mean(0)  # the unperturbed images are all predicted as y: accuracy 1 before
    np.testing.assert_allclose(_np(ours), [theirs[q] for q in percentages], atol=1e-6)
    assert min(theirs.values()) < 1.0  # removing the map's top pixels does change predictions


def test_pointing_game_and_energy_equal_quantus(mnist):
    model, x, y, masks, maps = mnist
    args = dict(model=model, x_batch=_np(x), y_batch=_np(y), a_batch=_np(maps[:, None]), s_batch=_np(masks[:, None]))
    hits = quantus.PointingGame(disable_warnings=True)(**args)
    np.testing.assert_array_equal(np.asarray(hits, dtype=bool), _np(pointing_game(maps, masks)))
    energy = _np(energy_pointing_game(maps, masks))
    localisation = quantus.AttributionLocalisation(weighted=False, max_size=1.0, disable_warnings=True)(**args)
    np.testing.assert_allclose(localisation, energy, rtol=1e-5)
    mass = quantus.RelevanceMassAccuracy(disable_warnings=True)(**args)
    np.testing.assert_allclose(mass, energy, rtol=1e-5)
    assert 0 < energy.min() < energy.max() < 1


def test_deletion_curve_equals_quantus_pixel_flipping(mnist):
    model, x, y, _, maps = mnist
    steps = 8  # 784 pixels = 8 steps of 98
    metric = quantus.PixelFlipping(features_in_step=98, perturb_baseline=0.0, normalise=False, disable_warnings=True)
    theirs = np.asarray(
        metric(model=model, x_batch=_np(x), y_batch=_np(y), a_batch=_np(maps[:, None]), device="cpu", softmax=True)
    )
    with torch.no_grad():
        probs = model(x).softmax(-1)[torch.arange(len(y)), y]

    curves = []
    for i in range(len(y)):
        score = lambda images, c=int(y[i]): model(images).softmax(-1)[:, c]  # noqa: E731
        _, curve = deletion_auc(score, x[i : i + 1], maps[i : i + 1], steps=steps, return_curves=True)
        curves.append(curve[0])
    ours = torch.stack(curves)
    np.testing.assert_allclose(_np(ours[:, 0]), _np(probs), atol=1e-6)  # vizkit's curve starts at the image
    np.testing.assert_allclose(_np(ours[:, 1:]), theirs, atol=1e-5)
    assert theirs[:, -1].max() < theirs[:, 0].min() or np.ptp(theirs) > 0.1  # the curves move


class _Scale(nn.Module):
    """``x * weight``; ``reset_parameters`` sets ``weight`` to a fixed pattern (deterministic)."""

    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.rand(1, 8, 8, generator=g) + 0.5)
        self.pattern = torch.randn(1, 8, 8, generator=g)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.copy_(self.pattern)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class _Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second, self.third = _Scale(1), _Scale(2), _Scale(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.third(self.second(self.first(x))).flatten(1)[:, :10]


def _explain(model: nn.Module, inputs) -> torch.Tensor:
    """A map that depends on every weight: ``x * w1 * w2 * w3`` of channel 0, ``[B, 8, 8]``."""
    x = torch.as_tensor(inputs).float()
    with torch.no_grad():
        return (x * model.first.weight * model.second.weight * model.third.weight)[:, 0]


def test_cascading_randomisation_equals_quantus_mprt():
    model = _Chain().eval()
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(4, dtype=torch.long)
    ours = parameter_randomisation(model, x, _explain, similarity="spearman")
    metric = quantus.MPRT(layer_order="top_down", disable_warnings=True)
    theirs = metric(
        model=model,
        x_batch=_np(x),
        y_batch=_np(y),
        a_batch=None,
        device="cpu",
        explain_func=lambda model, inputs, targets, **kwargs: _np(_explain(model, inputs))[:, None],
    )
    assert [name for name, _ in ours] == [k for k in theirs if k != "original"] == ["third", "second", "first"]
    for name, similarity in ours:
        np.testing.assert_allclose(_np(similarity), theirs[name], atol=1e-6)
    assert np.allclose(theirs["original"], 1.0)
    assert min(min(v) for v in theirs.values()) < 0.9  # randomising changes the maps
