"""Save and restore model state around one explanation call.

Every public entry point wraps its forward/backward passes in :func:`preserved_state`, so
train/eval mode and ``requires_grad`` of every parameter are exactly as before, even when
an exception is raised half-way.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from .errors import ParameterError

#: what :func:`resolve_device` accepts
DEVICES = ("auto", "cpu", "cuda")


@contextmanager
def preserved_state(model: nn.Module, *, eval_mode: bool = True, freeze: bool = True) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and freeze its parameters for the block; restore both after.

    Freezing parameters means no parameter gradient is ever computed: backward passes stop
    at the earliest captured tensor, which is what makes vizkit's CAMs cheap.
    """
    training = [m for m in model.modules() if m.training] if eval_mode else []
    trainable = [p for p in model.parameters() if p.requires_grad] if freeze else []
    try:
        for m in training:
            m.training = False
        for p in trainable:
            p.requires_grad_(False)
        yield model
    finally:
        for m in training:
            m.training = True
        for p in trainable:
            p.requires_grad_(True)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameter-free model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The one device choice of the CLIs and notebooks: ``"auto"`` (or None) -> CUDA when a GPU is
    available, else the CPU; ``"cpu"``; ``"cuda"`` (or ``"cuda:N"``) -> that GPU, and one clear
    :class:`~vizkit.errors.ParameterError` naming the fix when there is none."""
    spec = "auto" if name is None else str(name).strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ParameterError(f"device={spec!r} but no CUDA device is available: use 'auto' or 'cpu'")
        return torch.device(spec)
    raise ParameterError(f"device {name!r} is not a device: use {', '.join(map(repr, DEVICES))}")
