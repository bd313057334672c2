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
- Training (:mod:`vizkit.zoo.tiny_vlm_train`): a supervised vision stage on the image tokens,
  then teacher forcing of the solutions with the tower frozen.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import VizkitError
from . import vlm_data
from .common import Bundle, Entry, Sample, missing_checkpoint, register, zoo_dir

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
    vision_hidden=128, vision_layers=3, vision_heads=4, vision_mlp=256,
    text_hidden=160, text_layers=3, text_heads=4, text_mlp=448,
    vision_feature_layer=-1, max_positions=160,
)
MAX_NEW_TOKENS = 32


# --------------------------------------------------------------------------------------
# tokenizer, processor, model
# --------------------------------------------------------------------------------------
def build_tokenizer(texts: Sequence[str], vocab_size: int = 512):
    """A byte-level BPE trained on ``texts``, as a ``PreTrainedTokenizerFast`` (prepends ``<s>``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   extra_special_tokens={"image_token": IMAGE_TOKEN}, model_max_length=MODEL["max_positions"])
    fast.padding_side = "left"  # for batched generation
    return fast


def build_processor(tokenizer):
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": IMAGE_SIZE}, do_center_crop=True,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=IMAGE_MEAN, image_std=IMAGE_STD, do_convert_rgb=True)
    return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH_SIZE,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1,
                          chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN)


def build_model(tokenizer, opts: dict[str, Any] = MODEL):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, num_channels=3,
                              hidden_size=opts["vision_hidden"], intermediate_size=opts["vision_mlp"],
                              num_hidden_layers=opts["vision_layers"], num_attention_heads=opts["vision_heads"],
                              projection_dim=opts["vision_hidden"])
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=opts["text_hidden"], intermediate_size=opts["text_mlp"],
                       num_hidden_layers=opts["text_layers"], num_attention_heads=opts["text_heads"],
                       num_key_value_heads=opts["text_heads"], max_position_embeddings=opts["max_positions"],
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                         vision_feature_select_strategy="default", vision_feature_layer=opts["vision_feature_layer"],
                         image_seq_length=NUM_IMAGE_TOKENS, projector_hidden_act="gelu")
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    model = LlavaForConditionalGeneration(config)
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    gc.do_sample, gc.max_new_tokens = False, MAX_NEW_TOKENS
    return model


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
        a = a[top:top + IMAGE_SIZE, left:left + IMAGE_SIZE]
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
        return ids + [self.image_id] * NUM_IMAGE_TOKENS + self.tok(tail.format(problem=problem), add_special_tokens=False)["input_ids"]

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
# generation and evaluation
# --------------------------------------------------------------------------------------
@torch.no_grad()
def answer(model: nn.Module, tokenizer, images: np.ndarray | Sequence[np.ndarray], problems: Sequence[str],
           max_new_tokens: int = 32, batch_size: int = 64) -> list[str]:
    """Greedy solutions (decoded text) for ``problems`` about ``images`` (uint8 HxWx3 each)."""
    ids = generate_ids(model, tokenizer, images, problems, max_new_tokens, batch_size)
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def evaluate(model: nn.Module, tokenizer, samples: Sequence[Sample], max_new_tokens: int = 32) -> dict[str, Any]:
    """Exact-match answer accuracy (overall and per question kind) of greedy generation."""
    model.eval()
    texts = answer(model, tokenizer, [s.image for s in samples], [s.question for s in samples], max_new_tokens)
    hits = [vlm_data.parse_answer(t) == vlm_data.normalize_answer(s.answer) for t, s in zip(texts, samples)]
    per_kind: dict[str, list[bool]] = {}
    for s, h in zip(samples, hits):
        per_kind.setdefault(s.meta.get("kind", "?"), []).append(h)
    exact = [t.strip() == s.meta.get("solution") for t, s in zip(texts, samples)]
    return {"accuracy": float(np.mean(hits)), "n": len(samples),
            "solution_exact_match": float(np.mean(exact)),
            "accuracy_per_kind": {k: float(np.mean(v)) for k, v in sorted(per_kind.items())},
            "texts": texts}


def decoder_layer_names(model) -> list[str]:
    """``model.language_model.layers.<i>``: the Llama decoder blocks (for ``vizkit.attention``)."""
    return [f"model.language_model.layers.{i}" for i in range(model.config.text_config.num_hidden_layers)]


@torch.no_grad()
def generate_ids(model, tokenizer, images: Sequence[np.ndarray], problems: Sequence[str],
                 max_new_tokens: int = 32, batch_size: int = 64) -> list[list[int]]:
    """Greedy solution token ids per question (up to and including ``</s>``), in batches."""
    enc = Encoder(tokenizer)
    out: list[list[int]] = []
    for i in range(0, len(problems), batch_size):
        px = torch.stack([preprocess(im) for im in images[i:i + batch_size]])
        ids, att, _ = enc.batch([enc.prompt_ids(p) for p in problems[i:i + batch_size]], left=True)
        gen = model.generate(input_ids=ids, attention_mask=att, pixel_values=px, max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=enc.eos, pad_token_id=enc.pad)[:, ids.shape[1]:]
        out += [row[:row.index(enc.eos) + 1] if enc.eos in row else row for row in gen.tolist()]
    return out


def answer_position(tokenizer, solution_ids: Sequence[int]) -> int | None:
    """Index (within the solution) of the first token of the answer after the last "Answer:"."""
    answer_id = tokenizer.convert_tokens_to_ids("ĠAnswer")
    colon = tokenizer.convert_tokens_to_ids(":")
    for k in range(len(solution_ids) - 2, 0, -1):
        if solution_ids[k - 1] == answer_id and solution_ids[k] == colon:
            return k + 1 if k + 1 < len(solution_ids) else None
    return None


def explain_answer_attention(model, tokenizer, samples: Sequence[Sample], layers: Sequence[str] | None = None,
                             query: str = "predict", max_new_tokens: int = 32) -> dict[str, Any]:
    """The decoder's attention from the answer over the image tokens, as heatmaps.

    Generates each solution greedily, then runs ONE forward pass on (prompt + solution) with
    ``vizkit.attention`` hooked on the decoder ``layers`` (default: all), with the model's
    attention implementation left as it is. Sequences are right-padded, so the 36 image
    tokens sit at ``image_offset .. +35`` in every row. The query row is the token that
    predicts the answer (``query="predict"``: the ":" of "Answer:") or the answer token itself
    (``query="answer"``). Its attention over the image tokens, averaged over heads and layers,
    is reshaped to the 6x6 grid and upsampled bilinearly to 48x48.

    Measured on the shipped model (96 test questions): this map's peak falls on the
    asked-about object for 10 % of questions from the ":" and 35 % from the answer token (a
    random pixel: 5 %). The model looks the object up earlier, at the reasoning token ("The
    star is" -> "red"), and the answer after "Answer:" copies it from the text, so attention
    per generated token is the faithful view.

    Returns ``maps`` (layer -> ``[B, heads, T, T]``), ``input_ids``, ``attention_mask``,
    ``query_positions`` ``[B]``, ``grid_maps`` ``[B, 6, 6]`` and ``heatmaps`` ``[B, 48, 48]``.
    """
    import vizkit

    enc = Encoder(tokenizer)
    layers = list(layers) if layers is not None else decoder_layer_names(model)
    images = [s.image for s in samples]
    sols = generate_ids(model, tokenizer, images, [s.question for s in samples], max_new_tokens)
    prompts = [enc.prompt_ids(s.question) for s in samples]
    ids, att, _ = enc.batch(prompts, sols)
    qpos = []
    for p, sol in zip(prompts, sols):
        k = answer_position(tokenizer, sol)
        if k is None:
            k = len(sol) - 1  # no "Answer:" generated: fall back to the last token
        qpos.append(len(p) + k - (1 if query == "predict" else 0))
    px = torch.stack([preprocess(im) for im in images])
    model.eval()
    attn = vizkit.attention(model, px, layers=layers,
                            forward=lambda x: model(input_ids=ids, attention_mask=att, pixel_values=x))
    off = image_offset(tokenizer)
    rows = torch.stack([attn.maps[n] for n in layers]).mean((0, 2))  # [B, T, T] (layers, heads averaged)
    q = torch.tensor(qpos)
    over_image = rows[torch.arange(len(q)), q, off:off + NUM_IMAGE_TOKENS]
    grid_maps = over_image.reshape(-1, *GRID)
    heat = torch.nn.functional.interpolate(grid_maps[:, None], size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                                           align_corners=False)[:, 0]
    return {"maps": attn.maps, "input_ids": ids, "attention_mask": att, "query_positions": q,
            "grid_maps": grid_maps, "heatmaps": heat, "solutions": tokenizer.batch_decode(sols, skip_special_tokens=True)}


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
    return Bundle(name=NAME, model=model, preprocess=preprocess, tokenizer=processor.tokenizer,
                  processor=processor, meta=meta)


def build(out_root: Path | None = None, quick: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train deterministically (see :mod:`vizkit.zoo.tiny_vlm_train`), measure on held-out test
    scenes, save to ``out_root/tiny_vlm``; returns the metrics."""
    from . import tiny_vlm_train

    return tiny_vlm_train.build(out_root, quick, log=(lambda m: print(m, flush=True)) if log is print else log)


register(Entry(
    name=NAME,
    description="LLaVA (CLIP 48px/8 + Llama, from scratch) answering questions about shape scenes with reasoning",
    load=load, dataset=vlm_data.dataset, build=build,
    # at 1 thread the decoder needs its attention supervision (tiny_vlm_train) to reach the bar
    build_threads=1, build_seconds=1024.0))
