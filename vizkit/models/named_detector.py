"""The detector a notebook or a command names (:func:`load_detector_model`): a zoo detector's name,
a weights file or model directory (:func:`vizkit.models.load_detector`), a DeepfakeBench YAML +
weights, or an ``nn.Module`` already in memory (:func:`module_detector`, whose images the caller
preprocesses).

Example::

    from vizkit.models.named_detector import load_detector_model
    det = load_detector_model("face_forgery_detector")   # the zoo's detector, offline
    det = load_detector_model(my_vit_classifier)          # a module: feed it tensors [B, 3, H, W]
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .detector import Detector
from .load_detector import ZOO_DETECTORS, load_detector

__all__ = ["load_detector_model", "module_detector"]


def _no_preprocess(image: Any) -> torch.Tensor:
    raise InputError(
        "this detector was passed as a module: preprocess the images yourself and call "
        "CLIPViTGradCAM(model)(x) with a tensor [B, 3, H, W]"
    )


def module_detector(model: nn.Module, device: str | torch.device = "cpu") -> Detector:
    """``model`` (``[B, 3, H, W] -> [B, C]``) moved to ``device`` in eval mode, as a :class:`Detector`
    with classes ``real`` / ``fake``, size 0 and no image pipeline: its ``preprocess`` and ``read``
    raise an :class:`InputError` (the caller feeds tensors)."""
    return Detector(
        model.to(device).eval(),
        _no_preprocess,
        _no_preprocess,
        ["real", "fake"],
        0,
        type(model).__name__,
        "module",
        "none",
    )


def load_detector_model(
    model: str | nn.Module | None = None,
    model_config: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    *,
    head: str | None = None,
    num_heads: int | None = None,
    device: str | torch.device = "cpu",
) -> Detector:
    """The detector to explain, by :func:`vizkit.models.load_detector`: the zoo's
    ``face_forgery_detector`` (default), or a user's files (a DeepfakeBench YAML + ``.pth``, a
    Hugging Face directory + head, a timm classifier). ``model`` may also be a zoo name, a path
    (weights file or model directory) or an ``nn.Module`` (then preprocess the images yourself)."""
    if isinstance(model, nn.Module):
        return module_detector(model, device)
    spec = str(model) if model else ""
    if spec and not weights:
        weights = spec if spec.startswith("zoo:") or spec not in ZOO_DETECTORS else f"zoo:{spec}"
    return load_detector(model_config, weights, head=head, num_heads=num_heads, device=device)
