"""One sample through a VLM: the prompt from the processor's chat template, ``generate`` (or a
teacher-forced solution) with the decoder's attention rows streamed by
:class:`vizkit.hooks.RowAttentionCapture`, and the family's position map: a
:class:`vizkit.positions.Trace`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...errors import CaptureError, InputError, ParameterError
from ...hooks import RowAttentionCapture
from ...positions import IMAGE, Trace
from . import VLM

__all__ = [
    "build_inputs",
    "extend_inputs",
    "token_pieces",
    "resolve_layers",
    "check_head",
    "trace_sample",
    "find_start",
    "attention_implementations",
    "to_pil",
    "DEFAULT_START_PHRASE",
]

#: where the video starts in the answer by default (seed 004's reasoning opens with it)
DEFAULT_START_PHRASE = "Based on the following requirements"


def to_pil(image: Any):
    """An RGB PIL image from a PIL image or an ``[H, W, 3]`` array (uint8, or floats in [0, 1])."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(a).convert("RGB")


def build_inputs(vlm: VLM, problem: str, images: Sequence[Any]) -> tuple[dict[str, Any], str]:
    """The processor's inputs (batch of one) and the prompt text for ``problem`` about ``images``.

    The prompt is the processor's chat template (one image part per image, then the text, then
    the generation prompt; the family's :meth:`~.base.VLMFamily.processor_kwargs` make saved settings
    take effect); a processor without a template is refused. ``inputs["original_sizes"]``
    ``[n_images, 2]`` holds each image's (height, width) before the processor (adapters that
    re-derive a tiling from it read it; the model never sees it).
    """
    proc = vlm.processor
    if not getattr(proc, "chat_template", None):
        raise InputError(
            f"the processor of {vlm.path!r} has no chat template: save the model's processor with its "
            f"chat_template (processor.save_pretrained) so the prompt is laid out as the model expects"
        )
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": problem}]
    prompt = proc.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    pil = [to_pil(im) for im in images]
    out = proc(
        text=[prompt], images=pil or None, return_tensors="pt", **(vlm.family.processor_kwargs(proc) if pil else {})
    )
    inputs = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
    inputs["original_sizes"] = torch.tensor([[im.height, im.width] for im in pil], dtype=torch.long).reshape(-1, 2)
    return inputs, prompt


