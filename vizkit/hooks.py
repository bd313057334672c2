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
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .errors import CaptureError
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
                    "choose a submodule whose output is a tensor")
            if name in self.tensors:
                raise CaptureError(
                    f"layer {name!r} ran more than once in one forward pass (a shared module): "
                    "choose a module that runs once")
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

    def mha(self, query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
            bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training=True,
            key_padding_mask=None, need_weights=True, attn_mask=None, use_separate_proj_weight=False,
            q_proj_weight=None, k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None,
            average_attn_weights=True, is_causal=False):
        """``F.multi_head_attention_forward`` (sequence-first inputs) written out."""
        if bias_k is not None or bias_v is not None or add_zero_attn or static_k is not None or static_v is not None:
            raise CaptureError(
                "nn.MultiheadAttention with add_bias_kv, add_zero_attn or static keys is not supported "
                "for attention capture")
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
                self._handles.append(block.register_forward_pre_hook(self._push(name)))
                self._handles.append(block.register_forward_hook(self._pop(name), always_call=True))
            self._fastpath = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
            self._mode = _AttentionMode(self)
            self._mode.__enter__()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _push(self, name: str):
        def pre_hook(module, inputs):
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
