"""DeepfakeBench CLIP detector checkpoints (``.pth`` state dicts with ``backbone.*`` + ``head.*``).

DeepfakeBench builds its backbone as ``CLIPModel.from_pretrained(...).vision_model``, so its
checkpoints say ``backbone.embeddings...``; vizkit's :class:`ClipDetector` wraps a
``CLIPVisionModel``, whose keys are ``backbone.vision_model.embeddings...`` in transformers 4 and
``backbone.embeddings...`` in transformers 5. Both layouts are accepted, as are
``{"state_dict": ...}`` / ``{"model": ...}`` wrappers and ``module.`` prefixes. The architecture
is read off the tensor shapes: no hub config is needed.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import torch

from .detector import ClipDetector
from .load_common import CheckpointError, Loaded, PathLike, existing, load_strict, read_checkpoint, \
    resize_normalize, unwrap_state_dict

_NESTED = "backbone.vision_model."  # CLIPVisionModel keys in transformers 4.x
_FLAT = "backbone."  # DeepfakeBench (CLIPModel.vision_model) and CLIPVisionModel in transformers 5.x
_EMB = "embeddings.patch_embedding.weight"
# DeepfakeBench's clip.yaml normalises with mean = std = 0.5 at resolution 224.
DFB_MEAN = (0.5, 0.5, 0.5)
DFB_STD = (0.5, 0.5, 0.5)


def to_flat_layout(sd: Mapping[str, torch.Tensor], source: Any = "state dict") -> dict[str, torch.Tensor]:
    """Keys as ``backbone.embeddings...`` / ``backbone.encoder.layers.N...`` / ``head.*``, whether
    they came as ``backbone.vision_model.*`` or not; stale ``position_ids`` buffers dropped."""
    if f"{_NESTED}{_EMB}" in sd:
        out = {(_FLAT + k[len(_NESTED):] if k.startswith(_NESTED) else k): v for k, v in sd.items()}
    elif f"{_FLAT}{_EMB}" in sd:
        out = dict(sd)
    else:
        raise CheckpointError(
            f"{source} is not a DeepfakeBench CLIP detector: expected keys '{_FLAT}{_EMB}' (or "
            f"'{_NESTED}{_EMB}') and 'head.weight'; found {', '.join(list(sd)[:5])}")
    return {k: v for k, v in out.items() if not k.endswith("embeddings.position_ids")}


def _to_model_layout(sd: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    if any(k.startswith(_NESTED) for k in model.state_dict()):
        return {(_NESTED + k[len(_FLAT):] if k.startswith(_FLAT) else k): v for k, v in sd.items()}
    return sd


def infer_clip_vision_config(sd: Mapping[str, torch.Tensor], num_heads: int | None = None) -> dict[str, int]:
    """``CLIPVisionConfig`` fields read off a detector state dict's shapes (works on meta tensors).

    hidden / channels / patch from the patch embedding ``[hidden, C, p, p]``; image size from the
    position-embedding count ``(image/p)^2 + 1``; depth from ``encoder.layers.N``; MLP width from
    ``fc1``; heads = hidden / 64 as in every CLIP ViT (pass ``num_heads`` for other head sizes).
    """
    sd = to_flat_layout(sd)
    try:
        w = sd[_FLAT + _EMB]
        n_pos = sd[_FLAT + "embeddings.position_embedding.weight"].shape[0]
        inter = sd[_FLAT + "encoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"a CLIP vision state dict needs {err.args[0]!r}; it is missing") from None
    hidden, channels, patch = int(w.shape[0]), int(w.shape[1]), int(w.shape[2])
    side = math.isqrt(n_pos - 1)
    if side * side != n_pos - 1:
        raise CheckpointError(f"{n_pos} position embeddings is not (image/patch)^2 + 1 for a square image")
    layer_ids = {int(m.group(1)) for k in sd if (m := re.match(re.escape(_FLAT) + r"encoder\.layers\.(\d+)\.", k))}
    depth = max(layer_ids) + 1 if layer_ids else 0
    if sorted(layer_ids) != list(range(depth)) or depth == 0:
        raise CheckpointError(f"encoder layers {sorted(layer_ids)} are not numbered 0..N-1")
    heads = num_heads or max(1, hidden // 64)
    if hidden % heads:
        raise CheckpointError(f"hidden size {hidden} is not a multiple of num_heads {heads}")
    return {"hidden_size": hidden, "intermediate_size": int(inter), "num_hidden_layers": depth,
            "num_attention_heads": heads, "num_channels": channels, "patch_size": patch,
            "image_size": side * patch}


def load_deepfakebench_clip(path: PathLike, *, num_heads: int | None = None,
                            mean: Sequence[float] = DFB_MEAN, std: Sequence[float] = DFB_STD,
                            device: str | torch.device = "cpu") -> Loaded:
    """A DeepfakeBench CLIP detector ``.pth`` as :class:`ClipDetector` (logits [real, fake]).

    The config is inferred from the weights (:func:`infer_clip_vision_config`) and the weights are
    loaded strictly. ``preprocess`` resizes to the inferred image size and normalises with
    DeepfakeBench's mean/std (0.5) unless given.
    """
    from transformers import CLIPVisionConfig

    p = existing(path, "DeepfakeBench checkpoint")
    sd = to_flat_layout(unwrap_state_dict(read_checkpoint(p), p)[0], p)
    cfg = infer_clip_vision_config(sd, num_heads)
    head = sd.get("head.weight")
    if head is None or tuple(head.shape) != (2, cfg["hidden_size"]):
        got = "no head.weight" if head is None else f"head.weight of shape {tuple(head.shape)}"
        raise CheckpointError(f"{p}: a DeepfakeBench CLIP detector has head.weight of shape "
                              f"(2, {cfg['hidden_size']}) (real/fake), found {got}")
    model = ClipDetector(CLIPVisionConfig(**cfg))
    load_strict(model, _to_model_layout(sd, model), p, f"ClipDetector({cfg})")
    model.eval().to(device)
    return Loaded(model=model, preprocess=resize_normalize(cfg["image_size"], mean, std),
                  meta={"family": "deepfakebench_clip", "source": str(p), "config": cfg,
                        "class_names": ["real", "fake"], "mean": list(mean), "std": list(std)})
