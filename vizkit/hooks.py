"""Capture activations, their gradients, and attention probabilities for one call.

Everything here is a context manager whose hooks exist only inside the ``with`` block and
are removed in ``finally`` (also when the forward or backward pass raises).

Gradients are taken with :func:`torch.autograd.grad` on the captured tensors, never with
backward hooks: with frozen parameters, the first captured tensor is made a leaf, so the
backward pass runs only from the score down to the earliest captured layer and computes no
parameter gradient.

Attention is captured by a :class:`~torch.overrides.TorchFunctionMode` that is active only
while a transformer block runs. It records the post-softmax probabilities ``[B, H, N, N]``
whichever way the block computes them:

- an explicit ``softmax`` over the last dim of a 4-D tensor (HF eager, timm with fused
  attention off, most hand-written ViTs) is recorded as it is;
- ``F.scaled_dot_product_attention`` (HF's default sdpa, timm's fused path: both return
  *no* weights) is replaced, for the call only, by the same math written out, so the
  probabilities exist and are the very tensor that multiplies the values;
- ``F.multi_head_attention_forward`` (``nn.MultiheadAttention``: open_clip, torchvision
  ViT, ``nn.TransformerEncoderLayer``) likewise.

The model's own configuration (attention implementation, fused flags) is never changed.

:class:`RowAttentionCapture` is the streaming row mode of the same mechanism (for
``generate`` with a KV cache): it keeps only chosen query rows of every call, and lets the
block's own kernel compute its output, so the output is exactly that of an uncaptured run.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .attention_math import select_heads
from .errors import CaptureError, ParameterError, VizkitError
from .layers import Layer

_SOFTMAX = {torch.softmax, F.softmax, torch.Tensor.softmax, torch.special.softmax}


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _replace_first(output: Any, tensor: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return tensor
    return type(output)([tensor, *output[1:]]) if isinstance(output, list) else (tensor, *output[1:])


def _graph_entry(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself if it is already part of an autograd graph, else a detached leaf that requires grad."""
    return t if t.requires_grad else t.detach().requires_grad_(True)


