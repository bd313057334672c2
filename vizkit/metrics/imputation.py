"""Noisy linear imputation of ROAD (Rong et al., ICML 2022), batched on the images' device.

Every removed pixel becomes the weighted mean of its 8 neighbours (weight 1/6 for the 4 direct,
1/12 for the 4 diagonal ones, renormalised at the image border), known pixels keep their values:
one sparse linear system per mask, shared by the channels. pytorch-grad-cam (and the paper's
code) solve each system with scipy on the CPU; here all masks of a batch are solved together by
conjugate gradients preconditioned with a geometric multigrid V-cycle (the same operator on
coarser grids, a coarse pixel being removed where all fine pixels around it are; Jacobi smoothing;
a dense Cholesky solve on the coarsest grid), whose iteration count hardly grows with the image size.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError

__all__ = ["NEIGHBOUR_WEIGHTS", "noisy_linear_impute"]

#: 3x3 weights of the neighbours of a pixel (the centre is the pixel itself), as in the paper.
NEIGHBOUR_WEIGHTS = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))
_OMEGA = 1.0  # Jacobi weight of the smoother (the operator's spectrum is in [0, 4/3]: no damping needed)
_COARSEST = 64  # pixels of the coarsest grid (solved densely)


def _sep121(x: Tensor) -> Tensor:
    """Separable [1, 2, 1] x [1, 2, 1] filter of ``[..., h, w]`` with zero padding (16 x the 3x3 weighted mean)."""
    y = x * 2
    y[..., 1:] += x[..., :-1]
    y[..., :-1] += x[..., 1:]
    z = y * 2
    z[..., 1:, :] += y[..., :-1, :]
    z[..., :-1, :] += y[..., 1:, :]
    return z


def _restrict(r: Tensor) -> Tensor:
    """Full weighting, the adjoint of :func:`_interpolate`: ``[..., h, w] -> [..., ceil(h/2), ceil(w/2)]``."""
    for dim in (-1, -2):
        even = r[..., ::2] if dim == -1 else r[..., ::2, :]
        odd = r[..., 1::2] if dim == -1 else r[..., 1::2, :]
        out = even.clone()
        k = odd.shape[dim]  # odd point j sits between even points j and j + 1 (absent at the end of an even size)
        inner = min(k, out.shape[dim] - 1)
        out.narrow(dim, 0, k).add_(odd, alpha=0.5)
        out.narrow(dim, 1, inner).add_(odd.narrow(dim, 0, inner), alpha=0.5)
        r = out
    return r


def _interpolate(c: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear interpolation ``[..., hc, wc] -> [..., h, w]`` (h = 2 hc or 2 hc - 1; zero beyond the last point)."""
    for dim, n in ((-2, size[0]), (-1, size[1])):
        shape = list(c.shape)
        shape[dim] = n
        out = c.new_empty(shape)
        even = out[..., ::2, :] if dim == -2 else out[..., ::2]
        odd = out[..., 1::2, :] if dim == -2 else out[..., 1::2]
        even.copy_(c)
        k = odd.shape[dim]  # odd point j sits between c[j] and c[j + 1] (absent for the last one when n is even)
        inner = min(k, c.shape[dim] - 1)
        torch.add(c.narrow(dim, 0, inner), c.narrow(dim, 1, inner), out=odd.narrow(dim, 0, inner)).mul_(0.5)
        if inner < k:
            odd.narrow(dim, inner, 1).copy_(c.narrow(dim, inner, 1)).mul_(0.5)
        c = out
    return c


class _Level:
    """One grid: its unknown pixels ``m`` ``[N, 1, h, w]`` and the centre weight of its operator."""

    def __init__(self, unknown: Tensor):
        self.m = unknown
        h, w = unknown.shape[-2:]
        one = torch.ones(1, 1, h, w, dtype=unknown.dtype, device=unknown.device)
        border = (_sep121(one) - 4) / 12  # weight of the in-image neighbours: 1 inside, less at the border
        self.centre = border + 1 / 3  # A x = m * (centre * x - sep121(x) / 12)
        self.smooth = _OMEGA * unknown / border  # damped inverse diagonal on unknown pixels
        self.dense: Tensor | None = None

    def apply(self, x: Tensor) -> Tensor:
        """The masked operator on ``x`` ``[N, C, h, w]`` (zero on known pixels)."""
        out = self.centre * x
        out.sub_(_sep121(x), alpha=1 / 12)
        return out.mul_(self.m)

    def factor(self) -> None:
        """Dense Cholesky factor of this (coarsest) grid's operator, identity rows on known pixels."""
        n, _, h, w = self.m.shape
        size = h * w
        eye = torch.eye(size, dtype=self.m.dtype, device=self.m.device)
        basis = eye.reshape(size, 1, h, w)
        act = self.m.reshape(n, size)
        full = (self.centre * basis - _sep121(basis) / 12).reshape(size, size)  # unmasked operator (symmetric)
        dense = full * act[:, :, None] * act[:, None, :] + torch.diag_embed(1 - act)
        dense = 0.5 * (dense + dense.transpose(1, 2))
        chol, info = torch.linalg.cholesky_ex(dense)
        if bool((info != 0).any()):  # no known pixel at all: singular, regularise
            chol = torch.linalg.cholesky(dense + 1e-4 * eye)
        self.dense = chol


