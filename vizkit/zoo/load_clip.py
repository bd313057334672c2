"""The CLIP to explain, by name: a zoo CLIP (``shapes_clip``, ``shapes_clip_cnn``) or anything
:func:`vizkit.models.load_clip.load_clip` loads (an open_clip name with local weights, a Hugging
Face CLIP directory, a custom two-tower checkpoint), as a :class:`~vizkit.models.clip.ClipAdapter`.

Here rather than in :mod:`vizkit.models`: the zoo's CLIPs are built by :mod:`vizkit.zoo.shapes_clip`
(their open_clip configs and timm towers are registered there), and the models layer never imports
the zoo.

Example::

    from vizkit.zoo.load_clip import load_clip_model
    adapter = load_clip_model("shapes_clip")              # the zoo's ViT CLIP, offline
    adapter.text_features(["a red circle"])               # [1, 64], unit norm
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import VizkitError
from ..models.clip import ClipAdapter, adapt_open_clip
from ..models.load_clip import load_clip

__all__ = ["ZOO_CLIPS", "zoo_clip_adapter", "load_clip_model"]

#: the zoo's CLIP models (``zoo:<name>`` names them too)
ZOO_CLIPS = ("shapes_clip", "shapes_clip_cnn")


def zoo_clip_adapter(name: str, device: str | torch.device = "cpu") -> ClipAdapter:
    """The zoo CLIP ``name`` (one of :data:`ZOO_CLIPS`) on ``device``, in eval mode, named
    ``zoo:<name>``; its preprocess takes a PIL image (converted to RGB) or a uint8 ``[H, W, 3]``
    array and returns ``[3, S, S]``; ``meta`` holds the zoo config (class names, metrics)."""
    from . import load

    bundle = load(name)
    model = bundle.model.to(torch.device(device)).eval()

    def preprocess(image: Any) -> torch.Tensor:
        return bundle.preprocess(np.asarray(image.convert("RGB")) if hasattr(image, "convert") else image)

    adapter = adapt_open_clip(model, bundle.tokenizer, preprocess, name=f"zoo:{name}")
    adapter.meta.update(bundle.meta)
    return adapter


def load_clip_model(
    model: str | None = None,
    model_path: str | None = None,
    *,
    image_encoder: str | None = None,
    text_encoder: str | None = None,
    embed_dim: int = 512,
    img_size: int = 224,
    device: str | torch.device = "cpu",
) -> ClipAdapter:
    """The CLIP to explain: a zoo name (default ``shapes_clip``), or anything
    :func:`vizkit.models.load_clip.load_clip` loads (open_clip name + weights, HF directory,
    custom two-tower checkpoint)."""
    if not (image_encoder or text_encoder):
        spec = model or "shapes_clip"
        spec = spec[4:] if spec.startswith("zoo:") else spec
        if spec in ZOO_CLIPS:
            if model_path is not None:
                raise VizkitError(
                    f"--model {spec} is a zoo model with its own weights: drop --model-path, or name the "
                    "open_clip architecture your weights belong to with --model"
                )
            return zoo_clip_adapter(spec, torch.device(device))
        model = spec
    return load_clip(
        model or "",
        model_path,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        embed_dim=embed_dim,
        img_size=img_size,
        device=device,
        known=ZOO_CLIPS,
    )
