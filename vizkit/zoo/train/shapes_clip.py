"""Training recipes of the zoo's ``shapes_clip`` and ``shapes_clip_cnn`` (the models, their
data and their loading live in :mod:`vizkit.zoo.shapes_clip`, which describes the recipe):
contrastive training with UniCL targets and the auxiliary (dense) prompt head, and the
measurements at build time (zero-shot accuracy, Grad-CAM pointing game on generic and "red
circle" scenes through :func:`vizkit.evaluate.localization`). ``python -m vizkit.zoo build``
runs :func:`build` / :func:`build_cnn`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import vizkit

from ...evaluate import localization
from ...io import save_safetensors, write_json
from ...state import seed_everything
from ...targets import ImageTextSimilarity
from .. import shapes
from ..common import Sample
from ..shapes_clip import (
    _EMBED_KEY,
    CLASS_NAMES,
    OPEN_CLIP_CONFIGS,
    SCENE_SIZE,
    SPECS,
    Preprocess,
    Spec,
    _create,
    scene,
    scenes,
    scenes_with,
    single_object_scenes,
    text_features,
    tokenizer_for,
)


# --------------------------------------------------------------------------------------
# data and checkpoints at build time
# --------------------------------------------------------------------------------------
def _texts(sample: Sample) -> list[str]:
    """The texts that describe a scene: its caption and each object's caption."""
    per_object = [shapes.with_article(f"{o['color']} {o['shape']}") for o in sample.meta["objects"]]
    return list(dict.fromkeys([sample.caption, *per_object]))


def _channel_stats(n: int = 512) -> tuple[list[float], list[float]]:
    images = np.stack([scene("train", i, kind="stats").image for i in range(n)]).reshape(-1, 3) / 255.0
    return [round(float(v), 4) for v in images.mean(0)], [round(float(v), 4) for v in images.std(0)]


