"""Training recipe of the zoo's ``tiny_vlm`` (the model's prompt format, preprocessing,
generation and loading live in :mod:`vizkit.zoo.tiny_vlm`): the tokenizer, processor and
model construction, the two training stages, the answer accuracy measured at build time,
and :func:`build` (what ``python -m vizkit.zoo build tiny_vlm`` runs).

Two stages, deterministic for the seed:

1. **Vision stage.** The CLIP tower and the projector learn, on the 36 image tokens the
   decoder will read, what a question about the scene needs: per patch, the colour and the
   shape of the object there; per object, its colour and shape from its tokens averaged with
   the patch coverage as weights (what an attention head that selects the object reads);
   the object count from all tokens; and an *attention probe*: one learned query per colour,
   per shape and per colour x shape pair attends over the tokens (one softmax head, as in the
   decoder) and must say whether such an object is there and, when it is the only one, its
   other attribute. Linear heads, thrown away afterwards.
2. **Decoder stage.** The tower is frozen, so its output is computed once per training image
   and cached; the projector and the Llama decoder learn the solutions by teacher forcing
   (cross-entropy on the solution tokens and ``</s>`` only), the cached features projected
   and scattered into the image-token positions exactly as ``LlavaModel`` does (checked
   against the model's own forward in the tests). With ``attn_sup`` > 0 an auxiliary loss
   supervises one attention head (head 0 of decoder layer ``attn_sup_layer``): from every
   solution position of a question about one object, its attention over the 36 image tokens
   should follow that object's patch coverage (:func:`attention_supervision_loss`). Without
   it, a decoder trained at 1 thread often answers a question about "the red object" with
   another object's shape; with it, binding a colour to its object is learnt early.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...state import seed_everything
from .. import shapes, tiny_vlm, vlm_data
from ..common import Sample, zoo_dir
from ..tiny_vlm import (
    CHAT_TEMPLATE,
    IMAGE_MEAN,
    IMAGE_SIZE,
    IMAGE_STD,
    IMAGE_TOKEN,
    MAX_NEW_TOKENS,
    MODEL,
    NUM_IMAGE_TOKENS,
    PATCH_SIZE,
    SPECIAL_TOKENS,
    answer,
)

MAX_OBJECTS = 3
N_COLOURS, N_SHAPES = len(shapes.COLORS), len(shapes.SHAPES)

TRAIN = dict(
    n_train=24000,
    batch_size=48,
    lr=1.5e-3,
    weight_decay=0.02,
    warmup=0.05,
    decoder_steps=1000,
    pre_steps=3000,
    pre_batch_size=64,
    pre_lr=2e-3,
    attn_probe=1.0,
    attn_sup=1.0,
    attn_sup_layer=1,
    n_eval=400,
    max_new_tokens=32,
)
#: the sample benchmark shipped in ``data/zoo/tiny_vlm/benchmark/``: test items 5000..5019
BENCHMARK_START, BENCHMARK_SIZE = 5000, 20
QUICK = dict(TRAIN, n_train=192, batch_size=32, decoder_steps=6, pre_steps=5, n_eval=32)


def _log(message: str) -> None:
    print(message, flush=True)


def _schedule(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 0 (a multiplier of the peak learning rate)."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


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
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        model_max_length=MODEL["max_positions"],
    )
    fast.padding_side = "left"  # for batched generation
    return fast


def build_processor(tokenizer):
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": IMAGE_SIZE},
        do_center_crop=True,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
        do_convert_rgb=True,
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


def build_model(tokenizer, opts: dict[str, Any] = MODEL):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        num_channels=3,
        hidden_size=opts["vision_hidden"],
        intermediate_size=opts["vision_mlp"],
        num_hidden_layers=opts["vision_layers"],
        num_attention_heads=opts["vision_heads"],
        projection_dim=opts["vision_hidden"],
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=opts["text_hidden"],
        intermediate_size=opts["text_mlp"],
        num_hidden_layers=opts["text_layers"],
        num_attention_heads=opts["text_heads"],
        num_key_value_heads=opts["text_heads"],
        max_position_embeddings=opts["max_positions"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=opts["vision_feature_layer"],
        image_seq_length=NUM_IMAGE_TOKENS,
        projector_hidden_act="gelu",
    )
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    model = LlavaForConditionalGeneration(config)
    gc = model.generation_config
    gc.bos_token_id, gc.eos_token_id, gc.pad_token_id = (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    gc.do_sample, gc.max_new_tokens = False, MAX_NEW_TOKENS
    return model


# --------------------------------------------------------------------------------------
# evaluation at build time
# --------------------------------------------------------------------------------------
def evaluate(model: nn.Module, tokenizer, samples: Sequence[Sample], max_new_tokens: int = 32) -> dict[str, Any]:
    """Exact-match answer accuracy (overall and per question kind) of greedy generation."""
    model.eval()
    texts = answer(model, tokenizer, [s.image for s in samples], [s.question for s in samples], max_new_tokens)
    hits = [vlm_data.parse_answer(t) == vlm_data.normalize_answer(s.answer) for t, s in zip(texts, samples)]
    per_kind: dict[str, list[bool]] = {}
    for s, h in zip(samples, hits):
        per_kind.setdefault(s.meta.get("kind", "?"), []).append(h)
    exact = [t.strip() == s.meta.get("solution") for t, s in zip(texts, samples)]
    return {
        "accuracy": float(np.mean(hits)),
        "n": len(samples),
        "solution_exact_match": float(np.mean(exact)),
        "accuracy_per_kind": {k: float(np.mean(v)) for k, v in sorted(per_kind.items())},
        "texts": texts,
    }


# --------------------------------------------------------------------------------------
# vision stage
# --------------------------------------------------------------------------------------
def vision_targets(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Vision-stage targets of a scene with ``n = 36`` patches.

    Returns ``labels`` int64 ``[2n + 2*MAX_OBJECTS + 1]``: per patch the colour (0 = none,
    1..6) and the shape (0 = none, 1..4) of the object covering most of it (at least a fifth);
    per object slot its colour and shape (-100 for an empty slot); the object count - 1. And
    ``cover`` float32 ``[MAX_OBJECTS, n]``: the fraction of each patch covered by each object.
    """
    gh, gw = tiny_vlm.GRID
    n = gh * gw
    colour, shape = np.zeros(n, np.int64), np.zeros(n, np.int64)
    best = np.full(n, 0.2)
    obj = np.full((2, MAX_OBJECTS), -100, np.int64)
    cover = np.zeros((MAX_OBJECTS, n), np.float32)
    for k, (m, o) in enumerate(zip(sample.masks, sample.meta["objects"])):
        cov = m.reshape(gh, m.shape[0] // gh, gw, m.shape[1] // gw).mean((1, 3)).reshape(-1)
        win = cov >= best
        best = np.where(win, cov, best)
        c, s = list(shapes.COLORS).index(o["color"]), shapes.SHAPES.index(o["shape"])
        colour[win], shape[win] = c + 1, s + 1
        obj[:, k] = (c, s)
        cover[k] = cov
    count = np.array([len(sample.meta["objects"]) - 1], np.int64)
    return np.concatenate([colour, shape, obj.reshape(-1), count]), cover


class AttentionProbe(nn.Module):
    """One softmax attention head with a learned query per colour, per shape and per colour x
    shape pair over image tokens ``[B, 36, D]``; each pooled value is read by one linear layer
    into (colour logits 6, shape logits 4, present logits 2)."""

    def __init__(self, dim: int):
        super().__init__()
        # unit-variance queries (as nn.Embedding): attention is selective from the start
        self.queries = nn.Parameter(torch.randn(N_COLOURS + N_SHAPES + N_COLOURS * N_SHAPES, dim))
        self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, N_COLOURS + N_SHAPES + 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, N, D]`` -> logits ``[B, Q, 12]``."""
        k, v = self.k(tokens), self.v(tokens)
        att = torch.softmax(torch.einsum("qd,bnd->bqn", self.queries, k) / k.shape[-1] ** 0.5, -1)
        return self.out(att @ v)

    @staticmethod
    def targets(colours: torch.Tensor, shapes_: torch.Tensor) -> dict[str, torch.Tensor]:
        """From per-object ``colours``/``shapes_`` ``[B, K]`` (-100 = no object): for each
        colour the shape of its only object (-100 unless exactly one) and whether any is there;
        the same per shape; per pair whether it is there."""
        ar_c, ar_s = torch.arange(N_COLOURS), torch.arange(N_SHAPES)
        out = {}
        for name, key, other, ar in (("colour", colours, shapes_, ar_c), ("shape", shapes_, colours, ar_s)):
            match = key[:, None, :] == ar[None, :, None]  # [B, Q, K]
            n = match.sum(-1)
            out[f"{name}_other"] = torch.where(n == 1, (other[:, None, :] * match).sum(-1), torch.full_like(n, -100))
            out[f"{name}_present"] = (n > 0).long()
        pc, ps = ar_c.repeat_interleave(N_SHAPES), ar_s.repeat(N_COLOURS)
        out["pair_present"] = (
            ((colours[:, None, :] == pc[None, :, None]) & (shapes_[:, None, :] == ps[None, :, None])).any(-1).long()
        )
        return out

    @staticmethod
    def split(logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """The probe's logits ``[B, Q, 12]`` by the :meth:`targets` they answer: ``colour_other``
        ``[B, 6, 4]`` (shape logits of each colour's query), ``shape_other`` ``[B, 4, 6]``, and the
        ``*_present`` ``[B, q, 2]`` of the colour, shape and pair queries."""
        nc, ns = N_COLOURS, N_SHAPES
        by_colour, by_shape, by_pair = logits[:, :nc], logits[:, nc : nc + ns], logits[:, nc + ns :]
        present = slice(nc + ns, nc + ns + 2)
        return {
            "colour_other": by_colour[..., nc : nc + ns],
            "colour_present": by_colour[..., present],
            "shape_other": by_shape[..., :nc],
            "shape_present": by_shape[..., present],
            "pair_present": by_pair[..., present],
        }

    def loss(self, logits: torch.Tensor, colours: torch.Tensor, shapes_: torch.Tensor) -> torch.Tensor:
        t, parts = self.targets(colours, shapes_), self.split(logits)
        ce = nn.functional.cross_entropy
        return sum(
            ce(parts[k].reshape(-1, parts[k].shape[-1]), t[k].reshape(-1))
            for k in ("colour_other", "colour_present", "shape_other", "shape_present", "pair_present")
        )

    def accuracy(self, logits: torch.Tensor, colours: torch.Tensor, shapes_: torch.Tensor) -> tuple[float, float]:
        """Argmax accuracy of the shape of each colour's only object and of the colour of each
        shape's only object (the lookups the decoder has to learn); NaN when the batch has none."""
        t, parts = self.targets(colours, shapes_), self.split(logits)
        out = []
        for k in ("colour_other", "shape_other"):
            valid = t[k] >= 0
            out.append(float((parts[k].argmax(-1) == t[k])[valid].float().mean()))
        return out[0], out[1]


def pretrain_vision(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    cover: np.ndarray,
    opts: dict[str, Any],
    gen: torch.Generator,
    log: Callable[[str], None],
) -> None:
    """Stage 1 (see the module docstring) on uint8 ``images [N, 48, 48, 3]`` with the
    :func:`vision_targets` ``labels [N, L]`` and ``cover [N, MAX_OBJECTS, 36]``."""
    nc, ns, n = N_COLOURS, N_SHAPES, tiny_vlm.NUM_IMAGE_TOKENS
    hidden = model.config.text_config.hidden_size
    heads = nn.ModuleDict(
        {
            "patch": nn.Linear(hidden, nc + 1 + ns + 1),
            "obj": nn.Linear(hidden, nc + ns),
            "count": nn.Linear(hidden, MAX_OBJECTS),
            "probe": AttentionProbe(hidden),
        }
    )
    params = list(model.model.vision_tower.parameters()) + list(model.model.multi_modal_projector.parameters())
    opt = torch.optim.AdamW([*params, *heads.parameters()], lr=opts["pre_lr"], weight_decay=0.01)
    steps, bs = opts["pre_steps"], opts["pre_batch_size"]
    y_all, cover_all = torch.as_tensor(labels), torch.as_tensor(cover)
    ce = nn.functional.cross_entropy
    model.train()
    t0, ema = time.perf_counter(), None
    for step in range(steps):
        idx = torch.randint(0, len(images), (bs,), generator=gen)
        for g in opt.param_groups:
            g["lr"] = opts["pre_lr"] * _schedule(step, steps, max(1, steps // 20))
        y, cov = y_all[idx], cover_all[idx]
        feats = torch.stack(list(model.model.get_image_features(tiny_vlm.to_pixels(images[idx.numpy()])).pooler_output))
        p_col, p_sh = heads["patch"](feats).split([nc + 1, ns + 1], -1)
        pooled = (cov / cov.sum(-1, keepdim=True).clamp_min(1e-6)) @ feats  # [B, K, D]
        o_col, o_sh = heads["obj"](pooled).split([nc, ns], -1)
        o_y = y[:, 2 * n : 2 * n + 2 * MAX_OBJECTS].view(bs, 2, MAX_OBJECTS)
        loss = (
            ce(p_col.reshape(-1, nc + 1), y[:, :n].reshape(-1))
            + ce(p_sh.reshape(-1, ns + 1), y[:, n : 2 * n].reshape(-1))
            + ce(o_col.reshape(-1, nc), o_y[:, 0].reshape(-1))
            + ce(o_sh.reshape(-1, ns), o_y[:, 1].reshape(-1))
            + ce(heads["count"](feats.mean(1)), y[:, -1])
        )
        probe_logits = heads["probe"](feats) if opts.get("attn_probe") else None
        if probe_logits is not None:
            loss = loss + opts["attn_probe"] * heads["probe"].loss(probe_logits, o_y[:, 0], o_y[:, 1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            with torch.no_grad():
                valid = o_y[:, 0] >= 0
                acc = [
                    float((o_col.argmax(-1) == o_y[:, 0])[valid].float().mean()),
                    float((o_sh.argmax(-1) == o_y[:, 1])[valid].float().mean()),
                ]
                probe = ""
                if probe_logits is not None:
                    probe = ", probe shape-of-colour/colour-of-shape {:.3f}/{:.3f}".format(
                        *heads["probe"].accuracy(probe_logits, o_y[:, 0], o_y[:, 1])
                    )
            log(
                f"[tiny_vlm] vision stage step {step + 1}/{steps} loss {ema:.4f} object colour/shape acc "
                f"{acc[0]:.3f}/{acc[1]:.3f}{probe} ({time.perf_counter() - t0:.0f} s)"
            )


# --------------------------------------------------------------------------------------
# decoder stage
# --------------------------------------------------------------------------------------
@torch.no_grad()
def tower_features(model, pixel_values: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The CLIP tower's output that ``LlavaModel.get_image_features`` feeds the projector:
    hidden states of ``vision_feature_layer`` without the CLS token, ``[N, 36, D_vision]``."""
    cfg = model.config
    if not isinstance(cfg.vision_feature_layer, int) or cfg.vision_feature_select_strategy != "default":
        raise NotImplementedError("tower_features expects one vision_feature_layer and the 'default' strategy")
    out = []
    for i in range(0, len(pixel_values), batch_size):
        hs = model.model.vision_tower(pixel_values[i : i + batch_size], output_hidden_states=True).hidden_states
        out.append(hs[cfg.vision_feature_layer][:, 1:])
    return torch.cat(out)


def embeds_from_features(model, input_ids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """``inputs_embeds [B, T, D]``: token embeddings with the projected tower ``features
    [B, 36, D_vision]`` scattered into the ``<image>`` positions, as ``LlavaModel.forward`` does."""
    embeds = model.get_input_embeddings()(input_ids)
    image = model.model.multi_modal_projector(features).to(embeds.dtype)
    mask = (input_ids == model.config.image_token_id)[..., None].expand_as(embeds)
    return embeds.masked_scatter(mask, image.reshape(-1, image.shape[-1]))


def target_attention(cover: np.ndarray, target: int | None) -> np.ndarray:
    """The attention a head should pay to the image tokens for a question about object
    ``target``: its patch coverage ``cover[target]`` (``cover`` is ``[MAX_OBJECTS, n]``)
    normalised to sum 1; all zeros (no supervision) for a question about no single object."""
    out = np.zeros(cover.shape[1], np.float32)
    if target is not None and cover[target].sum() > 0:
        out = (cover[target] / cover[target].sum()).astype(np.float32)
    return out


def attention_supervision_loss(
    attn: torch.Tensor, target: torch.Tensor, positions: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """Cross-entropy of one head's attention against a target distribution over image tokens.

    ``attn`` ``[B, T, K]``: the head's attention from each of ``T`` positions to the ``K`` image
    tokens; ``target`` ``[B, K]``: rows summing to 1 (all zeros = no target); ``positions``
    ``[B, T]`` bool: where to supervise. Returns the mean over the supervised ``(b, t)`` of
    ``-sum_k target[b, k] * log(attn[b, t, k] + eps)``, and 0 (still in the graph) when none is.
    """
    sel = positions & (target.sum(-1) > 0)[:, None]
    nll = -(target[:, None, :] * torch.log(attn + eps)).sum(-1)
    return nll[sel].mean() if bool(sel.any()) else attn.sum() * 0.0


def train(opts: dict[str, Any], log: Callable[[str], None] = print):
    """Train a fresh model; returns ``(model, tokenizer, processor)``."""
    model, tokenizer, processor, data, gen = train_vision(opts, log)
    train_decoder(model, data, opts, gen, log)
    return model, tokenizer, processor


def train_vision(opts: dict[str, Any], log: Callable[[str], None] = print):
    """Render the training questions, build the model and run the vision stage; returns
    ``(model, tokenizer, processor, data, gen)`` for :func:`train_decoder`."""
    gen = seed_everything(tiny_vlm.SEED)
    tokenizer = build_tokenizer(vlm_data.corpus(template=tiny_vlm.PROMPT_FORMAT + " {solution}"))
    processor = build_processor(tokenizer)
    model = build_model(tokenizer)
    enc = tiny_vlm.Encoder(tokenizer)
    n = opts["n_train"]
    t0 = time.perf_counter()
    images = np.empty((n, tiny_vlm.IMAGE_SIZE, tiny_vlm.IMAGE_SIZE, 3), np.uint8)
    labels = np.empty((n, 2 * tiny_vlm.NUM_IMAGE_TOKENS + 2 * MAX_OBJECTS + 1), np.int64)
    cover = np.empty((n, MAX_OBJECTS, tiny_vlm.NUM_IMAGE_TOKENS), np.float32)
    attn_target = np.zeros((n, tiny_vlm.NUM_IMAGE_TOKENS), np.float32)
    prompts, sols = [], []
    for i in range(n):
        s = vlm_data.item("train", i, masks=True)
        images[i] = s.image
        labels[i], cover[i] = vision_targets(s)
        attn_target[i] = target_attention(cover[i], s.meta["target"])
        prompts.append(enc.prompt_ids(s.question))
        sols.append(enc.solution_ids(s.meta["solution"]))
    log(
        f"[tiny_vlm] {n} training questions rendered in {time.perf_counter() - t0:.1f} s; vocab {len(tokenizer)}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters"
    )
    if opts["pre_steps"]:
        pretrain_vision(model, images, labels, cover, opts, gen, log)
    data = {"images": images, "prompts": prompts, "solutions": sols, "encoder": enc, "attn_target": attn_target}
    return model, tokenizer, processor, data, gen


def train_decoder(
    model, data: dict[str, Any], opts: dict[str, Any], gen: torch.Generator, log: Callable[[str], None] = print
) -> None:
    """The decoder stage on the frozen tower (see the module docstring); leaves ``model`` in eval mode."""
    images, prompts, sols, enc = data["images"], data["prompts"], data["solutions"], data["encoder"]
    n = len(images)
    tower = model.model.vision_tower
    tower.requires_grad_(False)
    tower.eval()
    feats = tower_features(model, tiny_vlm.to_pixels(images))
    named = [(nm, p) for nm, p in model.named_parameters() if p.requires_grad]
    decay = [p for nm, p in named if p.ndim >= 2 and "embed" not in nm]
    no_decay = [p for nm, p in named if not (p.ndim >= 2 and "embed" not in nm)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": opts["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=opts["lr"],
        betas=(0.9, 0.98),
    )
    bs, total = opts["batch_size"], opts["decoder_steps"]
    warmup = max(1, int(opts["warmup"] * total))
    order = np.concatenate([torch.randperm(n, generator=gen).numpy() for _ in range(total * bs // n + 1)])
    sup, layer = float(opts.get("attn_sup", 0.0)), int(opts.get("attn_sup_layer", 1))
    targets = torch.as_tensor(data["attn_target"]) if sup else None
    # the batches are right-padded, so the image tokens sit at off .. off + k - 1 in every row
    off, k = tiny_vlm.image_offset(enc.tok), tiny_vlm.NUM_IMAGE_TOKENS
    impl = model.config._attn_implementation
    if sup:
        model.set_attn_implementation("eager")  # sdpa returns no attention probabilities
    model.model.language_model.train()
    model.model.multi_modal_projector.train()
    t0, ema, ema_aux = time.perf_counter(), None, None
    try:
        for step in range(total):
            idx = order[step * bs : (step + 1) * bs]
            rows = torch.as_tensor(idx)
            ids, att, lab = enc.batch([prompts[i] for i in idx], [sols[i] for i in idx])
            for g in opt.param_groups:
                g["lr"] = opts["lr"] * _schedule(step, total, warmup)
            embeds = embeds_from_features(model, ids, feats[rows])
            out = model(inputs_embeds=embeds, attention_mask=att, labels=lab, output_attentions=bool(sup))
            loss = out.loss
            if sup:
                aux = attention_supervision_loss(
                    out.attentions[layer][:, 0, :, off : off + k], targets[rows], lab != -100
                )  # solution positions
                loss = loss + sup * aux
                ema_aux = aux.item() if ema_aux is None else 0.95 * ema_aux + 0.05 * aux.item()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for _, p in named], 1.0)
            opt.step()
            ema = out.loss.item() if ema is None else 0.95 * ema + 0.05 * out.loss.item()
            if (step + 1) % 50 == 0 or step + 1 == total:
                extra = f", attention {ema_aux:.3f}" if sup else ""
                log(
                    f"[tiny_vlm] decoder step {step + 1}/{total} loss {ema:.4f}{extra} "
                    f"({time.perf_counter() - t0:.0f} s)"
                )
    finally:
        if sup:
            model.set_attn_implementation(impl)
        model.requires_grad_(True)
        model.eval()


# --------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------
def _save(model, processor, folder: Path, extra: dict[str, Any]) -> None:
    """``save_pretrained`` into a temp folder next to ``folder``, then swap it in."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    old = folder.with_name(f".{folder.name}.old")
    try:
        model.config.vizkit = extra
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        vlm_data.write_benchmark(
            vlm_data.dataset("test", n=BENCHMARK_SIZE, start=BENCHMARK_START, masks=False),
            tmp / "benchmark" / "sample.json",
        )
        os.chmod(tmp, 0o755)
        if old.exists():
            shutil.rmtree(old)
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def build(out_root: Path | None = None, quick: bool = False, log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Train deterministically, measure on held-out test scenes, save to ``out_root/tiny_vlm``."""
    opts = dict(QUICK if quick else TRAIN)
    start = time.perf_counter()
    model, tokenizer, processor = train(opts, log=log)
    train_time = time.perf_counter() - start
    test = vlm_data.dataset("test", n=opts["n_eval"], masks=False)
    res = evaluate(model, tokenizer, test, opts["max_new_tokens"])
    metrics = {
        "accuracy": res["accuracy"],
        "accuracy_per_kind": res["accuracy_per_kind"],
        "solution_exact_match": res["solution_exact_match"],
        "n_eval": res["n"],
        "eval_split": "test",
        "train_time_s": round(train_time, 1),
        "build_time_s": round(time.perf_counter() - start, 1),
        "threads": torch.get_num_threads(),
    }
    t = tiny_vlm
    extra = {
        "name": t.NAME,
        "quick": quick,
        "train": opts,
        "model": t.MODEL,
        "metrics": metrics,
        "prompt_format": t.PROMPT_FORMAT,
        "image_token": t.IMAGE_TOKEN,
        "image_token_id": tokenizer.convert_tokens_to_ids(t.IMAGE_TOKEN),
        "num_image_tokens": t.NUM_IMAGE_TOKENS,
        "grid": list(t.GRID),
        "image_offset": t.image_offset(tokenizer),
        "image_size": t.IMAGE_SIZE,
        "patch_size": t.PATCH_SIZE,
        "image_mean": t.IMAGE_MEAN,
        "image_std": t.IMAGE_STD,
        "seed": t.SEED,
        "torch": torch.__version__,
    }
    folder = zoo_dir(t.NAME, Path(out_root) if out_root is not None else None)
    _save(model, processor, folder, extra)
    log(
        f"[tiny_vlm] accuracy {metrics['accuracy']:.3f} on {res['n']} test questions "
        f"{metrics['accuracy_per_kind']}; saved to {folder} ({metrics['build_time_s']:.0f} s)"
    )
    return metrics
