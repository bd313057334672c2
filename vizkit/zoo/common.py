"""Shared pieces of the zoo: where checkpoints live, the bundle and sample types, the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import VizkitError
from ..io import data_root


def zoo_dir(name: str, root: Path | None = None) -> Path:
    """Where the checkpoint of zoo model ``name`` lives: ``data/zoo/<name>/``."""
    return (root or data_root() / "zoo") / name


def default_benchmark() -> tuple[Path, Path]:
    """The zoo's ``tiny_vlm`` sample benchmark (read by :mod:`vizkit.vlm_benchmarks`): ``(json, image folder)``."""
    folder = zoo_dir("tiny_vlm") / "benchmark"
    return folder / "sample.json", folder


@dataclass
class Sample:
    """One zoo data sample. ``image`` is HxWx3 (or HxW for grey) uint8.

    ``mask`` is the ground truth an explanation should point at (bool HxW): the ink of a
    digit, the named object of a scene, the manipulated region of a fake face (all False
    for a real face). ``masks`` holds one mask per object when a scene has several.
    """

    image: np.ndarray
    label: int | None = None
    mask: np.ndarray | None = None
    masks: list[np.ndarray] = field(default_factory=list)
    caption: str | None = None
    question: str | None = None
    answer: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Bundle:
    """A ready-to-use zoo model: ``model`` in eval mode plus what it takes to feed it.

    ``preprocess(image HxWx3 uint8 | PIL) -> [C, H, W]`` float tensor; ``tokenizer`` /
    ``processor`` where the model reads text; ``class_names`` for classifiers; ``meta``
    holds the config and the metrics measured at build time.
    """

    name: str
    model: nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    class_names: list[str] = field(default_factory=list)
    tokenizer: Any = None
    processor: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    """A zoo model: how to load it, its data, and how to rebuild it.

    ``build`` names the training recipe as ``"module:function"`` (e.g.
    ``"vizkit.zoo.train.mnist_vit:build"``, called as ``function(out_root=..., quick=...)`` and
    returning the metrics): ``python -m vizkit.zoo build`` imports it, the runtime zoo never does.
    """

    name: str
    description: str
    load: Callable[..., Bundle]
    dataset: Callable[[str], list[Sample]]
    build: str
    #: torch threads of the shipped checkpoint's build, the count its recipe is checked at (the
    #: float sums, and so the model, depend on it); ``python -m vizkit.zoo build`` uses it
    build_threads: int = 1
    #: seconds a build took (measured; docs/howto/reproduce-zoo.md); the CLI balances its parallel lanes with it
    build_seconds: float = 0.0


REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    REGISTRY[entry.name] = entry
    return entry


def missing_checkpoint(name: str, path: Path) -> VizkitError:
    return VizkitError(
        f"zoo model {name!r} has no checkpoint at {path}: rebuild it with `python -m vizkit.zoo build {name}`"
    )
