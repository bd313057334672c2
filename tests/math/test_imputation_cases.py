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
from vizkit.metrics import imputation
from vizkit.metrics.imputation import (
    _OFFSETS,
    _coarse_size,
    _factor,
    _Fine,
    _galerkin,
    _interpolate,
    _restrict,
    _sep121,
    noisy_linear_impute,
)


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


def _three_masks(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three random 3-channel images ``[3, 3, h, w]`` and masks removing about 10 %, 50 % and 90 % (seed 0)."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, h, w, generator=g)
    return images, torch.stack([torch.rand(h, w, generator=g) > p for p in (0.1, 0.5, 0.9)])


@pytest.mark.parametrize("size", [(32, 32), (96, 80)])
def test_the_iteration_budget_does_not_grow_with_the_size(size):
    # measured: 15 preconditioned CG iterations reach tol=1e-6 for 10 %, 50 % and 90 % removed at
    # 32 x 32, 96 x 80 and 224 x 224; a weaker preconditioner needs more and warns
    images, keep = _three_masks(*size)
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


# --- cases a second mutation run found untested ---------------------------------------------------------------------

_WEIGHTS = {(dy, dx): 1 / 6 if dy * dx == 0 else 1 / 12 for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx}


def _masked_operator(unknown: torch.Tensor) -> torch.Tensor:
    """The fine system by hand, float64 ``[h w, h w]``: row ``i`` of an unknown pixel is ``border_i x_i - sum of
    w_ij x_j`` over its unknown in-image neighbours ``j`` (``border_i``: the sum of its in-image weights); known
    pixels' rows and columns are zero."""
    h, w = unknown.shape
    a = torch.zeros(h * w, h * w, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            if not unknown[y, x]:
                continue
            for (dy, dx), wt in _WEIGHTS.items():
                if 0 <= y + dy < h and 0 <= x + dx < w:
                    a[y * w + x, y * w + x] += wt
                    if unknown[y + dy, x + dx]:
                        a[y * w + x, (y + dy) * w + x + dx] -= wt
    return a


def _prolongation(h: int, w: int) -> torch.Tensor:
    """Bilinear interpolation by hand ``[h w, hc wc]``: coarse point ``j`` at fine point ``2 j``, weight 1/2 at
    distance 1 per axis."""
    hat = {0: 1.0, 1: 0.5, -1: 0.5}
    hc, wc = _coarse_size(h), _coarse_size(w)
    p = torch.zeros(h * w, hc * wc, dtype=torch.float64)
    for y in range(h):
        for x in range(w):
            for cy in range(hc):
                for cx in range(wc):
                    p[y * w + x, cy * wc + cx] = hat.get(y - 2 * cy, 0.0) * hat.get(x - 2 * cx, 0.0)
    return p


def test_coarse_size_and_restrict_by_hand():
    # no coarsening below 3 points (an empty side stays empty), n // 2 + 1 from 3 on
    assert [_coarse_size(n) for n in range(7)] == [0, 1, 2, 2, 3, 3, 4]
    # full weighting of a plain [h, w] tensor: each odd point gives half to its two coarse neighbours, per axis
    r = torch.arange(9.0).view(3, 3)
    assert _restrict(r, (2, 2)).tolist() == [[3, 6], [12, 15]]
    assert _restrict(r, (3, 2)).tolist() == [[0.5, 2.5], [5, 7], [9.5, 11.5]]


def test_factor_is_the_cholesky_factor_of_the_system_with_identity_rows():
    """``_factor`` on the fine grid (float64): ``L L^T`` is the hand-built system of the removed pixels plus an
    identity row per known pixel, exactly (no regularisation of a non-singular system, alone or batched)."""
    g = torch.Generator().manual_seed(0)
    unknown = torch.rand(2, 5, 6, generator=g) > 0.4
    unknown[1, 1:4, 1:5] = True  # a removed block
    unknown[1, 0] = False  # beside a known row
    chol = _factor(_Fine(unknown[:, None].double()))
    assert chol.shape == (2, 30, 30)
    for i in range(2):
        want = _masked_operator(unknown[i]) + torch.diag((~unknown[i]).flatten().double())
        torch.testing.assert_close(chol[i] @ chol[i].T, want, rtol=0, atol=1e-12)


def test_galerkin_coarse_operator_and_its_factor_by_hand():
    """The Galerkin grid of a removed 5 x 5 block with a known centre in a 9 x 9 image: its stencil is ``P^T A P``
    (hand-built ``P`` and ``A``), the coarse points whose support is all known are inactive, and the dense factor
    is that of ``P^T A P`` with identity rows on them."""
    unknown = torch.zeros(9, 9, dtype=torch.bool)
    unknown[2:7, 2:7] = True
    unknown[4, 4] = False
    coarse = _galerkin(_Fine(unknown[None, None].double()), (5, 5))
    p = _prolongation(9, 9)
    want = p.T @ _masked_operator(unknown) @ p  # [25, 25]
    active = want.diagonal() > 0
    assert active.view(5, 5)[1:4, 1:4].all() and active.sum() == 9  # the 3 x 3 coarse points over the block
    assert torch.equal(coarse.active.flatten().bool(), active)
    dense = torch.stack([torch.zeros(25, dtype=torch.float64)] * 25)
    for k, (dy, dx) in enumerate(_OFFSETS):  # the stencil as a matrix
        for cy in range(5):
            for cx in range(5):
                if 0 <= cy + dy < 5 and 0 <= cx + dx < 5:
                    dense[cy * 5 + cx, (cy + dy) * 5 + cx + dx] = coarse.stencil[0, k, cy, cx]
    torch.testing.assert_close(dense, want, rtol=0, atol=1e-12)
    chol = _factor(coarse)
    torch.testing.assert_close(chol[0] @ chol[0].T, want + torch.diag((~active).double()), rtol=0, atol=1e-12)


def test_factor_regularises_dependent_coarse_functions():
    """One removed pixel at the centre of 4 coarse points: the 4 coarse functions are the same on the removed
    pixels, ``P^T A P = 1/16 * ones(4, 4)`` (border weight 1), singular; the factor is that of
    ``P^T A P + 1e-6 * mean(diag) * I`` (mean diagonal 1/16), per mask of the batch."""
    unknown = torch.zeros(2, 1, 3, 3, dtype=torch.float64)
    unknown[:, 0, 1, 1] = 1.0
    unknown[1, 0, 0, 0] = 1.0  # a second mask: coarse point 0 also sees a corner pixel
    coarse = _galerkin(_Fine(unknown), (2, 2))
    singular = torch.full((4, 4), 1 / 16, dtype=torch.float64)
    torch.testing.assert_close(coarse.stencil[0, 4], torch.full((2, 2), 1 / 16, dtype=torch.float64))
    chol = _factor(coarse)
    eye = torch.eye(4, dtype=torch.float64)
    torch.testing.assert_close(chol[0] @ chol[0].T, singular + 1e-6 / 16 * eye, rtol=0, atol=1e-15)
    # the second mask is not singular, but the batch is regularised as one, each mask by its own mean diagonal
    second = _masked_operator(unknown[1, 0] > 0)
    want = _prolongation(3, 3).T @ second @ _prolongation(3, 3)
    scale = float(want.diagonal().mean())
    torch.testing.assert_close(chol[1] @ chol[1].T, want + 1e-6 * scale * eye, rtol=0, atol=1e-15)


@pytest.mark.parametrize("size", [(16, 16), (13, 11), (1, 200)])
def test_a_small_image_is_solved_directly_in_one_iteration(size):
    """Up to 256 pixels the finest grid is the coarsest: the preconditioner is the exact (Cholesky) inverse and
    one CG step reaches tol=1e-5 (measured on the original code: 1 step at 1e-4, 1e-5 and 1e-6 for these
    sizes and masks). A V-cycle on coarser grids, or a perturbed dense solve, needs more."""
    images, keep = _three_masks(*size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = noisy_linear_impute(images, keep, tol=1e-5, max_iter=1)
    np.testing.assert_allclose(out.double().numpy(), _reference(images, keep).numpy(), atol=1e-4)


def test_a_converged_image_is_left_alone_whatever_else_is_in_the_chunk():
    """Each (mask, channel) is its own CG: once an image reaches ``tol`` it stops, so its result is the one it
    gets alone (up to float rounding), not one that kept improving with (or was coupled to) a slower image."""
    g = torch.Generator().manual_seed(0)
    h, w = 40, 36
    images = torch.rand(2, 3, h, w, generator=g)
    keep = torch.stack([torch.rand(h, w, generator=g) > p for p in (0.1, 0.9)])
    both = noisy_linear_impute(images, keep, tol=1e-2)
    for i in range(2):
        alone = noisy_linear_impute(images[i : i + 1], keep[i : i + 1], tol=1e-2)
        assert (both[i : i + 1] - alone).abs().max() < 1e-5  # measured: 0 and 1.3e-6 (another chunk shape)


def test_each_channel_converges_to_its_own_relative_tolerance():
    """``tol`` is relative per image and channel: a channel 1000 x darker than the others is solved as well,
    relative to its own size, in the same iterations (measured: relative errors < 2e-5 at tol=1e-4, no
    warning within 20 iterations)."""
    g = torch.Generator().manual_seed(0)
    h, w = 40, 36
    images = torch.rand(2, 3, h, w, generator=g)
    images[:, 1] *= 1e-3
    keep = torch.stack([torch.rand(h, w, generator=g) > p for p in (0.3, 0.7)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = noisy_linear_impute(images, keep, tol=1e-4, max_iter=20)
    ref = _reference(images, keep)
    relative = (out.double() - ref).abs().amax((2, 3)) / ref.abs().amax((2, 3))
    assert relative.max() < 1e-4


def test_the_defaults_tol_max_iter_and_chunk(monkeypatch):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(5, 3, 40, 36, generator=g)
    keep = torch.rand(5, 40, 36, generator=g) > 0.5
    chunks = []

    class Recording(imputation._Multigrid):
        def __init__(self, unknown):
            chunks.append(unknown.shape[0])
            super().__init__(unknown)

    monkeypatch.setattr(imputation, "_Multigrid", Recording)
    default = noisy_linear_impute(images, keep)
    assert chunks == [4, 1]  # chunk=4
    assert torch.equal(default, noisy_linear_impute(images, keep, tol=1e-4, max_iter=200, chunk=4))  # tol=1e-4
    np.testing.assert_allclose(default.double().numpy(), _reference(images, keep).numpy(), atol=1e-3)
    # max_iter=200: a preconditioner that returns 0 makes no progress, CG runs out of iterations
    monkeypatch.setattr(imputation._Multigrid, "vcycle", lambda self, i, r: torch.zeros_like(r))
    with pytest.warns(RuntimeWarning, match="did not reach tol=0.0001 in 200 iterations"):
        noisy_linear_impute(images[:1], keep[:1])


def test_keep_is_read_by_truth_value_and_the_dtype_is_kept():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 6, 7, generator=g)
    keep = torch.rand(2, 6, 7, generator=g) > 0.5
    want = noisy_linear_impute(images, keep)
    # any non-zero value means known, as for a bool mask
    assert torch.equal(noisy_linear_impute(images, keep.float() * 3), want)
    assert torch.equal(noisy_linear_impute(images, keep.to(torch.uint8) * 2), want)
    for dtype in (torch.float16, torch.bfloat16):  # solved in float32, returned in the images' dtype
        out = noisy_linear_impute(images.to(dtype), keep)
        assert out.dtype == dtype
        torch.testing.assert_close(out, want.to(dtype))
