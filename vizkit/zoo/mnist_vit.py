"""``mnist_vit``: seed 001's ViT (:class:`vizkit.models.SimpleViT` with ``ViTConfig()``
defaults: 28x28 grey input, 7x7 patches -> 16 patch tokens + CLS, embed 128, 4 heads,
6 layers, MLP 256, dropout 0.1) trained on real MNIST (``data/mnist``).

- Data: train = first 55,000 training images, val = last 5,000, test = the 10,000 t10k
  images (:mod:`vizkit.zoo.mnist`). Each :class:`Sample` has ``image`` uint8 28x28 (grey,
  HxW), ``label`` the digit, ``mask`` the ink (pixels > :data:`INK_THRESHOLD`, i.e. at
  least half intensity: the stroke core without its faint anti-aliased rim, ~13% of the
  pixels) and ``meta={"index": i}`` (the index within the split).
- Preprocess: uint8 -> float in [0, 1] -> ``(x - 0.1307) / 0.3081`` -> ``[1, 28, 28]``.
- Training: AdamW + one-cycle cosine schedule, label smoothing 0.1, light augmentation
  (random affine: rotation, scale and a shift of up to 2 pixels), fixed seed. The
  checkpoint (805k parameters) is stored as fp32 safetensors, ~3.2 MB.
"""
from __future__ import annotations

import json
import math
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import VizkitError
from ..models.vit import SimpleViT, ViTConfig
from .common import (Bundle, Entry, Sample, missing_checkpoint, register, save_safetensors, seed_everything, write_json,
                     zoo_dir)
from .mnist import SPLITS, load_mnist

NAME = "mnist_vit"
MEAN, STD = 0.1307, 0.3081
INK_THRESHOLD = 127  # mask = image > 127: at least half intensity
CLASS_NAMES = [str(d) for d in range(10)]
SEED = 1

# full build: 3 epochs, ~4-7 min on 2 cores (test accuracy ~98.2%); quick: a few hundred images, one short epoch
TRAIN = dict(epochs=3, batch_size=128, lr=2e-3, weight_decay=0.05, warmup=0.1, label_smoothing=0.1,
             augment=True, max_rotate=10.0, max_scale=0.1, max_shift=2.0, n_train=None)
QUICK = dict(TRAIN, epochs=1, batch_size=64, n_train=512, n_eval=512)


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
@lru_cache(maxsize=3)
def _samples(split: str) -> tuple[Sample, ...]:
    images, labels = load_mnist(split)
    masks = images > INK_THRESHOLD
    masks.setflags(write=False)  # cached and shared between calls, like the images
    return tuple(Sample(image=img, label=int(lab), mask=m, meta={"index": i})
                 for i, (img, lab, m) in enumerate(zip(images, labels.tolist(), masks)))


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


