"""Scenario 5: per-token attention of a vision-language model over text and image patches,
as a video (seed 004).

A user of a Qwen2-VL / LLaVA model watches, token by token, where the decoder looks while
it writes its answer: over the earlier text and over the image patches, side by side in an
mp4 that starts at a phrase such as "Based on the following requirements".

Pieces (all in this module):

- :class:`RowCapture`: during ``model.generate`` (KV cache on) records, for the decoder
  layers asked for only, the attention row of each NEW query (the token being read, over all
  earlier tokens) -- heads kept, averaged or selected. Only those layers are switched, for
  the call, to an attention function that computes the eager ``softmax(q k^T / sqrt(d) + mask)``
  for the new rows and then runs the layer's own kernel (sdpa / eager) for the output, so the
  generated text is the same as without capture and no ``[layers, heads, T, T]`` tensor is
  ever stored. The layers' attention implementation is restored on exit, also on exceptions.
- :func:`position_map`: what each position is -- text, image *k* patch ``(r, c)`` or
  generated -- for LLaVA (image-token runs, the vision tower's patch grid) and Qwen2-VL /
  Qwen2.5-VL (``<|vision_start|> ... <|vision_end|>`` spans, ``image_grid_thw`` and the
  spatial merge: grid ``(h / m, w / m)``; several images; non-square grids).
- :func:`trace_sample`: prompt -> generated (or teacher-forced solution) tokens with the
  captured rows, as a :class:`Trace`.
- :class:`FrameRenderer` / :func:`write_attention_video`: PIL/numpy frames (text panel: each
  earlier token's background red -> green by the current token's attention, the current
  token blue; image panel: each image's patch grid red -> green), an mp4 through
  imageio-ffmpeg (PNG frames when ffmpeg is unavailable), a contact sheet.
- :class:`AttentionVisualizer`: the seed's API (``load_sample_data``,
  ``create_attention_visualization_for_sample``); :func:`run_video` (the CLI ``vizkit
  vlm-video``), :func:`write_report`, :func:`ground_truth_table` (tiny_vlm: how often the
  answer token's attention peaks on the asked-about object, per layer x head) and
  :class:`VLMAttentionExplorer` (token slider, layer and head selectors).

:func:`explain_answer_attention` (one teacher-forced forward with :func:`vizkit.attention`
hooked on the decoder layers) gives every layer's full ``[B, heads, T, T]`` maps for a batch of
zoo samples; :func:`ground_truth_table` builds on it.

Example::

    from vizkit.scenarios.vlm_attention_video import AttentionVisualizer
    viz = AttentionVisualizer("path/to/Qwen2-VL-folder", max_image_num=2)   # None: the zoo's tiny_vlm
    sample, images = viz.load_sample_data("test.json", "images/", sample_idx=0)
    mp4 = viz.create_attention_visualization_for_sample(sample, images, layer_idx=20,
                                                        start_phrase="Based on the following requirements")

or ``vizkit vlm-video --model_path DIR --benchmark_json FILE --image_dir DIR --layers 10 20``.
"""
from __future__ import annotations

import copy
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import CaptureError, InputError, ParameterError
from ..explain import attention
from ..zoo.common import Sample
from ..zoo.tiny_vlm import (GRID, IMAGE_SIZE, NUM_IMAGE_TOKENS, Encoder, answer_position, decoder_layer_names,
                            generate_ids, image_offset, preprocess)

__all__ = ["explain_answer_attention", "RowCapture", "PositionMap", "position_map", "VLM", "load_vlm", "Trace",
           "trace_sample", "FrameRenderer", "write_attention_video", "contact_sheet", "AttentionVisualizer",
           "VLMAttentionVisualizer", "VLMAttentionExplorer", "run_video", "write_report", "token_shares",
           "ground_truth_table", "save_random_vlm", "resolve_layers", "SUPPORTED_ARCHITECTURES"]

#: config.json ``model_type`` -> the transformers class that loads it
SUPPORTED_ARCHITECTURES = {
    "llava": "LlavaForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
}
DEFAULT_START_PHRASE = "Based on the following requirements"
TEXT, IMAGE, GENERATED = 0, 1, 2
KIND_NAMES = ("text", "image", "generated")


# ======================================================================================
# capture: the new query rows of chosen decoder layers, during generate
# ======================================================================================
_IMPL = "vizkit_row_capture"


