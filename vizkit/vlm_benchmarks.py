"""Reason-RFT style VLM benchmarks (seed 004): a JSON list of ``{id, image, problem, solution}``
whose image paths are relative to an image folder; :func:`load_sample` reads one entry and its
images with one clear error per problem; :func:`sample_indices` reads a selection of samples
(``--sample_idx``). The zoo's ``tiny_vlm`` benchmark is :func:`vizkit.zoo.common.default_benchmark`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ParameterError

__all__ = ["load_sample", "sample_indices"]


def load_sample(
    benchmark_json: str | Path, image_dir: str | Path | None, sample_idx: int, max_image_num: int = 2
) -> tuple[dict[str, Any], list[Any], list[str]]:
    """Entry ``sample_idx`` of a Reason-RFT style benchmark JSON list and its images (RGB PIL).

    Returns ``(sample, images, notes)``; ``notes`` says when only the first ``max_image_num``
    images are used. Raises :class:`InputError` naming the problem: a missing or unreadable
    file, ``sample_idx`` out of range (with the number of samples), an entry without
    ``image`` / ``problem``, an image file missing under ``image_dir``.
    """
    from .io import load_image, read_json

    path = Path(benchmark_json)
    records = read_json(path, "benchmark file")
    if not isinstance(records, list) or not records:
        raise InputError(f"benchmark file {str(path)!r} must hold a non-empty JSON list of samples")
    if max_image_num < 1:
        raise ParameterError(f"max_image_num must be at least 1, got {max_image_num}")
    n = len(records)
    if not isinstance(sample_idx, (int, np.integer)) or not -n <= int(sample_idx) < n:
        raise InputError(f"sample_idx {sample_idx} is out of range: {path.name} holds {n} samples (0..{n - 1})")
    sample = records[int(sample_idx)]
    where = f"sample {int(sample_idx)}" + (
        f" (id {sample.get('id')!r})" if isinstance(sample, dict) and "id" in sample else ""
    )
    if not isinstance(sample, dict):
        raise InputError(
            f"{where} of {path.name} is a {type(sample).__name__}, not an object with 'image' and 'problem'"
        )
    for key in ("image", "problem"):
        if key not in sample:
            raise InputError(
                f"{where} of {path.name} has no {key!r} key (it has: {', '.join(sorted(sample)) or 'none'})"
            )
    paths = [sample["image"]] if isinstance(sample["image"], str) else sample["image"]
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise InputError(f"{where}: 'image' must be a path or a non-empty list of paths, got {sample['image']!r}")
    if not isinstance(sample["problem"], str):
        raise InputError(f"{where}: 'problem' must be a string, got {type(sample['problem']).__name__}")
    notes = []
    if len(paths) > max_image_num:
        notes.append(f"{where} has {len(paths)} images; using the first {max_image_num} (max_image_num)")
        paths = paths[:max_image_num]
    root = Path(image_dir) if image_dir not in (None, "") else path.parent
    images = []
    for p in paths:
        full = Path(p) if Path(p).is_absolute() else root / p
        if not full.is_file():
            raise InputError(f"{where}: image {p!r} not found under image_dir {str(root)!r} (looked for {full})")
        images.append(load_image(full))
    return dict(sample), images, notes


def sample_indices(spec: Any, count: int) -> list[int]:
    """``--sample_idx`` as indices into a benchmark of ``count`` samples: an int, a list of ints,
    ``"all"``, or a string like ``"3"`` / ``"0,2,5"`` / ``"1-4"`` (inclusive). Negative indices
    count from the end; out of range is one :class:`InputError` naming the count."""
    if isinstance(spec, str):
        text = spec.strip()
        if text == "all":
            return list(range(count))
        parts: list[int] = []
        for piece in text.replace(" ", ",").split(","):
            if not piece:
                continue
            lo, dash, hi = piece.partition("-") if not piece.startswith("-") else (piece, "", "")
            try:
                parts += list(range(int(lo), int(hi) + 1)) if dash else [int(lo)]
            except ValueError:
                raise ParameterError(
                    f"sample_idx={spec!r}: use an index, a list (0,2,5), a range (1-4) or all"
                ) from None
        spec = parts
    items = [spec] if isinstance(spec, (int, np.integer)) else list(spec)
    if not items:
        raise ParameterError("sample_idx selects no sample")
    out = []
    for i in items:
        if not isinstance(i, (int, np.integer)) or not -count <= int(i) < count:
            raise InputError(f"sample_idx {i} is out of range: the benchmark holds {count} samples (0..{count - 1})")
        if int(i) % count not in out:
            out.append(int(i) % count)
    return out
