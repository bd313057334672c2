"""Training recipe of the zoo's ``mnist_vit`` (the model, its data and its loading live in
:mod:`vizkit.zoo.mnist_vit`): AdamW + one-cycle cosine schedule, label smoothing 0.1, light
augmentation (random affine: rotation, scale and a shift of up to 2 pixels), fixed seed;
val and test accuracy measured at build time. ``python -m vizkit.zoo build mnist_vit`` runs
:func:`build`.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...io import save_safetensors, write_json
from ...models.vit import SimpleViT, ViTConfig
from ...state import seed_everything
from ..common import zoo_dir
from ..mnist import load_mnist
from ..mnist_vit import CLASS_NAMES, INK_THRESHOLD, MEAN, NAME, STD, to_tensor

#: the seed of the build (seed 001)
SEED = 1

# full build: 3 epochs, ~4-7 min on 2 cores (test accuracy ~98.2%); quick: a few hundred images, one short epoch
#: the shipped checkpoint's training options
TRAIN = dict(
    epochs=3,
    batch_size=128,
    lr=2e-3,
    weight_decay=0.05,
    warmup=0.1,
    label_smoothing=0.1,
    augment=True,
    max_rotate=10.0,
    max_scale=0.1,
    max_shift=2.0,
    n_train=None,
)
#: ``--quick``: a few hundred images, one short epoch
QUICK = dict(TRAIN, epochs=1, batch_size=64, n_train=512, n_eval=512)


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
def augment(
    x: torch.Tensor, gen: torch.Generator, max_rotate: float, max_scale: float, max_shift: float
) -> torch.Tensor:
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
        logits = model(to_tensor(images[i : i + batch_size]))
        correct += int((logits.argmax(1) == torch.from_numpy(np.array(labels[i : i + batch_size]))).sum())
    return correct / max(1, len(images))


def train(opts: dict[str, Any], log=print) -> SimpleViT:
    """Train seed 001's ViT on MNIST with ``opts`` (:data:`TRAIN` or :data:`QUICK`), seeded; returns it in eval mode."""
    gen = seed_everything(SEED)
    images, labels = load_mnist("train")
    if opts.get("n_train"):
        images, labels = images[: opts["n_train"]], labels[: opts["n_train"]]
    x_all, y_all = to_tensor(images), torch.from_numpy(np.array(labels))
    model = SimpleViT(ViTConfig())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_embed" not in n and "cls_token" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n and "cls_token" not in n)
    ]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": opts["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=opts["lr"],
    )
    bs = opts["batch_size"]
    steps_per_epoch = math.ceil(len(x_all) / bs)
    total = opts["epochs"] * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=opts["lr"], total_steps=total, pct_start=opts["warmup"], anneal_strategy="cos"
    )
    step, start = 0, time.perf_counter()
    for epoch in range(opts["epochs"]):
        model.train()
        perm = torch.randperm(len(x_all), generator=gen)
        run_loss, run_correct, seen = 0.0, 0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * bs : (i + 1) * bs]
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
                log(
                    f"  epoch {epoch + 1}/{opts['epochs']} step {i + 1}/{steps_per_epoch} "
                    f"loss {run_loss / seen:.4f} train acc {run_correct / seen:.4f} "
                    f"lr {sched.get_last_lr()[0]:.2e} [{time.perf_counter() - start:.0f} s]"
                )
    model.eval()
    return model


def _save(model: nn.Module, folder: Path, meta: dict[str, Any]) -> None:
    """Write ``model.safetensors`` (fp32) and ``config.json`` atomically (temp file + rename)."""
    save_safetensors({k: v.float() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    write_json(folder / "config.json", meta, sort_keys=True)


def build(out_root: Path | None = None, quick: bool = False) -> dict[str, Any]:
    """Train deterministically, write ``<out_root>/mnist_vit/{model.safetensors,config.json}``
    and return the metrics (val and test accuracy, build time)."""
    start = time.perf_counter()
    opts = dict(QUICK if quick else TRAIN)
    folder = zoo_dir(NAME, Path(out_root) if out_root is not None else None)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    log(
        f"mnist_vit: training SimpleViT(ViTConfig()) on {opts.get('n_train') or 55_000} MNIST images, "
        f"{opts['epochs']} epoch(s), torch threads {torch.get_num_threads()}"
    )
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
        "data": {
            "train": "first 55,000 of train-images.idx3-ubyte",
            "val": "last 5,000 of it",
            "test": "t10k-images.idx3-ubyte (10,000)",
        },
        "train": {k: v for k, v in opts.items()}
        | {"seed": SEED, "optimizer": "AdamW", "schedule": "OneCycleLR(cos)", "grad_clip": 1.0},
        "weights_dtype": "float32",
        "metrics": metrics,
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": sys.version.split()[0],
    }
    _save(model, folder, meta)
    log(
        f"mnist_vit: val acc {metrics['val_accuracy']:.4f}, test acc {metrics['test_accuracy']:.4f}, "
        f"{metrics['build_seconds']:.0f} s -> {folder}"
    )
    return metrics


__all__ = ["build", "train", "evaluate", "augment", "TRAIN", "QUICK", "SEED"]
