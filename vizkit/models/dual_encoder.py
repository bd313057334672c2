"""A two-tower CLIP for users' own checkpoints (seed 003's layout: an image backbone by
name, a Hugging Face text encoder from a local directory such as ``bert-base-chinese``, and
linear projections into a shared ``embed_dim`` space).

State-dict keys: ``image_encoder.*`` (the timm/torchvision backbone without its classifier),
``text_encoder.*`` (the HF model), ``image_projection.*``, ``text_projection.*`` and
``logit_scale`` (log of the scale, as in CLIP).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VizkitError


def image_backbone(name: str, img_size: int) -> tuple[nn.Module, int]:
    """A timm (or torchvision) backbone without its classifier and its feature width."""
    import timm

    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0}
    if "vit" in name or "deit" in name:
        kwargs["img_size"] = img_size
    try:
        model = timm.create_model(name, **kwargs)
        return model, int(model.num_features)
    except RuntimeError as err:
        if "Unknown model" not in str(err):
            raise
    import torchvision

    try:
        model = torchvision.models.get_model(name, weights=None)
    except ValueError as err:
        raise VizkitError(
            f"unknown image encoder {name!r}: use a timm or torchvision model name "
            "(e.g. resnet18, convnext_tiny, efficientnet_b0, vit_base_patch16_224)"
        ) from err
    for attr in ("fc", "classifier", "head", "heads"):
        head = getattr(model, attr, None)
        if head is not None:
            width = (
                next(m for m in reversed(list(head.modules())) if isinstance(m, nn.Linear)).in_features
                if not isinstance(head, nn.Linear)
                else head.in_features
            )
            setattr(model, attr, nn.Identity())
            return model, width
    raise VizkitError(f"cannot find the classifier of torchvision model {name!r}")


class DualEncoderCLIP(nn.Module):
    """``encode_image([B, 3, H, W]) -> [B, embed_dim]``;
    ``encode_text(input_ids, attention_mask) -> [T, embed_dim]``."""

    def __init__(self, image_encoder: str, text_encoder: str | Path, embed_dim: int = 512, img_size: int = 224):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        path = Path(text_encoder)
        if not (path / "config.json").is_file():
            raise VizkitError(
                f"text encoder {str(text_encoder)!r} is not a local Hugging Face directory with a "
                "config.json: download it once elsewhere (e.g. bert-base-chinese) and pass its folder"
            )
        self.image_encoder, width = image_backbone(image_encoder, img_size)
        self.text_encoder = AutoModel.from_config(AutoConfig.from_pretrained(path, local_files_only=True))
        self.image_projection = nn.Linear(width, embed_dim)
        self.text_projection = nn.Linear(self.text_encoder.config.hidden_size, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.img_size = img_size

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.image_projection(self.image_encoder(images))

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> torch.Tensor:
        out = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self.text_projection(out.last_hidden_state[:, 0])

    def forward(
        self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[B, T]`` image-text logits."""
        img = F.normalize(self.encode_image(images), dim=-1)
        txt = F.normalize(self.encode_text(input_ids, attention_mask), dim=-1)
        return self.logit_scale.exp() * img @ txt.T
