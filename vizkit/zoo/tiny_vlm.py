"""``tiny_vlm``: a real Hugging Face ``LlavaForConditionalGeneration`` (small CLIP vision tower,
small Llama decoder) trained here to answer questions about shape scenes with a short
reasoning (:mod:`vizkit.zoo.vlm_data`).

- Files in ``data/zoo/tiny_vlm/`` are plain ``save_pretrained`` output, so the folder loads
  like any local HF model, offline::

      model = LlavaForConditionalGeneration.from_pretrained("data/zoo/tiny_vlm")
      processor = AutoProcessor.from_pretrained("data/zoo/tiny_vlm")

  ``config.json`` is the ``LlavaConfig``; its extra key ``"vizkit"`` holds the build options,
  the metrics measured on held-out scenes, the build time, the prompt format and the token
  layout. Weights: ``model.safetensors`` (fp32).
- Tokenizer: a byte-level BPE trained in-process (``tokenizers``) on the problem / solution
  texts of :func:`vizkit.zoo.vlm_data.corpus`, wrapped as ``PreTrainedTokenizerFast`` with
  special tokens ``<pad>`` (0), ``<s>`` (1, prepended to every prompt), ``</s>`` (2, ends a
  solution) and ``<image>``.
- Prompt format (LLaVA-1.5 style, also the processor's chat template)::

      "USER: <image>\\n{problem} ASSISTANT:"

  The processor expands ``<image>`` to :data:`NUM_IMAGE_TOKENS` = 36 copies: the 6x6 patch
  grid of the 48x48 image (patch 8); the CLIP tower's CLS token is dropped
  (``vision_feature_select_strategy="default"``, ``num_additional_image_tokens=1``).
  So the input ids are ``[<s>, USER, :, <image> x 36, \\n, problem..., ASSISTANT, :]`` and the
  image tokens sit at positions ``IMAGE_OFFSET .. IMAGE_OFFSET+35`` (row-major over the grid).
  The model continues with the solution, e.g. " Based on the following requirements, I look
  for the star. The star is red. Answer: red</s>"; :func:`vizkit.zoo.vlm_data.parse_answer`
  reads the answer after "Answer:".
- Training (:mod:`vizkit.zoo.train.tiny_vlm`, which also builds the tokenizer, the processor
  and the model and measures the answer accuracy): a supervised vision stage on the image
  tokens, then teacher forcing of the solutions with the tower frozen.
- The decoder's attention over the image tokens per answer: scenario 5,
  :func:`vizkit.scenarios.vlm_attention_video.explain_answer_attention`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import VizkitError
from . import vlm_data
from .common import Bundle, Entry, missing_checkpoint, register, zoo_dir

NAME = "tiny_vlm"
SEED = 4
IMAGE_SIZE = vlm_data.IMAGE_SIZE
PATCH_SIZE = 8
GRID = (IMAGE_SIZE // PATCH_SIZE, IMAGE_SIZE // PATCH_SIZE)
NUM_IMAGE_TOKENS = GRID[0] * GRID[1]
# measured over rendered training scenes (rounded)
IMAGE_MEAN = [0.513, 0.493, 0.486]
IMAGE_STD = [0.174, 0.155, 0.170]
IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", IMAGE_TOKEN]
PROMPT_FORMAT = "USER: <image>\n{problem} ASSISTANT:"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT:"
    "{% if message['content'] is string %} {{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %} {{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

MODEL = dict(
    vision_hidden=128,
    vision_layers=3,
    vision_heads=4,
    vision_mlp=256,
    text_hidden=160,
    text_layers=3,
    text_heads=4,
    text_mlp=448,
    vision_feature_layer=-1,
    max_positions=160,
)
MAX_NEW_TOKENS = 32


# --------------------------------------------------------------------------------------
# prompt and preprocessing
# --------------------------------------------------------------------------------------
def prompt(problem: str) -> str:
    """The prompt for ``problem`` (before the processor expands ``<image>``)."""
    return PROMPT_FORMAT.format(problem=problem)


def preprocess(image: Any) -> torch.Tensor:
    """An RGB image (uint8 HxWx3, grey HxW, or PIL) -> normalised ``pixel_values`` ``[3, 48, 48]``
    (the processor's math: resize shortest edge + centre crop when the size differs, /255, mean/std)."""
    if hasattr(image, "convert"):
        image = np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, -1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise VizkitError(f"tiny_vlm expects an RGB image HxWx3, got shape {a.shape}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8) if a.max() <= 1.0 else np.clip(a, 0, 255).astype(np.uint8)
    if a.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
        from PIL import Image

        h, w = a.shape[:2]
        s = IMAGE_SIZE / min(h, w)
        im = Image.fromarray(a).resize((max(IMAGE_SIZE, round(w * s)), max(IMAGE_SIZE, round(h * s))), Image.BICUBIC)
        a = np.asarray(im)
        top, left = (a.shape[0] - IMAGE_SIZE) // 2, (a.shape[1] - IMAGE_SIZE) // 2
        a = a[top : top + IMAGE_SIZE, left : left + IMAGE_SIZE]
    return to_pixels(a[None])[0]


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 ``[N, 48, 48, 3]`` -> normalised float ``[N, 3, 48, 48]``."""
    x = torch.as_tensor(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(IMAGE_MEAN)[:, None, None]) / torch.tensor(IMAGE_STD)[:, None, None]


# --------------------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------------------
class Encoder:
    """Token ids for prompts and solutions, built from the tokenizer (no processor call per
    item: identical ids to ``processor(text=prompt(q), images=...)``, checked in the tests)."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id

    def prompt_ids(self, problem: str) -> list[int]:
        head, tail = PROMPT_FORMAT.split(IMAGE_TOKEN)
        ids = self.tok(head)["input_ids"]  # with <s>
        return (
            ids
            + [self.image_id] * NUM_IMAGE_TOKENS
            + self.tok(tail.format(problem=problem), add_special_tokens=False)["input_ids"]
        )

    def solution_ids(self, solution: str) -> list[int]:
        return self.tok(" " + solution, add_special_tokens=False)["input_ids"] + [self.eos]

    def batch(self, prompts: Sequence[list[int]], solutions: Sequence[list[int]] | None = None, left: bool = False):
        """Padded ``input_ids``, ``attention_mask`` and (with solutions) ``labels`` (-100 on the prompt)."""
        seqs = [p + (solutions[i] if solutions else []) for i, p in enumerate(prompts)]
        n = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), n), self.pad, dtype=torch.long)
        att = torch.zeros((len(seqs), n), dtype=torch.long)
        labels = torch.full((len(seqs), n), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            sl = slice(n - len(s), n) if left else slice(0, len(s))
            ids[i, sl] = torch.tensor(s)
            att[i, sl] = 1
            if solutions:
                lab = torch.tensor([-100] * len(prompts[i]) + solutions[i])
                labels[i, sl] = lab
        return ids, att, labels


def image_offset(tokenizer) -> int:
    """Position of the first image token in an (unpadded) prompt."""
    return Encoder(tokenizer).prompt_ids("x").index(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))


