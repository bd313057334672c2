"""One adapter for CLIP-style image-text models: open_clip, Hugging Face ``CLIPModel``, and
custom models that expose ``encode_image`` / ``encode_text`` (seed 003's StarNet + BERT).

The adapter answers the few questions vizkit asks: how to encode images (the forward that
Grad-CAM hooks into), how to encode texts, the logit scale, and how to preprocess an image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import VizkitError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def default_preprocess(size: int, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD) -> Callable:
    """PIL RGB image -> ``[3, size, size]``: bicubic resize of the short side, centre crop, normalise."""
    mean_t, std_t = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

    def preprocess(image: Image.Image) -> torch.Tensor:
        w, h = image.size
        scale = size / min(w, h)
        image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
        w, h = image.size
        left, top = (w - size) // 2, (h - size) // 2
        image = image.crop((left, top, left + size, top + size))
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - mean_t) / std_t

    return preprocess


@dataclass
class ClipAdapter:
    """A CLIP model seen through the questions vizkit asks of it.

    ``encode_image([B, 3, H, W]) -> [B, D]``; ``encode_text(texts) -> [T, D]``;
    ``logit_scale`` the multiplier of the cosine similarity; ``preprocess(PIL) -> [3, H, W]``.
    """

    model: nn.Module
    encode_image: Callable[[torch.Tensor], torch.Tensor]
    encode_text: Callable[[Sequence[str]], torch.Tensor]
    logit_scale: float
    preprocess: Callable[[Image.Image], torch.Tensor]
    image_size: int
    name: str = "clip"
    meta: dict[str, Any] = field(default_factory=dict)

    @torch.no_grad()
    def text_features(self, texts: Sequence[str]) -> torch.Tensor:
        """``[T, D]`` L2-normalised text embeddings."""
        if not texts:
            raise VizkitError("no class texts to encode")
        return F.normalize(self.encode_text(list(texts)).float(), dim=-1)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def adapt_open_clip(
    model: nn.Module, tokenizer: Callable, preprocess: Callable | None = None, name: str = "open_clip"
) -> ClipAdapter:
    """An open_clip ``CLIP`` / ``CustomTextCLIP`` with its tokenizer."""
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)

    def encode_text(texts: Sequence[str]) -> torch.Tensor:
        return model.encode_text(tokenizer(list(texts)).to(_device(model)))

    return ClipAdapter(
        model,
        model.encode_image,
        encode_text,
        float(model.logit_scale.detach().exp()),
        preprocess or default_preprocess(size),
        size,
        name,
    )


def adapt_hf_clip(model: nn.Module, processor: Any, name: str = "hf_clip") -> ClipAdapter:
    """A Hugging Face ``CLIPModel`` with its ``CLIPProcessor`` (or a tokenizer; the image
    preprocessing then follows the config: image size, CLIP's mean / std)."""
    size = int(model.config.vision_config.image_size)
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None and processor is not None and hasattr(processor, "tokenize"):
        tokenizer = processor
    if tokenizer is None:
        where = getattr(model.config, "_name_or_path", "") or "its model folder"
        raise VizkitError(
            f"the Hugging Face CLIPModel from {where} has no tokenizer: the folder must hold config.json, the "
            f"weights (model.safetensors or pytorch_model.bin), a tokenizer (tokenizer.json, or vocab.json + "
            f"merges.txt, with tokenizer_config.json) and, optionally, preprocessor_config.json; save them with "
            f"`CLIPProcessor.from_pretrained(<original model>).save_pretrained(<folder>)`"
        )

    def encode_image(pixel_values: torch.Tensor) -> torch.Tensor:
        out = model.get_image_features(pixel_values=pixel_values)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def encode_text(texts: Sequence[str]) -> torch.Tensor:
        tokens = tokenizer(list(texts), padding=True, return_tensors="pt").to(_device(model))
        out = model.get_text_features(**tokens)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    image_processor = getattr(processor, "image_processor", None)
    if image_processor is not None:

        def preprocess(image: Image.Image) -> torch.Tensor:
            return image_processor(images=image, return_tensors="pt")["pixel_values"][0]
    else:
        preprocess = default_preprocess(size)
    return ClipAdapter(
        model, encode_image, encode_text, float(model.logit_scale.detach().exp()), preprocess, size, name
    )


def adapt_custom(
    model: nn.Module,
    tokenizer: Callable | None = None,
    image_size: int = 224,
    preprocess: Callable | None = None,
    logit_scale: float | None = None,
    name: str = "custom",
) -> ClipAdapter:
    """A custom model with ``encode_image(x)`` and ``encode_text(...)`` methods (seed 003's
    StarNet + BERT CLIP). ``encode_text`` receives ``tokenizer(texts)`` (a dict is passed as
    keyword arguments) or the raw texts when no tokenizer is given."""
    for attr in ("encode_image", "encode_text"):
        if not callable(getattr(model, attr, None)):
            raise VizkitError(
                f"{type(model).__name__} has no {attr}() method: a custom CLIP model must provide "
                "encode_image(images) and encode_text(tokens)"
            )

    def encode_text(texts: Sequence[str]) -> torch.Tensor:
        if tokenizer is None:
            return model.encode_text(list(texts))
        tokens = tokenizer(list(texts))
        if isinstance(tokens, dict) or hasattr(tokens, "keys"):
            return model.encode_text(**{k: v.to(_device(model)) for k, v in tokens.items()})
        return model.encode_text(tokens.to(_device(model)))

    if logit_scale is None:
        ls = getattr(model, "logit_scale", None)
        logit_scale = float(ls.detach().exp()) if isinstance(ls, torch.Tensor) else 100.0
    return ClipAdapter(
        model,
        model.encode_image,
        encode_text,
        float(logit_scale),
        preprocess or default_preprocess(image_size),
        image_size,
        name,
    )


def adapt_clip(
    model: nn.Module,
    tokenizer: Any = None,
    processor: Any = None,
    preprocess: Callable | None = None,
    image_size: int | None = None,
    name: str | None = None,
) -> ClipAdapter:
    """Pick the adapter for ``model``'s family."""
    cls = type(model).__name__
    if cls == "CLIPModel" and type(model).__module__.startswith("transformers"):
        if processor is None:
            raise VizkitError("a Hugging Face CLIPModel needs its CLIPProcessor (load it from the same directory)")
        return adapt_hf_clip(model, processor, name or "hf_clip")
    if type(model).__module__.startswith("open_clip"):
        if tokenizer is None:
            raise VizkitError("an open_clip model needs its tokenizer (open_clip.get_tokenizer(model_name))")
        return adapt_open_clip(model, tokenizer, preprocess, name or "open_clip")
    return adapt_custom(model, tokenizer, image_size or 224, preprocess, name=name or cls)


def candidate_layers(adapter: ClipAdapter, image: Image.Image, count: int = 4) -> list[str]:
    """Layers worth switching between: "auto", then the last ``count`` transformer blocks (ViT
    towers) or the last ``count`` stages with a spatial output (CNN towers) that the image encoder
    runs, in forward order. One probing forward of ``image`` (batch 1, no gradients)."""
    from ..layers import find_blocks, probe
    from ..state import model_device

    x = adapter.preprocess(image)[None].to(model_device(adapter.model))
    pr = probe(adapter.model, adapter.encode_image, x)
    blocks = find_blocks(adapter.model, pr.executed)
    if blocks:
        names = [n for n, _ in blocks[-count:]]
    else:
        shallow = [s[0] for s in pr.spatial if s[5] and s[0].count(".") <= min(t[0].count(".") for t in pr.spatial) + 1]
        names = list(dict.fromkeys(reversed(shallow)))[:count][::-1]
    return ["auto"] + names
