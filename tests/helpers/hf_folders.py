"""A tiny random Hugging Face CLIP folder saved as ``save_pretrained`` writes it, and the byte-level
vocabulary its tokenizer is built from (a helper module, not a test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def byte_vocab(suffix: str = "") -> dict[str, int]:
    """The 256 byte symbols of GPT-2's byte-level BPE (each + ``suffix``) -> ids 0..255."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c + suffix: i for i, c in enumerate(bytes_to_unicode().values())}


def clip_dir(path: str | Path, with_processor: bool = True) -> tuple[Any, Any]:
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
