"""``mnist_vit``: seed 001's ViT (:class:`vizkit.models.SimpleViT` with ``ViTConfig()``
defaults: 28x28 grey input, 7x7 patches -> 16 patch tokens + CLS, embed 128, 4 heads,
6 layers, MLP 256, dropout 0.1) trained on real MNIST (``data/mnist``).

- Data: train = first 55,000 training images, val = last 5,000, test = the 10,000 t10k
  images (:mod:`vizkit.zoo.mnist`). Each :class:`Sample` has ``image`` uint8 28x28 (grey,
  HxW), ``label`` the digit, ``mask`` the ink (pixels > :data:`INK_THRESHOLD`, i.e. at
  least half intensity: the stroke core without its faint anti-aliased rim, ~13% of the
  pixels) and ``meta={"index": i}`` (the index within the split).
- Preprocess: uint8 -> float in [0, 1] -> ``(x - 0.1307) / 0.3081`` -> ``[1, 28, 28]``.
- Training (:mod:`vizkit.zoo.train.mnist_vit`): AdamW + one-cycle cosine schedule, label
  smoothing 0.1, light augmentation (random affine: rotation, scale and a shift of up to 2
  pixels), fixed seed. The checkpoint (805k parameters) is stored as fp32 safetensors, ~3.2 MB.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import VizkitError
from ..models.vit import SimpleViT, ViTConfig
from .common import Bundle, Entry, Sample, missing_checkpoint, register, zoo_dir
from .mnist import SPLITS, load_mnist

NAME = "mnist_vit"
#: MNIST's normalisation (mean, std of the training pixels in [0, 1])
MEAN, STD = 0.1307, 0.3081
#: the ink mask of a digit is ``image > INK_THRESHOLD`` (at least half intensity)
INK_THRESHOLD = 127
#: the digits "0" .. "9"
CLASS_NAMES = [str(d) for d in range(10)]


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
@lru_cache(maxsize=3)
def _samples(split: str) -> tuple[Sample, ...]:
    images, labels = load_mnist(split)
    masks = images > INK_THRESHOLD
    masks.setflags(write=False)  # cached and shared between calls, like the images
    return tuple(
        Sample(image=img, label=int(lab), mask=m, meta={"index": i})
        for i, (img, lab, m) in enumerate(zip(images, labels.tolist(), masks))
    )


def dataset(split: str = "test") -> list[Sample]:
    """All samples of ``split`` (train: 55,000, val: 5,000, test: 10,000); cached, read-only images."""
    if split not in SPLITS:
        raise VizkitError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    return list(_samples(split))


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, 28, 28]`` (or ``[28, 28]``) -> normalised float ``[N, 1, 28, 28]``."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images))  # a writable copy
    if x.ndim == 2:
        x = x[None]
    return ((x.float() / 255.0 - MEAN) / STD)[:, None]


def preprocess(image: Any) -> torch.Tensor:
    """A grey digit (uint8 HxW or HxWx1, RGB HxWx3 is averaged, or a PIL image) -> ``[1, 28, 28]``."""
    if hasattr(image, "convert"):  # PIL
        image = np.asarray(image.convert("L"))
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
        a = a[..., :3].mean(-1) if a.shape[-1] >= 3 else a[..., 0]
    if a.ndim != 2:
        raise VizkitError(f"mnist_vit expects a grey HxW image, got shape {a.shape}")
    if a.shape != (28, 28):
        import cv2

        a = cv2.resize(a.astype(np.float32), (28, 28), interpolation=cv2.INTER_AREA)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255) if a.max() > 1.0 else a * 255.0
    return to_tensor(a.astype(np.float32))[0]


# --------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------
def load(root: Path | None = None, device: str | torch.device = "cpu") -> Bundle:
    """The trained ViT (eval mode) from ``data/zoo/mnist_vit/`` (or ``root/mnist_vit``)."""
    from safetensors.torch import load_file

    folder = zoo_dir(NAME, Path(root) if root is not None else None)
    weights, cfg_path = folder / "model.safetensors", folder / "config.json"
    if not weights.exists() or not cfg_path.exists():
        raise missing_checkpoint(NAME, folder)
    meta = json.loads(cfg_path.read_text())
    model = SimpleViT(ViTConfig.from_dict(meta["model"]))
    state = {k: v.float() for k, v in load_file(str(weights)).items()}
    model.load_state_dict(state)
    model.to(device).eval()
    return Bundle(name=NAME, model=model, preprocess=preprocess, class_names=list(CLASS_NAMES), meta=meta)


register(
    Entry(
        name=NAME,
        description="seed 001's ViT (7x7 patches, 6 layers) on real MNIST digits; masks = ink pixels",
        load=load,
        dataset=dataset,
        build="vizkit.zoo.train.mnist_vit:build",
        build_seconds=410.0,
    )
)

__all__ = ["load", "dataset", "preprocess", "to_tensor", "CLASS_NAMES", "MEAN", "STD", "INK_THRESHOLD"]
