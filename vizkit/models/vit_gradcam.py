"""Gradient-weighted attention of a ViT classifier for every class from one pass (seed 000's
``CLIPViTGradCAM``): what is explained is the logit of each class of a classifier
``[B, 3, H, W] -> [B, C]`` (a deepfake detector: real and fake), through per-layer
``Ā = fuse_heads((∇A ⊙ A)⁺)`` (Chefer et al., ICCV 2021) combined over the chosen layers by
relevance propagation (``"relevance"``) or the plain per-layer mean (``"mean"``).

:class:`CLIPViTGradCAM` checks its options on the model (:func:`check_attention_options`) and runs
:func:`vizkit.explain.attention_gradients` once per batch; :class:`DetectorAttention` then gives any
class's map for any head fusion, layer mode (:data:`LAYER_MODES`) or aggregation from that cache.

Example::

    from vizkit.models.vit_gradcam import CLIPViTGradCAM
    gradcam = CLIPViTGradCAM(model, target_layers=[-4, -3, -2, -1], head_fusion="mean")
    result = gradcam.explain(x)                          # x [B, 3, H, W]: every class, one pass
    result.heatmap(1, "max", "last_layer", "mean")       # [B, H, W] in [0, 1], from the cache
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attention_math import AGGREGATIONS, HEAD_FUSIONS
from ..errors import CaptureError, VizkitError
from ..explain import AttentionGradients, _to_input_size, attention_gradients
from ..layers import find_blocks, resolve_layers
from ..state import model_device

__all__ = ["CLIPViTGradCAM", "DetectorAttention", "check_attention_options", "LAYER_MODES", "DEFAULT_TARGET_LAYERS"]

#: the seed's three layer modes ("y" to its multi-layer question) and their layer specs
LAYER_MODES: dict[str, str] = {"last_layer": "last", "last_4_layers": "last_4", "all_layers": "all"}
#: seed 000's default layers: the last four blocks (all of them on a detector with fewer)
DEFAULT_TARGET_LAYERS = (-4, -3, -2, -1)


@dataclass
class DetectorAttention:
    """Both class maps of a batch, computed on demand from one cached pass.

    ``cache`` holds every block's attention ``[B, H, N, N]`` and its gradient for each class;
    ``probs`` ``[B, C]``; ``layer_names`` the blocks in forward order; ``target_layers`` the
    layers the default maps combine.
    """

    cache: AttentionGradients
    probs: torch.Tensor
    class_names: list[str]
    layer_names: list[str]
    target_layers: list[str]
    head_fusion: str = "mean"
    aggregation: str = "relevance"
    #: why the target layers differ from what was asked (a detector shallower than the default)
    note: str | None = None
    _memo: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def preds(self) -> torch.Tensor:
        return self.probs.argmax(-1)

    def layers_for(self, mode: str | Sequence[str] | None) -> list[str]:
        """The layers of a layer mode (``last_layer`` / ``last_4_layers`` / ``all_layers``), of a
        list of names, or (None) the target layers."""
        if mode is None:
            return list(self.target_layers)
        if isinstance(mode, str):
            if mode not in LAYER_MODES:
                raise VizkitError(f"unknown layer mode {mode!r}: choose one of {', '.join(LAYER_MODES)}")
            spec = LAYER_MODES[mode]
            n = len(self.layer_names)
            return (
                self.layer_names[-1:]
                if spec == "last"
                else self.layer_names[-min(4, n) :]
                if spec == "last_4"
                else list(self.layer_names)
            )
        return list(mode)

    def raw(
        self,
        class_idx: int,
        head_fusion: str | None = None,
        layers: str | Sequence[str] | None = None,
        aggregation: str | None = None,
    ) -> torch.Tensor:
        """Unnormalised ``[B, h, w]`` map of class ``class_idx`` at the patch grid."""
        names = self.layers_for(layers)
        key = (class_idx, head_fusion or self.head_fusion, tuple(names), aggregation or self.aggregation)
        if key not in self._memo:
            self._memo[key] = self.cache.relevance(class_idx, key[1], names, key[3])
        return self._memo[key]

    def heatmap(
        self,
        class_idx: int,
        head_fusion: str | None = None,
        layers: str | Sequence[str] | None = None,
        aggregation: str | None = None,
    ) -> torch.Tensor:
        """``[B, H, W]`` map of class ``class_idx`` at the input size in [0, 1] (normalised per
        image, then resized bilinearly: the same map as :func:`vizkit.gradient_attention`)."""
        raw = self.raw(class_idx, head_fusion, layers, aggregation)
        return _to_input_size(raw, self.cache.image_size)

    def layer_heatmap(self, class_idx: int, layer: str, head_fusion: str | None = None) -> torch.Tensor:
        """One layer's ``Ā`` CLS row, at the input size, normalised: ``[B, H, W]``."""
        m = self.cache.layer_map(class_idx, layer, head_fusion or self.head_fusion).clamp(min=0)
        return _to_input_size(m, self.cache.image_size)