# --------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------
@torch.no_grad()
def answer(
    model: nn.Module,
    tokenizer,
    images: np.ndarray | Sequence[np.ndarray],
    problems: Sequence[str],
    max_new_tokens: int = 32,
    batch_size: int = 64,
) -> list[str]:
    """Greedy solutions (decoded text) for ``problems`` about ``images`` (uint8 HxWx3 each)."""
    ids = generate_ids(model, tokenizer, images, problems, max_new_tokens, batch_size)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def decoder_layer_names(model) -> list[str]:
    """``model.language_model.layers.<i>``: the Llama decoder blocks (for ``vizkit.attention``)."""
    return [f"model.language_model.layers.{i}" for i in range(model.config.text_config.num_hidden_layers)]


@torch.no_grad()
def generate_ids(
    model,
    tokenizer,
    images: Sequence[np.ndarray],
    problems: Sequence[str],
    max_new_tokens: int = 32,
    batch_size: int = 64,
) -> list[list[int]]:
    """Greedy solution token ids per question (up to and including ``</s>``), in batches."""
    enc = Encoder(tokenizer)
    out: list[list[int]] = []
    for i in range(0, len(problems), batch_size):
        px = torch.stack([preprocess(im) for im in images[i : i + batch_size]])
        ids, att, _ = enc.batch([enc.prompt_ids(p) for p in problems[i : i + batch_size]], left=True)
        gen = model.generate(
            input_ids=ids,
            attention_mask=att,
            pixel_values=px,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=enc.eos,
            pad_token_id=enc.pad,
        )[:, ids.shape[1] :]
        out += [row[: row.index(enc.eos) + 1] if enc.eos in row else row for row in gen.tolist()]
    return out


def answer_position(tokenizer, solution_ids: Sequence[int]) -> int | None:
    """Index (within the solution) of the first token of the answer after the last "Answer:"."""
    answer_id = tokenizer.convert_tokens_to_ids("ĠAnswer")
    colon = tokenizer.convert_tokens_to_ids(":")
    for k in range(len(solution_ids) - 2, 0, -1):
        if solution_ids[k - 1] == answer_id and solution_ids[k] == colon:
            return k + 1 if k + 1 < len(solution_ids) else None
    return None


# --------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------
def load(root: Path | None = None, device: str | torch.device = "cpu") -> Bundle:
    """The trained VLM (eval mode) with its processor and tokenizer, from ``data/zoo/tiny_vlm/``
    (or ``root/tiny_vlm``)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    folder = zoo_dir(NAME, Path(root) if root is not None else None)
    if not (folder / "model.safetensors").is_file() or not (folder / "config.json").is_file():
        raise missing_checkpoint(NAME, folder)
    model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32, local_files_only=True)
    model.to(device).eval()
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    meta = dict(model.config.to_dict().get("vizkit", {}))
    meta["config"] = {k: v for k, v in model.config.to_dict().items() if k != "vizkit"}
    return Bundle(
        name=NAME, model=model, preprocess=preprocess, tokenizer=processor.tokenizer, processor=processor, meta=meta
    )


register(
    Entry(
        name=NAME,
        description="LLaVA (CLIP 48px/8 + Llama, from scratch) answering questions about shape scenes with reasoning",
        load=load,
        dataset=vlm_data.dataset,
        build="vizkit.zoo.train.tiny_vlm:build",
        # at 1 thread the decoder needs its attention supervision (zoo.train.tiny_vlm) to reach the bar
        build_threads=1,
        build_seconds=1024.0,
    )
)
