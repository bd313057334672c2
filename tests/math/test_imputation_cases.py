"""ROAD's noisy linear imputation (:mod:`vizkit.metrics.imputation`): the multigrid's pieces by hand
(the [1, 2, 1] filter, interpolation, restriction as its adjoint), the solution against
pytorch-grad-cam's exact sparse solve at a tight tolerance, and the iteration budget the V-cycle
preconditioner keeps whatever the image size. Cases a mutation run found untested."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.road import NoisyLinearImputer

from vizkit.errors import InputError
from vizkit.metrics.imputation import _coarse_size, _interpolate, _restrict, _sep121, noisy_linear_impute


def test_sep121_by_hand():
    x = torch.zeros(1, 3, 3)
    x[0, 1, 1] = 1.0
    # one pixel: the outer product of [1, 2, 1] with itself around it
    assert _sep121(x)[0].tolist() == [[1, 2, 1], [2, 4, 2], [1, 2, 1]]
    y = torch.zeros(1, 2, 3)
    y[0, 0, 0] = 1.0  # a corner: the parts beyond the border are cut (zero padding)
    assert _sep121(y)[0].tolist() == [[4, 2, 0], [2, 1, 0]]
    ones = torch.ones(2, 2)
    assert _sep121(ones).tolist() == [[9, 9], [9, 9]]
    assert torch.equal(ones, torch.ones(2, 2))  # the input is not modified


def test_interpolate_by_hand():
    c = torch.tensor([[1.0, 3.0], [5.0, 7.0]])
    # coarse point j sits at fine point 2 j; the odd fine points are the midpoints of their two neighbours
    assert _interpolate(c, (3, 3)).tolist() == [[1, 2, 3], [3, 4, 5], [5, 6, 7]]
    # an even fine size (4 = 2 * 3 - 2): the last coarse point lies beyond the grid and only enters midpoints
    c = torch.tensor([[1.0, 3.0, 5.0], [5.0, 7.0, 9.0], [9.0, 11.0, 13.0]])
    assert _interpolate(c, (4, 4)).tolist() == [[1, 2, 3, 4], [3, 4, 5, 6], [5, 6, 7, 8], [7, 8, 9, 10]]
    assert _interpolate(c, (4, 3)).tolist() == [[1, 3, 5], [3, 5, 7], [5, 7, 9], [7, 9, 11]]
    assert _interpolate(c[None, None], (5, 4)).shape == (1, 1, 5, 4)
    assert _coarse_size(4) == 3 and _coarse_size(5) == 3 and _coarse_size(2) == 2 and _coarse_size(1) == 1


@pytest.mark.parametrize("size", [(5, 7), (6, 8), (5, 8), (1, 4), (9, 1)])
def test_restrict_is_the_adjoint_of_interpolate(size):
    g = torch.Generator().manual_seed(0)
    h, w = size
    coarse = (_coarse_size(h), _coarse_size(w))
    r = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64)
    c = torch.randn(2, 3, *coarse, generator=g, dtype=torch.float64)
    rc = _restrict(r, coarse)
    assert rc.shape == (2, 3, *coarse)
    assert float((rc * c).sum()) == pytest.approx(float((r * _interpolate(c, size)).sum()), rel=1e-12)


def _reference(images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's NoisyLinearImputer without noise (scipy's exact sparse solve, float32 out), per image."""
    imputer = NoisyLinearImputer(noise=0.0)
    return torch.stack([imputer(images[i].float(), keep[i].float()) for i in range(len(images))]).double()


@pytest.mark.parametrize("size", [(13, 11), (40, 36)])
def test_equals_the_exact_solve_at_a_tight_tolerance(size):
    g = torch.Generator().manual_seed(1)
    h, w = size
    images = torch.rand(4, 3, h, w, generator=g, dtype=torch.float64)
    keep = torch.stack([torch.rand(h, w, generator=g) > p for p in (0.05, 0.5, 0.95, 0.8)])
    keep[3, :, : w // 2] = False  # a wide removed block
    ours = noisy_linear_impute(images, keep, tol=1e-11, max_iter=300)
    assert ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), _reference(images, keep).numpy(), atol=1e-5)
    assert torch.equal(ours[keep[:, None].expand_as(ours)], images[keep[:, None].expand_as(images)])


def test_an_image_without_known_pixels_is_zero_plus_noise():
    images = torch.rand(2, 3, 9, 9, generator=torch.Generator().manual_seed(2))
    keep = torch.zeros(2, 9, 9, dtype=torch.bool)
    keep[1, 4, 4] = True  # one known pixel: everything else takes its value
    out = noisy_linear_impute(images, keep)
    assert out[0].abs().max() == 0
    assert torch.allclose(out[1], images[1, :, 4, 4][:, None, None].expand(3, 9, 9), atol=1e-3)
    g = torch.Generator().manual_seed(3)
    noisy = noisy_linear_impute(images, keep, noise=0.5, generator=g)
    want = 0.5 * torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(noisy[0], want[0], atol=1e-6)


@pytest.mark.parametrize("size", [(32, 32), (96, 80)])
def test_the_iteration_budget_does_not_grow_with_the_size(size):
    # measured: 15 preconditioned CG iterations reach tol=1e-6 for 10 %, 50 % and 90 % removed at
    # 32 x 32, 96 x 80 and 224 x 224; a weaker preconditioner needs more and warns
    g = torch.Generator().manual_seed(0)
    h, w = size
    images = torch.rand(3, 3, h, w, generator=g)
    keep = torch.stack([torch.rand(h, w, generator=g) > p for p in (0.1, 0.5, 0.9)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = noisy_linear_impute(images, keep, tol=1e-6, max_iter=16, chunk=2)
    ref = noisy_linear_impute(images.double(), keep, tol=1e-10, max_iter=300).float()
    assert (out - ref).abs().max() < 1e-4
    with pytest.warns(RuntimeWarning, match="did not reach tol=1e-06 in 3 iterations"):
        noisy_linear_impute(images, keep, tol=1e-6, max_iter=3)


def test_argument_checks():
    x = torch.rand(1, 3, 4, 4)
    keep = torch.ones(1, 4, 4, dtype=torch.bool)
    for kwargs in ({"tol": 0.0}, {"max_iter": 0}, {"chunk": 0}):
        with pytest.raises(InputError, match="tol must be > 0, max_iter and chunk >= 1"):
            noisy_linear_impute(x, keep, **kwargs)
    with pytest.raises(InputError, match="expected images"):
        noisy_linear_impute(x, keep[0])
    assert torch.equal(noisy_linear_impute(x, keep, max_iter=1, chunk=1), x)  # nothing removed


@pytest.mark.parametrize("removed, iterations", [(0.1, 4), (0.5, 5), (0.9, 6)])
def test_the_preconditioner_converges_in_the_measured_iterations(removed, iterations):
    """The V-cycle's quality, pinned: at 96 x 80 px the relative residual 5e-7 takes exactly these
    iteration counts (the same from tol 2.5e-7 to 1e-6, so rounding cannot move them). A weaker
    smoother, coarse operator or transfer needs more; a broken one never gets there."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(1, 3, 96, 80, generator=g)
    keep = (torch.rand(96, 80, generator=g) > removed)[None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        noisy_linear_impute(images, keep, tol=5e-7, max_iter=iterations)
    with pytest.warns(RuntimeWarning, match=f"did not reach tol=5e-07 in {iterations - 1} iterations"):
        noisy_linear_impute(images, keep, tol=5e-7, max_iter=iterations - 1)