# --------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------
def augment(x: torch.Tensor, gen: torch.Generator, max_rotate: float, max_scale: float, max_shift: float) -> torch.Tensor:
    """Random affine per image (rotation in degrees, relative scale, shift in pixels) of
    normalised ``[B, 1, H, W]``; the border is filled with the background value."""
    b, _, h, w = x.shape
    u = torch.rand(b, 4, generator=gen) * 2 - 1
    angle = u[:, 0] * math.radians(max_rotate)
    scale = 1 + u[:, 1] * max_scale
    tx, ty = u[:, 2] * max_shift * 2 / w, u[:, 3] * max_shift * 2 / h
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    bg = -MEAN / STD
    return F.grid_sample(x - bg, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + bg


@torch.no_grad()
def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    """Accuracy of ``model`` on uint8 ``images`` ``[N, 28, 28]``."""
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = model(to_tensor(images[i:i + batch_size]))
        correct += int((logits.argmax(1) == torch.from_numpy(np.array(labels[i:i + batch_size]))).sum())
    return correct / max(1, len(images))


def train(opts: dict[str, Any], log=print) -> SimpleViT:
    gen = seed_everything(SEED)
    images, labels = load_mnist("train")
    if opts.get("n_train"):
        images, labels = images[:opts["n_train"]], labels[:opts["n_train"]]
    x_all, y_all = to_tensor(images), torch.from_numpy(np.array(labels))
    model = SimpleViT(ViTConfig())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n and "cls_token" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n and "cls_token" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": opts["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=opts["lr"])
    bs = opts["batch_size"]
    steps_per_epoch = math.ceil(len(x_all) / bs)
    total = opts["epochs"] * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opts["lr"], total_steps=total,
                                                pct_start=opts["warmup"], anneal_strategy="cos")
    step, start = 0, time.perf_counter()
    for epoch in range(opts["epochs"]):
        model.train()
        perm = torch.randperm(len(x_all), generator=gen)
        run_loss, run_correct, seen = 0.0, 0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            xb, yb = x_all[idx], y_all[idx]
            if opts["augment"]:
                xb = augment(xb, gen, opts["max_rotate"], opts["max_scale"], opts["max_shift"])
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=opts["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            run_loss += loss.item() * len(yb)
            run_correct += int((logits.argmax(1) == yb).sum())
            seen += len(yb)
            if step % 100 == 0 or i == steps_per_epoch - 1:
                log(f"  epoch {epoch + 1}/{opts['epochs']} step {i + 1}/{steps_per_epoch} "
                    f"loss {run_loss / seen:.4f} train acc {run_correct / seen:.4f} "
                    f"lr {sched.get_last_lr()[0]:.2e} [{time.perf_counter() - start:.0f} s]")
    model.eval()
    return model


def _save(model: nn.Module, folder: Path, meta: dict[str, Any]) -> None:
    """Write ``model.safetensors`` (fp32) and ``config.json`` atomically (temp file + rename)."""
    save_safetensors({k: v.float() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    write_json(folder / "config.json", meta)


def build(out_root: Path | None = None, quick: bool = False) -> dict[str, Any]:
    """Train deterministically, write ``<out_root>/mnist_vit/{model.safetensors,config.json}``
    and return the metrics (val and test accuracy, build time)."""
    start = time.perf_counter()
    opts = dict(QUICK if quick else TRAIN)
    folder = zoo_dir(NAME, Path(out_root) if out_root is not None else None)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    log(f"mnist_vit: training SimpleViT(ViTConfig()) on {opts.get('n_train') or 55_000} MNIST images, "
        f"{opts['epochs']} epoch(s), torch threads {torch.get_num_threads()}")
    model = train(opts, log)
    n_eval = opts.get("n_eval")
    metrics: dict[str, Any] = {}
    for split in ("val", "test"):
        images, labels = load_mnist(split)
        if n_eval:
            images, labels = images[:n_eval], labels[:n_eval]
        metrics[f"{split}_accuracy"] = round(evaluate(model, images, labels), 4)
        metrics[f"{split}_images"] = len(images)
    metrics["build_seconds"] = round(time.perf_counter() - start, 1)
    metrics["quick"] = quick
    meta = {
        "name": NAME,
        "model": ViTConfig().to_dict(),
        "preprocess": {"input": "uint8 grey 28x28", "scale": 1 / 255, "mean": [MEAN], "std": [STD]},
        "class_names": CLASS_NAMES,
        "ink_threshold": INK_THRESHOLD,
        "data": {"train": "first 55,000 of train-images.idx3-ubyte", "val": "last 5,000 of it",
                 "test": "t10k-images.idx3-ubyte (10,000)"},
        "train": {k: v for k, v in opts.items()} | {"seed": SEED, "optimizer": "AdamW",
                                                     "schedule": "OneCycleLR(cos)", "grad_clip": 1.0},
        "weights_dtype": "float32",
        "metrics": metrics,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": sys.version.split()[0],
    }
    _save(model, folder, meta)
    log(f"mnist_vit: val acc {metrics['val_accuracy']:.4f}, test acc {metrics['test_accuracy']:.4f}, "
        f"{metrics['build_seconds']:.0f} s -> {folder}")
    return metrics


register(Entry(
    name=NAME,
    description="seed 001's ViT (7x7 patches, 6 layers) on real MNIST digits; masks = ink pixels",
    load=load,
    dataset=dataset,
    build=build,
    build_seconds=410.0,
))

__all__ = ["load", "dataset", "build", "preprocess", "to_tensor", "evaluate", "augment",
           "CLASS_NAMES", "MEAN", "STD", "INK_THRESHOLD"]
