"""``face_forgery_detector``: a small CLIP-ViT deepfake detector in DeepfakeBench's layout.

:class:`vizkit.models.ClipDetector` (HF ``CLIPVisionModel`` backbone with a small
``CLIPVisionConfig``: 64x64 images, 8x8 patches, 4 layers; ``pooler_output`` ->
``nn.Linear(hidden, 2)``; class 1 = fake), trained from scratch on the real faces and local
manipulations of :mod:`vizkit.zoo.faces`. The ground-truth mask of a fake is the
manipulated region, so explanations can be scored with the pointing game.

Training (:mod:`vizkit.zoo.train.face_forgery`; CPU, a few minutes, deterministic):

- loss: cross-entropy of the image label, plus an auxiliary patch-level cross-entropy: the
  same ``post_layernorm`` + ``head`` applied to every patch token *entering the last block*
  against "is this patch manipulated" (from the masks). It adds no parameters (the state
  dict stays ``backbone.*`` + ``head.*``); it makes the tokens that the last block's CLS
  attention reads carry the evidence, which is what lets Grad-CAM at that layer point at
  the manipulated region (without it the pointing game stays at ~60 %);
- the patch embedding starts as PCA whitening of the training patches (a ViT from scratch
  otherwise takes far longer than the budget to find the faint local traces);
- a curriculum: the manipulations start exaggerated (strength 2) and reach the data sets'
  strength 1 after 4 epochs; every epoch draws fresh training samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models import ClipDetector, load_detector
from ..models.preprocess import CvResizeNormalize
from . import faces
from .common import Bundle, Entry, Sample, missing_checkpoint, register, zoo_dir

NAME = "face_forgery_detector"
CLASS_NAMES = ["real", "fake"]
VISION_CONFIG: dict[str, Any] = {
    "image_size": faces.IMAGE_SIZE,
    "patch_size": 8,
    "num_channels": 3,
    "hidden_size": 128,
    "intermediate_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
}
# CLIP's (OpenAI) normalisation, as DeepfakeBench's CLIP detector uses
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
SPLIT_SIZES = {"train": 4000, "val": 400, "test": 600}


# --------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------
def Preprocess(size: int, mean: list[float], std: list[float]) -> CvResizeNormalize:
    """``uint8 HxWx3`` (or HxW grey, or a PIL image) -> normalised float ``[3, S, S]``
    (``cv2.resize`` ``INTER_AREA`` when the size differs); ``.batch`` for images at the size."""
    return CvResizeNormalize(size, mean, std, "area")


def stack(samples: list[Sample], preprocess: Preprocess) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``[N, 3, S, S]``, labels ``[N]`` and masks ``[N, S, S]`` of samples."""
    x = preprocess.batch([s.image for s in samples])
    y = torch.tensor([s.label for s in samples], dtype=torch.long)
    m = torch.from_numpy(np.stack([s.mask for s in samples]))
    return x, y, m


# --------------------------------------------------------------------------------------
# data / model / prediction
# --------------------------------------------------------------------------------------
def dataset(split: str) -> list[Sample]:
    """Balanced real / fake samples of the split's faces (train 4000, val 400, test 600).

    Training draws fresh samples every epoch (``faces.make_samples("train", n, seed=epoch)``,
    the first epochs with exaggerated manipulations); ``dataset("train")`` is the seed-0 draw
    at the normal strength."""
    return faces.make_samples(split, SPLIT_SIZES[split], seed=0)


def make_model(vision_config: dict[str, Any] | None = None) -> ClipDetector:
    return ClipDetector(dict(vision_config or VISION_CONFIG))


@torch.no_grad()
def fake_probabilities(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    return torch.cat([F.softmax(model(x[i : i + batch_size]), -1)[:, 1] for i in range(0, len(x), batch_size)])


# --------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------
def load(root: Path | None = None, device: str | torch.device = "cpu") -> Bundle:
    """The shipped detector (eval mode) from ``data/zoo/face_forgery_detector/``, loaded by
    :func:`vizkit.models.load_detector` (the one detector loader)."""
    folder = zoo_dir(NAME, root)
    if not (folder / "model.safetensors").exists() or not (folder / "config.json").exists():
        raise missing_checkpoint(NAME, folder / "model.safetensors")
    det = load_detector(weights=folder, device=device)
    return Bundle(
        name=NAME, model=det.model, preprocess=det.preprocess, class_names=det.class_names, meta=det.meta["config"]
    )


register(
    Entry(
        name=NAME,
        description="CLIP-ViT deepfake detector (DeepfakeBench layout) on real faces with local manipulations + masks",
        load=load,
        dataset=dataset,
        build="vizkit.zoo.train.face_forgery:build",
        build_seconds=238.0,
    )
)
