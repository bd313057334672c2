"""A plain ViT classifier in the configuration style of seed 001 (``img_size``, ``patch_size``,
``in_channels``, ``num_classes``, ``embed_dim``, ``num_heads``, ``num_layers``, ``mlp_dim``,
``dropout``). Pre-norm blocks built on ``nn.MultiheadAttention``; the head reads the CLS token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from ..errors import VizkitError


@dataclass(frozen=True)
class ViTConfig:
    img_size: int = 28
    patch_size: int = 7
    in_channels: int = 1
    num_classes: int = 10
    embed_dim: int = 128
    num_heads: int = 4
    num_layers: int = 6
    mlp_dim: int = 256
    dropout: float = 0.1

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "ViTConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise VizkitError(f"unknown ViT config key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
        cfg = cls(**dict(config))
        if cfg.img_size % cfg.patch_size:
            raise VizkitError(f"img_size {cfg.img_size} is not a multiple of patch_size {cfg.patch_size}")
        if cfg.embed_dim % cfg.num_heads:
            raise VizkitError(f"embed_dim {cfg.embed_dim} is not a multiple of num_heads {cfg.num_heads}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Block(nn.Module):
    """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class SimpleViT(nn.Module):
    """``[B, C, H, W]`` -> logits ``[B, num_classes]``; tokens are ``[CLS] + (H/p)*(W/p)`` patches."""

    def __init__(self, config: ViTConfig | Mapping[str, Any] | None = None, **kwargs: Any):
        super().__init__()
        if config is None:
            config = ViTConfig.from_dict(kwargs)
        elif not isinstance(config, ViTConfig):
            config = ViTConfig.from_dict(config)
        self.config = config
        c = config
        self.patch_embed = nn.Conv2d(c.in_channels, c.embed_dim, c.patch_size, c.patch_size)
        n = (c.img_size // c.patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, c.embed_dim) * 0.02)
        self.dropout = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c.embed_dim, c.num_heads, c.mlp_dim, c.dropout) for _ in range(c.num_layers))
        self.norm = nn.LayerNorm(c.embed_dim)
        self.head = nn.Linear(c.embed_dim, c.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        if t.shape[1] + 1 != self.pos_embed.shape[1]:
            raise VizkitError(
                f"input {tuple(x.shape[-2:])} gives {t.shape[1]} patches; the model expects "
                f"{self.config.img_size}x{self.config.img_size} images"
            )
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], 1) + self.pos_embed
        t = self.dropout(t)
        for block in self.blocks:
            t = block(t)
        return self.head(self.norm(t)[:, 0])