def _row_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                   **kwargs):
    """The attention function of a captured layer: records the new rows, then runs the layer's own kernel."""
    capture, layer, original = module._vizkit_row_capture
    capture._record(layer, module, query, key, attention_mask, scaling)
    return original(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


def _register_impl() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(_IMPL, _row_attention)


def decoder_layers(model) -> Any:
    """The decoder's ``nn.ModuleList`` of blocks (LLaVA, Qwen2-VL, Qwen2.5-VL in transformers 5)."""
    for path in ("model.language_model.layers", "language_model.model.layers", "model.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if isinstance(obj, torch.nn.ModuleList) and len(obj) and hasattr(obj[0], "self_attn"):
            return obj
    raise CaptureError(f"{type(model).__name__} has no decoder ModuleList of blocks with .self_attn "
                       f"(looked for model.language_model.layers, language_model.model.layers, model.layers)")


def _check_heads(heads: Any, num_heads: int) -> Any:
    if heads in ("all", "mean", "max"):
        return heads
    try:
        h = int(heads)
    except (TypeError, ValueError):
        raise ParameterError(f"heads={heads!r}: use 'mean', 'max', 'all' or a head index") from None
    if not -num_heads <= h < num_heads:
        raise ParameterError(f"head {h} is out of range: the decoder has {num_heads} heads (0..{num_heads - 1})")
    return h % num_heads


class RowCapture:
    """Record the attention rows of the new queries of decoder ``layers`` during forward calls.

    ``rows="last"`` keeps, per forward call, the row of the last query (in ``generate`` with a KV
    cache: the prefill's last prompt position, then each decoding step's single token);
    ``rows="all"`` keeps every query row of each call (one teacher-forced forward).
    ``heads``: ``"all"`` (keep ``[heads]``), ``"mean"``, ``"max"`` or a head index.

    Inside the ``with`` block, each captured layer's attention module gets a copy of its config
    whose ``_attn_implementation`` is this capture's function: it computes the kept rows as
    eager attention does (``softmax(q k^T * scaling + mask)`` in float32, keys repeated for
    grouped-query attention, causal when the mask is implicit), then calls the layer's original
    kernel, so the outputs are unchanged. Other layers are untouched. On exit (also after an
    exception) the original configs are put back.

    After the block: :meth:`rows` (layer -> ``[N, H', K]`` float32, zero-padded on the keys)
    and :meth:`positions` (the ``N`` query positions).
    """

    def __init__(self, model, layers: Sequence[int], heads: Any = "all", rows: str = "last"):
        self.model = model
        self.blocks = decoder_layers(model)
        n = len(self.blocks)
        self.layers = []
        for i in layers:
            if not -n <= int(i) < n:
                raise ParameterError(f"layer {int(i)} is out of range: the model has {n} decoder layers (0..{n - 1})")
            self.layers.append(int(i) % n)
        num_heads = int(getattr(self.blocks[0].self_attn.config, "num_attention_heads"))
        self.heads = _check_heads(heads, num_heads)
        if rows not in ("last", "all"):
            raise ParameterError(f"rows={rows!r}: use 'last' or 'all'")
        self.keep = rows
        self._rows: dict[int, list[tuple[np.ndarray, torch.Tensor]]] = {}
        self._saved: list[tuple[Any, Any]] = []

    # -- recording ---------------------------------------------------------------------
    def _record(self, layer: int, module, query, key, attention_mask, scaling) -> None:
        q_len, k_len = query.shape[2], key.shape[2]
        sel = slice(q_len - 1, q_len) if self.keep == "last" else slice(0, q_len)
        q = query[:, :, sel].float()
        k = key.float()
        groups = q.shape[1] // k.shape[1]
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
        scale = scaling if scaling is not None else 1.0 / math.sqrt(q.shape[-1])
        scores = (q @ k.transpose(-2, -1)) * scale  # [B, H, r, K]
        pos = torch.arange(k_len - q_len, k_len, device=q.device)[sel]
        if attention_mask is not None and attention_mask.ndim == 4:
            m = attention_mask[:, :, sel, :k_len]
            scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m.float()
        elif q_len > 1:  # implicit causal mask (sdpa's is_causal)
            keys = torch.arange(k_len, device=q.device)
            scores = scores.masked_fill(keys[None, :] > pos[:, None], float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        if self.heads == "mean":
            probs = probs.mean(1, keepdim=True)
        elif self.heads == "max":
            probs = probs.amax(1, keepdim=True)
        elif self.heads != "all":
            probs = probs[:, self.heads:self.heads + 1]
        self._rows.setdefault(layer, []).append((pos.cpu().numpy(), probs.detach().cpu()))

    # -- results -----------------------------------------------------------------------
    def positions(self) -> np.ndarray:
        """Query position of each kept row (the same for every layer)."""
        first = self._rows.get(self.layers[0], [])
        return np.concatenate([p for p, _ in first]) if first else np.zeros(0, np.int64)

    def rows(self, layer: int, batch_index: int = 0) -> np.ndarray:
        """``[N, H', K]`` float32: the kept rows of ``layer`` (keys beyond a row's position are 0)."""
        chunks = self._rows.get(int(layer) % len(self.blocks), [])
        if not chunks:
            raise CaptureError(f"no attention was captured for decoder layer {layer}: did a forward run inside the "
                               f"capture?")
        k_max = max(t.shape[-1] for _, t in chunks)
        parts = [F.pad(t[batch_index], (0, k_max - t.shape[-1])).permute(1, 0, 2) for _, t in chunks]
        return torch.cat(parts).numpy().astype(np.float32)

    # -- context management ------------------------------------------------------------
    def __enter__(self) -> "RowCapture":
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        _register_impl()
        self._rows = {}
        try:
            for i in self.layers:
                attn = self.blocks[i].self_attn
                cfg = attn.config
                impl = cfg._attn_implementation or "eager"
                if impl == _IMPL:
                    raise CaptureError(f"decoder layer {i} is already being captured")
                eager = getattr(sys.modules[type(attn).__module__], "eager_attention_forward")
                original = ALL_ATTENTION_FUNCTIONS.get_interface(impl, eager)
                self._saved.append((attn, cfg))
                patched = copy.copy(cfg)
                patched._attn_implementation_internal = _IMPL
                attn.config = patched
                attn._vizkit_row_capture = (self, i, original)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        while self._saved:
            attn, cfg = self._saved.pop()
            attn.config = cfg
            if hasattr(attn, "_vizkit_row_capture"):
                del attn._vizkit_row_capture


def attention_implementations(model) -> list[str]:
    """The attention implementation each decoder layer uses now (to check it was restored)."""
    return [blk.self_attn.config._attn_implementation for blk in decoder_layers(model)]


# ======================================================================================
# position map
# ======================================================================================
@dataclass
class PositionMap:
    """What each position of a sequence is.

    ``kind[t]``: 0 text (system / question / template), 1 image patch, 2 generated (or the
    teacher-forced solution); ``image[t]`` the image index (-1 if not an image token),
    ``row[t]`` / ``col[t]`` the patch's cell in that image's grid (-1 otherwise);
    ``grids[k]`` = ``(rows, cols)`` of image ``k``; ``image_positions[k]`` its positions in
    row-major grid order; ``prompt_len`` the number of prompt positions.
    """

    kind: np.ndarray
    image: np.ndarray
    row: np.ndarray
    col: np.ndarray
    grids: list[tuple[int, int]]
    image_positions: list[np.ndarray]
    prompt_len: int

    def __len__(self) -> int:
        return len(self.kind)

    def label(self, t: int) -> str:
        k = int(self.kind[t])
        if k == IMAGE:
            return f"image {int(self.image[t])} ({int(self.row[t])}, {int(self.col[t])})"
        return KIND_NAMES[k]

    def extend(self, total: int) -> "PositionMap":
        """The map of the prompt followed by ``total - prompt_len`` generated positions."""
        n = total - len(self.kind)
        if n < 0:
            raise ValueError(f"cannot shrink a position map of {len(self.kind)} positions to {total}")
        pad = lambda a, v: np.concatenate([a, np.full(n, v, a.dtype)])  # noqa: E731
        return PositionMap(pad(self.kind, GENERATED), pad(self.image, -1), pad(self.row, -1), pad(self.col, -1),
                           list(self.grids), list(self.image_positions), self.prompt_len)

    def text_mask(self) -> np.ndarray:
        return self.kind == TEXT


def _cfg(config, name: str, default: Any = None) -> Any:
    for c in (config, getattr(config, "text_config", None)):
        if c is not None and getattr(c, name, None) is not None:
            return getattr(c, name)
    return default


def position_map(config, input_ids: Sequence[int] | torch.Tensor, image_grid_thw: Any = None,
                 prompt_len: int | None = None) -> PositionMap:
    """The :class:`PositionMap` of one prompt (``input_ids`` 1-D) for a LLaVA or Qwen2(.5)-VL ``config``.

    LLaVA: the image tokens (``config.image_token_id``) form runs; each image has
    ``rows x cols`` tokens where the grid is the vision tower's ``image_size / patch_size`` per
    side (one token fewer per side is never assumed: the count must divide the run). Qwen2-VL /
    Qwen2.5-VL: each ``<|vision_start|> ... <|vision_end|>`` span is one image; its grid is
    ``(h / m, w / m)`` from ``image_grid_thw[k] = (t, h, w)`` and ``m = spatial_merge_size``.
    Positions at or after ``prompt_len`` (default: the end) are generated.
    """
    ids = np.asarray(input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids, dtype=np.int64).reshape(-1)
    n = len(ids)
    prompt_len = n if prompt_len is None else int(prompt_len)
    kind = np.where(np.arange(n) < prompt_len, TEXT, GENERATED).astype(np.int8)
    image, row, col = (np.full(n, -1, np.int32) for _ in range(3))
    grids: list[tuple[int, int]] = []
    spans: list[np.ndarray] = []
    model_type = getattr(config, "model_type", "")
    image_id = _cfg(config, "image_token_id", _cfg(config, "image_token_index"))
    if image_id is None:
        raise InputError(f"config of type {model_type!r} names no image token id")
    prompt = ids[:prompt_len]
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        start_id, end_id = _cfg(config, "vision_start_token_id"), _cfg(config, "vision_end_token_id")
        merge = int(getattr(config.vision_config, "spatial_merge_size", 2))
        starts = np.flatnonzero(prompt == start_id)
        ends = np.flatnonzero(prompt == end_id)
        image_spans = []
        for s in starts:
            after = ends[ends > s]
            if not len(after):
                raise InputError(f"<|vision_start|> at position {int(s)} has no <|vision_end|>")
            inner = np.arange(s + 1, after[0])
            if len(inner) and np.all(prompt[inner] == image_id):
                image_spans.append(inner)
        thw = np.asarray(image_grid_thw.tolist() if hasattr(image_grid_thw, "tolist") else (image_grid_thw or []),
                         dtype=np.int64).reshape(-1, 3)
        if len(thw) != len(image_spans):
            raise InputError(f"the prompt has {len(image_spans)} image span(s) but image_grid_thw lists {len(thw)} "
                             f"image(s)")
        for (t, h, w), span in zip(thw, image_spans):
            g = (int(t) * int(h) // merge, int(w) // merge)
            if g[0] * g[1] != len(span):
                raise InputError(f"image grid t,h,w = {int(t)},{int(h)},{int(w)} with merge {merge} gives "
                                 f"{g[0] * g[1]} tokens, the span holds {len(span)}")
            grids.append(g)
            spans.append(span)
    else:
        vc = config.vision_config
        size = getattr(vc, "image_size", None)
        patch = getattr(vc, "patch_size", None)
        side = (int(size) // int(patch)) if size and patch else None
        where = np.flatnonzero(prompt == image_id)
        runs = np.split(where, np.flatnonzero(np.diff(where) != 1) + 1) if len(where) else []
        per = side * side if side else None
        for run in runs:
            if per is None or len(run) % per:
                # the run is one image of unknown (or non-grid) size: a square grid if possible, else a strip
                r = int(round(math.sqrt(len(run))))
                g = (r, r) if r * r == len(run) else (1, len(run))
                grids.append(g)
                spans.append(run)
                continue
            for j in range(0, len(run), per):
                grids.append((side, side))
                spans.append(run[j:j + per])
    for k, (g, span) in enumerate(zip(grids, spans)):
        kind[span] = IMAGE
        image[span] = k
        row[span] = np.arange(len(span)) // g[1]
        col[span] = np.arange(len(span)) % g[1]
    return PositionMap(kind, image, row, col, grids, spans, prompt_len)


# ======================================================================================
# models
# ======================================================================================
@dataclass
class VLM:
    """A loaded vision-language model: ``model`` (eval), ``processor``, ``tokenizer``, ``model_type``."""

    model: Any
    processor: Any
    tokenizer: Any
    model_type: str
    path: str
    name: str = ""

    @property
    def num_layers(self) -> int:
        return len(decoder_layers(self.model))

    @property
    def num_heads(self) -> int:
        return int(decoder_layers(self.model)[0].self_attn.config.num_attention_heads)


def load_vlm(model_name_or_path: str | Path | None = None, device: str = "cpu") -> VLM:
    """Load a VLM folder (``save_pretrained`` output) offline; None: the zoo's ``tiny_vlm``.

    Supported ``model_type``: llava, qwen2_vl, qwen2_5_vl (:data:`SUPPORTED_ARCHITECTURES`).
    """
    import transformers

    if model_name_or_path in (None, "", "tiny_vlm", "zoo:tiny_vlm"):
        from ..zoo.common import zoo_dir

        model_name_or_path = zoo_dir("tiny_vlm")
    path = Path(model_name_or_path)
    supported = ", ".join(f"{v} ({k})" for k, v in SUPPORTED_ARCHITECTURES.items())
    if not (path / "config.json").is_file():
        raise InputError(f"model folder {str(path)!r} has no config.json: give a local folder of a supported "
                         f"VLM ({supported})")
    try:
        raw = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path / 'config.json'} is not valid JSON: {err}") from None
    model_type = raw.get("model_type", "")
    if model_type not in SUPPORTED_ARCHITECTURES:
        arch = ", ".join(raw.get("architectures") or []) or "?"
        raise InputError(f"{str(path)!r} is a {model_type or 'unknown'!s} model ({arch}), not a supported VLM: "
                         f"supported are {supported}")
    cls = getattr(transformers, SUPPORTED_ARCHITECTURES[model_type])
    model = cls.from_pretrained(path, dtype=torch.float32, local_files_only=True).to(device).eval()
    processor = transformers.AutoProcessor.from_pretrained(path, local_files_only=True)
    return VLM(model, processor, processor.tokenizer, model_type, str(path), name=path.name)


def save_random_vlm(folder: str | Path, arch: str = "qwen2_vl", *, layers: int = 3, hidden: int = 64, heads: int = 4,
                    kv_heads: int = 2, vision_depth: int = 2, vision_hidden: int = 32, max_pixels: int = 112 * 112,
                    seed: int = 0) -> Path:
    """Save a random-weight LLaVA / Qwen2-VL / Qwen2.5-VL with its processor into ``folder``.

    For tests, benchmarks and demos, offline: the tokenizer is the zoo's ``tiny_vlm`` byte-level
    BPE (plus the Qwen vision special tokens), the image processors are built in-process.
    """
    import transformers as T

    from ..zoo.common import zoo_dir

    folder = Path(folder)
    tok = T.AutoTokenizer.from_pretrained(zoo_dir("tiny_vlm"), local_files_only=True)
    torch.manual_seed(seed)
    text = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv_heads, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
                pad_token_id=0)
    if arch == "llava":
        cfg = T.LlavaConfig(
            text_config=T.LlamaConfig(vocab_size=len(tok), **text),
            vision_config=T.CLIPVisionConfig(hidden_size=vision_hidden, intermediate_size=2 * vision_hidden,
                                             num_hidden_layers=vision_depth, num_attention_heads=2, image_size=48,
                                             patch_size=8),
            image_token_index=tok.convert_tokens_to_ids("<image>"), image_seq_length=36,
            vision_feature_layer=-1, vision_feature_select_strategy="default")
        model = T.LlavaForConditionalGeneration(cfg)
        ip = T.CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48})
        from ..zoo.tiny_vlm import CHAT_TEMPLATE

        proc = T.LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                                num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)
    elif arch in ("qwen2_vl", "qwen2_5_vl"):
        tok.add_special_tokens({"additional_special_tokens": ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                                                              "<|video_pad|>"]})
        tok.image_token = "<|image_pad|>"
        ids = tok.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"])
        half = hidden // heads // 2
        section = [half - 2 * (half // 3), half // 3, half // 3]
        text.update(vocab_size=len(tok), rope_parameters={"rope_type": "default", "mrope_section": section,
                                                          "rope_theta": 10000.0})
        special = dict(image_token_id=ids[2], video_token_id=ids[3], vision_start_token_id=ids[0],
                       vision_end_token_id=ids[1])
        if arch == "qwen2_vl":
            vision = dict(depth=vision_depth, embed_dim=vision_hidden, hidden_size=hidden, num_heads=2, mlp_ratio=2,
                          patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_chans=3)
            cfg = T.Qwen2VLConfig(text_config=text, vision_config=vision, **special)
            model = T.Qwen2VLForConditionalGeneration(cfg)
        else:
            vision = dict(depth=vision_depth, hidden_size=vision_hidden, out_hidden_size=hidden, num_heads=2,
                          intermediate_size=2 * vision_hidden, patch_size=14, spatial_merge_size=2,
                          temporal_patch_size=2, in_channels=3, window_size=56, fullatt_block_indexes=[vision_depth - 1])
            cfg = T.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special)
            model = T.Qwen2_5_VLForConditionalGeneration(cfg)
        template = ("{% for m in messages %}{% if m['role'] == 'user' %}USER: {% if m['content'] is string %}"
                    "{{ m['content'] }}{% else %}{% for p in m['content'] %}{% if p['type'] == 'image' %}"
                    "<|vision_start|><|image_pad|><|vision_end|>{% elif p['type'] == 'text' %}{{ p['text'] }}{% endif %}"
                    "{% endfor %}{% endif %} {% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
        kw = dict(min_pixels=28 * 28, max_pixels=max_pixels, patch_size=14, merge_size=2, temporal_patch_size=2)
        ip = T.Qwen2VLImageProcessor(**kw)
        proc_cls = T.Qwen2VLProcessor if arch == "qwen2_vl" else T.Qwen2_5_VLProcessor
        proc = proc_cls(image_processor=ip, tokenizer=tok, video_processor=T.Qwen2VLVideoProcessor(**kw),
                        chat_template=template)
    else:
        raise ParameterError(f"arch={arch!r}: choose llava, qwen2_vl or qwen2_5_vl")
    model.generation_config.bos_token_id, model.generation_config.eos_token_id = 1, 2
    model.generation_config.pad_token_id = 0
    model.eval().save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def build_inputs(vlm: VLM, problem: str, images: Sequence[Any]) -> tuple[dict[str, torch.Tensor], str]:
    """The processor's inputs (batch of one) and the prompt text for ``problem`` about ``images``.

    The prompt comes from the processor's chat template (one image part per image, then the
    text, then the generation prompt).
    """
    proc = vlm.processor
    content = [{"type": "image"} for _ in images] + [{"type": "text", "text": problem}]
    if getattr(proc, "chat_template", None):
        prompt = proc.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    elif vlm.model_type == "llava":
        prompt = "USER: " + "<image>\n" * len(images) + problem + " ASSISTANT:"
    else:
        prompt = "USER: " + "<|vision_start|><|image_pad|><|vision_end|>" * len(images) + problem + " ASSISTANT:"
    pil = [_to_pil(im) for im in images]
    inputs = proc(text=[prompt], images=pil or None, return_tensors="pt")
    return {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}, prompt


def _to_pil(image: Any):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    a = np.asarray(image)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(a).convert("RGB")


def token_pieces(tokenizer, ids: Sequence[int], context: int = 8) -> list[str]:
    """The text each token adds: ``decode(ids[i-c : i+1])`` minus ``decode(ids[i-c : i])`` with
    ``c = context`` tokens of context (a multi-byte character split over several byte-level
    tokens lands on the token that completes it)."""
    ids = [int(i) for i in ids]
    pieces = []
    for i in range(len(ids)):
        lo = max(0, i - context)
        before = tokenizer.decode(ids[lo:i], skip_special_tokens=False, clean_up_tokenization_spaces=False) if i > lo else ""
        cur = tokenizer.decode(ids[lo:i + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        before, cur = before.rstrip("\ufffd"), cur.rstrip("\ufffd")
        pieces.append(cur[len(before):] if cur.startswith(before) else cur[len(_common_prefix(before, cur)):])
    return pieces


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


@dataclass
class Trace:
    """One sample's tokens and captured attention rows.

    ``input_ids`` the full sequence (prompt + answer); ``prompt_len``; ``pieces`` the text of
    every position (special tokens as themselves, image tokens as ``""``); ``pmap`` its
    :class:`PositionMap`; ``rows[layer]`` ``[N, H', K]``: row ``j`` is the attention of the query at
    position ``prompt_len - 1 + j`` -- the step that produced answer token ``j`` -- over
    positions ``0 .. prompt_len - 1 + j`` (zeros beyond); ``text`` the answer text;
    ``start`` the index of the answer token where the video starts (the start phrase);
    ``heads`` what ``H'`` holds (``"all"``: every head).
    """

    input_ids: np.ndarray
    prompt_len: int
    pieces: list[str]
    pmap: PositionMap
    rows: dict[int, np.ndarray]
    text: str
    mode: str
    heads: Any
    images: list[Any]
    problem: str = ""
    start: int = 0
    special: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    notes: list[str] = field(default_factory=list)

    @property
    def num_answer_tokens(self) -> int:
        return len(self.input_ids) - self.prompt_len

    @property
    def frame_tokens(self) -> range:
        """Answer-token indices shown as frames: from the start phrase to the end."""
        return range(self.start, self.num_answer_tokens)

    def head_rows(self, layer: int, head: Any = "mean") -> np.ndarray:
        """``[N, K]``: the rows of ``layer`` fused over heads (``mean`` / ``max``) or of one head."""
        r = self.rows[layer]
        if head == "mean":
            return r.mean(1)
        if head == "max":
            return r.max(1)
        if self.heads != "all":
            return r[:, 0]
        return r[:, int(head)]


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
    out = []
    for i in asked:
        if not -num_layers <= i < num_layers:
            raise ParameterError(f"layer index {i} is out of range: the model has {num_layers} decoder layers "
                                 f"(0..{num_layers - 1})")
        if i % num_layers not in out:
            out.append(i % num_layers)
    return out


@torch.no_grad()
def trace_sample(vlm: VLM, problem: str, images: Sequence[Any], layers: Sequence[int], *, mode: str = "generate",
                 solution: str | None = None, max_new_tokens: int = 64, heads: Any = "all",
                 start_phrase: str | None = DEFAULT_START_PHRASE) -> Trace:
    """Generate (``mode="generate"``, greedy, KV cache) or teacher-force ``solution``
    (``mode="solution"``) with :class:`RowCapture` on ``layers``; locate ``start_phrase``."""
    if mode not in ("generate", "solution"):
        raise ParameterError(f"mode={mode!r}: choose generate or solution")
    if max_new_tokens < 1:
        raise ParameterError(f"max_new_tokens must be positive, got {max_new_tokens}")
    model, tok = vlm.model, vlm.tokenizer
    inputs, prompt = build_inputs(vlm, problem, images)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    L = int(inputs["input_ids"].shape[1])
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    if tok.eos_token_id is not None:
        eos_ids.add(tok.eos_token_id)
    if mode == "generate":
        with RowCapture(model, layers, heads=heads, rows="last") as cap:
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0)
        gen = out[0, L:].tolist()
        cut = next((i for i, t in enumerate(gen) if t in eos_ids), len(gen))
        gen = gen[:cut]
    else:
        if solution is None:
            raise InputError("mode='solution' needs the sample's solution text")
        sep = "" if prompt[-1:].isspace() else " "
        gen = tok(sep + solution, add_special_tokens=False)["input_ids"]
        if not gen:
            raise InputError("the solution text is empty")
        full = dict(inputs)
        extra = torch.tensor([gen], device=model.device)
        full["input_ids"] = torch.cat([inputs["input_ids"], extra], 1)
        for key in ("attention_mask",):
            if key in full:
                full[key] = torch.cat([full[key], torch.ones_like(extra)], 1)
        if "mm_token_type_ids" in full:
            full["mm_token_type_ids"] = torch.cat([full["mm_token_type_ids"], torch.zeros_like(extra)], 1)
        with RowCapture(model, layers, heads=heads, rows="all") as cap:
            model(**full, use_cache=False)
    if not gen:
        raise InputError(f"the model generated no text (it ended at once) for problem {problem!r}")
    positions = cap.positions()
    keep = (positions >= L - 1) & (positions < L - 1 + len(gen))
    ids = np.asarray(inputs["input_ids"][0].tolist() + gen, dtype=np.int64)
    rows = {i: cap.rows(i)[keep][..., :len(ids) - 1] for i in cap.layers}
    pmap = position_map(model.config, ids[:L], inputs.get("image_grid_thw"), prompt_len=L).extend(len(ids))
    special = np.isin(ids, list(tok.all_special_ids))
    pieces = token_pieces(tok, ids)
    pieces = ["" if pmap.kind[t] == IMAGE else piece for t, piece in enumerate(pieces)]
    text = "".join(pieces[L:])
    trace = Trace(ids, L, pieces, pmap, rows, text, mode, cap.heads, list(images),
                  problem=problem, special=special)
    trace.start = find_start(trace, start_phrase)
    return trace


def find_start(trace: Trace, start_phrase: str | None) -> int:
    """Index of the answer token where ``start_phrase`` begins (0 for None / "")."""
    if not start_phrase:
        return 0
    at = trace.text.find(start_phrase)
    if at < 0:
        words = " ".join(trace.text.split()[:12])
        what = "generated" if trace.mode == "generate" else "solution"
        raise InputError(f"start phrase {start_phrase!r} is not in the {what} text; its first words are: "
                         f"{words!r} (pass another --start_phrase, or an empty one to start at the first token)")
    end = 0
    for j, piece in enumerate(trace.pieces[trace.prompt_len:]):
        end += len(piece)
        if end > at:
            return j
    return 0
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

    Measured on the shipped model (96 test questions, ``tests/zoo/test_tiny_vlm.py``): this
    map's peak falls on the asked-about object for 84.4 % of questions from the ":" and
    92.7 % from the answer token (a random pixel: 4.9 %). The decoder was trained with one
    head supervised to look at that object (:mod:`vizkit.zoo.train.tiny_vlm`); before that
    supervision the same measurement gave 10 % and 35 %: the model looked the object up
    earlier, at the reasoning token ("The star is" -> "red"), and the answer after "Answer:"
    copied it from the text, so attention per generated token is the faithful view.

    Returns ``maps`` (layer -> ``[B, heads, T, T]``), ``input_ids``, ``attention_mask``,
    ``query_positions`` ``[B]``, ``grid_maps`` ``[B, 6, 6]``, ``heatmaps`` ``[B, 48, 48]`` and
    the decoded ``solutions``.
    """
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
    attn = attention(model, px, layers=layers,
                     forward=lambda x: model(input_ids=ids, attention_mask=att, pixel_values=x))
    off = image_offset(tokenizer)
    rows = torch.stack([attn.maps[n] for n in layers]).mean((0, 2))  # [B, T, T] (layers, heads averaged)
    q = torch.tensor(qpos)
    over_image = rows[torch.arange(len(q)), q, off:off + NUM_IMAGE_TOKENS]
    grid_maps = over_image.reshape(-1, *GRID)
    heat = F.interpolate(grid_maps[:, None], size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)[:, 0]
    return {"maps": attn.maps, "input_ids": ids, "attention_mask": att, "query_positions": q,
            "grid_maps": grid_maps, "heatmaps": heat, "solutions": tokenizer.batch_decode(sols, skip_special_tokens=True)}


# ======================================================================================
# rendering: frames composed with PIL / numpy (no matplotlib per frame)
# ======================================================================================
_LOW, _HIGH = np.array([229.0, 57.0, 53.0]), np.array([67.0, 160.0, 71.0])  # red (low) -> green (high)
_CURRENT = (30, 100, 230)  # the current token: blue
_CJK_FAMILIES = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
                 "Source Han Sans SC", "SimHei", "Microsoft YaHei", "AR PL UMing CN")


def red_green(w: np.ndarray) -> np.ndarray:
    """uint8 RGB for weights in [0, 1]: red (0) -> green (1), as the seed colours them."""
    w = np.clip(np.asarray(w, dtype=np.float64), 0, 1)[..., None]
    return ((1 - w) * _LOW + w * _HIGH).round().astype(np.uint8)


def _has_cjk(text: str) -> bool:
    return any("\u2e80" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" or "\uf900" <= ch <= "\ufaff"
               or "\u3040" <= ch <= "\u30ff" for ch in text)


def load_font(size: int = 14, cjk: bool = False):
    """A TrueType font for frames: a CJK font when asked and one is installed, else DejaVu Sans
    (shipped with matplotlib); PIL's built-in font as a last resort. Missing glyphs draw as
    boxes, never an error."""
    from matplotlib import font_manager
    from PIL import ImageFont

    paths = []
    if cjk:
        installed = {f.name: f.fname for f in font_manager.fontManager.ttflist}
        paths += [installed[n] for n in _CJK_FAMILIES if n in installed]
    paths.append(font_manager.findfont("DejaVu Sans"))
    for p in paths:
        try:
            return ImageFont.truetype(p, size)
        except OSError:
            continue
    return ImageFont.load_default()


class FrameRenderer:
    """Compose the frames of one trace, layer and head choice.

    ``frame(j)`` (``j`` an answer-token index) is a uint8 ``H x W x 3`` image: on the left the
    text so far (prompt text, a chip per image, the answer up to token ``j``), each earlier
    token's background red -> green by the attention of the step that produced token ``j``
    (scaled by the largest weight among the shown text tokens), token ``j`` blue; on the right
    each image with its patch grid coloured red -> green by the attention over that image's
    tokens (scaled by the largest patch weight over all images), captioned with the image's
    share of the row.
    """

    def __init__(self, trace: Trace, layer: int, head: Any = "mean", text_width: int = 520, image_height: int = 300,
                 font_size: int = 14):
        from PIL import Image

        self.trace, self.layer, self.head = trace, layer, head
        self.rows = trace.head_rows(layer, head)
        self.font = load_font(font_size, cjk=_has_cjk("".join(trace.pieces)))
        self.small = load_font(max(10, font_size - 3))
        self.text_w = text_width
        self.line_h = font_size + 8
        self.header_h = 2 * self.line_h + 6
        pm = trace.pmap
        # images scaled to a common height, side by side
        self.images, self.offsets = [], []
        x = text_width + 16
        for k in range(len(pm.grids)):
            im = _to_pil(trace.images[k]) if k < len(trace.images) else Image.new("RGB", (64, 64), (128, 128, 128))
            w = max(32, round(im.width * image_height / im.height))
            self.images.append(np.asarray(im.resize((w, image_height), Image.BILINEAR), dtype=np.float32))
            self.offsets.append(x)
            x += w + 12
        self.width = max(x, text_width + 40)
        self.height = max(self.header_h + image_height + 2 * self.line_h + 8, 420)
        self._layout()

    def _layout(self) -> None:
        """Positions of the shown items: (position, text, x, y, width, is_chip)."""
        t, pm = self.trace, self.trace.pmap
        items: list[tuple[int, str, bool]] = []
        for p in range(len(t.input_ids)):
            if pm.kind[p] == IMAGE:
                if p == pm.image_positions[pm.image[p]][0]:
                    items.append((p, f"[image {int(pm.image[p])}]", True))
                continue
            if p < t.prompt_len and t.special[p]:
                continue
            items.append((p, t.pieces[p], False))
        x, y, left, right = 8, 0, 8, self.text_w - 8
        self.items = []
        for p, text, chip in items:
            parts = text.split("\n")
            for n, part in enumerate(parts):
                if n > 0:
                    x, y = left, y + self.line_h
                if not part and not (chip or len(parts) == 1):
                    continue
                shown = part if part.strip() or not part else part.replace(" ", "\u00a0")
                w = max(4, int(math.ceil(self.font.getlength(shown))))
                if x + w > right and x > left:
                    x, y = left, y + self.line_h
                self.items.append((p, shown, x, y, w, chip))
                x += w
        self.text_h = y + self.line_h

    def frame(self, j: int) -> np.ndarray:
        from PIL import Image, ImageDraw

        t, pm = self.trace, self.trace.pmap
        p = t.prompt_len + j  # the produced token's position; its row covers positions < p
        row = self.rows[j]
        canvas = Image.new("RGB", (self.width, self.height), (255, 255, 255))
        d = ImageDraw.Draw(canvas)
        head = self.head if self.head in ("mean", "max") else f"head {self.head}"
        d.text((8, 4), f"layer {self.layer} | {head} | token {j + 1}/{t.num_answer_tokens}: {t.pieces[p]!r}",
               fill=(0, 0, 0), font=self.font)
        kinds, r = pm.kind[:p], row[:p]
        d.text((8, 4 + self.line_h), f"image {r[kinds == IMAGE].sum():.2f} | text {r[kinds == TEXT].sum():.2f} | "
               f"answer {r[kinds == GENERATED].sum():.2f}", fill=(60, 60, 60), font=self.small)
        # text panel
        shown = [it for it in self.items if it[0] <= p]
        text_pos = np.array([it[0] for it in shown if it[0] < p and not it[5]], dtype=np.int64)
        cur_y = shown[-1][3] if shown else 0
        top = max(0, cur_y + self.line_h - (self.height - self.header_h - 4))
        scale = float(row[text_pos].max()) if len(text_pos) else 1.0
        for pos, text, x, y, w, chip in shown:
            yy = self.header_h + y - top
            if yy < self.header_h - 2:
                continue
            if pos == p:
                fill, ink = _CURRENT, (255, 255, 255)
            elif chip:
                fill, ink = (200, 200, 200), (0, 0, 0)
            else:
                fill, ink = tuple(int(v) for v in red_green(row[pos] / scale if scale > 0 else 0.0)), (0, 0, 0)
            d.rectangle((x, yy, x + w, yy + self.line_h - 2), fill=fill)
            d.text((x, yy + 2), text, fill=ink, font=self.font)
        # image panel
        out = np.asarray(canvas).copy()
        weights = [row[pos] if len(pos) and pos.max() < p else np.zeros(len(pos)) for pos in pm.image_positions]
        peak = max((float(w.max()) for w in weights if len(w)), default=0.0) or 1.0
        y0 = self.header_h
        for k, (im, x0) in enumerate(zip(self.images, self.offsets)):
            gh, gw = pm.grids[k]
            cells = red_green(weights[k].reshape(gh, gw) / peak).astype(np.float32)
            h, w = im.shape[:2]
            import cv2

            colour = cv2.resize(cells, (w, h), interpolation=cv2.INTER_NEAREST)
            blend = 0.45 * im + 0.55 * colour
            ys = np.linspace(0, h, gh + 1).round().astype(int).clip(0, h - 1)
            xs = np.linspace(0, w, gw + 1).round().astype(int).clip(0, w - 1)
            blend[ys, :] = 255
            blend[:, xs] = 255
            out[y0:y0 + h, x0:x0 + w] = blend.round().clip(0, 255).astype(np.uint8)
        canvas = Image.fromarray(out)
        d = ImageDraw.Draw(canvas)
        for k, x0 in enumerate(self.offsets):
            d.text((x0, y0 + self.images[k].shape[0] + 4), f"image {k} ({pm.grids[k][0]}x{pm.grids[k][1]}): "
                   f"{float(weights[k].sum()):.2f}", fill=(0, 0, 0), font=self.small)
        return np.asarray(canvas)

    def frames(self):
        for j in self.trace.frame_tokens:
            yield self.frame(j)


def ffmpeg_problem() -> str | None:
    """Why an mp4 cannot be written (None when imageio-ffmpeg finds an ffmpeg binary)."""
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as err:
        return f"imageio-ffmpeg found no ffmpeg ({err})"
    return None if exe and Path(exe).exists() else f"the ffmpeg binary {exe!r} does not exist"


def write_attention_video(renderer: FrameRenderer, path: str | Path, fps: int = 4) -> tuple[Path, str | None]:
    """Write the renderer's frames as an mp4 at ``path`` (atomically, via :func:`vizkit.render.write_video`).

    When ffmpeg is unavailable the frames go to ``<path stem>_frames/frame_00000.png ...``
    instead; returns ``(what was written, why not an mp4 or None)``.
    """
    from .. import render

    path = Path(path)
    problem = ffmpeg_problem()
    if problem is None:
        return render.write_video(renderer.frames(), path, fps=fps), None
    folder = path.with_name(path.stem + "_frames")
    folder.mkdir(parents=True, exist_ok=True)
    for n, frame in enumerate(renderer.frames()):
        render.save_image(frame, folder / f"frame_{n:05d}.png")
    return folder, f"{problem}: wrote the frames as PNGs into {folder} instead of {path.name}"


def contact_sheet(renderer: FrameRenderer, count: int = 8, columns: int = 4, scale: float = 0.5) -> np.ndarray:
    """Evenly spaced frames tiled ``columns`` wide, each scaled by ``scale``."""
    import cv2

    tokens = list(renderer.trace.frame_tokens)
    pick = sorted({tokens[int(round(i))] for i in np.linspace(0, len(tokens) - 1, min(count, len(tokens)))})
    thumbs = [cv2.resize(renderer.frame(j), None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) for j in pick]
    h, w = thumbs[0].shape[:2]
    rows = -(-len(thumbs) // columns)
    sheet = np.full((rows * (h + 4), min(columns, len(thumbs)) * (w + 4), 3), 255, np.uint8)
    for n, th in enumerate(thumbs):
        r, c = divmod(n, columns)
        sheet[r * (h + 4):r * (h + 4) + h, c * (w + 4):c * (w + 4) + w] = th
    return sheet


# ======================================================================================
# samples, analysis, outputs
# ======================================================================================
def default_benchmark() -> tuple[Path, Path]:
    """The zoo's ``tiny_vlm`` sample benchmark: ``(json, image folder)``."""
    from ..zoo.common import zoo_dir

    folder = zoo_dir("tiny_vlm") / "benchmark"
    return folder / "sample.json", folder


def load_sample(benchmark_json: str | Path, image_dir: str | Path | None, sample_idx: int,
                max_image_num: int = 2) -> tuple[dict[str, Any], list[Any], list[str]]:
    """Entry ``sample_idx`` of a Reason-RFT style benchmark JSON list and its images (RGB PIL).

    Returns ``(sample, images, notes)``; ``notes`` says when only the first ``max_image_num``
    images are used. Raises :class:`InputError` naming the problem: a missing or unreadable
    file, ``sample_idx`` out of range (with the number of samples), an entry without
    ``image`` / ``problem``, an image file missing under ``image_dir``.
    """
    from ..io import load_image, read_json

    path = Path(benchmark_json)
    records = read_json(path, "benchmark file")
    if not isinstance(records, list) or not records:
        raise InputError(f"benchmark file {str(path)!r} must hold a non-empty JSON list of samples")
    if max_image_num < 1:
        raise ParameterError(f"max_image_num must be at least 1, got {max_image_num}")
    n = len(records)
    if not isinstance(sample_idx, (int, np.integer)) or not -n <= int(sample_idx) < n:
        raise InputError(f"sample_idx {sample_idx} is out of range: {path.name} holds {n} samples (0..{n - 1})")
    sample = records[int(sample_idx)]
    where = f"sample {int(sample_idx)}" + (f" (id {sample.get('id')!r})" if isinstance(sample, dict) and "id" in sample
                                          else "")
    if not isinstance(sample, dict):
        raise InputError(f"{where} of {path.name} is a {type(sample).__name__}, not an object with 'image' and "
                         f"'problem'")
    for key in ("image", "problem"):
        if key not in sample:
            raise InputError(f"{where} of {path.name} has no {key!r} key (it has: {', '.join(sorted(sample)) or 'none'})")
    paths = [sample["image"]] if isinstance(sample["image"], str) else sample["image"]
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise InputError(f"{where}: 'image' must be a path or a non-empty list of paths, got {sample['image']!r}")
    if not isinstance(sample["problem"], str):
        raise InputError(f"{where}: 'problem' must be a string, got {type(sample['problem']).__name__}")
    notes = []
    if len(paths) > max_image_num:
        notes.append(f"{where} has {len(paths)} images; using the first {max_image_num} (max_image_num)")
        paths = paths[:max_image_num]
    root = Path(image_dir) if image_dir not in (None, "") else path.parent
    images = []
    for p in paths:
        full = Path(p) if Path(p).is_absolute() else root / p
        if not full.is_file():
            raise InputError(f"{where}: image {p!r} not found under image_dir {str(root)!r} (looked for {full})")
        images.append(load_image(full))
    return dict(sample), images, notes


def token_shares(trace: Trace, layer: int, head: Any = "mean") -> Any:
    """Per answer token: the row's share on image / question text / earlier answer tokens and
    the entropy (nats) of its normalised distribution over the image patches."""
    import pandas as pd

    from ..stats import row_entropy

    rows = trace.head_rows(layer, head)
    kind = trace.pmap.kind
    out = []
    for j in range(trace.num_answer_tokens):
        p = trace.prompt_len + j
        r, k = rows[j, :p], kind[:p]
        img = r[k == IMAGE]
        dist = img / img.sum() if img.sum() > 0 else img
        ent = float(row_entropy(torch.from_numpy(dist.astype(np.float64))[None])[0]) if len(img) else float("nan")
        out.append({"layer": layer, "token": j, "text": trace.pieces[p], "image": float(img.sum()),
                    "question": float(r[k == TEXT].sum()), "answer": float(r[k == GENERATED].sum()),
                    "image_entropy": ent})
    return pd.DataFrame(out)


def shares_figure(frames: Any, path: str | Path) -> Path:
    """Seaborn plot over the answer tokens: attention share on image / question / earlier answer
    (top) and the entropy over image patches (bottom), one line style per layer."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ..render import save_figure

    long = frames.melt(id_vars=["layer", "token"], value_vars=["image", "question", "answer"], var_name="on",
                       value_name="share")
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True)
    sns.lineplot(data=long, x="token", y="share", hue="on", style="layer", ax=a)
    a.set_ylabel("attention share")
    a.set_ylim(0, 1)
    sns.lineplot(data=frames, x="token", y="image_entropy", style="layer", ax=b, color="k")
    b.set_ylabel("entropy over image patches (nats)")
    b.set_xlabel("answer token")
    fig.tight_layout()
    return save_figure(fig, path)


def save_npz(trace: Trace, path: str | Path) -> Path:
    """The trace's rows and position map as ``attention.npz`` (atomically)."""
    from ..io import atomic_path

    arrays = {f"rows_layer{i}": r for i, r in trace.rows.items()}
    pm = trace.pmap
    arrays.update(
        layers=np.array(sorted(trace.rows), np.int64), input_ids=trace.input_ids,
        prompt_len=np.int64(trace.prompt_len), start=np.int64(trace.start),
        query_positions=np.arange(trace.num_answer_tokens, dtype=np.int64) + trace.prompt_len - 1,
        kind=pm.kind, image=pm.image, row=pm.row, col=pm.col, grids=np.array(pm.grids, np.int64).reshape(-1, 2),
        pieces=np.array(trace.pieces, dtype=np.str_), heads=np.array(str(trace.heads)))
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return path


@torch.no_grad()
def ground_truth_table(n: int = 200, start: int = 0, split: str = "test", batch_size: int = 50,
                       max_new_tokens: int = 32) -> tuple[Any, dict[str, Any]]:
    """tiny_vlm, layer x head: how often the answer token's attention over the 6x6 image grid
    peaks inside the mask of the object the question names, over the held-out questions among
    ``split`` items ``start .. start+n-1`` that name one object; next to a random pixel.

    The model generates each solution; one teacher-forced forward on (prompt + solution) gives
    every layer's maps (:func:`explain_answer_attention`). Two rows per question: the answer
    token's own row, and the row of the step that produced it (the token before -- what the
    video shows for the answer token). Returns ``(table, info)``.
    """
    import pandas as pd

    from .. import zoo
    from ..evaluate import batched, masks_like
    from ..metrics import pointing_game
    from ..zoo import vlm_data

    bundle = zoo.load("tiny_vlm")
    samples = [s for s in vlm_data.dataset(split, n=n, start=start) if s.mask is not None]
    layers = decoder_layer_names(bundle.model)
    heads = bundle.model.config.text_config.num_attention_heads
    hits: dict[tuple[int, int, str], list[torch.Tensor]] = {}
    area = []
    for _, chunk in batched(samples, batch_size):
        res = explain_answer_attention(bundle.model, bundle.tokenizer, chunk, layers, query="answer",
                                       max_new_tokens=max_new_tokens)
        masks = masks_like([s.mask for s in chunk], (IMAGE_SIZE, IMAGE_SIZE))
        area.append(masks.float().mean((1, 2)))
        q = res["query_positions"]
        off = int(bundle.meta.get("image_offset", 4))
        b = torch.arange(len(chunk))
        for li, name in enumerate(layers):
            m = res["maps"][name]
            for h in range(heads):
                for label, rows in (("answer token", q), ("producing step", q - 1)):
                    g = m[b, h, rows, off:off + NUM_IMAGE_TOKENS].reshape(-1, *GRID)
                    heat = F.interpolate(g[:, None], size=(IMAGE_SIZE, IMAGE_SIZE), mode="nearest")[:, 0]
                    hits.setdefault((li, h, label), []).append(pointing_game(heat, masks))
    rows = []
    for (li, h, label), hs in hits.items():
        rows.append({"layer": li, "head": h, "row": label, "pointing": float(torch.cat(hs).float().mean())})
    table = pd.DataFrame(rows).pivot_table(index=["layer", "head"], columns="row", values="pointing").reset_index()
    table.columns.name = None
    sup = bundle.meta.get("train", {})
    table["trained with attention supervision"] = [
        "yes" if (int(r.layer) == int(sup.get("attn_sup_layer", 1)) and int(r.head) == 0 and sup.get("attn_sup")) else ""
        for r in table.itertuples()]
    info = {"questions": len(samples), "drawn": n, "split": split, "start": start,
            "random_pixel": float(torch.cat(area).mean()),
            "supervised": f"layer {sup.get('attn_sup_layer', 1)} head 0"}
    return table, info


def write_report(folder: str | Path, trace: Trace, sample: dict[str, Any], params: dict[str, Any],
                 outputs: dict[str, Any], shares: Any, ground_truth: tuple[Any, dict[str, Any]] | None = None) -> Path:
    """``report.md``: the sample, the answer, the share / entropy plot, per-layer means and the
    ground-truth layer x head table (tiny_vlm)."""
    from ..report import Report

    folder = Path(folder)
    fig = shares_figure(shares, folder / "attention_shares.png")
    rep = Report("VLM per-token attention video")
    rep.heading("Sample").bullets([f"id: {sample.get('id', '?')}", f"problem: {sample.get('problem', '')}",
                                   f"reference solution: {sample.get('solution', '(none)')}",
                                   f"images: {', '.join(map(str, sample.get('image', [])))}"])
    what = "generated answer" if trace.mode == "generate" else "teacher-forced solution"
    rep.heading("Answer").paragraph(f"The {what} ({trace.num_answer_tokens} tokens; the video starts at token "
                                    f"{trace.start}, {len(trace.frame_tokens)} frames):")
    rep.paragraph("> " + trace.text.strip().replace("\n", "\n> "))
    rep.heading("Parameters").parameters(params)
    rep.heading("Outputs").bullets([f"{k}: {Path(v).name if isinstance(v, (str, Path)) else v}"
                                    for k, v in outputs.items()])
    rep.heading("Where the answer looks")
    rep.paragraph("Each frame shows the attention row of the step that produced the token (the query is the token "
                  "before it), over every earlier position. Shares per answer token: on the image tokens, on the "
                  "prompt text, on the earlier answer tokens; entropy of the row's distribution over image patches "
                  f"(natural log; uniform over all patches would be ln(patches)). Heads: {params.get('heads')}.")
    rep.figure(fig, "attention share on image / question / earlier answer, and entropy over image patches",
               relative_to=folder)
    rep.table(shares.groupby("layer")[["image", "question", "answer", "image_entropy"]].mean())
    if ground_truth is not None:
        table, info = ground_truth
        rep.heading("Ground truth: does the answer look at the asked-about object? (tiny_vlm)")
        rep.paragraph(
            f"Over {info['questions']} held-out questions that name one object ({info['split']} items "
            f"{info['start']}..{info['start'] + info['drawn'] - 1}), the fraction whose attention over the 6x6 image "
            f"grid peaks inside that object's mask, per decoder layer and head: from the answer token's own row, and "
            f"from the step that produced it (what the video shows). A random pixel lands in the mask "
            f"{info['random_pixel']:.3f} of the time. One head of tiny_vlm ({info['supervised']}) was trained with "
            f"attention supervision (an auxiliary loss pulling it onto the named object); the other heads were not, "
            f"and are shown beside it.")
        rep.table(table, index=False, floatfmt=".3f")
    return rep.write(folder / "report.md")


def parse_heads(heads: Any) -> Any:
    """``mean`` / ``max`` / a head index (a numeric string is an index)."""
    if isinstance(heads, str) and heads not in ("mean", "max"):
        try:
            return int(heads)
        except ValueError:
            raise ParameterError(f"heads={heads!r}: use mean, max or a head index") from None
    return heads


def create_video(vlm: VLM, sample: dict[str, Any], images: Sequence[Any], *, layer_idx: int | None = None,
                 layers: Sequence[int] | None = None, start_phrase: str | None = DEFAULT_START_PHRASE,
                 heads: Any = "mean", max_new_tokens: int = 128, mode: str = "generate",
                 output_dir: str | Path | None = None, overwrite: bool = False, fps: int = 4,
                 ground_truth: bool | None = None, notes: Sequence[str] = ()) -> dict[str, Any]:
    """Trace one sample and write the run folder: one video per layer, contact sheets,
    ``attention.npz``, ``report.md``. Every check runs before the folder is created."""
    from ..render import save_image
    from ..runs import mark_complete, run_folder

    layer_list = resolve_layers(vlm.num_layers, layer_idx, layers)
    head = parse_heads(heads)
    if head not in ("mean", "max"):
        _check_heads(head, vlm.num_heads)
    if fps < 1:
        raise ParameterError(f"fps must be positive, got {fps}")
    trace = trace_sample(vlm, sample["problem"], images, layer_list, mode=mode, solution=sample.get("solution"),
                         max_new_tokens=max_new_tokens, heads="all", start_phrase=start_phrase)
    trace.notes = list(notes)
    import pandas as pd

    gt = None
    is_zoo = Path(vlm.path).resolve() == (Path(default_benchmark()[1]).parent).resolve()
    if ground_truth or (ground_truth is None and is_zoo):  # an int: how many test items to draw (default 200)
        drawn = ground_truth if isinstance(ground_truth, int) and not isinstance(ground_truth, bool) else 200
        gt = ground_truth_table(n=drawn)
    out = run_folder(output_dir, "vlm-video", overwrite=overwrite, overwrite_hint="pass --overwrite")
    written: dict[str, Any] = {}
    for i in layer_list:
        r = FrameRenderer(trace, i, head)
        video, why = write_attention_video(r, out / f"combined_attention_visualization_layer{i}.mp4", fps=fps)
        written[f"video_layer{i}"] = video
        if why:
            trace.notes.append(why)
        written[f"contact_sheet_layer{i}"] = save_image(contact_sheet(r), out / f"contact_sheet_layer{i}.png")
    written["attention"] = save_npz(trace, out / "attention.npz")
    shares = pd.concat([token_shares(trace, i, head) for i in layer_list], ignore_index=True)
    if gt is not None:
        written["ground_truth"] = "report.md (table)"
    params = {"model": vlm.path, "sample": sample.get("id", "?"), "layers": layer_list, "heads": head,
              "start_phrase": start_phrase, "mode": mode, "max_new_tokens": max_new_tokens, "fps": fps}
    written["report"] = write_report(out, trace, sample, params, dict(written), shares, gt)
    mark_complete(out, {"layers": layer_list, "frames": len(trace.frame_tokens)})
    return {"folder": out, "outputs": written, "trace": trace, "notes": trace.notes, "shares": shares,
            "ground_truth": gt}


class AttentionVisualizer:
    """The seed's API (``visualizeHeatMap.AttentionVisualizer``), on vizkit's capture.

    ``AttentionVisualizer(model_name_or_path, max_image_num=2)`` loads a local LLaVA / Qwen2-VL
    / Qwen2.5-VL folder (None: the zoo's ``tiny_vlm``); :meth:`load_sample_data` ->
    ``(sample, images)``; :meth:`create_attention_visualization_for_sample` -> the mp4 path
    (the PNG-frame folder when ffmpeg is unavailable). ``last`` holds the last run's
    :func:`create_video` result (folder, outputs, trace). Exported from ``vizkit.scenarios`` as
    ``VLMAttentionVisualizer`` (scenario 2 owns the plain name there).
    """

    def __init__(self, model_name_or_path: str | Path | None = None, max_image_num: int = 2, device: str = "cpu"):
        if int(max_image_num) < 1:
            raise ParameterError(f"max_image_num must be at least 1, got {max_image_num}")
        self.vlm = load_vlm(model_name_or_path, device=device)
        self.model, self.processor = self.vlm.model, self.vlm.processor
        self.max_image_num = int(max_image_num)
        self.notes: list[str] = []
        self.last: dict[str, Any] | None = None

    def load_sample_data(self, benchmark_json: str | Path, image_dir: str | Path | None, sample_idx: int = 0):
        sample, images, notes = load_sample(benchmark_json, image_dir, sample_idx, self.max_image_num)
        for n in notes:
            print(f"vizkit vlm-video: {n}", file=sys.stderr)
        self.notes = notes
        return sample, images

    def create_attention_visualization_for_sample(self, sample: dict[str, Any], images: Sequence[Any],
                                                  layer_idx: int | None = 20,
                                                  start_phrase: str | None = DEFAULT_START_PHRASE, *,
                                                  layers: Sequence[int] | None = None, heads: Any = "mean",
                                                  max_new_tokens: int = 128, mode: str = "generate",
                                                  output_dir: str | Path | None = None, overwrite: bool = False,
                                                  fps: int = 4, ground_truth: bool | None = None) -> str:
        images = list(images)
        if len(images) > self.max_image_num:
            self.notes.append(f"{len(images)} images given; using the first {self.max_image_num} (max_image_num)")
            images = images[:self.max_image_num]
        if layer_idx is not None and layer_idx == 20 and self.vlm.num_layers <= 20 and not layers:
            layer_idx = None  # the seed's default on a model with fewer layers: its last layer
        self.last = create_video(self.vlm, sample, images, layer_idx=layer_idx, layers=layers,
                                 start_phrase=start_phrase, heads=heads, max_new_tokens=max_new_tokens, mode=mode,
                                 output_dir=output_dir, overwrite=overwrite, fps=fps, ground_truth=ground_truth,
                                 notes=self.notes)
        first = resolve_layers(self.vlm.num_layers, layer_idx, layers)[0]
        return str(self.last["outputs"][f"video_layer{first}"])


VLMAttentionVisualizer = AttentionVisualizer


def run_video(model_path: str | Path | None = None, benchmark_json: str | Path | None = None,
              image_dir: str | Path | None = None, sample_idx: int = 0, layer_idx: int | None = None,
              start_phrase: str | None = DEFAULT_START_PHRASE, layers: Sequence[int] | None = None,
              heads: Any = "mean", max_image_num: int = 2, max_new_tokens: int = 128, mode: str = "generate",
              output_dir: str | Path | None = None, overwrite: bool = False, fps: int = 4,
              ground_truth: bool | None = None) -> dict[str, Any]:
    """``vizkit vlm-video``: load the sample first (bad input fails before the model loads),
    then the model, then :func:`create_video`. No ``model_path``: tiny_vlm; no
    ``benchmark_json``: its sample benchmark."""
    if benchmark_json in (None, ""):
        benchmark_json, default_dir = default_benchmark()
        image_dir = image_dir or default_dir
    sample, images, notes = load_sample(benchmark_json, image_dir, sample_idx, max_image_num)
    vlm = load_vlm(model_path)
    return create_video(vlm, sample, images, layer_idx=layer_idx, layers=layers, start_phrase=start_phrase,
                        heads=heads, max_new_tokens=max_new_tokens, mode=mode, output_dir=output_dir,
                        overwrite=overwrite, fps=fps, ground_truth=ground_truth, notes=notes)


def notebook_parameters() -> list[Any]:
    """The parameters of ``notebooks/05_vlm_attention_video.ipynb``."""
    from ..notebook import Param, positive

    return [
        Param("model_path", (str,), help="local VLM folder; empty: tiny_vlm"),
        Param("benchmark_json", (str,)), Param("image_dir", (str,)),
        Param("sample_idx", (int,)), Param("layer_idx", (int,), help="-1: the seed's 20 or the last layer"),
        Param("layers", (list,), check=lambda v: None if all(isinstance(i, int) for i in v) else "must hold ints"),
        Param("start_phrase", (str,)),
        Param("heads", (str, int), check=lambda v: None if isinstance(v, int) or v in ("mean", "max")
              else "use mean, max or a head index"),
        Param("max_image_num", (int,), check=positive), Param("max_new_tokens", (int,), check=positive),
        Param("mode", (str,), choices=("generate", "solution")), Param("fps", (int,), check=positive),
        Param("ground_truth_questions", (int,), check=lambda v: None if v >= 0 else "must be >= 0"),
        Param("output_dir", (str,)), Param("overwrite", (bool,)), Param("interactive", (bool,)), Param("seed", (int,)),
    ]


def check_notebook_parameters(namespace: dict, before: Any) -> dict[str, Any]:
    """Validate the notebook's parameters (names, types, values) before any work."""
    from ..notebook import check_parameters

    return check_parameters(namespace, before, notebook_parameters())


class VLMAttentionExplorer:
    """Token x layer x head explorer over a :class:`Trace` (needs ipywidgets).

    Controls: ``token`` (answer token, from the start phrase on), ``layer`` (the captured
    decoder layers) and ``head`` (mean / max / one head). Moving one redraws both panels --
    the text and the image grids, the same frame the video shows -- from the captured rows;
    no model runs. ``drawn`` holds the frame on screen; ``draws`` counts redraws.
    """

    #: the controls as the page shows them (label, kind): read by the notebook build and the browser test
    CONTROLS = (("token", "slider"), ("layer", "dropdown"), ("head", "dropdown"))

    def __init__(self, trace: Trace, head: Any = "mean"):
        import ipywidgets as W

        from ..widgets import observe_all

        self.trace = trace
        style = {"description_width": "50px"}
        tokens = trace.frame_tokens
        self.token = W.IntSlider(tokens.start, tokens.start, tokens.stop - 1, description="token", style=style)
        self.layer = W.Dropdown(options=sorted(trace.rows), value=sorted(trace.rows)[0], description="layer",
                                style=style)
        n_heads = next(iter(trace.rows.values())).shape[1] if trace.heads == "all" else 0
        self.head = W.Dropdown(options=[("mean", "mean"), ("max", "max")] + [(f"head {h}", h) for h in range(n_heads)], value=head,
                               description="head", style=style)
        self.image = W.Image(format="png")
        self.controls = (self.token, self.layer, self.head)
        self.widget = W.VBox([W.HBox(list(self.controls)), self.image])
        self._renderers: dict[tuple[int, Any], FrameRenderer] = {}
        self.drawn: np.ndarray | None = None
        self.draws = 0
        observe_all(self.controls, self.redraw)
        self.redraw()

    def renderer(self) -> FrameRenderer:
        key = (self.layer.value, self.head.value)
        if key not in self._renderers:
            self._renderers[key] = FrameRenderer(self.trace, *key)
        return self._renderers[key]

    def redraw(self) -> None:
        import io

        from PIL import Image

        self.drawn = self.renderer().frame(self.token.value)
        buf = io.BytesIO()
        Image.fromarray(self.drawn).save(buf, format="PNG")
        self.image.value = buf.getvalue()
        self.draws += 1