def check_attention_options(
    model: nn.Module, target_layers: Any = None, head_fusion: str = "mean", aggregation: str = "relevance"
) -> tuple[list[str], list[str], str | None]:
    """Check the options of :class:`CLIPViTGradCAM` on ``model`` before any image is read:
    ``(block names, target layers, note)``; ``note`` says why the target layers differ from the
    default (a detector with fewer than 4 blocks). A :class:`VizkitError` names what is wrong."""
    if head_fusion not in HEAD_FUSIONS:
        raise VizkitError(f"head_fusion must be one of {', '.join(HEAD_FUSIONS)}, got {head_fusion!r}")
    if aggregation not in AGGREGATIONS:
        raise VizkitError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    blocks = find_blocks(model)
    if not blocks:
        raise CaptureError(
            f"No attention weights found: {type(model).__name__} has no transformer blocks with "
            "attention (scenario 1 explains ViT / CLIP-ViT detectors; for a CNN use vizkit.cam)"
        )
    layer_names = [n for n, _ in blocks]
    note: str | None = None
    if target_layers is None:
        n = len(layer_names)
        target_layers = "last_4"
        if n < 4:
            note = (
                f"the detector has {n} transformer block(s), fewer than the default's 4 "
                f"(-4 -3 -2 -1): the maps combine all {n}"
            )
    spec = list(target_layers) if isinstance(target_layers, (list, tuple)) else target_layers
    last_k = re.fullmatch(r"last_(\d+)", spec.strip().lower()) if isinstance(spec, str) else None
    if last_k:  # "last_4" on a model with fewer blocks means all of them, as the layer modes do
        targets = layer_names[-min(int(last_k.group(1)), len(layer_names)) :]
    else:
        targets = [n for n, _ in resolve_layers(model, spec)]
    outside = [n for n in targets if n not in layer_names]
    if outside:
        raise VizkitError(
            f"target layer(s) {', '.join(outside)} are not transformer blocks of "
            f"{type(model).__name__}; blocks: {layer_names[0]} .. {layer_names[-1]}"
        )
    return layer_names, targets, note


class CLIPViTGradCAM:
    """Seed 000's class: gradient-weighted attention of a ViT classifier over ``target_layers``.

    ``target_layers``: block indices (``[-4, -3, -2, -1]``: the last four), names, or
    ``"last"`` / ``"last_4"`` / ``"all"``; None (default): the seed's last four blocks, or all
    of them on a detector with fewer (``note`` says so); ``head_fusion``: mean / max / min; ``aggregation``:
    ``"relevance"`` (Chefer) or ``"mean"``. Works on any ViT classifier whose blocks vizkit finds
    (HF CLIP / ViT, timm, open_clip); the class count is the model's.
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Any = None,
        head_fusion: str = "mean",
        aggregation: str = "relevance",
        class_names: Sequence[str] | None = None,
        debug: bool = False,
    ):
        self.model, self.head_fusion, self.aggregation, self.debug = model, head_fusion, aggregation, debug
        self.layer_names, self.target_layers, self.note = check_attention_options(
            model, target_layers, head_fusion, aggregation
        )
        self.class_names = list(class_names) if class_names else None

    def _debug_info(self, result: DetectorAttention) -> str:
        c = result.cache
        return (
            f"Target layers: {self.target_layers}\nAttention weights keys: {list(c.attentions)}\n"
            f"Attention gradients keys: {[list(g) for g in c.gradients]}\ngrid {c.grid}, prefix tokens "
            f"{c.prefix_tokens}, heads {next(iter(c.attentions.values())).shape[1]}"
        )

    def explain(self, x: torch.Tensor, classes: Sequence[int] | None = None) -> DetectorAttention:
        """Every class's maps (``classes``: default all) from one forward pass of ``x`` ``[B, 3, H, W]``."""
        if classes is None:
            if self.class_names:
                classes = list(range(len(self.class_names)))
            else:  # the class count from one image (pass classes or class_names to skip this)
                with torch.no_grad():
                    classes = list(range(int(self.model(x[:1].to(model_device(self.model))).shape[-1])))
        classes = list(classes)
        cache = attention_gradients(self.model, x, classes, layers="all")
        logits = cache.output
        if logits is None or logits.ndim != 2:
            raise VizkitError(f"{type(self.model).__name__} does not return logits [B, C]: wrap it so it does")
        names = self.class_names or (
            ["real", "fake"] if logits.shape[-1] == 2 else [f"class {i}" for i in range(logits.shape[-1])]
        )
        if classes != list(range(len(classes))):
            cache = cache.by_class(classes)  # gradients[k] belong to class k
        result = DetectorAttention(
            cache,
            logits.float().softmax(-1).cpu(),
            names,
            list(cache.layers),
            list(self.target_layers),
            self.head_fusion,
            self.aggregation,
            self.note,
        )
        if self.debug:
            print(self._debug_info(result))
        return result

    def __call__(self, x: torch.Tensor, class_idx: int | None = None) -> torch.Tensor:
        """``[B, H, W]`` map in [0, 1] of class ``class_idx`` (default: the predicted class of the
        first image) over the target layers."""
        if class_idx is None:
            with torch.no_grad():
                class_idx = int(self.model(x[:1].to(model_device(self.model))).argmax(-1)[0])
        res = self.explain(x, [class_idx])
        return res.heatmap(class_idx)