def _sparse_state(model: nn.Module, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    state["token_embedding.weight"] = state["token_embedding.weight"][rows].contiguous()
    state[_EMBED_KEY] = rows.clone()
    return state


class _RowEmbedding(nn.Module):
    """Training stand-in for the 49,408-row token embedding that holds only the rows our texts
    use (so the optimizer does not touch ~3M untrained parameters every step)."""

    def __init__(self, weight: torch.Tensor, rows: torch.Tensor):
        super().__init__()
        self.register_buffer("rows", rows, persistent=False)
        lookup = torch.zeros(weight.shape[0], dtype=torch.long)
        lookup[rows] = torch.arange(len(rows))
        self.register_buffer("lookup", lookup, persistent=False)
        self.weight = nn.Parameter(weight[rows].detach().clone())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(self.lookup[ids], self.weight)


# --------------------------------------------------------------------------------------
# evaluation at build time
# --------------------------------------------------------------------------------------
@torch.no_grad()
def zero_shot_accuracy(
    model: nn.Module,
    preprocess: Preprocess,
    tokenizer,
    samples: Sequence[Sample],
    class_names: Sequence[str] = CLASS_NAMES,
    batch_size: int = 100,
) -> float:
    """Top-1 accuracy of image -> ``class_names`` prompt retrieval (``sample.label`` is the truth)."""
    model.eval()
    text = text_features(model, tokenizer, class_names)
    correct = 0
    for i in range(0, len(samples), batch_size):
        chunk = samples[i : i + batch_size]
        image = F.normalize(model.encode_image(preprocess.batch(np.stack([s.image for s in chunk]))), dim=-1)
        pred = (image @ text.T).argmax(-1)
        correct += int((pred == torch.tensor([s.label for s in chunk])).sum())
    return correct / len(samples)


def pointing(
    model: nn.Module,
    preprocess: Preprocess,
    tokenizer,
    samples: Sequence[Sample],
    class_names: Sequence[str] = CLASS_NAMES,
    batch_size: int = 50,
) -> tuple[torch.Tensor, list[str]]:
    """Grad-CAM (layers="auto") toward each sample's named object (``class_names[label]``):
    is the heatmap's argmax inside that object's mask (nearest-resized to the map)? Explains
    ``batch_size`` scenes at a time (:func:`vizkit.evaluate.localization`). Returns
    ``(hits [N] bool, layers)``."""
    model.eval()
    text = text_features(model, tokenizer, class_names)
    scale = float(model.logit_scale.detach().exp())

    def inputs(chunk: Sequence[Sample]) -> torch.Tensor:
        return preprocess.batch(np.stack([s.image for s in chunk]))

    def explain(x: torch.Tensor, chunk: Sequence[Sample]) -> Any:
        target = ImageTextSimilarity(text, [s.label for s in chunk], scale)
        return vizkit.cam(model, x, target, layers="auto", forward=model.encode_image)

    res = localization(samples, inputs, explain, batch_size=batch_size)
    return res.hits[0], res.layers


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainCfg:
    """The training options of one shapes CLIP recipe (steps, batch size, learning rate, ...)."""

    steps: int
    batch_size: int
    lr: float
    warmup: int
    weight_decay: float = 0.05
    seed: int = 0
    eval_single: int = 600
    eval_pointing: int = 300
    eval_red_circle: int = 100
    val_every: int = 0  # log the zero-shot accuracy on 200 val scenes every this many steps (0: never)
    aux_steps: int = 0  # steps with the auxiliary "which prompts are in the scene" loss (0: none)
    aux_weight: float = 1.0
    dense_weight: float = 0.0  # the same loss per token/position: "which prompt's object covers it" (0: none)


#: the training settings of each zoo entry: (full build, ``--quick``)
RECIPES: dict[str, tuple[TrainCfg, TrainCfg]] = {
    "shapes_clip": (
        TrainCfg(steps=2000, batch_size=32, lr=1e-3, warmup=100, aux_steps=2000, aux_weight=20.0, dense_weight=20.0),
        TrainCfg(
            steps=4,
            batch_size=16,
            lr=1e-3,
            warmup=1,
            aux_steps=4,
            aux_weight=20.0,
            dense_weight=20.0,
            eval_single=24,
            eval_pointing=8,
            eval_red_circle=8,
        ),
    ),
    "shapes_clip_cnn": (
        TrainCfg(steps=1200, batch_size=32, lr=1e-3, warmup=50, aux_steps=1200, aux_weight=20.0, dense_weight=5.0),
        TrainCfg(
            steps=3,
            batch_size=8,
            lr=1e-3,
            warmup=1,
            aux_steps=3,
            aux_weight=20.0,
            eval_single=16,
            eval_pointing=8,
            eval_red_circle=8,
        ),
    ),
}


def _dihedral(img: np.ndarray, k: int) -> np.ndarray:
    img = np.rot90(img, k % 4)
    return img[:, ::-1] if k >= 4 else img


def _clip_loss(image: torch.Tensor, text: torch.Tensor, positive: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric CLIP cross-entropy with (multi-)positive targets ``positive [B, T]`` (UniCL)."""
    logits = scale * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    p = positive.float()
    i2t = -((p / p.sum(1, keepdim=True)) * logits.log_softmax(1)).sum(1).mean()
    cols = p.sum(0) > 0
    pc = p[:, cols]
    t2i = -((pc / pc.sum(0, keepdim=True)) * logits[:, cols].log_softmax(0)).sum(0).mean()
    return (i2t + t2i) / 2


def tower_outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass of a max-pooled timm tower: ``(image embedding [B, D], per-position embeddings
    [B, N, D])``; position ``n`` gets the embedding the image would get if the max pool saw
    only that token (ViT) or feature-map cell (CNN). The first equals ``model.encode_image(x)``."""
    visual = model.visual
    feats = visual.trunk.forward_features(x)
    if feats.ndim == 4:  # CNN [B, C, h, w] -> [B, h*w, C]
        tokens = feats.flatten(2).transpose(1, 2)
    else:  # ViT [B, prefix + N, C]
        tokens = feats[:, getattr(visual.trunk, "num_prefix_tokens", 0) :]
    norm = getattr(visual.trunk, "fc_norm", None) or nn.Identity()
    return visual.head(norm(tokens.amax(1))), visual.head(norm(tokens))


def _coverage(masks: Sequence[np.ndarray], grid: int) -> np.ndarray:
    """``[K, grid*grid]``: the fraction of each grid cell covered by each mask (``[H, W]`` each)."""
    m = np.stack(masks).astype(np.float32)
    k, h, w = m.shape
    return m.reshape(k, grid, h // grid, grid, w // grid).mean((2, 4)).reshape(k, -1)


def _train(spec: Spec, cfg: TrainCfg, preprocess: Preprocess, tokenizer, log) -> tuple[nn.Module, torch.Tensor]:
    """Contrastive training on fresh scenes: step ``k`` draws train scenes ``k*B .. k*B+B-1``
    (each in a random flip / rotation); the texts of a batch are the 24 prompts plus the
    batch's captions, and image ``i`` / text ``t`` are positive when ``t`` describes ``i``."""
    gen = seed_everything(cfg.seed)
    model = _create(spec.open_clip_name)
    model.train()
    # every word the captions can use: "a"/"an", the colours, the shapes, "," and "and"
    vocab = CLASS_NAMES + ["a red circle, a green square and an orange star"]
    token_cache: dict[str, torch.Tensor] = dict(zip(vocab, tokenizer(vocab)))
    rows = torch.unique(torch.cat([torch.stack(list(token_cache.values())).flatten(), torch.tensor([0])]))
    full_embedding = model.token_embedding
    model.token_embedding = _RowEmbedding(full_embedding.weight, rows)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}  # (text tower, decayed) -> parameters
    for n, p in model.named_parameters():
        text = not n.startswith("visual.") and n != "logit_scale"
        decay = not (p.ndim < 2 or "logit_scale" in n or "positional" in n or "class_embedding" in n)
        groups.setdefault((text, decay), []).append(p)
    # auxiliary linear head (thrown away after training): multi-label "which of the 24 prompts
    # are in this scene" from the image embedding; it speeds up learning shape, not only colour
    aux_head = nn.Linear(OPEN_CLIP_CONFIGS[spec.open_clip_name]["embed_dim"], len(CLASS_NAMES))
    param_groups = [
        {"params": ps, "weight_decay": cfg.weight_decay if decay else 0.0} for (_, decay), ps in groups.items()
    ]
    param_groups.append({"params": list(aux_head.parameters()), "weight_decay": 0.0})
    opt = torch.optim.AdamW(param_groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * t))

    start, every = time.perf_counter(), max(1, cfg.steps // 20)
    for step in range(cfg.steps):
        batch = [scene("train", step * cfg.batch_size + i) for i in range(cfg.batch_size)]
        flips = torch.randint(8, (cfg.batch_size,), generator=gen).tolist()
        x = preprocess.batch(np.stack([_dihedral(s.image, k) for s, k in zip(batch, flips)]))
        texts = [_texts(s) for s in batch]
        batch_texts = list(dict.fromkeys(CLASS_NAMES + [t for ts in texts for t in ts]))
        missing = [t for t in batch_texts if t not in token_cache]
        if missing:
            token_cache.update(zip(missing, tokenizer(missing)))
            if not bool(torch.isin(torch.stack([token_cache[t] for t in missing]), rows).all()):
                raise RuntimeError(f"a caption uses a token outside the trained vocabulary: {missing}")
        col = {t: j for j, t in enumerate(batch_texts)}
        positive = torch.zeros(len(batch), len(batch_texts), dtype=torch.bool)
        for r, ts in enumerate(texts):
            positive[r, [col[t] for t in ts]] = True
        tokens = torch.stack([token_cache[t] for t in batch_texts])
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        text_features_ = model.encode_text(tokens)
        if cfg.dense_weight:
            image_features_, position_features = tower_outputs(model, x)
        else:
            image_features_ = model.encode_image(x)
        loss = _clip_loss(image_features_, text_features_, positive, model.logit_scale.exp())
        if step < cfg.aux_steps:
            present = torch.zeros(len(batch), len(CLASS_NAMES))
            for r, s in enumerate(batch):
                present[
                    r, [CLASS_NAMES.index(shapes.with_article(f"{o['color']} {o['shape']}")) for o in s.meta["objects"]]
                ] = 1.0
            loss = loss + cfg.aux_weight * F.binary_cross_entropy_with_logits(aux_head(image_features_), present)
            if cfg.dense_weight:
                grid = int(round(position_features.shape[1] ** 0.5))
                dense = torch.zeros(len(batch), grid * grid, len(CLASS_NAMES))
                for r, (s, k) in enumerate(zip(batch, flips)):
                    cover = _coverage([_dihedral(m, k) for m in s.masks], grid)  # [K, N], same flip as the image
                    for o, c in zip(s.meta["objects"], cover):
                        j = CLASS_NAMES.index(shapes.with_article(f"{o['color']} {o['shape']}"))
                        dense[r, c >= 0.25, j] = 1.0
                loss = loss + cfg.dense_weight * F.binary_cross_entropy_with_logits(aux_head(position_features), dense)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % every == 0 or step == cfg.steps - 1:
            log(
                f"[{spec.name}] step {step + 1}/{cfg.steps} loss {loss.item():.3f} "
                f"scale {model.logit_scale.exp().item():.1f} ({time.perf_counter() - start:.0f} s)"
            )
        if cfg.val_every and (step + 1) % cfg.val_every == 0:
            acc = zero_shot_accuracy(model, preprocess, tokenizer, single_object_scenes("val", 200))
            model.train()
            log(f"[{spec.name}] step {step + 1}: val zero-shot accuracy {acc:.3f}")
    model.eval()
    with torch.no_grad():
        full_embedding.weight.zero_()
        full_embedding.weight[rows] = model.token_embedding.weight
    model.token_embedding = full_embedding
    return model, rows


def _evaluate(model: nn.Module, preprocess: Preprocess, tokenizer, cfg: TrainCfg) -> tuple[dict[str, Any], list[str]]:
    zs = zero_shot_accuracy(model, preprocess, tokenizer, single_object_scenes("test", cfg.eval_single))
    generic, layers = pointing(model, preprocess, tokenizer, scenes("test", cfg.eval_pointing))
    red, _ = pointing(model, preprocess, tokenizer, scenes_with("test", cfg.eval_red_circle, "red circle"))
    metrics = {
        "zero_shot_accuracy": round(zs, 4),
        "zero_shot_n": cfg.eval_single,
        "pointing_game": round(float(generic.float().mean()), 4),
        "pointing_game_n": cfg.eval_pointing,
        "pointing_game_red_circle": round(float(red.float().mean()), 4),
        "pointing_game_red_circle_n": cfg.eval_red_circle,
        "split": "test",
    }
    return metrics, layers


def _build(spec: Spec, out_root: Path, quick: bool = False, log=print) -> dict[str, Any]:
    start = time.perf_counter()
    cfg = RECIPES[spec.name][1 if quick else 0]
    mean, std = _channel_stats(64 if quick else 512)
    oc_cfg = OPEN_CLIP_CONFIGS[spec.open_clip_name]
    preprocess = Preprocess(mean, std, oc_cfg["vision_cfg"]["image_size"])
    tokenizer = tokenizer_for(spec.open_clip_name)
    log(
        f"[{spec.name}] training {spec.open_clip_name} for {cfg.steps} steps of {cfg.batch_size} fresh scenes, "
        f"torch threads {torch.get_num_threads()}"
    )
    model, rows = _train(spec, cfg, preprocess, tokenizer, log)
    train_seconds = time.perf_counter() - start
    metrics, layers = _evaluate(model, preprocess, tokenizer, cfg)
    metrics.update(
        build_seconds=round(time.perf_counter() - start, 1),
        train_seconds=round(train_seconds, 1),
        quick=quick,
        torch_threads=torch.get_num_threads(),
    )
    log(f"[{spec.name}] {json.dumps(metrics, sort_keys=True)}")
    out = Path(out_root) / spec.name
    save_safetensors(
        _sparse_state(model, rows), out / "model.safetensors", metadata={"open_clip_model": spec.open_clip_name}
    )
    config = {
        "name": spec.name,
        "open_clip_model": spec.open_clip_name,
        "open_clip_config": oc_cfg,
        "tokenizer": "open_clip SimpleTokenizer (bundled bpe_simple_vocab_16e6)",
        "preprocess": {"mean": mean, "std": std, "image_size": preprocess.size, "scene_size": SCENE_SIZE},
        "class_names": CLASS_NAMES,
        "train": asdict(cfg),
        "cam_layer_auto": layers[0] if layers else None,
        "checkpoint": "fp32 safetensors; token_embedding.weight holds only the rows listed in text.token_rows",
        "metrics": metrics,
    }
    write_json(out / "config.json", config, sort_keys=True)
    metrics["checkpoint_bytes"] = (out / "model.safetensors").stat().st_size
    return metrics


def build(out_root: Path, quick: bool = False) -> dict[str, Any]:
    """Train ``shapes_clip`` (the ViT tower), measure it, write ``<out_root>/shapes_clip/``."""
    return _build(SPECS["shapes_clip"], Path(out_root), quick)


def build_cnn(out_root: Path, quick: bool = False) -> dict[str, Any]:
    """Train ``shapes_clip_cnn`` (the ResNet tower), measure it, write ``<out_root>/shapes_clip_cnn/``."""
    return _build(SPECS["shapes_clip_cnn"], Path(out_root), quick)


__all__ = ["build", "build_cnn", "TrainCfg", "RECIPES", "zero_shot_accuracy", "pointing", "tower_outputs"]
