"""Resolve a layer spec to modules of a model.

Specs: a module name (``"encoder.layers.23"``, ``"blocks.-1.norm1"``: numeric parts may be
negative), an int (an index over the transformer blocks, negative counts from the end),
``"last"``, ``"last_4"`` (any ``last_K``), ``"all"``, ``"auto"``, a module object, or a list
of any of these. A wrong name raises :class:`LayerNotFoundError` listing the closest names.

Names need not start at the model's root (:func:`resolve_name`): a name that is not a module
of the model is read by the *alias rule* — ``<list>.N[.sub]`` where ``<list>`` is the tail of a
block list's full name (seed 002's ``encoder.layers.23.layer_norm1`` means
``backbone.encoder.layers.23.layer_norm1`` or ``backbone.vision_model.encoder.layers.23...``,
whichever the transformers version built; N < 0 counts from the end; an N past the end is an
error naming the closest valid blocks), else the one module whose full name ends with it.

``"auto"``:

- CNN: the last stage with a spatial output — among the modules that produce the final
  ``[B, C, H, W]`` feature map (H, W > 1), the outermost one that holds parameters and
  downsamples its input at most once (``layer4`` of a ResNet, the last stage of a ConvNeXt,
  the last convolutional block of an EfficientNet).
- ViT: the last block, read at its input: the first LayerNorm inside the last block (the
  tokens entering its attention). The last block's *output* is useless for a classifier
  that reads only the CLS token: no patch token of that output reaches the score, so every
  gradient there is zero. Ask for ``"last"`` to get the block's output anyway.
  A ViT that declares no prefix tokens (timm ``num_prefix_tokens == 0``: no CLS token, the
  head pools the patch tokens) gets the last block's *output*: every patch token there
  reaches the score, and its features are not LayerNorm-rescaled per token (on a LayerNorm
  output every token, background included, has unit variance, which blurs the map).
- Hierarchical transformers (Swin: timm, torchvision, Hugging Face): the stages' block lists
  count as one list, and ``"auto"`` is the *output* of the last stage's last block (these
  models pool every token, so every position reaches the score; there is no CLS token).
"""

from __future__ import annotations

import difflib
import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import CaptureError, LayerNotFoundError, VizkitError

LayerSpec = str | int | nn.Module | Sequence[str | int | nn.Module]
Layer = tuple[str, nn.Module]

