"""Load the CLIP model scenario 4 explains, from any of the places a user keeps one:
a zoo name (default ``shapes_clip``), an open_clip model name with local weights, a Hugging
Face directory, or a custom two-tower checkpoint (image backbone + local HF text encoder)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import VizkitError
from .models.clip import ClipAdapter, adapt_custom, adapt_hf_clip, adapt_open_clip, default_preprocess

ZOO_CLIPS = ("shapes_clip", "shapes_clip_cnn")


def _zoo(name: str, device: torch.device) -> ClipAdapter:
    from . import zoo

    bundle = zoo.load(name)
    model = bundle.model.to(device).eval()

    def preprocess(image: Any) -> torch.Tensor:
        return bundle.preprocess(np.asarray(image.convert("RGB")) if hasattr(image, "convert") else image)

    adapter = adapt_open_clip(model, bundle.tokenizer, preprocess, name=f"zoo:{name}")
    adapter.meta.update(bundle.meta)
    return adapter


def load_clip_model(model: str | None = None, model_path: str | None = None, *, image_encoder: str | None = None,
                    text_encoder: str | None = None, embed_dim: int = 512, img_size: int = 224,
                    device: str | torch.device = "cpu") -> ClipAdapter:
    """A :class:`ClipAdapter` for the model the user named (see the module docstring)."""
    device = torch.device(device)
    if model_path is not None and not Path(model_path).exists():
        raise VizkitError(f"model path {str(model_path)!r} does not exist")
    if image_encoder or text_encoder:
        return _custom(model_path, image_encoder, text_encoder, embed_dim, img_size, device)
    spec = model or "shapes_clip"
    if spec.startswith("zoo:"):
        spec = spec[4:]
    if spec in ZOO_CLIPS:
        if model_path is not None:
            raise VizkitError(f"--model {spec} is a zoo model with its own weights: drop --model-path, or name the "
                              "open_clip architecture your weights belong to with --model")
        return _zoo(spec, device)
    path = Path(spec)
    if path.is_dir():
        from .models.loaders import load_hf

        loaded = load_hf(path)
        if type(loaded.model).__name__ != "CLIPModel":
            raise VizkitError(f"{str(path)!r} holds a {type(loaded.model).__name__}, not a CLIPModel")
        adapter = adapt_hf_clip(loaded.model.to(device).eval(), loaded.processor, name=f"hf:{path.name}")
        return adapter
    import open_clip

    if spec in open_clip.list_models():
        if model_path is None:
            raise VizkitError(f"open_clip model {spec!r} needs its weights on disk: pass --model-path /path/to/weights "
                              "(.pt, .bin or .safetensors); nothing is downloaded")
        from .models.loaders import load_open_clip

        loaded = load_open_clip(spec, model_path, device=str(device))
        return adapt_open_clip(loaded.model.eval(), loaded.tokenizer, loaded.preprocess, name=f"open_clip:{spec}")
    raise VizkitError(f"unknown model {spec!r}: use a zoo model ({', '.join(ZOO_CLIPS)}), an open_clip model name "
                      "with --model-path, a Hugging Face CLIP directory, or --image-encoder/--text-encoder with "
                      "--model-path for a custom two-tower checkpoint")


def _custom(model_path: str | None, image_encoder: str | None, text_encoder: str | None, embed_dim: int,
            img_size: int, device: torch.device) -> ClipAdapter:
    from transformers import AutoTokenizer

    from .models.dual_encoder import DualEncoderCLIP
    from .models.load_common import load_checkpoint, load_strict

    if not (model_path and image_encoder and text_encoder):
        raise VizkitError("a custom two-tower CLIP needs --model-path (its state dict), --image-encoder (a timm or "
                          "torchvision name) and --text-encoder (a local Hugging Face directory)")
    model = DualEncoderCLIP(image_encoder, text_encoder, embed_dim, img_size)
    load_strict(model, load_checkpoint(model_path), model_path,
                f"DualEncoderCLIP({image_encoder!r}, {Path(text_encoder).name!r}, embed_dim={embed_dim}, "
                f"img_size={img_size})")
    tok = AutoTokenizer.from_pretrained(text_encoder, local_files_only=True)

    def tokenizer(texts: list[str]) -> Any:
        return dict(tok(texts, padding=True, truncation=True, return_tensors="pt"))

    return adapt_custom(model.to(device).eval(), tokenizer, img_size, default_preprocess(img_size),
                        name=f"custom:{image_encoder}+{Path(text_encoder).name}")