def token_pieces(tokenizer: Any, ids: Sequence[int], context: int = 8) -> list[str]:
    """The text each token adds: ``decode(ids[i-c : i+1])`` minus ``decode(ids[i-c : i])`` with
    ``c = context`` tokens of context (a multi-byte character split over several byte-level
    tokens lands on the token that completes it)."""
    ids = [int(i) for i in ids]

    def dec(part: list[int]) -> str:
        return tokenizer.decode(part, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    pieces = []
    for i in range(len(ids)):
        lo = max(0, i - context)
        # an incomplete character at the end decodes as U+FFFD: dropped from ``cur`` (its text comes with
        # the token that completes it); ``before`` keeps it, so that a character cut by the left edge of
        # the context (U+FFFD at the start of both) is not taken for new text
        before, cur = (dec(ids[lo:i]) if i > lo else ""), dec(ids[lo : i + 1]).rstrip("\ufffd")
        if not cur.startswith(before):
            n = 0
            while n < min(len(before), len(cur)) and before[n] == cur[n]:
                n += 1
            before = before[:n]
        pieces.append(cur[len(before) :])
    return pieces


def resolve_layers(num_layers: int, layer_idx: int | None = None, layers: Sequence[int] | None = None) -> list[int]:
    """The decoder layers to capture: ``layers`` if given, else ``[layer_idx]``; ``layer_idx``
    None is the seed's 20, or the last layer of a model with 20 or fewer. Negative indices
    count from the end; out of range raises :class:`ParameterError` saying how many there are."""
    if layers:
        asked = [int(i) for i in layers]
    elif layer_idx is None:
        asked = [20 if num_layers > 20 else num_layers - 1]
    else:
        asked = [int(layer_idx)]
    out: list[int] = []
    for i in asked:
        if not -num_layers <= i < num_layers:
            raise ParameterError(
                f"layer index {i} is out of range: the model has {num_layers} decoder layers (0..{num_layers - 1})"
            )
        if i % num_layers not in out:
            out.append(i % num_layers)
    return out


def check_head(head: Any, num_heads: int) -> Any:
    """``mean`` / ``max`` or a head index in range (a numeric string is an index; negative counts from the end)."""
    if isinstance(head, str) and head in ("mean", "max"):
        return head
    try:
        h = int(head)
    except (TypeError, ValueError):
        raise ParameterError(f"heads={head!r}: use mean, max or a head index") from None
    if not -num_heads <= h < num_heads:
        raise ParameterError(f"head {h} is out of range: the decoder has {num_heads} heads (0..{num_heads - 1})")
    return h % num_heads


def attention_implementations(model: Any) -> list[str]:
    """The attention implementation each decoder layer's config names now."""
    from . import family_for

    layers = family_for(model.config.model_type).decoder_layers(model)
    return [blk.self_attn.config._attn_implementation for blk in layers]


def extend_inputs(inputs: dict[str, torch.Tensor], tokens: Sequence[int]) -> dict[str, torch.Tensor]:
    """The processor's ``inputs`` (batch of one, prompt of ``T`` tokens) followed by ``tokens``:
    every per-token input ``[1, T]`` grows -- ``input_ids`` by the tokens, ``attention_mask`` by
    ones, the others (token-type ids) by zeros; image inputs are unchanged."""
    ids = inputs["input_ids"]
    T = int(ids.shape[1])
    extra = torch.tensor([list(tokens)], device=ids.device)  # each input's own dtype below
    full = dict(inputs)
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[1] == T:
            pad = (
                extra
                if key == "input_ids"
                else (torch.ones_like(extra) if key == "attention_mask" else torch.zeros_like(extra))
            )
            full[key] = torch.cat([value, pad.to(value.dtype)], 1)
    return full


def _eos_ids(vlm: VLM) -> set[int]:
    eos = vlm.model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    if vlm.tokenizer.eos_token_id is not None:
        ids.add(vlm.tokenizer.eos_token_id)
    return ids


def trace_sample(
    vlm: VLM,
    problem: str,
    images: Sequence[Any],
    layers: Sequence[int],
    *,
    mode: str = "generate",
    solution: str | None = None,
    max_new_tokens: int = 64,
    heads: Any = "all",
    start_phrase: str | None = DEFAULT_START_PHRASE,
) -> Trace:
    """Generate (``mode="generate"``: greedy, KV cache) or teacher-force ``solution``
    (``mode="solution"``: one forward) with :class:`RowAttentionCapture` on the decoder
    ``layers``, place every position with the family's adapter, locate ``start_phrase``.

    ``Trace.rows[layer]`` is ``[N, H', K]`` (``N`` answer tokens; ``H'`` all heads or one)."""
    if mode not in ("generate", "solution"):
        raise ParameterError(f"mode={mode!r}: choose generate or solution")
    if max_new_tokens < 1:
        raise ParameterError(f"max_new_tokens must be positive, got {max_new_tokens}")
    model, tok = vlm.model, vlm.tokenizer
    inputs, prompt = build_inputs(vlm, problem, images)
    sizes = inputs.pop("original_sizes")
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    L = int(inputs["input_ids"].shape[1])
    pmap = vlm.position_map({**inputs, "original_sizes": sizes}, prompt_len=L)  # bad layouts fail before generate
    blocks = vlm.decoder_layers
    named = [(f"layer{i}", blocks[i]) for i in layers]
    if mode == "generate":
        with RowAttentionCapture(named, rows="last", heads=heads) as cap:
            out = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
            )
        gen = out[0, L:].tolist()
        eos = _eos_ids(vlm)
        gen = gen[: next((i for i, t in enumerate(gen) if t in eos), len(gen))]
    else:
        if solution is None:
            raise InputError("mode='solution' needs the sample's solution text")
        sep = "" if prompt[-1:].isspace() else " "
        gen = tok(sep + solution, add_special_tokens=False)["input_ids"]
        if not gen:
            raise InputError("the solution text is empty")
        full = extend_inputs(inputs, gen)
        with RowAttentionCapture(named, rows="all", heads=heads) as cap:
            model(**full, use_cache=False)
    if not gen:
        raise InputError(f"the model generated no text (it ended at once) for problem {problem!r}")
    ids = np.asarray(inputs["input_ids"][0].tolist() + gen, dtype=np.int64)
    rows = {}
    for i, (name, _) in zip(layers, named):
        pos = cap.positions(name).numpy()
        keep = (pos >= L - 1) & (pos < L - 1 + len(gen))
        if not np.array_equal(pos[keep], np.arange(L - 1, L - 1 + len(gen))):
            # a query's position is read as (keys - 1): a cache that keeps only a window of keys misplaces it
            raise CaptureError(
                f"layer {i} attended over fewer keys than there are positions before the query (its KV cache "
                f"keeps a sliding window, and the sequence of {len(ids)} tokens outgrew it), so its rows cannot "
                "be placed: use mode='solution' (one forward, where the mask holds the window), a layer with "
                "full attention, or fewer new tokens"
            )
        rows[i] = cap.rows(name).numpy()[keep][..., : len(ids) - 1]  # [len(gen), H', len(ids) - 1]
    pmap = pmap.extend(len(ids))
    pieces = token_pieces(tok, ids)
    pieces = ["" if pmap.kind[t] == IMAGE else piece for t, piece in enumerate(pieces)]
    trace = Trace(
        ids,
        L,
        pieces,
        pmap,
        rows,
        "".join(pieces[L:]),
        mode,
        cap.heads,
        list(images),
        problem=problem,
        special=np.isin(ids, list(tok.all_special_ids)),
    )
    trace.start = find_start(trace, start_phrase)
    return trace


# applied here, not as a @decorator line: mutmut (`make mutation`) does not mutate decorated functions
trace_sample = torch.no_grad()(trace_sample)


def find_start(trace: Trace, start_phrase: str | None) -> int:
    """Index of the answer token where ``start_phrase`` begins (0 for None / "")."""
    if not start_phrase:
        return 0
    at = trace.text.find(start_phrase)
    if at < 0:
        words = " ".join(trace.text.split()[:12])
        what = "generated" if trace.mode == "generate" else "solution"
        raise InputError(
            f"start phrase {start_phrase!r} is not in the {what} text; its first words are: "
            f"{words!r} (pass another --start_phrase, or an empty one to start at the first token)"
        )
    end = 0
    for j, piece in enumerate(trace.pieces[trace.prompt_len :]):
        end += len(piece)
        if end > at:
            return j
    return 0
