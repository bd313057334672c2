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
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .detector import ClipDetector
from .load_common import CheckpointError, Loaded, PathLike, existing, load_strict, read_checkpoint, unwrap_state_dict
from .preprocess import CvResizeNormalize

_NESTED = "backbone.vision_model."  # CLIPVisionModel keys in transformers 4.x
_FLAT = "backbone."  # DeepfakeBench (CLIPModel.vision_model) and CLIPVisionModel in transformers 5.x
_EMB = "embeddings.patch_embedding.weight"
#: attention heads of the CLIP vision towers people train on, by width (OpenAI and OpenCLIP):
#: S 384/6, M 512/8, B 768/12, L 1024/16, H 1280/16 (head size 80), g 1408/16 (88),
#: bigG 1664/16 (104), e 1792/16 (112). A state dict records the width, never the head count.
CLIP_HEADS_BY_WIDTH = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 16, 1408: 16, 1664: 16, 1792: 16}
# DeepfakeBench's clip.yaml normalises with mean = std = 0.5 at resolution 224.
DFB_MEAN = (0.5, 0.5, 0.5)
DFB_STD = (0.5, 0.5, 0.5)


def to_flat_layout(sd: Mapping[str, torch.Tensor], source: Any = "state dict") -> dict[str, torch.Tensor]:
    """Keys as ``backbone.embeddings...`` / ``backbone.encoder.layers.N...`` / ``head.*``, whether
    they came as ``backbone.vision_model.*`` or not; stale ``position_ids`` buffers dropped."""
    if f"{_NESTED}{_EMB}" in sd:
        out = {(_FLAT + k[len(_NESTED) :] if k.startswith(_NESTED) else k): v for k, v in sd.items()}
    elif f"{_FLAT}{_EMB}" in sd:
        out = dict(sd)
    else:
        raise CheckpointError(
            f"{source} is not a DeepfakeBench CLIP detector: expected keys '{_FLAT}{_EMB}' (or "
            f"'{_NESTED}{_EMB}') and 'head.weight'; found {', '.join(list(sd)[:5])}"
        )
    return {k: v for k, v in out.items() if not k.endswith("embeddings.position_ids")}


def _to_model_layout(sd: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    if any(k.startswith(_NESTED) for k in model.state_dict()):
        return {(_NESTED + k[len(_FLAT) :] if k.startswith(_FLAT) else k): v for k, v in sd.items()}
    return sd


def infer_clip_vision_config(sd: Mapping[str, torch.Tensor], num_heads: int | None = None) -> dict[str, int]:
    """``CLIPVisionConfig`` fields read off a detector state dict's shapes (works on meta tensors).

    hidden / channels / patch from the patch embedding ``[hidden, C, p, p]``; image size from the
    position-embedding count ``(image/p)^2 + 1``; depth from ``encoder.layers.N``; MLP width from
    ``fc1``; heads: ``num_heads`` when given, else the known CLIP tower of that width
    (:data:`CLIP_HEADS_BY_WIDTH`); any other width without ``num_heads`` is an error, since
    the weights cannot tell the head count and a guess gives wrong probabilities silently.
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
    heads = head_count(hidden, num_heads)
    return {
        "hidden_size": hidden,
        "intermediate_size": int(inter),
        "num_hidden_layers": depth,
        "num_attention_heads": heads,
        "num_channels": channels,
        "patch_size": patch,
        "image_size": side * patch,
    }


def head_count(hidden: int, num_heads: int | None = None) -> int:
    """Attention heads of a CLIP vision tower of width ``hidden`` (see :func:`infer_clip_vision_config`)."""
    if num_heads is not None:
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise CheckpointError(f"num_heads must be a positive integer, got {num_heads!r}")
        if hidden % num_heads:
            raise CheckpointError(
                f"num_heads {num_heads} does not divide the hidden size {hidden} of these weights: "
                f"give the head count the model was trained with"
            )
        return num_heads
    if hidden in CLIP_HEADS_BY_WIDTH:
        return CLIP_HEADS_BY_WIDTH[hidden]
    known = ", ".join(f"{w} -> {h}" for w, h in CLIP_HEADS_BY_WIDTH.items())
    raise CheckpointError(
        f"the weights cannot tell the number of attention heads: hidden size {hidden} is not the width of a CLIP "
        f"vision tower vizkit knows ({known}). Give it: `num_heads: N` in the detector YAML, --num-heads N on the "
        f"command line, or num_heads=N in Python"
    )


def load_deepfakebench_clip(
    path: PathLike,
    *,
    num_heads: int | None = None,
    mean: Sequence[float] = DFB_MEAN,
    std: Sequence[float] = DFB_STD,
    device: str | torch.device = "cpu",
) -> Loaded:
    """A DeepfakeBench CLIP detector ``.pth`` as :class:`ClipDetector` (logits [real, fake]).

    The config is inferred from the weights (:func:`infer_clip_vision_config`) and the weights are
    loaded strictly. ``preprocess`` is DeepfakeBench's test pipeline: ``cv2.resize`` with
    ``INTER_CUBIC`` to the inferred image size, ``/255``, its mean/std (0.5) unless given.
    """
    from transformers import CLIPVisionConfig

    p = existing(path, "DeepfakeBench checkpoint")
    sd = to_flat_layout(unwrap_state_dict(read_checkpoint(p), p)[0], p)
    cfg = infer_clip_vision_config(sd, num_heads)
    head = sd.get("head.weight")
    if head is None or tuple(head.shape) != (2, cfg["hidden_size"]):
        got = "no head.weight" if head is None else f"head.weight of shape {tuple(head.shape)}"
        raise CheckpointError(
            f"{p}: a DeepfakeBench CLIP detector has head.weight of shape "
            f"(2, {cfg['hidden_size']}) (real/fake), found {got}"
        )
    model = ClipDetector(CLIPVisionConfig(**cfg))
    load_strict(model, _to_model_layout(sd, model), p, f"ClipDetector({cfg})")
    model.eval().to(device)
    return Loaded(
        model=model,
        preprocess=CvResizeNormalize(cfg["image_size"], mean, std, "cubic"),
        meta={
            "family": "deepfakebench_clip",
            "source": str(p),
            "config": cfg,
            "class_names": ["real", "fake"],
            "mean": list(mean),
            "std": list(std),
        },
    )
