"""The layout of DeepfakeBench's CLIP detector: a HF ``CLIPVisionModel`` backbone whose
``pooler_output`` feeds ``nn.Linear(hidden, 2)``; class 1 = fake. State-dict keys are
``backbone.*`` and ``head.*``, as in DeepfakeBench checkpoints.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

CLASS_NAMES = ["real", "fake"]


class ClipDetector(nn.Module):
    """``[B, 3, H, W]`` -> logits ``[B, 2]`` (real, fake)."""

    def __init__(self, vision_config: Any):
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        if isinstance(vision_config, dict):
            vision_config = CLIPVisionConfig(**vision_config)
        self.backbone = CLIPVisionModel(vision_config)
        self.head = nn.Linear(vision_config.hidden_size, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values=x).pooler_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LinearHeadClassifier(nn.Module):
    """A feature backbone (HF ``CLIPVisionModel`` / CLIP ``vision_model``: ``pooler_output``
    ``[B, D]``) followed by a linear head: ``[B, 3, H, W]`` -> logits ``[B, C]``."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(pixel_values=x).pooler_output)
