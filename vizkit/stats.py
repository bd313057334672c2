"""Statistics of attention maps (entropy, peakedness, mean attention distance).

Pure torch + pandas; no model code. Attention tensors follow the ViT layout
``[B, H, N, N]`` (batch, heads, query tokens, key tokens) with ``N = prefix + h*w``:
``prefix`` leading special tokens (CLS, registers, ...) followed by the ``h*w``
patch tokens in row-major order of the patch grid.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor

__all__ = [
    "map_entropy",
    "row_entropy",
    "mean_attention_distance",
    "cls_attention_distance",
    "attention_statistics",
    "uniform_statistics",
    "summarize",
]

METRICS = ("max", "mean", "entropy", "distance")


def _check_attention(attn: Tensor, grid: tuple[int, int], prefix_tokens: int, name: str = "attn") -> None:
    """Raise ValueError unless ``attn`` is ``[B, H, N, N]`` with ``N = prefix_tokens + h*w``."""
    if attn.ndim != 4:
        raise ValueError(f"{name} must have shape [B, H, N, N], got ndim={attn.ndim} (shape {tuple(attn.shape)})")
    if attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"{name} must be square in the last two dims [B, H, N, N], got shape {tuple(attn.shape)}")
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid must be (h, w) with positive entries, got {grid}")
    if prefix_tokens < 0:
        raise ValueError(f"prefix_tokens must be >= 0, got {prefix_tokens}")
    h, w = grid
    if attn.shape[-1] != prefix_tokens + h * w:
        raise ValueError(
            f"{name} has N={attn.shape[-1]} tokens but prefix_tokens + h*w = {prefix_tokens} + {h}*{w} "
            f"= {prefix_tokens + h * w}"
        )


def map_entropy(maps: Tensor) -> Tensor:
    """Entropy (nats) of each non-negative map ``[B, h, w]`` read as a distribution over its
    pixels: ``-sum p log p`` with ``p = m / sum(m)``. A uniform map gives ``log(h*w)``, a
    one-hot map 0; an all-zero map has no distribution and gives NaN. Returns ``[B]``."""
    if maps.ndim != 3:
        raise ValueError(f"expected maps [B, h, w], got shape {tuple(maps.shape)}")
    flat = maps.flatten(1).double().clamp(min=0)
    total = flat.sum(1, keepdim=True)
    p = flat / total
    ent = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(1)
    return torch.where(total[:, 0] > 0, ent, torch.full_like(ent, float("nan"))).float()


def row_entropy(attn: Tensor) -> Tensor:
    """Shannon entropy (natural log) of each attention row.

    ``attn`` is ``[..., Nq, Nk]`` with rows summing to 1; returns ``[..., Nq]``.
    Uses the convention ``0 * log 0 = 0``.
    """
    if attn.ndim < 2:
        raise ValueError(f"attn must have shape [..., Nq, Nk], got ndim={attn.ndim}")
    return -torch.special.xlogy(attn, attn).sum(dim=-1)


def _grid_distances(grid: tuple[int, int], device: torch.device, patch_size: float) -> Tensor:
    """``[P, P]`` Euclidean distances between the row-major patch positions (row, col), times ``patch_size``."""
    h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([rows.flatten(), cols.flatten()], dim=-1).to(device, torch.float64)
    return torch.cdist(coords, coords) * patch_size


def mean_attention_distance(attn: Tensor, grid: tuple[int, int], prefix_tokens: int, patch_size: float = 1.0) -> Tensor:
    """Mean attention distance per head, ``[B, H, N, N] -> [B, H]``.

    Definition: let ``A`` be the patch-to-patch block ``attn[..., prefix:, prefix:]``
    (``[B, H, P, P]``, ``P = h*w``) and renormalise each query row over the patch keys,
    ``A'[q, k] = A[q, k] / sum_k A[q, k]`` (prefix keys are excluded; a row with zero
    mass on patch keys contributes distance 0). With ``d(q, k)`` the Euclidean distance
    between the grid positions (row, col) of patches ``q`` and ``k``, times ``patch_size``,

        distance[b, head] = mean over patch queries q of  sum_k A'[q, k] * d(q, k).

    Prefix query rows are never used.
    """
    _check_attention(attn, grid, prefix_tokens)
    dist = _grid_distances(grid, attn.device, patch_size)  # [P, P]

    patch = attn[..., prefix_tokens:, prefix_tokens:].double()
    patch = patch / patch.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(patch.dtype).tiny)
    return (patch * dist).sum(dim=-1).mean(dim=-1).to(attn.dtype if attn.is_floating_point() else torch.float32)


def cls_attention_distance(attn: Tensor, grid: tuple[int, int], prefix_tokens: int, patch_size: float = 1.0) -> Tensor:
    """Spatial spread of the CLS row per head, ``[B, H, N, N] -> [B, H]`` (float64).

    The CLS token has no place on the patch grid, so :func:`mean_attention_distance` (a distance from
    each query patch) cannot be read on its row. This is the distance between two patches drawn
    independently from the CLS row: with ``p`` the row of token 0 over the patch keys, renormalised
    (``p[k] = attn[0, prefix + k] / sum_k attn[0, prefix + k]``) and ``d(k, l)`` the grid distance,

        cls_distance[b, head] = sum_k sum_l p[k] p[l] d(k, l).

    0 when the CLS token reads one patch; for attention spread evenly over the patches it equals
    :func:`vizkit.metrics.chance.uniform_attention_distance` (2.008 on a 4 x 4 grid). A row with no
    mass on patch keys gives 0. Needs ``prefix_tokens >= 1``."""
    _check_attention(attn, grid, prefix_tokens)
    if prefix_tokens < 1:
        raise ValueError("cls_attention_distance needs a prefix (CLS) token, but prefix_tokens=0")
    dist = _grid_distances(grid, attn.device, patch_size)
    p = attn[..., 0, prefix_tokens:].double()  # [B, H, P]
    p = p / p.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(p.dtype).tiny)
    return torch.einsum("bhk,kl,bhl->bh", p, dist, p)


def attention_statistics(
    maps: Mapping[str, Tensor], grid: tuple[int, int], prefix_tokens: int, query: str = "cls"
) -> pd.DataFrame:
    """Per (sample, layer, head) statistics of attention maps as a long-form DataFrame.

    ``maps`` is ``{layer name: [B, H, N, N]}`` in layer order, ``N = prefix_tokens + h*w``.
    ``query="cls"`` uses only the row of token 0 (requires ``prefix_tokens >= 1``);
    ``query="all"`` uses all ``N`` query rows. Columns:

    - ``sample``, ``layer``, ``layer_index`` (position in ``maps``), ``head``
    - ``max``: max attention over patch keys, per chosen row, averaged over chosen rows
    - ``mean``: mean attention over patch keys of the chosen rows
    - ``entropy``: :func:`row_entropy` of the full rows (prefix keys included), averaged
      over the chosen rows
    - ``distance``: :func:`mean_attention_distance` (always over patch queries)
    - ``cls_distance`` (``query="cls"`` only): :func:`cls_attention_distance`, the spread of the CLS row
      that the CLS-attention maps show
    """
    if query not in ("cls", "all"):
        raise ValueError(f"query must be 'cls' or 'all', got {query!r}")
    if query == "cls" and prefix_tokens < 1:
        raise ValueError("query='cls' needs a prefix (CLS) token, but prefix_tokens=0; use query='all'")
    if len(maps) == 0:
        raise ValueError("maps is empty")

    frames = []
    with torch.no_grad():
        for index, (layer, attn) in enumerate(maps.items()):
            _check_attention(attn, grid, prefix_tokens, name=f"maps[{layer!r}]")
            attn = attn.detach().double()
            rows = attn[:, :, :1] if query == "cls" else attn  # [B, H, R, N]
            patch_keys = rows[..., prefix_tokens:]
            values = {
                "max": patch_keys.amax(dim=-1).mean(dim=-1),
                "mean": patch_keys.mean(dim=(-2, -1)),
                "entropy": row_entropy(rows).mean(dim=-1),
                "distance": mean_attention_distance(attn, grid, prefix_tokens),
            }
            if query == "cls":
                values["cls_distance"] = cls_attention_distance(attn, grid, prefix_tokens)
            b, n_heads = attn.shape[:2]
            sample, head = np.meshgrid(np.arange(b), np.arange(n_heads), indexing="ij")
            frame = pd.DataFrame(
                {
                    "sample": sample.ravel(),
                    "layer": str(layer),
                    "layer_index": index,
                    "head": head.ravel(),
                    **{k: v.cpu().numpy().ravel() for k, v in values.items()},
                }
            )
            frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    return df.astype({"sample": "int64", "layer_index": "int64", "head": "int64"})


def uniform_statistics(grid: tuple[int, int], prefix_tokens: int, query: str = "cls") -> dict[str, float]:
    """The :func:`attention_statistics` of uniform attention (every row ``1 / N`` over all ``N = prefix + h*w``
    tokens): the chance level of each statistic, ``{"max": 1/N, "mean": 1/N, "entropy": log N, "distance": ...,
    "cls_distance": ...}``, both distances equal to :func:`vizkit.metrics.chance.uniform_attention_distance`."""
    n = prefix_tokens + grid[0] * grid[1]
    uniform = torch.full((1, 1, n, n), 1.0 / n, dtype=torch.float64)
    row = attention_statistics({"uniform": uniform}, grid, prefix_tokens, query=query).iloc[0]
    return {k: float(row[k]) for k in row.index if k not in ("sample", "layer", "layer_index", "head")}


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per-layer mean and std (ddof=1) over samples and heads of max/mean/entropy/distance.

    ``df`` is the output of :func:`attention_statistics`. Returns a DataFrame indexed by
    ``layer`` in ``layer_index`` order, with MultiIndex columns ``(metric, "mean"|"std")``,
    e.g. ``out.loc["blocks.0", ("entropy", "mean")]``.
    """
    missing = {"layer", "layer_index", *METRICS} - set(df.columns)
    if missing:
        raise ValueError(f"df is missing columns {sorted(missing)}")
    out = df.groupby(["layer_index", "layer"], sort=True)[list(METRICS)].agg(["mean", "std"])
    return out.droplevel("layer_index")
