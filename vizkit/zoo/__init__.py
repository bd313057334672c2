"""The embedded defaults: small models trained here on shipped or synthetic data with ground truth.

- ``names()`` lists the zoo; ``load(name)`` returns a :class:`Bundle` (model in eval mode,
  preprocess, tokenizer/processor, class names); ``dataset(name, split)`` returns
  :class:`Sample` objects with images, labels or captions/questions/answers, and masks.
- ``python -m vizkit.zoo build [NAME ...] [--quick]`` retrains deterministically with the
  recipes of :mod:`vizkit.zoo.train` (each :class:`Entry` names its recipe as a
  ``"module:function"`` string; this runtime package never imports them).
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import VizkitError
from .common import REGISTRY, Bundle, Entry, Sample, data_root, zoo_dir

_MODULES = ("mnist_vit", "shapes_clip", "face_forgery", "tiny_vlm")
SPLITS = ("train", "val", "test")


def _registry() -> dict[str, Entry]:
    for module in _MODULES:
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as err:  # a zoo module not written yet
            if err.name != f"{__name__}.{module}":
                raise
    return REGISTRY


def names() -> list[str]:
    """The zoo's model names."""
    return sorted(_registry())


def entry(name: str) -> Entry:
    """The registry :class:`Entry` of zoo model ``name`` (an unknown name raises, listing the valid ones)."""
    reg = _registry()
    if name not in reg:
        raise VizkitError(f"unknown zoo model {name!r}: choose one of {', '.join(sorted(reg))}")
    return reg[name]


def load(name: str, **kwargs: Any) -> Bundle:
    """A ready bundle for zoo model ``name`` (weights from ``data/zoo/<name>/``)."""
    return entry(name).load(**kwargs)


def dataset(name: str, split: str = "test") -> list[Sample]:
    """The samples of zoo model ``name``'s data for ``split`` (train / val / test)."""
    if split not in SPLITS:
        raise VizkitError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    return entry(name).dataset(split)


__all__ = ["names", "load", "dataset", "entry", "Bundle", "Sample", "Entry", "data_root", "zoo_dir"]