class _Multigrid:
    """Conjugate gradients preconditioned by a geometric multigrid V-cycle, for ``N`` masks at once."""

    def __init__(self, unknown: Tensor):
        m = unknown[:, None].float()
        self.levels = [_Level(m)]
        while m.shape[-2] * m.shape[-1] > _COARSEST and min(m.shape[-2:]) > 1:
            m = -F.max_pool2d(-m, 3, 2, 1)  # a coarse point is unknown where all fine points around it are
            self.levels.append(_Level(m))
        self.levels[-1].factor()

    def vcycle(self, i: int, r: Tensor) -> Tensor:
        """One symmetric V-cycle on level ``i`` for the residual ``r`` ``[N, C, h, w]``: an approximate inverse."""
        lv = self.levels[i]
        if lv.dense is not None:
            n, c, h, w = r.shape
            rhs = r.reshape(n, c, h * w).transpose(1, 2)
            return torch.cholesky_solve(rhs, lv.dense).transpose(1, 2).reshape(n, c, h, w).mul_(lv.m)
        x = r * lv.smooth
        coarse = _restrict(r - lv.apply(x)).mul_(self.levels[i + 1].m)
        x.addcmul_(_interpolate(self.vcycle(i + 1, coarse), r.shape[-2:]), lv.m)
        return x.addcmul_(r - lv.apply(x), lv.smooth)

    def solve(self, b: Tensor, tol: float, max_iter: int) -> Tensor:
        """Preconditioned CG for ``A x = b`` per (mask, channel); ``b`` ``[N, C, h, w]`` zero on known pixels."""
        dims = (2, 3)
        fine = self.levels[0]
        x = torch.zeros_like(b)
        r = b.clone()
        limit = tol * b.square().sum(dims, keepdim=True).sqrt()
        active = limit > 0
        z = self.vcycle(0, r)
        p = z
        rz = (r * z).sum(dims, keepdim=True)
        for _ in range(max_iter):
            ap = fine.apply(p)
            pap = (p * ap).sum(dims, keepdim=True)
            alpha = torch.where(active & (pap > 0), rz / pap.clamp_min(1e-30), torch.zeros_like(rz))
            x.addcmul_(alpha, p)
            r.addcmul_(alpha, ap, value=-1)
            active = active & (r.square().sum(dims, keepdim=True).sqrt() > limit)
            if not bool(active.any()):
                return x
            z = self.vcycle(0, r)
            rz_new = (r * z).sum(dims, keepdim=True)
            beta = torch.where(active, rz_new / rz.clamp_min(1e-30), torch.zeros_like(rz))
            p = z.addcmul_(beta, p)
            rz = rz_new
        warnings.warn(
            f"noisy linear imputation: conjugate gradients did not reach tol={tol} in {max_iter} iterations",
            RuntimeWarning,
            stacklevel=3,
        )
        return x


def noisy_linear_impute(
    images: Tensor,
    keep: Tensor,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
    tol: float = 1e-4,
    max_iter: int = 200,
    chunk: int = 4,
) -> Tensor:
    """ROAD's noisy linear imputation of the pixels ``keep == False``, all images at once.

    ``images`` ``[N, C, H, W]`` (float), ``keep`` ``[N, H, W]`` (bool, True = known pixel).
    Each removed pixel is set to the weighted mean of its in-image neighbours (weights
    :data:`NEIGHBOUR_WEIGHTS`), i.e. the solution of the same linear system as
    ``pytorch_grad_cam.metrics.road.NoisyLinearImputer``, plus ``noise * N(0, 1)`` drawn from
    ``generator`` (on the images' device). Known pixels are returned unchanged. An image with no
    known pixel has no unique solution: its removed pixels are set to 0 (plus noise). Conjugate
    gradients stop at the relative residual ``tol`` (per image and channel; 1e-4 kept ROAD scores
    within ~1e-4 of an exact solve); ``chunk`` masks are solved together (small chunks stay in the
    CPU cache). Returns ``[N, C, H, W]`` in the images' dtype.
    """
    if images.ndim != 4 or keep.shape != (images.shape[0], *images.shape[2:]):
        raise InputError(
            f"expected images [N, C, H, W] and keep [N, H, W] of the same N, H, W, got "
            f"{tuple(images.shape)} and {tuple(keep.shape)}"
        )
    if not tol > 0 or max_iter < 1 or chunk < 1:
        raise InputError(f"tol must be > 0, max_iter and chunk >= 1; got {tol}, {max_iter}, {chunk}")
    keep = keep.to(images.device, torch.bool)
    out = []
    for start in range(0, images.shape[0], chunk):
        known = keep[start : start + chunk, None].float()
        unknown = 1.0 - known
        x_known = images[start : start + chunk].float() * known
        # right-hand side: the weighted known neighbours of every removed pixel (x_known is 0 there: no centre term)
        b = (_sep121(x_known) / 12).mul_(unknown)
        filled = _Multigrid(unknown[:, 0] > 0).solve(b, tol, max_iter)
        if noise:
            filled += noise * torch.randn(filled.shape, generator=generator, device=filled.device)
        out.append((x_known + filled * unknown).to(images.dtype))
    return torch.cat(out)


# applied here, not as a @decorator line: mutmut (`make mutation`) does not mutate decorated functions
noisy_linear_impute = torch.no_grad()(noisy_linear_impute)