_ATTN_NAME = re.compile(r"(attention|attn)", re.IGNORECASE)
_LAST_K = re.compile(r"^last_(\d+)$")


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule at dotted ``name``; numeric parts may be negative (``blocks.-1``)."""
    if name in ("", "."):
        return model
    module = model
    for part in name.split("."):
        if re.fullmatch(r"-?\d+", part) and isinstance(module, (nn.ModuleList, nn.Sequential)):
            index = int(part)
            if not -len(module) <= index < len(module):
                raise LayerNotFoundError(f"layer {name!r}: index {index} is out of range for {len(module)} modules")
            module = module[index]
        else:
            child = module._modules.get(part)
            if child is None:
                raise LayerNotFoundError(_unknown_name_message(model, name))
            module = child
    return module


_INDEXED = re.compile(r"^(?P<head>(?:[A-Za-z_]\w*\.)+)(?P<index>-?\d+)(?P<rest>(?:\.[A-Za-z0-9_]+)*)$")


def resolve_name(model: nn.Module, name: str) -> str:
    """The full module name ``name`` stands for (see the module docstring's alias rule).

    Raises :class:`LayerNotFoundError` with the closest valid names: for a block index past the
    end, the nearest blocks (``encoder.layers.23`` on a 12-block model suggests
    ``encoder.layers.11``); for a name matching several modules, some of them.
    """
    name = name.strip()
    try:
        return canonical_name(model, get_module(model, name))
    except LayerNotFoundError as err:
        first = err
    m = _INDEXED.match(name)
    if m:
        head = m.group("head")[:-1]
        for list_name, blocks in find_block_lists(model):
            if list_name != head and not list_name.endswith("." + head):
                continue
            index, rest, n = int(m.group("index")), m.group("rest"), len(blocks)
            if not -n <= index < n:
                pos = index if index >= 0 else n + index
                near = sorted(range(n), key=lambda i: (abs(i - pos), -i))[:3]
                raise LayerNotFoundError(
                    f"no layer {name!r}: index {index} is out of range, {type(model).__name__} has {n} transformer "
                    f"blocks in {list_name} ({head}.0 .. "
                    f"{head}.{n - 1}; negative indices count from the end). Closest valid names: "
                    f"{', '.join(f'{head}.{i}{rest}' for i in near)}"
                )
            full = f"{list_name}.{index % n}{rest}"
            get_module(model, full)  # an unknown submodule: the closest names
            return full
    hits = [n for n, _ in model.named_modules() if n.endswith("." + name)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise LayerNotFoundError(
            f"layer {name!r} matches {len(hits)} modules of {type(model).__name__}: "
            f"{', '.join(hits[:4])}: give the full name"
        )
    raise first


def canonical_name(model: nn.Module, module: nn.Module) -> str:
    """The dotted name of ``module`` inside ``model``."""
    for name, m in model.named_modules():
        if m is module:
            return name
    raise LayerNotFoundError(f"module {type(module).__name__} is not part of this model")


def _unknown_name_message(model: nn.Module, name: str) -> str:
    names = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(name, names, n=6, cutoff=0.5)
    if not close:
        stem = name.rsplit(".", 1)[0]
        close = [n for n in names if n.startswith(stem)][:6]
    hint = ", ".join(repr(c) for c in close) if close else ", ".join(repr(n) for n in names[:6]) + ", ..."
    return f"no layer named {name!r} in {type(model).__name__}. Closest valid names: {hint}"


def _has_attention(module: nn.Module) -> bool:
    for sub_name, sub in module.named_modules():
        if isinstance(sub, nn.MultiheadAttention):
            return True
        if sub is not module and (
            _ATTN_NAME.search(type(sub).__name__) or _ATTN_NAME.search(sub_name.rsplit(".", 1)[-1])
        ):
            return True
    return False


def _is_block_list(module: nn.Module) -> bool:
    """A non-empty ModuleList/Sequential whose children are all of one class holding attention."""
    if not isinstance(module, (nn.ModuleList, nn.Sequential)) or len(module) == 0:
        return False
    children = list(module._modules.values())
    return len({type(c) for c in children}) == 1 and _has_attention(children[0])


def _is_stage_list(module: nn.Module) -> bool:
    """A block list whose items are *stages* (each holds its own block list: timm Swin's
    ``layers``, HF Swin's ``encoder.layers``); its inner lists are the blocks."""
    return all(any(_is_block_list(m) for m in stage.modules() if m is not stage) for stage in module._modules.values())


def find_block_lists(model: nn.Module) -> list[tuple[str, list[Layer]]]:
    """Every list of transformer blocks: ModuleList/Sequential children of one class holding
    attention. In a hierarchical model (Swin) each stage's list is one entry, in order."""
    found: list[tuple[str, list[Layer]]] = []
    for name, module in model.named_modules():
        if not _is_block_list(module) or _is_stage_list(module):
            continue
        if any(name.startswith(outer + ".") for outer, _ in found):
            continue  # lists nested inside a block belong to that block
        prefix = f"{name}." if name else ""
        found.append((name, [(prefix + k, c) for k, c in module._modules.items()]))
    return found


_INDEX_PART = re.compile(r"(?<![^.])\d+(?![^.])")


def _stacks(lists: list[tuple[str, list[Layer]]]) -> list[tuple[str, list[Layer]]]:
    """Group the stage lists of one hierarchical model into one stack of blocks.

    Lists whose names differ only in one numeric part (``layers.0.blocks``, ``layers.1.blocks``;
    torchvision's ``features.1``, ``features.3``) and whose blocks share a class are the
    stages of one tower: their blocks are concatenated in order. Towers with different names
    (CLIP's ``vision_model`` / ``text_model``) stay apart."""
    groups: dict[tuple[str, type], list[tuple[str, list[Layer]]]] = {}
    for name, blocks in lists:
        parts = _INDEX_PART.findall(name)
        key_name = _INDEX_PART.sub("*", name) if len(parts) >= 1 else name
        groups.setdefault((key_name, type(blocks[0][1])), []).append((name, blocks))
    out = []
    for (key_name, _), members in groups.items():
        if len(members) > 1 and "*" in key_name:
            out.append((key_name, [blk for _, b in members for blk in b]))
        else:
            out.extend(members)
    return out


def is_hierarchical(model: nn.Module, blocks: Sequence[Layer]) -> bool:
    """True when ``blocks`` span several stage lists (a Swin-like model whose token grid shrinks)."""
    if not blocks:
        return False
    owners = {name.rsplit(".", 1)[0] if "." in name else "" for name, _ in blocks}
    return len(owners) > 1


def find_blocks(model: nn.Module, executed: set[str] | None = None, prefer: str = "vision") -> list[Layer]:
    """The transformer blocks of the model, in order (empty for a CNN).

    The stages of a hierarchical model (Swin) count as one list: their blocks in order.
    When a model holds several block lists (CLIP's image and text towers, a VLM's vision
    tower and language model), only lists executed by the forward pass count (when
    ``executed`` is known); among those the one whose name contains ``prefer`` (``"vision"``
    also matches ``"visual"``) wins, else the longest.
    """
    lists = find_block_lists(model)
    if executed is not None:
        lists = [(n, b) for n, b in lists if b[0][0] in executed]
    lists = _stacks(lists)
    if not lists:
        return []
    keys = ("vision", "visual") if prefer == "vision" else (prefer,)
    preferred = [(n, b) for n, b in lists if any(k in n.lower() for k in keys)]
    pool = preferred or lists
    return max(pool, key=lambda nb: len(nb[1]))[1]


def attention_modules(model: nn.Module, limit: int = 5) -> list[str]:
    """Up to ``limit`` names of modules that compute attention: the transformer blocks, else
    the outermost modules whose class or name says attention (or ``nn.MultiheadAttention``)."""
    names = [n for _, blocks in find_block_lists(model) for n, _ in blocks]
    if not names:
        for name, m in model.named_modules():
            if not name or any(name.startswith(o + ".") for o in names):
                continue
            if (
                isinstance(m, nn.MultiheadAttention)
                or _ATTN_NAME.search(type(m).__name__)
                or _ATTN_NAME.search(name.rsplit(".", 1)[-1])
            ):
                names.append(name)
    return names[:limit]


def find_patch_embed(model: nn.Module, blocks: Sequence[Layer] = ()) -> Layer | None:
    """The patch embedding: the first Conv2d with stride == kernel size > 1 outside the blocks."""
    inside = tuple(n + "." for n, _ in blocks)
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and not name.startswith(inside):
            if m.kernel_size == m.stride and max(m.kernel_size) > 1:
                return name, m
    return None


# --------------------------------------------------------------------------------------
# probing: one batch-1 forward that records which modules ran and their output shapes
# --------------------------------------------------------------------------------------
@dataclass
class Probe:
    """What one forward pass did: executed module names and spatial outputs in firing order."""

    executed: set[str] = field(default_factory=set)
    # (name, input H, output H, output W, output tensor id, holds parameters)
    spatial: list[tuple[str, int, int, int, int, bool]] = field(default_factory=list)


_PROBES: "weakref.WeakKeyDictionary[nn.Module, dict[Any, Probe]]" = weakref.WeakKeyDictionary()
_PROBES_PER_MODEL = 8


def probe(model: nn.Module, run: Callable[[Any], Any], example: Any, key: Any = None) -> Probe:
    """Run ``run(example[:1])`` (a mapping of keyword inputs: ``run(example)``) once under
    no_grad with temporary hooks on every module.

    Results are cached per model and ``(key, example shape)`` when ``key`` is given (a few
    entries per model; ``key`` must be hashable and compare equal for the same forward,
    as bound methods do).
    """
    is_tensor = isinstance(example, torch.Tensor)
    cache_key = (key, tuple(example.shape[1:])) if key is not None and is_tensor else None
    try:
        hash(cache_key)
    except TypeError:
        cache_key = None
    if cache_key is not None and cache_key in _PROBES.get(model, {}):
        return _PROBES[model][cache_key]
    result = Probe()
    has_params = {n: any(True for _ in m.parameters()) for n, m in model.named_modules()}
    alive: list[torch.Tensor] = []  # keep outputs alive so that their ids stay unique

    def make_hook(name: str):
        def hook(module, inputs, output):
            result.executed.add(name)
            if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] > 1 and output.shape[-2] > 1:
                first = next((i for i in inputs if isinstance(i, torch.Tensor)), None)
                in_h = first.shape[-2] if first is not None and first.ndim == 4 else 10**9
                alive.append(output)
                result.spatial.append((name, in_h, output.shape[-2], output.shape[-1], id(output), has_params[name]))

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            run(example[:1] if is_tensor else example)  # keyword inputs (a token-sequence model) run whole
    finally:
        for h in handles:
            h.remove()
    if cache_key is not None:
        entries = _PROBES.setdefault(model, {})
        entries[cache_key] = result
        while len(entries) > _PROBES_PER_MODEL:
            entries.pop(next(iter(entries)))
    return result


def _auto_cnn(model: nn.Module, pr: Probe) -> Layer:
    if not pr.spatial:
        raise VizkitError(
            f"cannot choose a layer automatically: no module of {type(model).__name__} produced a "
            "spatial [B, C, H, W] output with H, W > 1. Pass layers='<module name>'."
        )
    last_id = pr.spatial[-1][4]
    group = [s for s in pr.spatial if s[4] == last_id]
    good = [s for s in group if s[5] and s[1] <= 2 * s[2]]
    pool = good or [s for s in group if s[5]] or group
    name = min(pool, key=lambda s: s[0].count("."))[0]
    return name, get_module(model, name)


def _declares_no_prefix_tokens(model: nn.Module, block_name: str) -> bool:
    """True when the nearest module above ``block_name`` that states ``num_prefix_tokens``
    (timm's ViTs do) states 0."""
    parts = block_name.split(".")
    for i in range(len(parts) - 1, -1, -1):
        owner = model.get_submodule(".".join(parts[:i])) if i else model
        n = getattr(owner, "num_prefix_tokens", None)
        if isinstance(n, int) and not isinstance(n, bool):
            return n == 0
    return False


def _auto_vit(model: nn.Module, blocks: Sequence[Layer]) -> Layer:
    name, block = blocks[-1]
    if is_hierarchical(model, blocks) or _declares_no_prefix_tokens(model, name):
        return name, block
    for sub_name, sub in block.named_modules():
        if isinstance(sub, nn.LayerNorm) or "norm" in type(sub).__name__.lower():
            return f"{name}.{sub_name}", sub
    return name, block


def no_attention_message(model: nn.Module, lead: str) -> str:
    """``lead`` + where the attention of ``model`` is: up to five module names, or none."""
    holders = attention_modules(model, limit=10**6)
    cls = type(model).__name__
    if holders:
        more = f" (first 5 of {len(holders)})" if len(holders) > 5 else ""
        blocks = " or 'all'" if find_block_lists(model) else ""
        return (
            f"{lead} modules of {cls} that hold attention{more}: {', '.join(map(repr, holders[:5]))}; "
            f"pass one of them{blocks} as layers="
        )
    return (
        f"{lead} {cls} has no attention module at all (no transformer block, no module named "
        f"attention/attn, no nn.MultiheadAttention): attention maps need a transformer; for a CNN use "
        f"vizkit.cam(...)"
    )


def resolve_layers(
    model: nn.Module,
    spec: LayerSpec,
    *,
    probe_fn: Callable[[], Probe] | None = None,
    for_attention: bool = False,
) -> list[Layer]:
    """Turn a layer spec into ``[(name, module), ...]`` (see the module docstring).

    ``probe_fn`` runs a probe forward when the spec needs one (``"auto"``, or a block spec
    on a model with several block lists); without it the static structure is used.
    ``for_attention``: the layers are for attention capture (a model without transformer
    blocks then gets :func:`no_attention_message`).
    """
    specs = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not specs:
        raise VizkitError("layers is empty: pass a layer name, an index, 'last', 'last_4', 'all' or 'auto'")
    cached: dict[str, Any] = {}

    def get_probe() -> Probe | None:
        if "probe" not in cached:
            cached["probe"] = probe_fn() if probe_fn is not None else None
        return cached["probe"]

    def blocks(always_probe: bool = False) -> list[Layer]:
        if "blocks" not in cached:
            lists = find_block_lists(model)
            pr = get_probe() if lists and (always_probe or len(lists) > 1) else None
            cached["blocks"] = find_blocks(model, pr.executed if pr else None)
        return cached["blocks"]

    def need_blocks(what: str) -> list[Layer]:
        b = blocks()
        if not b and for_attention:
            raise CaptureError(no_attention_message(model, f"layers={what!r} selects transformer blocks, but"))
        if not b:
            raise VizkitError(
                f"layers={what!r} selects transformer blocks, but {type(model).__name__} has none "
                "(no list of modules holding attention). Use a module name or 'auto'."
            )
        return b

    out: list[Layer] = []
    for s in specs:
        if isinstance(s, nn.Module):
            out.append((canonical_name(model, s), s))
        elif isinstance(s, bool):
            raise VizkitError(f"invalid layer spec {s!r}")
        elif isinstance(s, int):
            b = need_blocks(str(s))
            if not -len(b) <= s < len(b):
                raise LayerNotFoundError(
                    f"layer index {s} is out of range: {type(model).__name__} has {len(b)} transformer "
                    f"blocks (valid indices {-len(b)}..{len(b) - 1})"
                )
            out.append(b[s])
        elif isinstance(s, str):
            key = s.strip().lower()
            if key == "auto":
                b = blocks(always_probe=True)
                if b:
                    out.append(_auto_vit(model, b))
                else:
                    pr = get_probe()
                    if pr is None:
                        raise VizkitError("layers='auto' on a CNN needs an example input to probe the model")
                    out.append(_auto_cnn(model, pr))
            elif key == "last":
                out.append(need_blocks(s)[-1])
            elif key == "all":
                out.extend(need_blocks(s))
            elif _LAST_K.match(key):
                k = int(_LAST_K.match(key).group(1))
                b = need_blocks(s)
                if not 1 <= k <= len(b):
                    raise LayerNotFoundError(f"layers={s!r}: the model has {len(b)} transformer blocks")
                out.extend(b[-k:])
            else:
                full = resolve_name(model, s)
                out.append((full, get_module(model, full)))
        else:
            raise VizkitError(
                f"invalid layer spec {s!r} of type {type(s).__name__}: use a module name, an int, "
                "'last', 'last_4', 'all', 'auto' or a module"
            )
    seen: set[str] = set()
    unique = []
    for name, m in out:
        if name not in seen:
            seen.add(name)
            unique.append((name, m))
    return unique
