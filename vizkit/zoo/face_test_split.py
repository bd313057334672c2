"""The zoo detector's test faces as test sets: ``zoo:face_forgery`` for the evaluation
(:func:`resolve_test_set`) and the faces the detector notebooks explain when the user gives no
images (:func:`images_or_test_faces`).

Example::

    ds = resolve_test_set("zoo:face_forgery", max_samples=10)   # or a folder, a CSV, a DeepfakeBench JSON / NAME
    images, names, samples = images_or_test_faces("", 4)       # fake_<i>, real_<i>, fake_<j>, ...
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..datasets import EvalDataset, Item, resolve_dataset
from ..io import image_files, unique_stems

__all__ = ["FACE_FORGERY", "NAMED_TEST_SETS", "face_forgery_test_set", "images_or_test_faces", "resolve_test_set"]

#: the name of the zoo detector's test faces (``--test_dataset`` default of ``vizkit evaluate``)
FACE_FORGERY = "zoo:face_forgery"
_ALIASES = (FACE_FORGERY, "zoo:face_forgery_detector", "zoo", "face_forgery")


def _test_split() -> list[Any]:
    from . import dataset

    return dataset("face_forgery_detector", "test")


def face_forgery_test_set() -> EvalDataset:
    """The zoo detector's test split (600 faces; the 300 fakes have manipulation masks), in memory."""
    samples = _test_split()
    items = [Item(f"{FACE_FORGERY}/test/{i:04d}", int(s.label), None, None) for i, s in enumerate(samples)]
    return EvalDataset(FACE_FORGERY, items, "the zoo's face_forgery_detector test split", samples=samples)


#: the zoo's named test sets, for :func:`vizkit.datasets.resolve_dataset`'s ``named``
NAMED_TEST_SETS: Mapping[str, Callable[[], EvalDataset]] = {name: face_forgery_test_set for name in _ALIASES}


def resolve_test_set(
    spec: str | os.PathLike | None = None,
    config: Mapping[str, Any] | None = None,
    max_samples: int | None = None,
    root: str | os.PathLike | None = None,
) -> EvalDataset:
    """:func:`vizkit.datasets.resolve_dataset` knowing the zoo's test faces, which are also the default
    (``spec`` None or empty)."""
    return resolve_dataset(spec or FACE_FORGERY, config, max_samples, root, named=NAMED_TEST_SETS)


def images_or_test_faces(images: Any, num_images: int, seed: int = 0) -> tuple[list[Any], list[str], list[Any]]:
    """``(images, names, samples)``: the user's files (a path, a folder or a list of them, by
    :func:`vizkit.io.image_files`; names their unique stems, samples None) or, when ``images`` is
    empty, ``num_images`` faces of the zoo detector's test split alternating fake and real, each
    kind in the order of a permutation seeded by ``seed`` (samples carry labels and masks; names
    ``fake_<index>`` / ``real_<index>``)."""
    if images:
        files = image_files([images] if isinstance(images, (str, os.PathLike)) else list(images))
        return list(files), unique_stems(files), [None] * len(files)
    test = _test_split()
    reals = [s for s in test if s.label == 0]
    fakes = [s for s in test if s.label == 1]
    rng = np.random.default_rng(seed)
    ri, fi = rng.permutation(len(reals)), rng.permutation(len(fakes))
    chosen = [(fakes[fi[k // 2]] if k % 2 == 0 else reals[ri[k // 2]]) for k in range(num_images)]
    names = [f"{'fake' if s.label else 'real'}_{s.meta.get('index', k)}" for k, s in enumerate(chosen)]
    return [s.image for s in chosen], unique_stems(names), chosen
