"""Token sequences <-> 2-D patch grids.

A ViT layer emits ``[B, N, C]`` tokens: ``prefix`` leading tokens (CLS, distillation,
register tokens) followed by ``h * w`` patch tokens in row-major order. The grid comes from
the patch embedding's output measured in the same forward pass (so non-square inputs and
any image size work); the prefix count is ``N - h * w``. A hierarchical model (Swin) merges
patches stage by stage: a stage with fewer tokens than the measured grid has no prefix token
and the grid divided by the merge factor (``ceil(h / s) x ceil(w / s)``).

A 4-D activation is ``[B, C, h, w]`` (``"nchw"``, CNNs) or ``[B, h, w, C]`` (``"nhwc"``: timm
and torchvision Swin, timm's ``*Cl`` modules). :func:`feature_layout` decides which, by the
documented rules below, and never guesses: an undecidable case raises and names the
``layout=`` argument that settles it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import InputError, VizkitError

LayoutSpec = None | str | Callable[[torch.Tensor], torch.Tensor]
LAYOUTS = ("nchw", "nhwc", "tokens")

# classes whose 4-D outputs are channels-last: timm's and torchvision's Swin / Swin V2
# (their stages, blocks, patch merging and the models themselves: e.g. torchvision's
# ``features.0`` Sequential inherits it), timm's channels-last modules (``...Cl``)
_NHWC_FAMILY = re.compile(r"^(SwinTransformer\w*|PatchMerging(V2)?|\w+Cl)$")
_NCHW_CLASS = re.compile(r"(Conv\w*[23]d|BatchNorm[23]d|\w*2d)$")
_LAYOUT_HELP = (
    "pass layout='nchw' or layout='nhwc' to cam(...), or a callable "
    "layout=lambda t: t.permute(0, 3, 1, 2) that returns [B, C, h, w]"
)


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


def infer_layout(
    num_tokens: int, grid: tuple[int, int] | None = None, image_hw: tuple[int, int] | None = None
) -> TokenLayout:
    """The layout of ``num_tokens`` tokens.

    With a measured ``grid`` the prefix is ``num_tokens - h*w``. Without one, the grid is
    the largest one (with the aspect ratio of ``image_hw``, square by default) that leaves
    at most 16 prefix tokens.
    """
    if grid is not None:
        h, w = int(grid[0]), int(grid[1])
        prefix = num_tokens - h * w
        if prefix < 0:
            merged = merged_grid(num_tokens, (h, w))
            if merged is None:
                raise VizkitError(
                    f"{num_tokens} tokens cannot hold a {h}x{w} patch grid, nor that grid "
                    f"merged 2x, 4x, ... (a Swin stage): pass layout=<callable> to reshape them"
                )
            return TokenLayout(merged, 0)
        return TokenLayout((h, w), prefix)
    ratio = (image_hw[1] / image_hw[0]) if image_hw else 1.0
    for prefix in range(0, min(16, num_tokens - 1) + 1):
        n = num_tokens - prefix
        h = round(math.sqrt(n / ratio))
        if h > 0 and n % h == 0 and abs(n // h / h - ratio) < 1e-6:
            return TokenLayout((h, n // h), prefix)
    raise VizkitError(f"cannot map {num_tokens} tokens to a patch grid: pass the grid explicitly (grid=(h, w))")


def merged_grid(num_tokens: int, grid: tuple[int, int]) -> tuple[int, int] | None:
    """The grid of a stage that merged ``s x s`` patches of ``grid`` into one token and holds
    exactly ``num_tokens`` tokens (``ceil`` or ``floor`` of ``h / s``, ``w / s``), or None."""
    h, w = grid
    for s in range(2, max(h, w) + 1):
        for gh, gw in ((-(-h // s), -(-w // s)), (h // s, w // s)):
            if gh * gw == num_tokens and gh > 0 and gw > 0:
                return gh, gw
    return None


def _fits_image(hw: tuple[int, int], image_hw: Sequence[int]) -> bool:
    """True when ``hw`` is the image size divided by one common stride (rounded either way)."""
    h, w = hw
    big_h, big_w = int(image_hw[0]), int(image_hw[1])
    if not (0 < h <= big_h and 0 < w <= big_w):
        return False
    for s in range(1, max(big_h, big_w) + 1):
        if h in (big_h // s, -(-big_h // s)) and w in (big_w // s, -(-big_w // s)):
            return True
    return False


def _module_rule(module: nn.Module | None, shape: Sequence[int]) -> str | None:
    if module is None:
        return None
    cls = type(module).__name__
    if _NCHW_CLASS.search(cls) or isinstance(module, (nn.modules.conv._ConvNd, nn.modules.pooling._AdaptiveAvgPoolNd)):
        return "nchw"
    if isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) == (shape[-1],):
        return "nhwc"
    if isinstance(module, nn.Linear) and module.out_features == shape[-1]:
        return "nhwc"
    return None


def _family_rule(classes: Sequence[str]) -> str | None:
    return "nhwc" if any(_NHWC_FAMILY.match(c) for c in classes) else None


def _content_rule(module: nn.Module | None) -> str | None:
    if module is None:
        return None
    leaves = [m for m in module.modules() if not m._modules]
    conv = any(isinstance(m, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm)) for m in leaves)
    last_dim = any(
        isinstance(m, (nn.LayerNorm, nn.Linear)) and not _NCHW_CLASS.search(type(m).__name__) for m in leaves
    )
    if conv != last_dim:
        return "nchw" if conv else "nhwc"
    return None


def feature_layout(
    shape: Sequence[int],
    image_hw: Sequence[int],
    name: str,
    module: nn.Module | None = None,
    classes: Sequence[str] = (),
) -> str:
    """``"nchw"`` or ``"nhwc"`` for a 4-D activation of ``shape`` produced by ``module``
    (``classes``: the class names of the module and the modules enclosing it).

    Rules, in order (the first that decides wins):

    1. the module itself: a convolution or a ``...2d`` class (BatchNorm2d, LayerNorm2d, pools)
       means ``nchw``; an ``nn.LayerNorm`` over the last dim, or an ``nn.Linear`` whose
       ``out_features`` is the last dim, means ``nhwc`` (if the measured shapes contradict it,
       an error is raised rather than a guess made);
    2. the measured shapes: the spatial dims must be the input image's size divided by one
       common stride; when only one reading fits, it is the layout;
    3. known channels-last families by class name (the module or an enclosing one): timm /
       torchvision ``SwinTransformer*`` and ``PatchMerging*``, timm's ``...Cl`` classes;
    4. what the module contains: only convolutions / BatchNorms -> ``nchw``; only
       LayerNorms / Linears -> ``nhwc``.

    No decision (e.g. ``[B, 8, 8, 8]`` from an 8-stride 64 x 64 input in a module of mixed
    content) raises :class:`InputError` naming the ``layout=`` argument.
    """
    b, d1, d2, d3 = (int(v) for v in shape)
    by_shape = {"nchw": _fits_image((d2, d3), image_hw), "nhwc": _fits_image((d1, d2), image_hw)}
    shape_says = [k for k, ok in by_shape.items() if ok]
    rule = _module_rule(module, shape)
    if rule is not None:
        if len(shape_says) == 1 and shape_says[0] != rule:
            raise InputError(
                f"layer {name!r} output {tuple(shape)}: its module type says {rule.upper()} but its spatial "
                f"dims only fit the {tuple(image_hw)} input as {shape_says[0].upper()}; {_LAYOUT_HELP}"
            )
        return rule
    if len(shape_says) == 1:
        return shape_says[0]
    rule = _family_rule(classes) or _content_rule(module)
    if rule is not None:
        return rule
    raise InputError(
        f"layer {name!r} output {tuple(shape)} is ambiguous: it reads as [B, C, h, w] and as [B, h, w, C] "
        f"for a {tuple(image_hw)} input and no rule decides; {_LAYOUT_HELP}"
    )


def check_layout(layout: LayoutSpec) -> LayoutSpec:
    """Validate a ``layout=`` argument: None, ``"nchw"``, ``"nhwc"``, ``"tokens"`` or a callable."""
    if layout is None or callable(layout):
        return layout
    if isinstance(layout, str) and layout.strip().lower() in LAYOUTS:
        return layout.strip().lower()
    raise InputError(
        f"layout={layout!r} is not valid: use one of {', '.join(map(repr, LAYOUTS))}, None (decided "
        "per layer) or a callable tensor -> [B, C, h, w]"
    )


def tokens_to_grid(tokens: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """``[B, N, C]`` tokens -> ``[B, C, h, w]`` patch features (prefix tokens dropped)."""
    if tokens.ndim != 3:
        raise VizkitError(f"expected tokens [B, N, C], got shape {tuple(tokens.shape)}")
    b, n, c = tokens.shape
    if n != layout.num_tokens:
        raise VizkitError(f"{n} tokens do not match the layout {layout} ({layout.num_tokens} tokens)")
    h, w = layout.grid
    return tokens[:, layout.prefix :, :].reshape(b, h, w, c).permute(0, 3, 1, 2)


def patch_row_to_grid(row: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """``[B, N]`` values over tokens (e.g. the CLS attention row) -> ``[B, h, w]`` over patches."""
    if row.ndim != 2 or row.shape[1] != layout.num_tokens:
        raise VizkitError(f"expected [B, {layout.num_tokens}], got shape {tuple(row.shape)}")
    return row[:, layout.prefix :].reshape(row.shape[0], *layout.grid)


def to_batch_first(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Accept ``[B, N, C]`` or sequence-first ``[N, B, C]`` (older open_clip) and return ``[B, N, C]``."""
    if tokens.ndim == 3 and tokens.shape[0] != batch_size and tokens.shape[1] == batch_size:
        return tokens.transpose(0, 1)
    return tokens
