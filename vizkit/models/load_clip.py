"""Load a user's CLIP model as a :class:`~vizkit.models.clip.ClipAdapter`, offline, from any of
the places a user keeps one: an open_clip model name with local weights, a Hugging Face CLIP
directory, or a custom two-tower checkpoint (image backbone + local HF text encoder).

Zoo names (``shapes_clip``) are resolved one level up, by
:func:`vizkit.zoo.load_clip.load_clip_model`, which falls back to :func:`load_clip`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import VizkitError
from .clip import ClipAdapter, adapt_custom, adapt_hf_clip, adapt_open_clip, default_preprocess

__all__ = ["load_clip"]


def load_clip(
    model: str,
    model_path: str | None = None,
    *,
    image_encoder: str | None = None,
    text_encoder: str | None = None,
    embed_dim: int = 512,
    img_size: int = 224,
    device: str | torch.device = "cpu",
    known: tuple[str, ...] = (),
) -> ClipAdapter:
    """A :class:`ClipAdapter` for the model the user named (see the module docstring).

    ``known``: further model names the caller accepts, listed in the error for an unknown name.
    """
    device = torch.device(device)
    if model_path is not None and not Path(model_path).exists():
        raise VizkitError(f"model path {str(model_path)!r} does not exist")
    if image_encoder or text_encoder:
        return _custom(model_path, image_encoder, text_encoder, embed_dim, img_size, device)
    spec = model
    path = Path(spec)
    if path.is_dir():
        from .load_hf import load_hf

        loaded = load_hf(path)
        if type(loaded.model).__name__ != "CLIPModel":
            raise VizkitError(f"{str(path)!r} holds a {type(loaded.model).__name__}, not a CLIPModel")
        adapter = adapt_hf_clip(loaded.model.to(device).eval(), loaded.processor, name=f"hf:{path.name}")
        return adapter
    import open_clip

    if spec in open_clip.list_models():
        if model_path is None:
            raise VizkitError(
                f"open_clip model {spec!r} needs its weights on disk: pass --model-path /path/to/weights "
                "(.pt, .bin or .safetensors); nothing is downloaded"
            )
        from .load_openclip import load_open_clip

        loaded = load_open_clip(spec, model_path, device=str(device))
        return adapt_open_clip(loaded.model.eval(), loaded.tokenizer, loaded.preprocess, name=f"open_clip:{spec}")
    zoo = f"a zoo model ({', '.join(known)}), " if known else ""
    raise VizkitError(
        f"unknown model {spec!r}: use {zoo}an open_clip model name "
        "with --model-path, a Hugging Face CLIP directory, or --image-encoder/--text-encoder with "
        "--model-path for a custom two-tower checkpoint"
    )


def _custom(
    model_path: str | None,
    image_encoder: str | None,
    text_encoder: str | None,
    embed_dim: int,
    img_size: int,
    device: torch.device,
) -> ClipAdapter:
    from transformers import AutoTokenizer

    from .dual_encoder import DualEncoderCLIP
    from .load_common import load_checkpoint, load_strict

    if not (model_path and image_encoder and text_encoder):
        raise VizkitError(
            "a custom two-tower CLIP needs --model-path (its state dict), --image-encoder (a timm or "
            "torchvision name) and --text-encoder (a local Hugging Face directory)"
        )
    model = DualEncoderCLIP(image_encoder, text_encoder, embed_dim, img_size)
    load_strict(
        model,
        load_checkpoint(model_path),
        model_path,
        f"DualEncoderCLIP({image_encoder!r}, {Path(text_encoder).name!r}, embed_dim={embed_dim}, img_size={img_size})",
    )
    tok = AutoTokenizer.from_pretrained(text_encoder, local_files_only=True)

    def tokenizer(texts: list[str]) -> Any:
        return dict(tok(texts, padding=True, truncation=True, return_tensors="pt"))

    return adapt_custom(
        model.to(device).eval(),
        tokenizer,
        img_size,
        default_preprocess(img_size),
        name=f"custom:{image_encoder}+{Path(text_encoder).name}",
    )
