"""Tiny random-weight models of the real classes, shared by the tests (and a Hugging Face CLIP folder
saved as ``save_pretrained`` writes it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
import torchvision
from torch import nn


def resnet18(num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=num_classes).eval()


def tiny_cnn(
    num_classes: int = 4,
    *,
    in_channels: int = 3,
    widths: tuple[int, int] = (4, 6),
    act: type[nn.Module] = nn.ReLU,
    pool: int = 1,
) -> nn.Module:
    """Conv(in->w0) act Conv(w0->w1) act, average pool to ``pool`` x ``pool``, Flatten, Linear, in eval mode,
    seeded (0): layer "2" is a ``w1``-channel map at the input size, "0" the first convolution."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_channels, widths[0], 3, padding=1),
        act(),
        nn.Conv2d(widths[0], widths[1], 3, padding=1),
        act(),
        nn.AdaptiveAvgPool2d(pool),
        nn.Flatten(),
        nn.Linear(widths[1] * pool * pool, num_classes),
    ).eval()


def timm_vit(global_pool: str = "token", depth: int = 2, img_size: int = 32, num_classes: int = 5, **kw) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=img_size,
        patch_size=8,
        embed_dim=32,
        depth=depth,
        num_heads=2,
        num_classes=num_classes,
        global_pool=global_pool,
        **kw,
    ).eval()


def hf_vit(num_labels: int = 3):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=num_labels,
    )
    return ViTForImageClassification(cfg).eval()


def hf_clip():
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=100,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    return CLIPModel(cfg).eval()


def open_clip_vit():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    return CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=2, width=32, head_width=8, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=8, vocab_size=100, width=32, heads=4, layers=2),
    ).eval()


def open_clip_resnet():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    return CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=(1, 1, 1, 1), width=16, image_size=64),
        text_cfg=CLIPTextCfg(context_length=8, vocab_size=100, width=32, heads=4, layers=2),
    ).eval()


def byte_vocab(suffix: str = "") -> dict[str, int]:
    """The 256 byte symbols of GPT-2's byte-level BPE (each + ``suffix``) -> ids 0..255."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c + suffix: i for i, c in enumerate(bytes_to_unicode().values())}


def hf_clip_dir(path: str | Path, with_processor: bool = True) -> tuple[Any, Any]:
    """A random CLIPModel (text and vision towers of width 32, 2 layers, 32 px images, patch 8) saved to
    ``path``, with its CLIPProcessor when ``with_processor``; returns (model, processor)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab = {**byte_vocab(), **byte_vocab("</w>")}
    vocab = {k: i for i, k in enumerate(vocab)}
    for s in ("<|startoftext|>", "<|endoftext|>"):
        vocab[s] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    model = CLIPModel(cfg).eval()
    model.save_pretrained(path)
    proc = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok,
    )
    if with_processor:
        proc.save_pretrained(path)
    return model, proc


def all_hooks(model: nn.Module) -> int:
    """How many forward/backward hooks of any kind remain on any module."""
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )
