"""The one detector type of vizkit: a real/fake (or C-class) image classifier and everything it
takes to feed it, whichever files it came from (:func:`vizkit.models.load_detector`).

Architectures built here: DeepfakeBench's CLIP detector layout (:class:`ClipDetector`: a HF
``CLIPVisionModel`` backbone whose ``pooler_output`` feeds ``nn.Linear(hidden, 2)``, state-dict
keys ``backbone.*`` and ``head.*``; class 1 = fake) and a feature backbone with a linear head
(:class:`LinearHeadClassifier`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CLASS_NAMES = ["real", "fake"]

#: the image-reading pipelines a detector can declare (docs/howto/deepfakebench.md: "which pipeline each kind of
#: model gets")
PIPELINES = {
    "deepfakebench": "OpenCV imread (BGR -> RGB), cv2.resize INTER_CUBIC to the config's resolution, /255, the "
    "config's mean / std (DeepfakeBench's test loader)",
    "zoo": "PIL read, cv2.resize INTER_AREA to the model size, /255, the zoo config's mean / std",
    "resize-normalize": "PIL read, cv2.resize INTER_CUBIC to the config's resolution, /255, the config's mean / std",
    "processor": "PIL read, the model folder's own image processor",
}


def fake_class_index(class_names: Sequence[str]) -> int:
    """The class whose probability is p(fake) and whose map is "the fake-class map": the one named
    ``fake`` (any case) when there is one, else the last."""
    names = [n.lower() for n in class_names]
    return names.index("fake") if "fake" in names else len(names) - 1


def real_class_index(class_names: Sequence[str]) -> int:
    """The class named ``real`` (any case) when there is one, else the first."""
    names = [n.lower() for n in class_names]
    return names.index("real") if "real" in names else 0


@dataclass
class Detector:
    """A detector ready to explain and evaluate.

    - ``model``: ``[B, 3, S, S] -> [B, C]`` logits, eval mode;
    - ``preprocess``: one image (uint8 ``H x W x 3`` RGB, or PIL) -> ``[3, S, S]``;
    - ``read``: an image file -> uint8 ``H x W x 3`` RGB, the way this detector's own pipeline
      reads files (OpenCV for DeepfakeBench models);
    - ``class_names``: the C classes; ``size``: S; ``source``: where the weights came from;
      ``family`` (``deepfakebench:clip``, ``deepfakebench:xception``, ``zoo:face_forgery_detector``,
      ``hf:CLIPVisionModel``, ``timm:<name>`` ...), ``pipeline`` (a key of :data:`PIPELINES`);
    - ``config``: the detector YAML's other keys (``gradcam_layers``, ``dataset_json_folder``,
      ``rgb_dir``, ``label_dict``, ``frame_num`` ...); ``meta``: what else the loader knows.
    """

    model: nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    read: Callable[[Any], np.ndarray]
    class_names: list[str]
    size: int
    source: str
    family: str
    pipeline: str
    config: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def fake_index(self) -> int:
        """:func:`fake_class_index` of the class names."""
        return fake_class_index(self.class_names)

    @property
    def real_index(self) -> int:
        """:func:`real_class_index` of the class names."""
        return real_class_index(self.class_names)

    @property
    def info(self) -> dict[str, Any]:
        """``source``, ``family``, ``pipeline`` and the loader's meta, for reports."""
        return {"source": self.source, "family": self.family, "pipeline": self.pipeline, **self.meta}

    def load(self, path: str | Path) -> np.ndarray:
        """The image file at ``path`` read as this detector's pipeline reads it (uint8 ``H x W x 3``)."""
        return self.read(path)

    def inputs(self, images: Sequence[Any]) -> torch.Tensor:
        """``[B, 3, S, S]`` on the model's device from images (arrays / PIL)."""
        device = next(self.model.parameters()).device
        return torch.stack([self.preprocess(im) for im in images]).to(device)

    def to(self, device: str | torch.device) -> "Detector":
        self.model.to(device)
        return self


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
