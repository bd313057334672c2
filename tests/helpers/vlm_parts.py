"""The parts every tiny random VLM folder is built from (a helper module, not a test; the folders
themselves: vlm_folders.py, vlm_folders_more.py): a chat template like tiny_vlm's, the zoo's
tiny_vlm tokenizer with a family's special tokens, the decoder's config keys, the vision towers'
configs, and the save that writes model + processor as ``save_pretrained`` does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import transformers as T

from vizkit.zoo.common import zoo_dir


@dataclass(frozen=True)
class Size:
    """The sizes every folder builder takes as keywords (``**sizes``): the decoder's layers, width, heads
    and KV heads, the vision tower's width and depth, the seed of the random weights."""

    layers: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2
    vision_hidden: int = 32
    vision_depth: int = 2
    seed: int = 0


def template(image: str) -> str:
    """A chat template like tiny_vlm's (``USER: ... ASSISTANT:``) whose image part is ``image``."""
    return (
        "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% if m['content'] is string %}"
        "{{ m['content'] }}{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}"
        + image
        + "{% elif p['type'] == 'text' %}{{ p['text'] }}{% endif %}"
        "{% endfor %}{% endif %} {% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )


def tokenizer(extra: tuple[str, ...] = (), named: dict[str, str] | None = None, *, max_length: int) -> Any:
    """The zoo's tiny_vlm tokenizer (``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, ``<image>``) plus ``extra`` special
    tokens and ``named`` ones (``tok.<name>``, ``tok.<name>_id``: the attributes some processors read, e.g.
    Gemma3's ``boi_token``); ``max_length`` replaces the zoo's 160 (tiny_vlm's own limit: tiled prompts
    are longer)."""
    kw = {"extra_special_tokens": dict(named)} if named else {}
    tok = T.AutoTokenizer.from_pretrained(zoo_dir("tiny_vlm"), local_files_only=True, **kw)
    tok.model_max_length = max_length
    if extra:
        tok.add_special_tokens({"additional_special_tokens": list(extra)})
    return tok


def text_config(tok: Any, s: Size, *, positions: int, **more: Any) -> dict[str, Any]:
    """A decoder's config keys: ``tok``'s vocabulary and ids, ``s``'s layers, width (MLP ``2 * hidden``),
    heads and KV heads, ``positions`` positions, plus ``more``."""
    return dict(
        vocab_size=len(tok),
        hidden_size=s.hidden,
        intermediate_size=2 * s.hidden,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        max_position_embeddings=positions,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        **more,
    )


def tower(s: Size) -> dict[str, Any]:
    """A vision tower's config keys: ``s``'s vision width (MLP ``2 * width``, 2 heads) and depth."""
    return dict(
        hidden_size=s.vision_hidden,
        intermediate_size=2 * s.vision_hidden,
        num_hidden_layers=s.vision_depth,
        num_attention_heads=2,
    )


def clip_vision(s: Size, image_size: int, patch: int) -> T.CLIPVisionConfig:
    """A CLIP vision tower of ``s``'s vision width (2 heads) and depth, ``image_size`` / ``patch``."""
    return T.CLIPVisionConfig(**tower(s), image_size=image_size, patch_size=patch)


def siglip_vision(s: Size, image_size: int, patch: int) -> T.SiglipVisionConfig:
    """A SigLIP vision tower of ``s``'s vision width (2 heads) and depth, ``image_size`` / ``patch``."""
    return T.SiglipVisionConfig(**tower(s), image_size=image_size, patch_size=patch)


def pixtral_vision(s: Size, longest_edge: int, patch: int) -> T.PixtralVisionConfig:
    """A Pixtral vision tower of ``s``'s vision width (2 heads) and depth, images up to ``longest_edge``."""
    return T.PixtralVisionConfig(**tower(s), head_dim=s.vision_hidden // 2, image_size=longest_edge, patch_size=patch)


def save(model: Any, proc: Any, folder: str | Path) -> Path:
    """``model`` (generation ids: ``<s>`` 1, ``</s>`` 2, ``<pad>`` 0; eval mode) and ``proc`` saved to ``folder``."""
    folder = Path(folder)
    model.generation_config.bos_token_id, model.generation_config.eos_token_id = 1, 2
    model.generation_config.pad_token_id = 0
    model.eval().save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder
