"""Training recipe of the zoo's ``face_forgery_detector`` (the model, its data and its loading
live in :mod:`vizkit.zoo.face_forgery`, which describes the recipe): cross-entropy plus the
auxiliary patch-level loss, the patch embedding started as PCA whitening, a curriculum of
manipulation strength; at build time the held-out ROC AUC (scikit-learn) and the pointing
game of Grad-CAM and gradient-weighted attention (:func:`vizkit.evaluate.localization`).
``python -m vizkit.zoo build face_forgery_detector`` runs :func:`build`.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import vizkit

from ...evaluate import Localization, localization
from ...io import save_safetensors, write_json
from ...models import ClipDetector
from ...state import seed_everything
from .. import faces
from ..common import Sample, zoo_dir
from ..face_forgery import (
    CLASS_NAMES,
    MEAN,
    NAME,
    SPLIT_SIZES,
    STD,
    VISION_CONFIG,
    Preprocess,
    fake_probabilities,
    make_model,
    stack,
)

#: the shipped checkpoint's training options
TRAIN = {
    "epochs": 10,
    "samples_per_epoch": 3000,
    "batch_size": 64,
    "lr": 8e-4,
    "weight_decay": 0.05,
    "warmup_steps": 50,
    "label_smoothing": 0.0,
    "patch_weight": 1.0,
    "patch_pos_weight": 4.0,
    "patch_layers": [-2],
    "start_strength": 2.0,
    "curriculum_epochs": 4,
    "patch_init": "whiten",
    "whiten_eps": 1e-4,
    "seed": 0,
}
#: ``--quick``: a few steps, to check the pipeline end to end
QUICK = {
    "epochs": 1,
    "samples_per_epoch": 256,
    "batch_size": 64,
    "val_samples": 64,
    "test_samples": 64,
    "explain_samples": 16,
}
#: held-out fakes the build scores the pointing game on
EXPLAIN_SAMPLES = 200
#: pixels of slack of that pointing game (masks dilated by 1 px)
POINTING_TOLERANCE = 1


# --------------------------------------------------------------------------------------
# evaluation at build time
# --------------------------------------------------------------------------------------
def evaluate(model: torch.nn.Module, samples: list[Sample], preprocess: Preprocess) -> dict[str, Any]:
    """ROC AUC (fake = positive) and accuracy at 0.5 on ``samples``, plus the AUC of each
    manipulation kind against all the real samples."""
    from sklearn.metrics import roc_auc_score

    x, y, _ = stack(samples, preprocess)
    p = fake_probabilities(model, x).numpy()
    labels = y.numpy()
    real = p[labels == 0]
    by_kind = {}
    for kind in faces.MANIPULATIONS:
        fk = p[np.array([s.meta.get("manipulation") == kind for s in samples])]
        if len(fk) and len(real):
            by_kind[kind] = float(roc_auc_score(np.r_[np.zeros(len(real)), np.ones(len(fk))], np.r_[real, fk]))
    return {
        "auc": float(roc_auc_score(labels, p)),
        "accuracy": float(((p > 0.5) == labels).mean()),
        "n": len(samples),
        "auc_by_manipulation": by_kind,
    }


def pointing_scores(
    model: torch.nn.Module, samples: list[Sample], preprocess: Preprocess, tolerance: int = POINTING_TOLERANCE
) -> dict[str, Any]:
    """Pointing game of Grad-CAM (``layers="auto"``) and gradient-weighted attention for the
    fake class on the fakes among ``samples`` (all fakes explained as one batch, the masks at
    the input size), at ``tolerance`` pixels and at 0."""
    fakes = [s for s in samples if s.label == 1]

    def inputs(chunk: Sequence[Sample]) -> torch.Tensor:
        return stack(list(chunk), preprocess)[0]

    def score(explain: Any) -> Localization:
        return localization(fakes, inputs, explain, tolerances=(tolerance, 0), batch_size=None)

    cam = score(lambda x, _: vizkit.cam(model, x, 1, layers="auto"))
    ga = score(lambda x, _: vizkit.gradient_attention(model, x, 1))
    return {
        "n_fakes": len(fakes),
        "tolerance_px": tolerance,
        "cam_layer": cam.layers[0],
        "pointing_gradcam": cam.pointing(tolerance),
        "pointing_gradient_attention": ga.pointing(tolerance),
        "pointing_gradcam_tol0": cam.pointing(0),
        "pointing_gradient_attention_tol0": ga.pointing(0),
    }


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
def _lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def patch_targets(masks: torch.Tensor, patch: int, on: float = 0.3) -> torch.Tensor:
    """Per-patch labels ``[N, P]`` from masks ``[N, S, S]``: 1 if at least ``on`` of the patch is
    manipulated, 0 if none of it is, -100 (ignored) in between."""
    frac = F.avg_pool2d(masks[:, None].float(), patch)[:, 0].flatten(1)
    t = torch.full(frac.shape, -100, dtype=torch.long)
    t[frac == 0] = 0
    t[frac >= on] = 1
    return t


def curriculum(epoch: int, epochs: int, start: float, ramp: int) -> float:
    """Manipulation strength of ``epoch``: from ``start`` down to 1 over ``ramp`` epochs."""
    if ramp <= 0 or epoch >= ramp:
        return 1.0
    return float(start + (1.0 - start) * epoch / ramp)


@torch.no_grad()
def whiten_patch_embedding(model: ClipDetector, x: torch.Tensor, eps: float = 1e-4) -> None:
    """Initialise the patch embedding as PCA whitening of the training patches (top
    ``hidden_size`` components, eigenvalues floored at ``eps * largest``): every token starts
    as unit-variance frequency-like components, so local grain / blur / blocking traces
    are not drowned by the low-frequency content."""
    conv = model.backbone.embeddings.patch_embedding
    hidden, c, p, _ = conv.weight.shape
    patches = F.unfold(x, p, stride=p).transpose(1, 2).reshape(-1, c * p * p).double()
    patches = patches - patches.mean(0)
    evals, evecs = torch.linalg.eigh(patches.T @ patches / len(patches))
    order = evals.argsort(descending=True)[:hidden]
    evals, evecs = evals[order], evecs[:, order]
    w = evecs.T / torch.sqrt(evals + eps * evals[0])[:, None]
    conv.weight.copy_(w.reshape(hidden, c, p, p).float())


def train(
    quick: bool = False, log: bool = True, monitor: Any = None, **overrides: Any
) -> tuple[ClipDetector, dict[str, Any]]:
    """Train the detector from scratch (deterministic); returns ``(model, train settings)``."""
    cfg = dict(TRAIN)
    if quick:
        cfg.update({k: v for k, v in QUICK.items() if k in cfg})
    cfg.update(overrides)
    gen = seed_everything(cfg["seed"])
    model = make_model()
    preprocess = Preprocess(faces.IMAGE_SIZE, MEAN, STD)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["lr"],
    )
    bs, n = cfg["batch_size"], cfg["samples_per_epoch"]
    steps_per_epoch = n // bs
    total = cfg["epochs"] * steps_per_epoch
    step = 0
    for epoch in range(cfg["epochs"]):
        t0 = time.perf_counter()
        strength = curriculum(epoch, cfg["epochs"], cfg["start_strength"], cfg["curriculum_epochs"])
        samples = faces.make_samples("train", n, seed=epoch, strength=strength)
        x, y, masks = stack(samples, preprocess)
        patch_y = patch_targets(masks, VISION_CONFIG["patch_size"])
        t_data = time.perf_counter() - t0
        if epoch == 0 and cfg["patch_init"] == "whiten":
            whiten_patch_embedding(model, x[:1000], cfg["whiten_eps"])
        perm = torch.randperm(len(x), generator=gen)
        model.train()
        run_loss = run_acc = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * bs : (b + 1) * bs]
            for g in opt.param_groups:
                g["lr"] = _lr(step, total, cfg["lr"], cfg["warmup_steps"])
            out = model.backbone(pixel_values=x[idx], output_hidden_states=cfg["patch_weight"] > 0)
            logits = model.head(out.pooler_output)
            loss = F.cross_entropy(logits, y[idx], label_smoothing=cfg["label_smoothing"])
            if cfg["patch_weight"] > 0:
                # the same head on every patch token of the chosen hidden states (default: the
                # input of the last block): is this patch manipulated?
                for layer in cfg["patch_layers"]:
                    tokens = out.hidden_states[layer][:, 1:]
                    patch_logits = model.head(model.backbone.post_layernorm(tokens))
                    loss = loss + cfg["patch_weight"] / len(cfg["patch_layers"]) * F.cross_entropy(
                        patch_logits.flatten(0, 1),
                        patch_y[idx].flatten(),
                        weight=torch.tensor([1.0, cfg["patch_pos_weight"]]),
                        ignore_index=-100,
                    )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            run_loss += loss.item()
            run_acc += float((logits.argmax(-1) == y[idx]).float().mean())
        if log:
            print(
                f"epoch {epoch + 1}/{cfg['epochs']}: loss {run_loss / steps_per_epoch:.4f} "
                f"acc {run_acc / steps_per_epoch:.3f} strength {strength:.2f} (data {t_data:.1f} s, "
                f"total {time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
        if monitor is not None:
            monitor(model, epoch)
    model.eval()
    return model, cfg


# --------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------
def build(out_root: Path, quick: bool = False) -> dict[str, Any]:
    """Train, measure on the held-out test faces, write ``model.safetensors`` + ``config.json``."""
    start = time.perf_counter()
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    model, cfg = train(quick=quick)
    preprocess = Preprocess(faces.IMAGE_SIZE, MEAN, STD)
    n_val = QUICK["val_samples"] if quick else SPLIT_SIZES["val"]
    n_test = QUICK["test_samples"] if quick else SPLIT_SIZES["test"]
    val = faces.make_samples("val", n_val, seed=0)
    test = faces.make_samples("test", n_test, seed=0)
    metrics: dict[str, Any] = {"val": evaluate(model, val, preprocess), "test": evaluate(model, test, preprocess)}
    n_explain = QUICK["explain_samples"] if quick else EXPLAIN_SAMPLES
    metrics["explain"] = pointing_scores(model, test[: 2 * n_explain], preprocess)
    metrics["auc"], metrics["accuracy"] = metrics["test"]["auc"], metrics["test"]["accuracy"]
    metrics["build_seconds"] = round(time.perf_counter() - start, 1)
    metrics["quick"] = quick
    if load_before is not None:  # context for build_seconds: other jobs sharing the CPU
        metrics["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(
        f"test AUC {metrics['auc']:.4f} accuracy {metrics['accuracy']:.4f}; pointing game "
        f"(tolerance {POINTING_TOLERANCE} px) Grad-CAM {metrics['explain']['pointing_gradcam']:.3f}, "
        f"gradient attention {metrics['explain']['pointing_gradient_attention']:.3f}",
        flush=True,
    )

    folder = zoo_dir(NAME, out_root)
    save_safetensors(model.state_dict(), folder / "model.safetensors", metadata={"model": NAME})
    config = {
        "name": NAME,
        "model_class": "vizkit.models.ClipDetector",
        "vision_config": VISION_CONFIG,
        "class_names": CLASS_NAMES,
        "preprocess": {"size": faces.IMAGE_SIZE, "mean": MEAN, "std": STD, "input": "uint8 HxWx3 RGB"},
        "data": {
            "faces": {s: [f.id for f in faces.split_faces(s)] for s in faces.SPLITS},
            "manipulations": list(faces.MANIPULATIONS),
            "regions": list(faces.REGIONS),
            "split_sizes": SPLIT_SIZES,
        },
        "train": cfg,
        "metrics": metrics,
        "build_seconds": metrics["build_seconds"],
        "torch_threads": torch.get_num_threads(),
    }
    write_json(folder / "config.json", config, sort_keys=True)
    return metrics


__all__ = [
    "build",
    "train",
    "evaluate",
    "pointing_scores",
    "patch_targets",
    "curriculum",
    "whiten_patch_embedding",
    "TRAIN",
    "QUICK",
    "EXPLAIN_SAMPLES",
    "POINTING_TOLERANCE",
]
