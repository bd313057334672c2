"""Which layers of a detector to explain: seed 002's Hugging Face layer names resolved to the
detector's modules, its default layers, and a table of what each one reads.

Names are relative to the vision model: ``encoder.layers.N`` (a block's output; N < 0 counts from
the end) or a submodule of it such as ``encoder.layers.N.layer_norm1`` (the block's input,
layer-normed), found in the detector by suffix match (``backbone.encoder.layers.N`` or
``backbone.vision_model.encoder.layers.N`` depending on the transformers version); an int N is
block N; ``"auto"`` the model's automatic layer (on a CNN its last convolutional block). The LAST
block's output is zero for a CLS-pooled classifier (no patch token of it reaches the score), so
the default layers are block INPUTS.

Example::

    from vizkit.models.detector_layers import default_layers, layer_table, resolve_gradcam_layers
    infos = resolve_gradcam_layers(det.model, default_layers(det.model), det.size)
    layer_table(infos)          # layer | module | reads, one row per layer
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ParameterError
from ..layers import find_blocks, probe, resolve_layers
from ..state import model_device

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LayerInfo", "resolve_gradcam_layers", "default_layers", "layer_table"]


@dataclass
class LayerInfo:
    """A requested layer: ``name`` as the user wrote it (negative index made positive),
    ``module`` the module name in the detector, ``note`` what it reads."""

    name: str
    module: str
    note: str


def _blocks(model: nn.Module) -> tuple[str, int]:
    """The transformer block list's name and length (``("", 0)`` for a CNN)."""
    blocks = find_blocks(model)
    return (blocks[0][0].rsplit(".", 1)[0], len(blocks)) if blocks else ("", 0)


def _example(model: nn.Module, size: int | None) -> torch.Tensor:
    """A zero image ``[1, 3, S, S]`` (S = ``size``, else 224) for a probe forward."""
    return torch.zeros(1, 3, size or 224, size or 224, device=model_device(model))


def resolve_gradcam_layers(model: nn.Module, names: Sequence[str | int], size: int | None = None) -> list[LayerInfo]:
    """Map the seed's layer names to modules of ``model`` (:func:`vizkit.layers.resolve_layers`:
    ``encoder.layers.N[.sub]`` by the alias rule, N < 0 from the end; an int N means block N;
    ``"auto"`` the model's automatic layer — on a CNN detector its last convolutional block,
    found by a probe forward of a ``[1, 3, size, size]`` zero image), before any work. An unknown
    name raises :class:`LayerNotFoundError` with the closest valid names; a module named twice a
    :class:`ParameterError`."""
    if isinstance(names, (str, int)):
        names = [names]
    if not names:
        raise ParameterError("give at least one layer (e.g. encoder.layers.-1.layer_norm1)")
    prefix, depth = _blocks(model)
    out: list[LayerInfo] = []
    for raw in names:
        spec: str | int = (
            int(raw) if isinstance(raw, int) or re.fullmatch(r"-?\d+", str(raw).strip()) else str(raw).strip()
        )
        example = _example(model, size) if spec == "auto" else None
        ((module, _),) = resolve_layers(
            model, spec, probe_fn=(lambda ex=example: probe(model, model, ex)) if example is not None else None
        )
        m = re.fullmatch(re.escape(prefix) + r"\.(\d+)(.*)", module) if prefix else None
        name = f"encoder.layers.{m.group(1)}{m.group(2)}" if m and prefix.endswith("encoder.layers") else module
        note = _layer_note(module, prefix, depth)
        out.append(LayerInfo(name, module, f"last convolutional block (auto): {note}" if spec == "auto" else note))
    if len({i.module for i in out}) != len(out):
        raise ParameterError(f"layers {', '.join(i.name for i in out)} name the same module twice")
    return out


def _layer_note(module: str, prefix: str, depth: int) -> str:
    """What ``module`` reads, for a model whose ``depth`` blocks are ``prefix.N``."""
    m = re.fullmatch(re.escape(prefix) + r"\.(\d+)(.*)", module) if prefix else None
    if not m:
        return f"module {module}"
    i, rest = int(m.group(1)), m.group(2)
    if rest == "":
        if i == depth - 1:
            return (
                f"output of the last block ({i}): zero for a CLS-pooled classifier, no patch token of it reaches "
                f"the score; read encoder.layers.{i}.layer_norm1 instead"
            )
        return f"output of block {i} = input of block {i + 1}"
    if rest == ".layer_norm1":
        return f"input of block {i}, layer-normed (the tokens its attention reads)"
    return f"{rest[1:]} inside block {i}"


def default_layers(model: nn.Module) -> list[str]:
    """ViT detectors: the block inputs ``encoder.layers.N.layer_norm1`` of the seed's blocks
    (23, 20, 15, 10) when the detector has 24 or more, else of its last four blocks (all of them
    when it has fewer), shallow to deep. CNN detectors (no transformer blocks): ``["auto"]``,
    the last convolutional block."""
    _, depth = _blocks(model)
    if not depth:
        return ["auto"]
    idx = [10, 15, 20, 23] if depth >= 24 else list(range(max(0, depth - 4), depth))
    return [f"encoder.layers.{i}.layer_norm1" for i in idx]


def layer_table(layers: Sequence[LayerInfo]) -> pd.DataFrame:
    """Which module each requested name maps to, and what it reads: a pandas table with columns
    ``layer``, ``module``, ``reads``, one row per layer in the given order."""
    import pandas as pd

    return pd.DataFrame([{"layer": i.name, "module": i.module, "reads": i.note} for i in layers])