class ActivationCapture:
    """Record the output of each layer in ``layers``; with ``grad=True`` keep it in the graph.

    ``tensors[name]`` is the captured output (for gradients, the tensor to differentiate
    with respect to). Downstream modules receive a clone, so a later in-place operation
    (``out += identity``, ``ReLU(inplace=True)``) cannot alter what was captured.
    """

    def __init__(self, layers: Sequence[Layer], grad: bool = True):
        self.layers = list(layers)
        self.grad = grad
        self.tensors: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
            t = _first_tensor(output)
            if t is None:
                raise CaptureError(
                    f"layer {name!r} ({type(module).__name__}) returned {type(output).__name__}, not a tensor: "
                    "choose a submodule whose output is a tensor"
                )
            if name in self.tensors:
                raise CaptureError(
                    f"layer {name!r} ran more than once in one forward pass (a shared module): "
                    "choose a module that runs once"
                )
            if not (self.grad and torch.is_grad_enabled()):
                self.tensors[name] = t.detach()
                return None
            t = _graph_entry(t)
            self.tensors[name] = t
            return _replace_first(output, t.clone())

        return hook

    def __enter__(self) -> "ActivationCapture":
        self.tensors = {}
        try:
            for name, module in self.layers:
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class GridCapture:
    """Measure the patch grid ``(h, w)`` from the patch embedding's ``[B, C, h, w]`` output."""

    def __init__(self, module: nn.Module | None):
        self.module = module
        self.grid: tuple[int, int] | None = None
        self._handle = None

    def __enter__(self) -> "GridCapture":
        if self.module is not None:

            def hook(module, inputs, output):
                t = _first_tensor(output)
                if t is not None and t.ndim == 4:
                    self.grid = (int(t.shape[-2]), int(t.shape[-1]))

            self._handle = self.module.register_forward_hook(hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class _AttentionMode(TorchFunctionMode):
    def __init__(self, owner: "AttentionCapture"):
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        owner = self.owner
        if owner.current:
            if func is F.scaled_dot_product_attention:
                return owner.sdpa(*args, **kwargs)
            if func is F.multi_head_attention_forward:
                return owner.mha(*args, **kwargs)
            if func in _SOFTMAX:
                out = func(*args, **kwargs)
                dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
                if isinstance(out, torch.Tensor) and out.ndim == 4 and dim in (-1, 3):
                    return owner.record(out)
                return out
        return func(*args, **kwargs)


class AttentionCapture:
    """Record post-softmax attention ``[B, H, Nq, Nk]`` of each block in ``blocks``.

    ``maps[name]`` holds the first attention computed inside that block. With ``grad=True``
    the recorded tensors stay in the autograd graph (the first one becomes a leaf), so
    ``torch.autograd.grad(score, maps.values())`` gives the total derivative for each.
    """

    #: False: the torch-function mode is on for the whole ``with`` block and acts only inside a
    #: captured block; True: it is entered when the outermost captured block starts and left
    #: when it ends (no per-op cost elsewhere, e.g. the rest of a ``generate`` step)
    _mode_per_call = False

    def __init__(self, blocks: Sequence[Layer], grad: bool = False):
        self.blocks = list(blocks)
        self.grad = grad
        self.maps: dict[str, torch.Tensor] = {}
        self._stack: list[str] = []
        self._handles: list[Any] = []
        self._mode: _AttentionMode | None = None
        self._fastpath: bool | None = None

    @property
    def current(self) -> str | None:
        return self._stack[-1] if self._stack else None

    # -- recording ---------------------------------------------------------------------
    def record(self, probs: torch.Tensor) -> torch.Tensor:
        name = self.current
        if name is None or name in self.maps:
            return probs
        if self.grad and torch.is_grad_enabled():
            probs = _graph_entry(probs)
            self.maps[name] = probs
        else:
            self.maps[name] = probs.detach()
        return probs

    def sdpa(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        """``F.scaled_dot_product_attention`` written out, recording the probabilities."""
        n_q, n_k = query.shape[-2], key.shape[-2]
        scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
        if enable_gqa and key.ndim >= 3 and key.shape[-3] != query.shape[-3]:
            rep = query.shape[-3] // key.shape[-3]
            key, value = key.repeat_interleave(rep, -3), value.repeat_interleave(rep, -3)
        scores = (query * scale) @ key.transpose(-2, -1)
        if is_causal:
            keep = torch.ones(n_q, n_k, dtype=torch.bool, device=query.device).tril()
            scores = scores.masked_fill(~keep, float("-inf"))
        if attn_mask is not None:
            if attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(~attn_mask, float("-inf"))
            else:
                scores = scores + attn_mask
        probs = torch.softmax(scores, dim=-1)
        if is_causal or attn_mask is not None:
            # a fully masked query row attends to nothing (0, as torch's own kernel returns), not NaN
            probs = probs.masked_fill(torch.isneginf(scores).all(-1, keepdim=True), 0.0)
        probs = self.record(probs) if probs.ndim == 4 else probs
        if dropout_p > 0.0:
            probs = F.dropout(probs, p=dropout_p, training=True)
        return probs @ value

    def mha(
        self,
        query,
        key,
        value,
        embed_dim_to_check,
        num_heads,
        in_proj_weight,
        in_proj_bias,
        bias_k,
        bias_v,
        add_zero_attn,
        dropout_p,
        out_proj_weight,
        out_proj_bias,
        training=True,
        key_padding_mask=None,
        need_weights=True,
        attn_mask=None,
        use_separate_proj_weight=False,
        q_proj_weight=None,
        k_proj_weight=None,
        v_proj_weight=None,
        static_k=None,
        static_v=None,
        average_attn_weights=True,
        is_causal=False,
    ):
        """``F.multi_head_attention_forward`` (sequence-first inputs) written out."""
        if bias_k is not None or bias_v is not None or add_zero_attn or static_k is not None or static_v is not None:
            raise CaptureError(
                "nn.MultiheadAttention with add_bias_kv, add_zero_attn or static keys is not supported "
                "for attention capture"
            )
        unbatched = query.ndim == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        n_q, batch, embed = query.shape
        n_k = key.shape[0]
        head_dim = embed // num_heads
        if use_separate_proj_weight:
            w_q, w_k, w_v = q_proj_weight, k_proj_weight, v_proj_weight
        else:
            w_q, w_k, w_v = in_proj_weight.chunk(3)
        b_q, b_k, b_v = in_proj_bias.chunk(3) if in_proj_bias is not None else (None, None, None)

        def heads(x: torch.Tensor, w, b, n: int) -> torch.Tensor:  # [n, B, E] -> [B, H, n, d]
            return F.linear(x, w, b).reshape(n, batch, num_heads, head_dim).permute(1, 2, 0, 3)

        q, k, v = heads(query, w_q, b_q, n_q), heads(key, w_k, b_k, n_k), heads(value, w_v, b_v, n_k)
        scores = (q * (1.0 / math.sqrt(head_dim))) @ k.transpose(-2, -1)
        if attn_mask is not None:
            mask = attn_mask.reshape(batch, num_heads, n_q, n_k) if attn_mask.ndim == 3 else attn_mask
            scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        if key_padding_mask is not None:
            kpm = key_padding_mask[:, None, None, :]
            scores = scores.masked_fill(kpm, float("-inf")) if kpm.dtype == torch.bool else scores + kpm
        probs = self.record(torch.softmax(scores, dim=-1))
        if training and dropout_p > 0.0:
            probs = F.dropout(probs, p=dropout_p)
        out = (probs @ v).permute(2, 0, 1, 3).reshape(n_q, batch, embed)
        out = F.linear(out, out_proj_weight, out_proj_bias)
        weights = None
        if need_weights:
            weights = probs.mean(1) if average_attn_weights else probs
            weights = weights.squeeze(0) if unbatched else weights
        return (out.squeeze(1) if unbatched else out), weights

    # -- context management ------------------------------------------------------------
    def __enter__(self) -> "AttentionCapture":
        self.maps = {}
        self._stack = []
        try:
            for name, block in self.blocks:
                self._handles.append(block.register_forward_pre_hook(self._push(name), with_kwargs=True))
                self._handles.append(block.register_forward_hook(self._pop(name), always_call=True))
            self._fastpath = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
            if not self._mode_per_call:
                self._mode = _AttentionMode(self)
                self._mode.__enter__()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _push(self, name: str):
        def pre_hook(module, args, kwargs):
            self._stack.append(name)

        return pre_hook

    def _pop(self, name: str):
        def hook(module, inputs, output):
            if self._stack and self._stack[-1] == name:
                self._stack.pop()

        return hook

    def __exit__(self, *exc: Any) -> None:
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
        if self._fastpath is not None:
            torch.backends.mha.set_fastpath_enabled(self._fastpath)
            self._fastpath = None
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._stack.clear()


def _token_count(args: tuple, kwargs: dict) -> int | None:
    """Tokens in a block's input (``hidden_states`` ``[B, T, D]``: ``T``), ``None`` if not seen."""
    x = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("hidden_states")
    if not isinstance(x, torch.Tensor):
        x = next((a for a in args if isinstance(a, torch.Tensor)), None)
    return int(x.shape[-2]) if isinstance(x, torch.Tensor) and x.ndim == 3 else None


class _Call:
    """One running invocation of a captured block."""

    __slots__ = ("name", "tokens", "done")

    def __init__(self, name: str, tokens: int | None):
        self.name, self.tokens, self.done = name, tokens, False


class RowAttentionCapture(AttentionCapture):
    """Stream the attention rows of chosen queries of each block in ``blocks``, call by call.

    The row mode of :class:`AttentionCapture` (same block-scoped torch-function mode, same
    three ways attention is seen), made for ``model.generate`` with a KV cache: every forward
    call of a captured block appends the post-softmax rows of its *kept* queries, and the
    block's output is exactly what it is without the capture.

    Args:
        blocks: ``(name, module)`` pairs, e.g. the decoder layers to capture.
        rows: ``"last"`` keeps the last query row of each call (``generate``: the prompt's last
            position at prefill, then the single new token of every step); ``"all"`` keeps
            every query row (one teacher-forced forward).
        heads: ``"all"`` (``H' = H``), ``"mean"`` / ``"max"`` over heads or a head index
            (``H' = 1``).
        keep_on_cpu: store the rows on the CPU (else on the device they were computed on).

    Per call of a block, the first attention computed inside it is used:

    - ``F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale,
      enable_gqa)``: the kept rows of ``q`` (sliced *before* the product: ``rows="last"``
      never builds the ``[q, k]`` matrix) give ``softmax(q k^T * scale + mask)`` in float32,
      with ``k`` repeated per group when ``q`` has more heads (``enable_gqa``, or HF's
      single-token GQA packing ``q [B, H_kv, groups, d]``, recognised when the block's input
      holds one token); a bool mask keeps ``True``, a float mask is added; ``is_causal`` is
      torch's own mask (``tril`` of ``[q, k]``, aligned to the first key; HF only sets it when
      ``q_len == k_len > 1``). Fully masked rows are 0. Then the original sdpa runs with the
      original arguments, so the block's output is bit-identical to an uncaptured run.
      Dropout is not applied to the recorded rows.
    - an explicit ``softmax`` over the last dim of a 4-D ``[B, H, q, k]`` tensor (HF eager):
      the kept rows of its output are copied.
    - ``F.multi_head_attention_forward``: recorded from the written-out math, then the
      original function computes the output.

    Query positions assume the ``q`` queries are the last ``q`` of the ``k`` keys (a KV
    cache's new tokens): row ``i`` is position ``k - q + i``.

    Results (only kept rows are stored, detached, float32):

    - ``records[name]``: list, one entry per call, of ``(positions [r] int64, probs [B, H', r, K])``.
    - :meth:`positions` ``-> [N]`` and :meth:`rows` ``-> [N, H', K_max]`` (keys zero-padded
      to the longest call; with ``batch_index=None``: ``[B, N, H', K_max]``).

    The torch-function mode is on only while a captured block runs (nothing else in a
    ``generate`` step pays for it). The model's configuration is never changed; hooks and the
    mode are removed on exit, also after an exception.

    Example::

        layers = model.model.language_model.layers
        with RowAttentionCapture([(f"layer{i}", layers[i]) for i in (10, 20)], rows="last", heads="mean") as cap:
            out = model.generate(**inputs, max_new_tokens=64, do_sample=False)
        cap.positions()   # [N]: prompt_len - 1, prompt_len, ... (one per forward call)
        cap.rows(0)       # [N, 1, K]: layer 10's rows, zero-padded to the longest key count
    """

    def __init__(self, blocks: Sequence[Layer], rows: str = "last", heads: Any = "all", keep_on_cpu: bool = True):
        super().__init__(blocks, grad=False)
        if rows not in ("last", "all"):
            raise ParameterError(f"rows={rows!r}: use 'last' or 'all'")
        if not (isinstance(heads, str) and heads in ("all", "mean", "max")):
            try:
                if isinstance(heads, (bool, str)):
                    raise TypeError
                heads = operator.index(heads)
            except TypeError:
                raise ParameterError(f"heads={heads!r}: use 'all', 'mean', 'max' or a head index") from None
        self.keep, self.heads, self.keep_on_cpu = rows, heads, keep_on_cpu
        self.records: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._calls: list[_Call] = []

    # -- block calls -------------------------------------------------------------------
    _mode_per_call = True  # generate: no per-op cost outside the captured blocks

    def _push(self, name: str):
        push = super()._push(name)

        def pre_hook(module, args, kwargs):
            push(module, args, kwargs)
            self._calls.append(_Call(name, _token_count(args, kwargs)))
            if self._mode is None:
                mode = _AttentionMode(self)
                mode.__enter__()
                self._mode = mode

        return pre_hook

    def _pop(self, name: str):
        pop = super()._pop(name)

        def hook(module, inputs, output):  # always_call: also when the block raised
            pop(module, inputs, output)
            if self._calls and self._calls[-1].name == name:
                self._calls.pop()
            if not self._stack and self._mode is not None:
                mode, self._mode = self._mode, None
                mode.__exit__(None, None, None)

        return hook

    def _claim(self) -> _Call | None:
        """The running call of the innermost captured block if it has recorded nothing yet."""
        name = self.current
        if name is None:
            return None
        call = self._calls[-1] if self._calls and self._calls[-1].name == name else _Call(name, None)
        if call.done:
            return None
        call.done = True
        return call

    def _store(self, name: str, positions: torch.Tensor, probs: torch.Tensor) -> None:
        """Reduce heads of ``probs`` ``[B, H, r, K]`` and append them with their query positions."""
        try:
            probs = select_heads(probs, self.heads)
        except VizkitError as e:  # a head index past this block's heads
            raise CaptureError(f"block {name!r}: {e}") from None
        device = "cpu" if self.keep_on_cpu else probs.device
        # copy=True: a slice of the model's own matrix must not keep that matrix alive
        self.records.setdefault(name, []).append(
            (positions.to("cpu", torch.long, copy=True), probs.detach().to(device, torch.float32, copy=True))
        )

    def _kept(self, n_q: int, device) -> torch.Tensor:
        return torch.arange(n_q - 1 if self.keep == "last" else 0, n_q, device=device)

    # -- the three ways attention is computed ------------------------------------------
    def record(self, probs: torch.Tensor) -> torch.Tensor:
        """An explicit softmax ``[B, H, q, K]`` (eager): keep its kept rows; ``probs`` goes on unchanged."""
        call = self._claim()
        if call is not None:
            n_q, n_k = probs.shape[-2], probs.shape[-1]
            idx = self._kept(n_q, probs.device)
            self._store(call.name, idx + (n_k - n_q), probs.detach().index_select(-2, idx))
        return probs

    def sdpa(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        """Record the kept rows of ``F.scaled_dot_product_attention``, then call it unchanged."""
        call = self._claim() if query.ndim == 4 and key.ndim == 4 else None
        if call is not None:
            self._sdpa_rows(
                call,
                query.detach(),
                key.detach(),
                attn_mask.detach() if isinstance(attn_mask, torch.Tensor) else attn_mask,
                bool(is_causal),
                scale,
            )
        return F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attn_mask,
            dropout_p=dropout_p,
            is_causal=is_causal,
            scale=scale,
            enable_gqa=enable_gqa,
        )

    def _sdpa_rows(
        self, call: _Call, q: torch.Tensor, k: torch.Tensor, mask: Any, is_causal: bool, scale: float | None
    ) -> None:
        batch, h_q, n_q, dim = q.shape
        if mask is not None and not isinstance(mask, torch.Tensor) and hasattr(mask, "_materialize"):
            mask = mask._materialize(q.device)  # torch.nn.attention.bias.CausalBias
        if call.tokens == 1 and n_q > 1 and not is_causal and k.shape[-3] == h_q:
            # HF's single-token GQA packing: q [B, H_kv, groups, d] is one query of H_kv * groups heads
            groups = n_q
            q = q.reshape(batch, h_q * groups, 1, dim)
            if isinstance(mask, torch.Tensor) and mask.ndim == 4 and mask.shape[-2] == groups:
                mask = mask.reshape(mask.shape[0], mask.shape[1] * groups, 1, mask.shape[-1])
            batch, h_q, n_q, dim = q.shape
        n_k = k.shape[-2]
        idx = self._kept(n_q, q.device)
        scale = 1.0 / math.sqrt(dim) if scale is None else scale
        if k.shape[-3] != h_q and h_q % k.shape[-3] == 0:
            k = k.repeat_interleave(h_q // k.shape[-3], dim=-3)
        scores = (q.index_select(-2, idx).float() @ k.float().transpose(-2, -1)) * scale  # [B, H, r, K]
        masked = False
        if is_causal:
            keys = torch.arange(n_k, device=q.device)
            scores = scores.masked_fill(keys[None, :] > idx[:, None], float("-inf"))
            masked = True
        if isinstance(mask, torch.Tensor):
            if mask.ndim >= 2 and mask.shape[-2] == n_q:
                mask = mask.index_select(-2, idx)
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
            masked = True
        probs = torch.softmax(scores, dim=-1)
        if masked:
            probs = probs.masked_fill(torch.isneginf(scores).all(-1, keepdim=True), 0.0)
        self._store(call.name, idx + (n_k - n_q), probs)

    def mha(self, *args, **kwargs):
        """Record through the written-out ``F.multi_head_attention_forward``, then call the original."""
        call = self._calls[-1] if self._calls and self._calls[-1].name == self.current else None
        if self.current is not None and not (call is not None and call.done):
            super().mha(*args, **kwargs)  # written out: calls self.record on the probabilities
        return F.multi_head_attention_forward(*args, **kwargs)

    # -- results -----------------------------------------------------------------------
    def _name(self, block: str | int) -> str:
        names = [n for n, _ in self.blocks]
        if isinstance(block, str):
            if block not in names:
                raise CaptureError(f"block {block!r} is not captured here (captured: {names})")
            return block
        i = int(block)
        if not -len(names) <= i < len(names):
            raise CaptureError(f"block index {i} is out of range: {len(names)} blocks are captured")
        return names[i]

    def positions(self, block: str | int = 0) -> torch.Tensor:
        """``[N]`` int64: the query position of each kept row of ``block`` (the same for every block
        of one decoder)."""
        chunks = self.records.get(self._name(block), []) if self.blocks else []
        return torch.cat([p for p, _ in chunks]) if chunks else torch.zeros(0, dtype=torch.long)

    def rows(self, block: str | int, batch_index: int | None = 0) -> torch.Tensor:
        """``[N, H', K]`` float32: the kept rows of ``block`` (name or index into ``blocks``), one per
        kept query in call order, keys beyond a call's key count zero-padded to the longest
        (``K``); ``batch_index=None`` gives ``[B, N, H', K]``."""
        name = self._name(block)
        chunks = self.records.get(name, [])
        if not chunks:
            raise CaptureError(f"no attention was captured for block {name!r}: did a forward run inside the capture?")
        k_max = max(t.shape[-1] for _, t in chunks)
        out = torch.cat([F.pad(t, (0, k_max - t.shape[-1])) for _, t in chunks], dim=2).transpose(1, 2)
        return out if batch_index is None else out[batch_index]

    # -- context management ------------------------------------------------------------
    def __enter__(self) -> "RowAttentionCapture":
        self.records = {}
        self._calls = []
        super().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._calls.clear()
