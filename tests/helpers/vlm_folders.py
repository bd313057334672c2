"""Tiny random vision-language model folders for the family-adapter tests (a helper module, not a test).

Each ``save_random_<family>(folder, **sizes) -> Path`` (``sizes``: the fields of ``vlm_parts.Size``,
small by default) writes, with ``save_pretrained``, a random-weight model of the family's OWN
transformers class and its OWN processor class (image processor + tokenizer + chat template), so
:func:`vizkit.models.vlm.load_vlm` and ``AutoProcessor`` load it like a hub folder. Everything is
built in-process, offline: the tokenizer is the zoo's ``tiny_vlm`` byte-level BPE
(``data/zoo/tiny_vlm``) plus the special tokens each processor needs; nothing is downloaded.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
import transformers as T
from vlm_parts import Size, clip_vision, pixtral_vision, save, siglip_vision, template, text_config, tokenizer

from vizkit.zoo.tiny_vlm import CHAT_TEMPLATE as LLAVA_TEMPLATE  # "USER: <image>\n{text} ASSISTANT:"

__all__ = [
    "save_random_llava",
    "save_random_llava_pixtral",
    "save_random_qwen2_vl",
    "save_random_qwen2_5_vl",
    "save_random_qwen3_vl",
    "save_random_llava_next",
    "save_random_llava_onevision",
    "QWEN_TEMPLATE",
    "PIXTRAL_TEMPLATE",
    "LLAVA_TEMPLATE",
]


# the tokenizer and the decoders: prompts and positions up to 4096
_tokenizer = partial(tokenizer, max_length=4096)
_text = partial(text_config, positions=4096)

QWEN_TEMPLATE = template("<|vision_start|><|image_pad|><|vision_end|>")
PIXTRAL_TEMPLATE = template("[IMG]")


# ----------------------------------------------------------------------------------------------
# LLaVA (CLIP tower, default / full strategy) and LLaVA with a Pixtral tower (Pixtral-12B layout)
# ----------------------------------------------------------------------------------------------
def save_random_llava(
    folder: str | Path,
    *,
    strategy: str = "default",
    image_size: int = 48,
    patch: int = 8,
    **sizes: int,
) -> Path:
    """LlavaForConditionalGeneration (CLIP tower ``image_size`` / ``patch``: a square grid, CLS
    dropped for ``strategy="default"``, kept for ``"full"``) + LlavaProcessor (CLIPImageProcessor
    center-cropping to ``image_size``)."""
    s = Size(**sizes)
    tok = _tokenizer()
    torch.manual_seed(s.seed)
    side = image_size // patch
    cfg = T.LlavaConfig(
        text_config=T.LlamaConfig(**_text(tok, s)),
        vision_config=clip_vision(s, image_size, patch),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=side * side + (strategy == "full"),
        vision_feature_layer=-1,
        vision_feature_select_strategy=strategy,
    )
    ip = T.CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    proc = T.LlavaProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    return save(T.LlavaForConditionalGeneration(cfg), proc, folder)


def save_random_llava_pixtral(
    folder: str | Path,
    *,
    longest_edge: int = 64,
    patch: int = 8,
    **sizes: int,
) -> Path:
    """Pixtral-12B's layout: LlavaForConditionalGeneration with a PixtralVisionConfig tower (no CLS,
    ``vision_feature_select_strategy="full"``, a Mistral decoder) + PixtralProcessor (PixtralImageProcessor
    resizing the longest edge to ``longest_edge``, keeping the aspect ratio; ``[IMG]`` per patch,
    ``[IMG_BREAK]`` after each row, ``[IMG_END]`` after the last)."""
    s = Size(**sizes)
    tok = _tokenizer(("[IMG]", "[IMG_BREAK]", "[IMG_END]"))
    torch.manual_seed(s.seed)
    vc = pixtral_vision(s, longest_edge, patch)
    cfg = T.LlavaConfig(
        text_config=T.MistralConfig(**_text(tok, s)),
        vision_config=vc,
        image_token_index=tok.convert_tokens_to_ids("[IMG]"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    ip = T.PixtralImageProcessor(size={"longest_edge": longest_edge}, patch_size={"height": patch, "width": patch})
    proc = T.PixtralProcessor(
        image_processor=ip, tokenizer=tok, patch_size=patch, spatial_merge_size=1, chat_template=PIXTRAL_TEMPLATE
    )
    return save(T.LlavaForConditionalGeneration(cfg), proc, folder)


# ----------------------------------------------------------------------------------------------
# Qwen2-VL, Qwen2.5-VL, Qwen3-VL
# ----------------------------------------------------------------------------------------------
_QWEN_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def _qwen_parts(tok: Any, hidden: int, heads: int) -> tuple[dict[str, int], dict[str, Any]]:
    tok.image_token = "<|image_pad|>"
    ids = tok.convert_tokens_to_ids(list(_QWEN_TOKENS))
    special = dict(
        vision_start_token_id=ids[0], vision_end_token_id=ids[1], image_token_id=ids[2], video_token_id=ids[3]
    )
    half = hidden // heads // 2
    rope = {
        "rope_type": "default",
        "mrope_section": [half - 2 * (half // 3), half // 3, half // 3],
        "rope_theta": 10000.0,
    }
    return special, rope


def _qwen_processor(cls: Any, tok: Any, patch: int, max_pixels: int, video_cls: Any = T.Qwen2VLVideoProcessor) -> Any:
    kw = dict(min_pixels=(2 * patch) ** 2, max_pixels=max_pixels, patch_size=patch, merge_size=2, temporal_patch_size=2)
    return cls(
        image_processor=T.Qwen2VLImageProcessor(**kw),
        tokenizer=tok,
        video_processor=video_cls(**kw),
        chat_template=QWEN_TEMPLATE,
    )


def _qwen_vision(s: Size, patch: int, **more: Any) -> dict[str, Any]:
    """Qwen2.5-VL's / Qwen3-VL's vision config keys: ``patch``, 2x2 merge, 2 frames per patch, plus ``more``."""
    return dict(
        depth=s.vision_depth,
        hidden_size=s.vision_hidden,
        out_hidden_size=s.hidden,
        num_heads=2,
        intermediate_size=2 * s.vision_hidden,
        patch_size=patch,
        spatial_merge_size=2,
        temporal_patch_size=2,
        in_channels=3,
        **more,
    )


def save_random_qwen2_vl(
    folder: str | Path,
    *,
    max_pixels: int = 112 * 112,
    **sizes: int,
) -> Path:
    """Qwen2VLForConditionalGeneration (patch 14, 2x2 merge) + Qwen2VLProcessor (Qwen2VLImageProcessor
    with ``max_pixels``: an image keeps its aspect ratio, ``image_grid_thw`` says its patch grid)."""
    s = Size(**sizes)
    tok = _tokenizer(_QWEN_TOKENS)
    torch.manual_seed(s.seed)
    special, rope = _qwen_parts(tok, s.hidden, s.heads)
    vision = dict(
        depth=s.vision_depth,
        embed_dim=s.vision_hidden,
        hidden_size=s.hidden,
        num_heads=2,
        mlp_ratio=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        in_chans=3,
    )
    cfg = T.Qwen2VLConfig(text_config=_text(tok, s, rope_parameters=rope), vision_config=vision, **special)
    return save(
        T.Qwen2VLForConditionalGeneration(cfg), _qwen_processor(T.Qwen2VLProcessor, tok, 14, max_pixels), folder
    )


def save_random_qwen2_5_vl(
    folder: str | Path,
    *,
    max_pixels: int = 112 * 112,
    **sizes: int,
) -> Path:
    """Qwen2_5_VLForConditionalGeneration (patch 14, 2x2 merge, windowed vision attention) +
    Qwen2_5_VLProcessor."""
    s = Size(**sizes)
    tok = _tokenizer(_QWEN_TOKENS)
    torch.manual_seed(s.seed)
    special, rope = _qwen_parts(tok, s.hidden, s.heads)
    vision = _qwen_vision(s, 14, window_size=56, fullatt_block_indexes=[s.vision_depth - 1])
    cfg = T.Qwen2_5_VLConfig(text_config=_text(tok, s, rope_parameters=rope), vision_config=vision, **special)
    return save(
        T.Qwen2_5_VLForConditionalGeneration(cfg), _qwen_processor(T.Qwen2_5_VLProcessor, tok, 14, max_pixels), folder
    )


def save_random_qwen3_vl(
    folder: str | Path,
    *,
    max_pixels: int = 128 * 128,
    **sizes: int,
) -> Path:
    """Qwen3VLForConditionalGeneration (patch 16, 2x2 merge, deepstack features from vision layer 0
    into the first decoder layers) + Qwen3VLProcessor (Qwen2VLImageProcessor with patch 16)."""
    s = Size(**sizes)
    tok = _tokenizer(_QWEN_TOKENS)
    torch.manual_seed(s.seed)
    special, rope = _qwen_parts(tok, s.hidden, s.heads)
    rope["mrope_interleaved"] = True
    vision = _qwen_vision(s, 16, num_position_embeddings=64, deepstack_visual_indexes=[0])
    text = _text(tok, s, rope_parameters=rope, head_dim=s.hidden // s.heads)
    cfg = T.Qwen3VLConfig(text_config=text, vision_config=vision, **special)
    return save(
        T.Qwen3VLForConditionalGeneration(cfg),
        _qwen_processor(T.Qwen3VLProcessor, tok, 16, max_pixels, T.Qwen3VLVideoProcessor),
        folder,
    )


# ----------------------------------------------------------------------------------------------
# LLaVA-NeXT and LLaVA-OneVision (anyres tiling)
# ----------------------------------------------------------------------------------------------
def save_random_llava_next(
    folder: str | Path,
    *,
    image_size: int = 32,
    patch: int = 8,
    pinpoints: list[list[int]] | None = None,
    **sizes: int,
) -> Path:
    """LlavaNextForConditionalGeneration (CLIP tower, CLS dropped: ``"default"``) + LlavaNextProcessor
    (LlavaNextImageProcessor: base image + tiles of ``image_size`` from the best of ``pinpoints``,
    default ``[[32, 64], [64, 32], [64, 64], [96, 64], [64, 96]]`` in pixels (height, width))."""
    s = Size(**sizes)
    pinpoints = pinpoints or [
        [image_size, 2 * image_size],
        [2 * image_size, image_size],
        [2 * image_size, 2 * image_size],
        [3 * image_size, 2 * image_size],
        [2 * image_size, 3 * image_size],
    ]
    tok = _tokenizer()
    torch.manual_seed(s.seed)
    cfg = T.LlavaNextConfig(
        text_config=T.LlamaConfig(**_text(tok, s)),
        vision_config=clip_vision(s, image_size, patch),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    ip = T.LlavaNextImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=pinpoints,
    )
    proc = T.LlavaNextProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_TEMPLATE,
    )
    return save(T.LlavaNextForConditionalGeneration(cfg), proc, folder)


def save_random_llava_onevision(
    folder: str | Path,
    *,
    image_size: int = 32,
    patch: int = 8,
    pinpoints: list[list[int]] | None = None,
    aspect_ratio: str = "anyres_max_9",
    **sizes: int,
) -> Path:
    """LlavaOnevisionForConditionalGeneration (SigLIP tower, no CLS: ``"full"``) + LlavaOnevisionProcessor
    (LlavaOnevisionImageProcessor; ``pinpoints`` default: every (h, w) in {1, 2, 3} x {1, 2, 3} tiles of
    ``image_size``; ``aspect_ratio`` ``anyres_max_N`` caps the mosaic at about N tiles by interpolation)."""
    s = Size(**sizes)
    pinpoints = pinpoints or [[image_size * i, image_size * j] for i in (1, 2, 3) for j in (1, 2, 3)]
    tok = _tokenizer(("<video>",))
    torch.manual_seed(s.seed)
    cfg = T.LlavaOnevisionConfig(
        text_config=T.Qwen2Config(**_text(tok, s)),
        vision_config=siglip_vision(s, image_size, patch),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio=aspect_ratio,
    )
    ip = T.LlavaOnevisionImageProcessor(
        size={"height": image_size, "width": image_size}, image_grid_pinpoints=pinpoints
    )
    vp = T.LlavaOnevisionVideoProcessor(size={"height": image_size, "width": image_size})
    proc = T.LlavaOnevisionProcessor(
        image_processor=ip,
        tokenizer=tok,
        video_processor=vp,
        num_image_tokens=(image_size // patch) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio=aspect_ratio,
        chat_template=LLAVA_TEMPLATE,
    )
    return save(T.LlavaOnevisionForConditionalGeneration(cfg), proc, folder)
