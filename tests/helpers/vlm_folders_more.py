"""Tiny random vision-language model folders for the Idefics3 / SmolVLM / Gemma3 / PaliGemma /
Mistral3 / InternVL adapter tests (a helper module, not a test).

Each ``save_random_<family>(folder, **sizes) -> Path`` (``sizes``: the fields of ``vlm_parts.Size``,
small by default) writes, with ``save_pretrained``, a random-weight model of the family's OWN
transformers class and its OWN processor class (image processor + tokenizer + chat template), so
:func:`vizkit.models.vlm.load_vlm` and ``AutoProcessor`` load it like a hub folder. Everything is
built in-process, offline: the tokenizer is the zoo's ``tiny_vlm`` byte-level BPE
(``data/zoo/tiny_vlm``: ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, ``<image>``) plus the special tokens
each processor needs; nothing is downloaded. SmolVLM's processor needs the ``num2words`` package.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
import transformers as T
from vlm_parts import Size, pixtral_vision, save, siglip_vision, template, text_config, tokenizer, tower

__all__ = [
    "save_random_idefics3",
    "save_random_smolvlm",
    "save_random_gemma3",
    "save_random_paligemma",
    "save_random_mistral3",
    "save_random_internvl",
    "template",
]

# the tokenizer and the decoders: prompts and positions up to 8192
_tokenizer = partial(tokenizer, max_length=8192)
_text = partial(text_config, positions=8192)


# ----------------------------------------------------------------------------------------------
# Idefics3 and SmolVLM: tiles of max_image_size + a global image, pixel shuffle
# ----------------------------------------------------------------------------------------------
ROW_COL = tuple(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))


def _idefics_parts(tok: Any, cfg_cls: Any, s: Size, tile: int, patch: int, scale: int) -> Any:
    vision = dict(**tower(s), image_size=tile, patch_size=patch)
    return cfg_cls(
        text_config=T.LlamaConfig(**_text(tok, s)),
        vision_config=vision,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        pad_token_id=0,
    )


def save_random_idefics3(
    folder: str | Path,
    *,
    tile: int = 32,
    patch: int = 4,
    scale: int = 2,
    longest_edge: int = 96,
    **sizes: int,
) -> Path:
    """Idefics3ForConditionalGeneration (vision tower ``tile`` / ``patch``, pixel shuffle ``scale``:
    ``(tile / patch / scale)**2`` tokens per tile, default 4 x 4 = 16) + Idefics3Processor
    (Idefics3ImageProcessor: the longest edge resized to ``longest_edge``, padded up to a multiple of
    ``tile`` and split into rows x cols tiles of ``tile``, plus the whole image squashed to ``tile``:
    the global image; ``<fake_token_around_image>``, ``<row_r_col_c>``, ``<global-img>`` markers)."""
    s = Size(**sizes)
    tok = _tokenizer(("<global-img>",) + ROW_COL)  # the processor adds <fake_token_around_image> itself
    torch.manual_seed(s.seed)
    seq = (tile // patch // scale) ** 2
    proc = T.Idefics3Processor(
        image_processor=T.Idefics3ImageProcessor(
            size={"longest_edge": longest_edge}, max_image_size={"longest_edge": tile}
        ),
        tokenizer=tok,
        image_seq_len=seq,
        chat_template=template("<image>"),
    )
    cfg = _idefics_parts(tok, T.Idefics3Config, s, tile, patch, scale)
    return save(T.Idefics3ForConditionalGeneration(cfg), proc, folder)


def save_random_smolvlm(
    folder: str | Path,
    *,
    tile: int = 32,
    patch: int = 4,
    scale: int = 2,
    longest_edge: int = 96,
    **sizes: int,
) -> Path:
    """SmolVLMForConditionalGeneration + SmolVLMProcessor (SmolVLMImageProcessor, SmolVLMVideoProcessor):
    the Idefics3 layout (see :func:`save_random_idefics3`), the tokens named on the tokenizer."""
    s = Size(**sizes)
    tok = _tokenizer(
        ("<global-img>", "<video>") + ROW_COL,
        named={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "end_of_utterance_token": "<end_of_utterance>",
            "global_image_token": "<global-img>",
        },
    )
    torch.manual_seed(s.seed)
    seq = (tile // patch // scale) ** 2
    kw = dict(size={"longest_edge": longest_edge}, max_image_size={"longest_edge": tile})
    proc = T.SmolVLMProcessor(
        image_processor=T.SmolVLMImageProcessor(**kw),
        tokenizer=tok,
        video_processor=T.SmolVLMVideoProcessor(**kw),
        image_seq_len=seq,
        chat_template=template("<image>"),
    )
    cfg = _idefics_parts(tok, T.SmolVLMConfig, s, tile, patch, scale)
    return save(T.SmolVLMForConditionalGeneration(cfg), proc, folder)


# ----------------------------------------------------------------------------------------------
# Gemma3 (pooled square grid between <start_of_image> / <end_of_image>) and PaliGemma (prefix)
# ----------------------------------------------------------------------------------------------
#: pan-and-scan on, with Gemma3Processor's default crop settings (pass it to the processor call)
GEMMA3_PAN_AND_SCAN = dict(
    do_pan_and_scan=True,
    pan_and_scan_min_crop_size=256,
    pan_and_scan_max_num_crops=4,
    pan_and_scan_min_ratio_to_activate=1.2,
)

#: PaliGemma is not a chat model: its prompt is the images, then the text (the processor adds ``<s>`` and ``\n``)
PALIGEMMA_TEMPLATE = (
    "{% for m in messages %}{% if m['content'] is not string %}{% for p in m['content'] %}"
    "{% if p['type'] == 'image' %}<image>{% endif %}{% endfor %}{% endif %}{% endfor %}"
    "{% for m in messages %}{% if m['role'] == 'user' %}{% if m['content'] is string %}"
    "{{ m['content'] }}{% else %}{% for p in m['content'] %}{% if p['type'] == 'text' %}"
    "{{ p['text'] }}{% endif %}{% endfor %}{% endif %}{% endif %}{% endfor %}"
)


def save_random_gemma3(
    folder: str | Path,
    *,
    image_size: int = 48,
    patch: int = 4,
    tokens_per_image: int = 16,
    pan_and_scan: bool = False,
    **sizes: int,
) -> Path:
    """Gemma3ForConditionalGeneration (SigLIP tower ``image_size`` / ``patch``, average-pooled to
    ``tokens_per_image``, a square, default 4 x 4) + Gemma3Processor (Gemma3ImageProcessor squashing
    each image to ``image_size``; ``\\n\\n<start_of_image>`` + ``<image_soft_token>`` x N +
    ``<end_of_image>\\n\\n``). ``pan_and_scan``: the saved image processor has pan-and-scan on, with
    Gemma3Processor's own crop settings (:data:`GEMMA3_PAN_AND_SCAN`: images of 1.2:1 or more, crops of
    at least 256 original pixels, at most 4). transformers 5.25 quirk: Gemma3Processor passes its class
    defaults (``do_pan_and_scan=False``, 256, 4, 1.2) over the image processor's saved settings, so the
    PROCESSOR pans and scans only when called with ``do_pan_and_scan=True``; the image processor alone
    honours the saved flag and returns ``num_crops`` (which the processor drops from its outputs)."""
    s = Size(**sizes)
    tok = _tokenizer(
        named={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    )
    torch.manual_seed(s.seed)
    text = _text(
        tok,
        s,
        head_dim=s.hidden // s.heads,
        sliding_window=64,
        query_pre_attn_scalar=s.hidden // s.heads,
    )
    cfg = T.Gemma3Config(
        text_config=T.Gemma3TextConfig(**text),
        vision_config=siglip_vision(s, image_size, patch),
        mm_tokens_per_image=tokens_per_image,
        boi_token_index=tok.boi_token_id,
        eoi_token_index=tok.eoi_token_id,
        image_token_index=tok.image_token_id,
    )
    pas = GEMMA3_PAN_AND_SCAN if pan_and_scan else {}
    ip = T.Gemma3ImageProcessor(size={"height": image_size, "width": image_size}, **pas)
    proc = T.Gemma3Processor(
        image_processor=ip, tokenizer=tok, image_seq_length=tokens_per_image, chat_template=template("<start_of_image>")
    )
    return save(T.Gemma3ForConditionalGeneration(cfg), proc, folder)


def save_random_paligemma(
    folder: str | Path,
    *,
    image_size: int = 32,
    patch: int = 4,
    **sizes: int,
) -> Path:
    """PaliGemmaForConditionalGeneration (SigLIP tower ``image_size`` / ``patch``: a square grid of
    ``(image_size / patch)**2`` tokens, default 8 x 8, with a Gemma decoder) + PaliGemmaProcessor
    (SiglipImageProcessor squashing each image to ``image_size``; the image tokens first, then
    ``<s>``, the text and ``\\n``; it adds PaliGemma's ``<locNNNN>`` / ``<segNNN>`` tokens); its chat
    template (:data:`PALIGEMMA_TEMPLATE`) writes every image's ``<image>`` first, then the text."""
    s = Size(**{"kv_heads": 1, **sizes})  # 1 KV head by default
    tok = _tokenizer()
    ip = T.SiglipImageProcessor(size={"height": image_size, "width": image_size})
    ip.image_seq_length = (image_size // patch) ** 2
    proc = T.PaliGemmaProcessor(image_processor=ip, tokenizer=tok, chat_template=PALIGEMMA_TEMPLATE)
    torch.manual_seed(s.seed)
    text = _text(tok, s, head_dim=s.hidden // s.heads)
    cfg = T.PaliGemmaConfig(
        text_config=T.GemmaConfig(**text),
        vision_config=siglip_vision(s, image_size, patch),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        projection_dim=s.hidden,
        hidden_size=s.hidden,
        vocab_size=len(tok),
    )
    return save(T.PaliGemmaForConditionalGeneration(cfg), proc, folder)


# ----------------------------------------------------------------------------------------------
# Mistral3 (Pixtral tower, spatial merge, [IMG_BREAK] per row, [IMG_END])
# ----------------------------------------------------------------------------------------------
def save_random_mistral3(
    folder: str | Path,
    *,
    longest_edge: int = 64,
    patch: int = 4,
    merge: int = 2,
    **sizes: int,
) -> Path:
    """Mistral3ForConditionalGeneration (Pixtral tower ``patch``, ``spatial_merge_size`` ``merge``,
    Mistral decoder) + PixtralProcessor (PixtralImageProcessor: the longest edge resized to at most
    ``longest_edge`` keeping the aspect ratio, each side rounded up to ``patch * merge``;
    ``image_sizes`` the resized (height, width); ``[IMG]`` per merged patch, ``[IMG_BREAK]`` after each
    row, ``[IMG_END]`` after the last)."""
    s = Size(**sizes)
    tok = _tokenizer(("[IMG]", "[IMG_BREAK]", "[IMG_END]"))
    torch.manual_seed(s.seed)
    vision = pixtral_vision(s, longest_edge, patch)
    cfg = T.Mistral3Config(
        text_config=T.MistralConfig(**_text(tok, s, head_dim=s.hidden // s.heads, sliding_window=None)),
        vision_config=vision,
        image_token_index=tok.convert_tokens_to_ids("[IMG]"),
        spatial_merge_size=merge,
        vision_feature_layer=-1,
    )
    ip = T.PixtralImageProcessor(size={"longest_edge": longest_edge}, patch_size={"height": patch, "width": patch})
    proc = T.PixtralProcessor(
        image_processor=ip, tokenizer=tok, patch_size=patch, spatial_merge_size=merge, chat_template=template("[IMG]")
    )
    return save(T.Mistral3ForConditionalGeneration(cfg), proc, folder)


# ----------------------------------------------------------------------------------------------
# InternVL (transformers' own port): dynamic tiles + thumbnail, pixel shuffle
# ----------------------------------------------------------------------------------------------
def save_random_internvl(
    folder: str | Path,
    *,
    tile: int = 32,
    patch: int = 4,
    downsample: float = 0.5,
    max_patches: int = 6,
    **sizes: int,
) -> Path:
    """InternVLForConditionalGeneration (InternViT tower ``tile`` / ``patch`` with a CLS token
    dropped, pixel shuffle ``downsample``: ``(tile / patch * downsample)**2`` tokens per tile, default
    4 x 4, Qwen2 decoder) + InternVLProcessor (GotOcr2ImageProcessor ``crop_to_patches``: the
    aspect-ratio grid of at most ``max_patches`` tiles closest to the image's, then a thumbnail when
    there is more than one tile; ``<img>`` + ``<IMG_CONTEXT>`` x N + ``</img>`` per image)."""
    s = Size(**sizes)
    tok = _tokenizer(
        named={
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        }
    )
    torch.manual_seed(s.seed)
    seq = int(tile // patch * downsample) ** 2
    vision = T.InternVLVisionConfig(**tower(s), image_size=[tile, tile], patch_size=[patch, patch])
    cfg = T.InternVLConfig(
        text_config=T.Qwen2Config(**_text(tok, s)),
        vision_config=vision,
        image_token_id=tok.context_image_token_id,
        image_seq_length=seq,
        downsample_ratio=downsample,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    ip = T.GotOcr2ImageProcessor(
        size={"height": tile, "width": tile}, crop_to_patches=True, min_patches=1, max_patches=max_patches
    )
    vp = T.InternVLVideoProcessor(size={"height": tile, "width": tile})
    proc = T.InternVLProcessor(
        image_processor=ip,
        tokenizer=tok,
        video_processor=vp,
        image_seq_length=seq,
        chat_template=template("<IMG_CONTEXT>"),
    )
    return save(T.InternVLForConditionalGeneration(cfg), proc, folder)
