"""Token sequences <-> 2-D patch grids.

A ViT layer emits ``[B, N, C]`` tokens: ``prefix`` leading tokens (CLS, distillation,
register tokens) followed by ``h * w`` patch tokens in row-major order. The grid comes from
the patch embedding's output measured in the same forward pass (so non-square inputs and
any image size work); the prefix count is ``N - h * w``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import VizkitError


@dataclass(frozen=True)
class TokenLayout:
    """How a token sequence maps to the image: ``grid = (h, w)`` patches after ``prefix`` tokens."""

    grid: tuple[int, int]
    prefix: int

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def num_tokens(self) -> int:
        return self.prefix + self.num_patches


def infer_layout(num_tokens: int, grid: tuple[int, int] | None = None, image_hw: tuple[int, int] | None = None) -> TokenLayout:
    """The layout of ``num_tokens`` tokens.

    With a measured ``grid`` the prefix is ``num_tokens - h*w``. Without one, the grid is
    the largest one (with the aspect ratio of ``image_hw``, square by default) that leaves
    at most 16 prefix tokens.
    """
    if grid is not None:
        h, w = int(grid[0]), int(grid[1])
        prefix = num_tokens - h * w
        if prefix < 0:
            raise VizkitError(f"{num_tokens} tokens cannot hold a {h}x{w} patch grid")
        return TokenLayout((h, w), prefix)
    ratio = (image_hw[1] / image_hw[0]) if image_hw else 1.0
    for prefix in range(0, min(16, num_tokens - 1) + 1):
        n = num_tokens - prefix
        h = round(math.sqrt(n / ratio))
        if h > 0 and n % h == 0 and abs(n // h / h - ratio) < 1e-6:
            return TokenLayout((h, n // h), prefix)
    raise VizkitError(
        f"cannot map {num_tokens} tokens to a patch grid: pass the grid explicitly (grid=(h, w))")


def tokens_to_grid(tokens: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """``[B, N, C]`` tokens -> ``[B, C, h, w]`` patch features (prefix tokens dropped)."""
    if tokens.ndim != 3:
        raise VizkitError(f"expected tokens [B, N, C], got shape {tuple(tokens.shape)}")
    b, n, c = tokens.shape
    if n != layout.num_tokens:
        raise VizkitError(f"{n} tokens do not match the layout {layout} ({layout.num_tokens} tokens)")
    h, w = layout.grid
    return tokens[:, layout.prefix:, :].reshape(b, h, w, c).permute(0, 3, 1, 2)


def patch_row_to_grid(row: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """``[B, N]`` values over tokens (e.g. the CLS attention row) -> ``[B, h, w]`` over patches."""
    if row.ndim != 2 or row.shape[1] != layout.num_tokens:
        raise VizkitError(f"expected [B, {layout.num_tokens}], got shape {tuple(row.shape)}")
    return row[:, layout.prefix:].reshape(row.shape[0], *layout.grid)


def to_batch_first(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Accept ``[B, N, C]`` or sequence-first ``[N, B, C]`` (older open_clip) and return ``[B, N, C]``."""
    if tokens.ndim == 3 and tokens.shape[0] != batch_size and tokens.shape[1] == batch_size:
        return tokens.transpose(0, 1)
    return tokens
