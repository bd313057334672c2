"""The public entry points: :func:`cam`, :func:`attention`, :func:`rollout`,
:func:`gradient_attention`.

Each call: validate inputs, resolve layers, then inside :func:`preserved_state` (eval mode,
frozen parameters, restored afterwards) run one forward pass with scoped captures and, when
needed, one ``torch.autograd.grad`` from the target score down to the earliest captured
tensor. Works inside ``torch.no_grad()``.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import attention_math as am
from .errors import CaptureError, InputError, TargetError, VizkitError
from .hooks import ActivationCapture, AttentionCapture, GridCapture
from .layers import (
    Layer,
    LayerSpec,
    _has_attention,
    attention_modules,
    find_block_lists,
    find_patch_embed,
    get_module,
    no_attention_message,
    probe,
    resolve_layers,
)
from .methods import Method, get_method
from .state import model_device, preserved_state
from .targets import Target, TargetSpec, as_target, output_tensor
from .tokens import (
    LayoutSpec,
    TokenLayout,
    check_layout,
    feature_layout,
    infer_layout,
    patch_row_to_grid,
    to_batch_first,
    tokens_to_grid,
)

Forward = Callable[[torch.Tensor], Any]


# --------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------
@dataclass
class Explanation:
    """A saliency explanation of a batch.

    - ``heatmap``: ``[B, H, W]`` float32 in [0, 1] at the input resolution. With several
      layers it is the mean of the per-layer normalised maps, normalised again (the
      aggregation pytorch-grad-cam uses).
    - ``layer_maps``: ``{layer: [B, h, w]}`` at the layer's resolution, after the ReLU and
      before any normalisation.
    - ``layer_heatmaps``: ``{layer: [B, H, W]}`` each layer's map normalised and resized.
    - ``scores``: ``[B]`` the explained target scores; ``targets``: ``[B]`` class indices
      when the targets were classes, else None.
    """

    heatmap: torch.Tensor
    layer_maps: dict[str, torch.Tensor]
    layer_heatmaps: dict[str, torch.Tensor]
    scores: torch.Tensor
    layers: list[str]
    method: str
    targets: torch.Tensor | None = None
    output: torch.Tensor | None = None


@dataclass
class AttentionMaps:
    """Post-softmax attention per layer, ``maps[layer]``: ``[B, heads, N, N]`` (detached).

    ``grid = (h, w)`` patches and ``prefix_tokens`` leading tokens (CLS, registers) describe
    how the N tokens map onto the image; ``output`` is the model's main output tensor.
    """

    maps: dict[str, torch.Tensor]
    layers: list[str]
    grid: tuple[int, int]
    prefix_tokens: int
    output: torch.Tensor | None = None
    image_size: tuple[int, int] | None = None

    @property
    def layout(self) -> TokenLayout:
        return TokenLayout(self.grid, self.prefix_tokens)

    def stacked(self) -> torch.Tensor:
        """All layers as one ``[L, B, H, N, N]`` tensor."""
        return torch.stack([self.maps[n] for n in self.layers])

    def cls_attention(self, layer: str | int, head_fusion: str | None = "mean") -> torch.Tensor:
        """CLS -> patch attention of one layer: ``[B, h, w]`` fused, or ``[B, H, h, w]`` per head
        when ``head_fusion`` is None."""
        name = self.layers[layer] if isinstance(layer, int) else layer
        attn = self.maps[name]
        if head_fusion is None:
            b, heads = attn.shape[:2]
            return attn[:, :, 0, self.prefix_tokens :].reshape(b, heads, *self.grid)
        return patch_row_to_grid(am.fuse_heads(attn, head_fusion)[:, 0], self.layout)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _check_inputs(model: nn.Module, inputs: Any) -> torch.Tensor:
    if not isinstance(inputs, torch.Tensor):
        raise InputError(f"inputs must be a torch.Tensor [B, C, H, W], got {type(inputs).__name__}")
    if inputs.ndim != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if inputs.ndim == 3 else ""
        raise InputError(f"inputs must be a 4-D batch [B, C, H, W], got shape {tuple(inputs.shape)}{hint}")
    if inputs.shape[0] == 0:
        raise InputError("inputs is an empty batch")
    x = inputs.detach().to(model_device(model))
    return x if x.is_floating_point() else x.float()


def _check_sequence_inputs(model: nn.Module, inputs: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """Keyword inputs of a token-sequence model (``input_ids [B, T]``, ``pixel_values``, ...)
    moved to the model's device, and the batch size ``B`` read from ``input_ids``."""
    ids = inputs.get("input_ids")
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2:
        raise InputError(
            "keyword inputs (a mapping) must hold input_ids, a [B, T] tensor, as a processor returns "
            f"them; got keys {', '.join(map(str, inputs)) or 'none'}"
        )
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise InputError(f"input_ids is empty (shape {tuple(ids.shape)})")
    device = model_device(model)
    return {k: (v.detach().to(device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}, ids.shape[0]


def _outside_inference_mode(needs_gradients: Callable[[dict[str, Any]], bool] = lambda arguments: True) -> Callable:
    """Decorator: run an entry point outside ``torch.inference_mode()``: the call leaves inference
    mode (``torch.inference_mode(False)``) and re-creates the input as a normal tensor; the
    caller's mode is unchanged afterwards. A model whose parameters are inference tensors
    (created or loaded inside inference mode) cannot be differentiated: a call for which
    ``needs_gradients(bound arguments)`` is true raises one clear error; the others (attention
    capture, Eigen-CAM, Score-CAM) run in inference mode."""
    return functools.partial(_wrap_outside_inference_mode, needs_gradients=needs_gradients)


def _wrap_outside_inference_mode(fn: Callable, needs_gradients: Callable[[dict[str, Any]], bool]) -> Callable:
    @functools.wraps(fn)
    def wrapper(model: nn.Module, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_inference_mode_enabled():
            return fn(model, inputs, *args, **kwargs)
        if isinstance(model, nn.Module) and any(t.is_inference() for t in (*model.parameters(), *model.buffers())):
            bound = inspect.signature(fn).bind(model, inputs, *args, **kwargs)
            bound.apply_defaults()
            if not needs_gradients(bound.arguments):
                return fn(model, inputs, *args, **kwargs)  # no autograd needed: stay in inference mode
            raise InputError(
                f"the parameters of {type(model).__name__} are inference tensors (the model was created or "
                f"loaded inside torch.inference_mode()), which autograd cannot use; create or load the model "
                f"outside inference_mode (calling vizkit inside it is fine), or use a gradient-free method "
                f"(attention, eigencam, scorecam)"
            )
        with torch.inference_mode(False):
            if isinstance(inputs, torch.Tensor):
                inputs = inputs.clone()  # a normal tensor: inference tensors cannot enter autograd
            elif isinstance(inputs, Mapping):
                inputs = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
            return fn(model, inputs, *args, **kwargs)

    return wrapper


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """Per image ``[B, h, w]``: subtract the min, divide by ``range + eps`` with
    ``eps = min(1e-7, 1e-4 * range)``.

    For maps whose range is at least 1e-3 this is exactly pytorch-grad-cam's
    ``(x - min) / (1e-7 + max)``; below that the epsilon stays relative to the range, so a map
    of tiny values (max 1e-9) keeps its shape (max >= 0.9999) instead of being blanked. A
    constant map (range within float rounding of its magnitude, or not finite) becomes 0."""
    flat = x.flatten(1)
    lo, hi = flat.amin(1), flat.amax(1)
    rng = hi - lo
    magnitude = torch.maximum(lo.abs(), hi.abs())
    constant = ~(rng > 8 * torch.finfo(x.dtype).eps * magnitude) | ~torch.isfinite(rng)
    scale = torch.where(constant, torch.ones_like(rng), rng + torch.clamp(1e-4 * rng, max=1e-7))
    out = (x - lo[:, None, None]) / scale[:, None, None]
    return torch.where(constant[:, None, None], torch.zeros_like(out), out)


def _to_input_size(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Normalise then bilinearly resize ``[B, h, w]`` maps to ``size`` (normalise first, as
    pytorch-grad-cam does)."""
    maps = _minmax(maps.float())
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _enclosing_classes(model: nn.Module, name: str) -> list[str]:
    """Class names of the module at ``name`` and of every module enclosing it (model first)."""
    classes, module = [type(model).__name__], model
    for part in name.split(".") if name else []:
        module = module._modules[part]
        classes.append(type(module).__name__)
    return classes


def _layer_layout(
    t: torch.Tensor, layout: LayoutSpec, image_hw: tuple[int, int], name: str, model: nn.Module, module: nn.Module
) -> LayoutSpec:
    """The layout of layer ``name``'s captured tensor: the caller's, or decided by the rules of
    :func:`vizkit.tokens.feature_layout` for 4-D tensors (tokens for 3-D ones)."""
    if callable(layout):
        return layout
    if t.ndim == 3:
        if layout in ("nchw", "nhwc"):
            raise InputError(
                f"layer {name!r} outputs tokens {tuple(t.shape)} [B, N, C], not a 4-D map: "
                f"layout={layout!r} does not apply (use layout='tokens' or None)"
            )
        return "tokens"
    if t.ndim == 4:
        if layout == "tokens":
            raise InputError(
                f"layer {name!r} outputs a 4-D map {tuple(t.shape)}, not tokens: use layout='nchw' "
                "or 'nhwc' (or None to decide per layer)"
            )
        return layout or feature_layout(t.shape, image_hw, name, module, _enclosing_classes(model, name))
    raise CaptureError(
        f"layer {name!r} output has shape {tuple(t.shape)}: expected [B, C, h, w], [B, h, w, C] "
        "or tokens [B, N, C]; pass layout=<callable returning [B, C, h, w]>"
    )


def _spatial(
    t: torch.Tensor,
    batch: int,
    grid: tuple[int, int] | None,
    image_hw: tuple[int, int],
    name: str,
    layout: LayoutSpec = "nchw",
) -> torch.Tensor:
    """A captured activation as ``[B, C, h, w]`` by its (decided) layout: NCHW maps pass,
    NHWC maps are permuted, tokens are reshaped onto the measured grid, a callable is applied."""
    if callable(layout):
        out = layout(t)
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[0] != batch:
            raise InputError(
                f"layout callable returned {tuple(getattr(out, 'shape', ()))} for layer {name!r}'s "
                f"{tuple(t.shape)} tensor: it must return [B, C, h, w] with B = {batch}"
            )
        return out
    if layout == "nhwc":
        return t.permute(0, 3, 1, 2)
    if layout == "nchw":
        return t
    tokens = to_batch_first(t, batch)
    return tokens_to_grid(tokens, infer_layout(tokens.shape[1], grid, image_hw))


def _main_output(output: Any) -> torch.Tensor | None:
    try:
        return output_tensor(output, "logits", "image_embeds").detach()
    except TargetError:
        return None


def _scores(target: Target, output: Any, batch: int) -> torch.Tensor:
    scores = target(output)
    if scores.ndim != 1 or scores.shape[0] != batch:
        raise TargetError(f"the target returned scores of shape {tuple(scores.shape)}; expected [{batch}]")
    return scores


def _grads(
    scores: torch.Tensor, tensors: Sequence[torch.Tensor], names: Sequence[str], retain_graph: bool = False
) -> list[torch.Tensor]:
    """d(sum of ``scores``)/d``tensors``; a layer the score does not reach gets zeros and a warning."""
    if not scores.requires_grad:
        raise CaptureError(
            f"the target score does not depend on layer(s) {', '.join(names)}: choose layers that run "
            "before the output the target reads"
        )
    grads = torch.autograd.grad(scores.sum(), list(tensors), allow_unused=True, retain_graph=retain_graph)
    out = []
    for name, t, g in zip(names, tensors, grads):
        if g is None:
            warnings.warn(f"layer {name!r} does not influence the target score: its gradient is zero", stacklevel=3)
            g = torch.zeros_like(t)
        out.append(g)
    return out


@contextmanager
def _attention_implementation(model: nn.Module) -> Iterator[None]:
    """For HF models on a fused implementation that vizkit cannot see into (flash, flex),
    switch to ``eager`` for the call and restore it afterwards. ``sdpa`` and ``eager``
    are captured as they are."""
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    switch = impl not in (None, "eager", "sdpa") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(impl)


def _probe_fn(model: nn.Module, run: Forward, x: torch.Tensor, forward: Forward | None) -> Callable:
    # cache the probe for model(x) and for the model's own methods (keyed by the function, so
    # the cache never holds the model); other callables are probed on every call
    if forward is None:
        key: Any = "model"
    elif getattr(forward, "__self__", None) is model:
        key = ("method", forward.__func__)
    else:
        key = None
    return lambda: probe(model, run, x, key=key)


def _blocks_for_grid(model: nn.Module) -> list[Layer]:
    lists = find_block_lists(model)
    return [blk for _, blocks in lists for blk in blocks]


# --------------------------------------------------------------------------------------
# CAM family
# --------------------------------------------------------------------------------------
def cam(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: TargetSpec = None,
    layers: LayerSpec = "auto",
    method: str = "gradcam",
    *,
    forward: Forward | None = None,
    batch_size: int = 32,
    sign_correction: bool = False,
    layout: LayoutSpec = None,
) -> Explanation:
    """Class-activation map of ``inputs`` ``[B, C, H, W]`` for ``targets``.

    - ``method``: gradcam, gradcam++, xgradcam, hirescam, layercam, eigencam, scorecam.
    - ``targets``: None (predicted class), an int, one int per image, or a callable
      ``output -> [B]`` (see :mod:`vizkit.targets`).
    - ``layers``: see :mod:`vizkit.layers`; ViT tokens ``[B, N, C]`` are reshaped to
      ``[B, C, h, w]`` using the measured patch grid and prefix-token count.
    - ``forward``: what to call instead of ``model(x)`` (e.g. ``clip.encode_image``); hooks
      still go on ``model``'s modules.
    - ``batch_size``: masked images per forward pass for Score-CAM.
    - ``sign_correction``: Eigen-CAM only, flip maps whose largest magnitude is negative.
    - ``layout``: where the channels of the layers' outputs are: None (decided per layer by
      the rules of :func:`vizkit.tokens.feature_layout`; an undecidable layer raises),
      ``"nchw"``, ``"nhwc"`` (timm / torchvision Swin), ``"tokens"`` ``[B, N, C]``, or a
      callable ``tensor -> [B, C, h, w]`` (pytorch-grad-cam's ``reshape_transform``), applied
      to activations and gradients alike.
    """
    layout = check_layout(layout)
    x = _check_inputs(model, inputs)
    spec = get_method(method)
    options = {"sign_correction": sign_correction}
    run: Forward = forward if forward is not None else model
    batch, image_hw = x.shape[0], (x.shape[-2], x.shape[-1])
    with preserved_state(model):
        layer_list = resolve_layers(model, layers, probe_fn=_probe_fn(model, run, x, forward))
        names = [n for n, _ in layer_list]
        embed = find_patch_embed(model, _blocks_for_grid(model))
        grad_ctx = torch.enable_grad() if spec.uses_gradients else torch.no_grad()
        with grad_ctx:
            with (
                ActivationCapture(layer_list, grad=spec.uses_gradients) as cap,
                GridCapture(embed[1] if embed else None) as gc,
            ):
                output = run(x)
            missing = [n for n in names if n not in cap.tensors]
            if missing:
                raise CaptureError(f"layer(s) {', '.join(missing)} did not run in the forward pass")
            target = as_target(targets, batch, output)
            scores = _scores(target, output, batch)
            tensors = [cap.tensors[n] for n in names]
            grads = _grads(scores, tensors, names) if spec.uses_gradients else [None] * len(tensors)
        layer_maps: dict[str, torch.Tensor] = {}
        for (name, module), act, grad in zip(layer_list, tensors, grads):
            lay = _layer_layout(act, layout, image_hw, name, model, module)
            a = _spatial(act.detach(), batch, gc.grid, image_hw, name, lay)
            if spec.uses_scores:
                raw = _score_method(spec, a, x, run, target, batch, batch_size)
            elif not spec.uses_gradients:
                raw = spec.fn(a, **{k: options[k] for k in spec.options})
            else:
                raw = spec.fn(a, _spatial(grad.detach(), batch, gc.grid, image_hw, name, lay))
            layer_maps[name] = raw.float().clamp(min=0)
    layer_heatmaps = {n: _to_input_size(m, image_hw) for n, m in layer_maps.items()}
    heatmap = _minmax(torch.stack(list(layer_heatmaps.values()), 1).clamp(min=0).mean(1))
    classes = getattr(target, "classes", None)
    if classes is not None and classes.ndim == 0:
        classes = classes.expand(batch)
    return Explanation(
        heatmap=heatmap,
        layer_maps=layer_maps,
        layer_heatmaps=layer_heatmaps,
        scores=scores.detach(),
        layers=names,
        method=spec.name,
        targets=classes,
        output=_main_output(output),
    )


# applied here, not as a @decorator line: mutmut (`make mutation`) does not mutate decorated functions
cam = _outside_inference_mode(lambda arguments: get_method(arguments["method"]).uses_gradients)(cam)


def _score_method(
    spec: Method, acts: torch.Tensor, x: torch.Tensor, run: Forward, target: Target, batch: int, batch_size: int
) -> torch.Tensor:
    try:
        target.take(torch.arange(batch))
        takes = True
    except NotImplementedError:
        takes = False

    def score_fn(images: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        out = run(images)
        return (target.take(rows) if takes else target)(out)

    # a plain callable scores whole batches in image order: one channel of every image per pass
    return spec.fn(acts, x, score_fn, batch_size=max(1, batch_size) if takes else batch)


# --------------------------------------------------------------------------------------
# attention
# --------------------------------------------------------------------------------------
def _attention_layers(
    model: nn.Module, layers: LayerSpec, run: Forward, x: torch.Tensor, forward: Forward | None
) -> list[Layer]:
    if isinstance(layers, str) and layers.strip().lower() == "auto":
        layers = "all"
    return resolve_layers(model, layers, probe_fn=_probe_fn(model, run, x, forward), for_attention=True)


def _layout(maps: dict[str, torch.Tensor], grid: tuple[int, int] | None, image_hw: tuple[int, int]) -> TokenLayout:
    first = next(iter(maps.values()))
    return infer_layout(first.shape[-1], grid, image_hw)


def _require_maps(cap: AttentionCapture, names: Sequence[str], model: nn.Module) -> None:
    missing = [n for n in names if n not in cap.maps]
    holders = attention_modules(model)
    not_attention = [n for n in missing if n not in holders and not _has_attention(get_module(model, n))]
    if not_attention:
        kinds = ", ".join(f"{n!r} is a {type(get_module(model, n)).__name__}" for n in not_attention)
        raise CaptureError(no_attention_message(model, f"{kinds}, not an attention module or a block holding one;"))
    if missing:
        impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
        extra = f" (attention implementation {impl!r})" if impl else ""
        raise CaptureError(
            f"no attention probabilities were computed inside {', '.join(missing)}{extra}. Pass transformer "
            "blocks (e.g. layers='all'); a custom attention must compute softmax, "
            "F.scaled_dot_product_attention or nn.MultiheadAttention"
        )


def attention(
    model: nn.Module,
    inputs: torch.Tensor,
    layers: LayerSpec = "all",
    *,
    forward: Forward | None = None,
) -> AttentionMaps:
    """Post-softmax attention ``[B, heads, N, N]`` of each chosen transformer block for
    ``inputs`` ``[B, C, H, W]``, from one forward pass without gradients."""
    x = _check_inputs(model, inputs)
    run: Forward = forward if forward is not None else model
    with preserved_state(model), _attention_implementation(model):
        layer_list = _attention_layers(model, layers, run, x, forward)
        names = [n for n, _ in layer_list]
        embed = find_patch_embed(model, layer_list)
        with torch.no_grad(), AttentionCapture(layer_list) as cap, GridCapture(embed[1] if embed else None) as gc:
            output = run(x)
        _require_maps(cap, names, model)
    maps = {n: cap.maps[n] for n in names}  # AttentionCapture records [B, H, N, N] only
    layout = _layout(maps, gc.grid, x.shape[-2:])
    return AttentionMaps(
        maps=maps,
        layers=names,
        grid=layout.grid,
        prefix_tokens=layout.prefix,
        output=_main_output(output),
        image_size=(x.shape[-2], x.shape[-1]),
    )


# applied here, not as a @decorator line: mutmut (`make mutation`) does not mutate decorated functions
attention = _outside_inference_mode(lambda arguments: False)(attention)


def rollout(
    attn: AttentionMaps | Sequence[torch.Tensor],
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    *,
    grid: tuple[int, int] | None = None,
    prefix_tokens: int = 1,
) -> torch.Tensor:
    """Attention rollout: the CLS row of the rolled-out matrix over the patches, ``[B, h, w]``
    (raw values, not normalised); the mean of all rows when the model has no prefix token.

    ``attn`` is an :class:`AttentionMaps` or a sequence of ``[B, H, N, N]`` maps in layer
    order (then ``grid`` / ``prefix_tokens`` describe the tokens). Layers before
    ``start_layer`` are skipped. See :func:`vizkit.attention_math.rollout_matrix`.
    """
    if isinstance(attn, AttentionMaps):
        maps = [attn.maps[n] for n in attn.layers]
        layout = attn.layout
    else:
        maps = list(attn)
        if not maps:
            raise VizkitError("rollout needs at least one attention map")
        layout = (
            infer_layout(maps[0].shape[-1], grid)
            if grid
            else TokenLayout(infer_layout(maps[0].shape[-1] - prefix_tokens).grid, prefix_tokens)
        )
    if not 0 <= start_layer < len(maps):
        raise VizkitError(f"start_layer {start_layer} is out of range for {len(maps)} layers")
    r = am.rollout_matrix(maps[start_layer:], head_fusion, discard_ratio)
    # no CLS token (a model that pools its patch tokens): every token's row counts alike
    return patch_row_to_grid(r[:, 0] if layout.prefix else r.mean(1), layout)


def gradient_attention(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: TargetSpec = None,
    layers: LayerSpec = "all",
    head_fusion: str = "mean",
    *,
    forward: Forward | None = None,
) -> Explanation:
    """Gradient-weighted attention relevance (Chefer et al., ICCV 2021) for ``targets``.

    Per chosen layer ``Ā = fuse_heads((∇A ⊙ A)⁺)``; ``R ← R + Ā R`` over the layers in
    order; the map is the CLS row of ``R`` over the patches (the mean of all rows when the
    model has no prefix token). ``layer_maps`` holds each layer's ``Ā`` CLS row ``[B, h, w]``.
    """
    if head_fusion not in am.HEAD_FUSIONS:
        raise VizkitError(f"head_fusion must be one of {', '.join(am.HEAD_FUSIONS)}, got {head_fusion!r}")
    return attention_gradients(model, inputs, [targets], layers, forward=forward).explanation(0, head_fusion)


# --------------------------------------------------------------------------------------
# attention and its gradients for several targets, from one forward pass
# --------------------------------------------------------------------------------------
@dataclass
class AttentionGradients:
    """Post-softmax attention of each layer and its gradient for each of several targets,
    captured in ONE forward pass (one ``autograd.grad`` per target from the same graph).

    - ``attentions[layer]``: ``[B, H, N, N]``; ``gradients[t][layer]``: ``[B, H, N, N]`` for
      target ``t``; ``scores[t]``: ``[B]``; ``classes[t]``: ``[B]`` class indices or None.
    - ``grid`` / ``prefix_tokens`` say how the N tokens map onto the image; both are None / 0
      for keyword inputs of a token-sequence model (a VLM), whose positions only its family
      adapter can place: read rows with :meth:`matrix` / :meth:`token_relevance`.

    Every map is computed from these cached tensors: choosing other layers, another head
    fusion or the other aggregation costs no forward or backward pass.
    """

    attentions: dict[str, torch.Tensor]
    gradients: list[dict[str, torch.Tensor]]
    scores: list[torch.Tensor]
    classes: list[torch.Tensor | None]
    layers: list[str]
    grid: tuple[int, int] | None
    prefix_tokens: int
    image_size: tuple[int, int] | None
    output: torch.Tensor | None = None

    @property
    def layout(self) -> TokenLayout:
        if self.grid is None:
            raise VizkitError(
                "these attentions come from keyword inputs of a token-sequence model: they have no image "
                "grid; read rows over the positions with matrix() or token_relevance(query=...)"
            )
        return TokenLayout(self.grid, self.prefix_tokens)

    def matrix(
        self,
        target: int = 0,
        head_fusion: str = "mean",
        layers: Sequence[str] | None = None,
        aggregation: str = "relevance",
    ) -> torch.Tensor:
        """``[B, N, N]`` the aggregated relevance matrix of target ``target`` over ``layers``
        (:func:`vizkit.attention_math.aggregate`; row ``q``: how much each position contributes
        to position ``q``), not clamped."""
        if head_fusion not in am.HEAD_FUSIONS:
            raise VizkitError(f"head_fusion must be one of {', '.join(am.HEAD_FUSIONS)}, got {head_fusion!r}")
        names = self._layers(layers)
        return am.aggregate(
            [self.attentions[n] for n in names], [self.gradients[target][n] for n in names], head_fusion, aggregation
        )

    def token_relevance(
        self,
        query: int,
        target: int = 0,
        head_fusion: str = "mean",
        layers: Sequence[str] | None = None,
        aggregation: str = "relevance",
    ) -> torch.Tensor:
        """``[B, N]`` row ``query`` of :meth:`matrix` clamped at 0: the relevance of every
        position for the target read at position ``query`` (negative counts from the end), e.g.
        a VLM's next-token logit read at the last position (Chefer et al. 2021, self-attention rule)."""
        n = next(iter(self.attentions.values())).shape[-1]
        if not -n <= query < n:
            raise VizkitError(f"query position {query} is out of range for {n} positions")
        return self.matrix(target, head_fusion, layers, aggregation)[:, query].clamp(min=0)

    def _layers(self, layers: Sequence[str] | None) -> list[str]:
        if layers is None:
            return list(self.layers)
        unknown = [n for n in layers if n not in self.attentions]
        if unknown:
            raise VizkitError(f"layer(s) {', '.join(unknown)} were not captured; captured: {', '.join(self.layers)}")
        return [n for n in self.layers if n in set(layers)]  # always in forward order

    def _row(self, m: torch.Tensor) -> torch.Tensor:
        """``[B, N, N]`` -> the CLS row over the patches ``[B, h, w]`` (the mean of all rows
        when the model has no prefix token)."""
        return patch_row_to_grid(m[:, 0] if self.prefix_tokens else m.mean(1), self.layout)

    def relevance(
        self,
        target: int = 0,
        head_fusion: str = "mean",
        layers: Sequence[str] | None = None,
        aggregation: str = "relevance",
    ) -> torch.Tensor:
        """``[B, h, w]`` map of target ``target`` over ``layers`` (default all captured), by
        :func:`vizkit.attention_math.aggregate`; clamped at 0, not normalised."""
        names = self._layers(layers)
        m = am.aggregate(
            [self.attentions[n] for n in names], [self.gradients[target][n] for n in names], head_fusion, aggregation
        )
        return self._row(m).clamp(min=0)

    def layer_map(self, target: int, layer: str, head_fusion: str = "mean") -> torch.Tensor:
        """One layer's ``Ā`` CLS row ``[B, h, w]`` for target ``target``."""
        (name,) = self._layers([layer])
        return self._row(am.gradient_weighted(self.attentions[name], self.gradients[target][name], head_fusion))

    def explanation(
        self,
        target: int = 0,
        head_fusion: str = "mean",
        layers: Sequence[str] | None = None,
        aggregation: str = "relevance",
    ) -> Explanation:
        """An :class:`Explanation` of target ``target`` (heatmap at the input size, per-layer ``Ā`` maps)."""
        if head_fusion not in am.HEAD_FUSIONS:
            raise VizkitError(f"head_fusion must be one of {', '.join(am.HEAD_FUSIONS)}, got {head_fusion!r}")
        names = self._layers(layers)
        raw = self.relevance(target, head_fusion, names, aggregation)
        layer_maps = {n: self.layer_map(target, n, head_fusion) for n in names}
        suffix = "" if aggregation == "relevance" else f", {aggregation}"
        return Explanation(
            heatmap=_to_input_size(raw, self.image_size),
            layer_maps=layer_maps,
            layer_heatmaps={n: _to_input_size(m, self.image_size) for n, m in layer_maps.items()},
            scores=self.scores[target],
            layers=names,
            method=f"gradient_attention[{head_fusion}{suffix}]",
            targets=self.classes[target],
            output=self.output,
        )

    def by_class(self, classes: Sequence[int]) -> AttentionGradients:
        """This cache with target ``i`` moved to index ``classes[i]`` (its gradients, scores and
        classes), so that ``relevance(k)`` explains class ``k``; an index no target has holds None
        (``classes=[2, 0]`` -> targets ``[t1, None, t0]``). Attentions and layout are shared."""
        n = max(classes) + 1
        grads: list[Any] = [None] * n
        scores: list[Any] = [None] * n
        cls: list[Any] = [None] * n
        for i, k in enumerate(classes):
            grads[k], scores[k], cls[k] = self.gradients[i], self.scores[i], self.classes[i]
        return replace(self, gradients=grads, scores=scores, classes=cls)


def attention_gradients(
    model: nn.Module,
    inputs: torch.Tensor | Mapping[str, Any],
    targets: Sequence[TargetSpec],
    layers: LayerSpec = "all",
    *,
    forward: Forward | None = None,
) -> AttentionGradients:
    """Attention ``[B, H, N, N]`` of the chosen blocks and its gradient for EACH of ``targets``
    (each anything :func:`cam` accepts as ``targets``) from one forward pass of ``inputs``
    ``[B, C, H, W]``: e.g. the real and the fake class of a detector, ``targets=[0, 1]``.

    ``inputs`` may also be the keyword inputs of a token-sequence model (a mapping with
    ``input_ids [B, T]``, e.g. a VLM processor's output; the model is called as
    ``model(**inputs)`` unless ``forward`` is given): ``N = T``, no image grid is inferred
    (``grid`` None), and a target is then usually a callable such as
    ``lambda out: out.logits[:, -1, token_id]``."""
    sequence = isinstance(inputs, Mapping)
    if sequence:
        x, batch = _check_sequence_inputs(model, inputs)
        image_hw = None
        run: Forward = forward if forward is not None else (lambda kw: model(**kw))
    else:
        x = _check_inputs(model, inputs)
        batch, image_hw = x.shape[0], (x.shape[-2], x.shape[-1])
        run = forward if forward is not None else model
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence) or len(targets) == 0:
        raise TargetError("targets must be a non-empty list, one entry per explained target (e.g. [0, 1])")
    with preserved_state(model), _attention_implementation(model):
        layer_list = _attention_layers(model, layers, run, x, forward)
        names = [n for n, _ in layer_list]
        embed = None if sequence else find_patch_embed(model, layer_list)
        with (
            torch.enable_grad(),
            AttentionCapture(layer_list, grad=True) as cap,
            GridCapture(embed[1] if embed else None) as gc,
        ):
            output = run(x)
            _require_maps(cap, names, model)
            attns = [cap.maps[n] for n in names]
            scores, grads, classes = [], [], []
            for i, spec in enumerate(targets):
                target = as_target(spec, batch, output)
                s = _scores(target, output, batch)
                g = _grads(s, attns, names, retain_graph=i < len(targets) - 1)
                grads.append(dict(zip(names, g)))
                scores.append(s.detach())
                c = getattr(target, "classes", None)
                classes.append(c.expand(batch) if c is not None and c.ndim == 0 else c)
    four = {n: a.detach() for n, a in zip(names, attns)}  # [B, H, N, N], as their gradients
    if sequence:
        grid, prefix = None, 0
    else:
        layout = infer_layout(next(iter(four.values())).shape[-1], gc.grid, image_hw)
        grid, prefix = layout.grid, layout.prefix
    return AttentionGradients(
        attentions=four,
        gradients=grads,
        scores=scores,
        classes=classes,
        layers=names,
        grid=grid,
        prefix_tokens=prefix,
        image_size=image_hw,
        output=_main_output(output),
    )


# applied here, not as a @decorator line: mutmut (`make mutation`) does not mutate decorated functions
attention_gradients = _outside_inference_mode()(attention_gradients)
