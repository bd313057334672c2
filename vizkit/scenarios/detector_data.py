"""Scenario 3's test sets (the dataset readers of :mod:`vizkit.scenarios.detector_gradcam_eval`,
notebook 03): where a deepfake detector's evaluation reads its images and labels (label 0 = real,
1 = fake). Nothing is explained here; the scores are the detector's fake probabilities.

Example::

    from vizkit.scenarios import resolve_dataset
    ds = resolve_dataset("zoo:face_forgery", max_samples=10)    # or a folder, a CSV, a DeepfakeBench JSON
    ds.image(0), ds.items[0].label, ds.mask(1)                  # uint8 HxWx3, 0/1, bool HxW or None

:func:`resolve_dataset` accepts

- ``zoo:face_forgery`` (default): the zoo detector's test split (600 faces; the 300 fakes have
  manipulation masks);
- a folder with ``real/`` and ``fake/`` subfolders (images found recursively; an image in a
  sub-subfolder ``fake/<video>/frame.png`` belongs to video ``fake/<video>``);
- a CSV file with columns ``path``, ``label`` and optionally ``video`` and ``mask`` (paths
  relative to the CSV's folder), or a JSON list of objects with the same keys;
- DeepfakeBench's own dataset JSON (``preprocessing/rearrange.py`` writes it):
  ``{NAME: {label_name: {"test": {[compression: {]video: {"label": label_name, "frames":
  [paths]}}}}}}``; frame paths are relative to the config's ``rgb_dir`` (else the JSON's
  folder), masks are the frame paths with ``frames`` replaced by ``masks`` when that file
  exists, label names map through the config's ``label_dict`` (else a name containing
  ``real`` is 0, any other 1), a frame's video is ``<label>_<video>`` as in DeepfakeBench;
- a dataset NAME resolved as DeepfakeBench does: ``<dataset_json_folder>/<NAME>.json`` from
  the detector config.

Labels may be ``0`` / ``1`` / ``real`` / ``fake`` (any case); anything else is an error naming
the row. Images are read lazily (:meth:`EvalDataset.image`), so one unreadable file is
reported by the evaluation and skipped, not fatal here.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError
from ..io import IMAGE_SUFFIXES, load_image, read_json

__all__ = ["Item", "EvalDataset", "resolve_dataset", "parse_label", "ZOO_DATASET", "read_list", "read_deepfakebench_json"]

ZOO_DATASET = "zoo:face_forgery"
_ZOO_ALIASES = ("zoo:face_forgery", "zoo:face_forgery_detector", "zoo", "face_forgery")
_REAL_WORDS = ("0", "real", "genuine", "pristine")
_FAKE_WORDS = ("1", "fake", "forged", "manipulated")


@dataclass
class Item:
    """One test image: where it is (a path, or ``zoo:face_forgery/test/<i>``), its label, the
    video it belongs to (or None) and its manipulation mask file (or None)."""

    path: str
    label: int
    video: str | None = None
    mask: str | None = None


@dataclass
class EvalDataset:
    """A resolved test set: ``name`` (the metadata's ``Dataset:``), ``items``, ``source`` (where it
    was read from). ``has_masks``: at least one fake has a manipulation mask."""

    name: str
    items: list[Item]
    source: str
    zoo_samples: list[Any] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def has_masks(self) -> bool:
        if self.zoo_samples is not None:
            return any(s.label == 1 and s.mask is not None and s.mask.any() for s in self.zoo_samples)
        return any(it.mask for it in self.items)

    @property
    def has_videos(self) -> bool:
        return any(it.video for it in self.items)

    def image(self, index: int) -> np.ndarray:
        """Item ``index`` as uint8 ``H x W x 3``; an unreadable file raises :class:`InputError`."""
        if self.zoo_samples is not None:
            return np.asarray(self.zoo_samples[index].image, dtype=np.uint8)
        return np.array(load_image(self.items[index].path), dtype=np.uint8)

    def mask(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray | None:
        """Item ``index``'s manipulation mask (bool ``H x W``), or None; ``size`` = (H, W) resizes it
        (nearest). An unreadable mask file counts as no mask."""
        if self.zoo_samples is not None:
            m = self.zoo_samples[index].mask
            m = None if m is None else np.asarray(m, dtype=bool)
        else:
            path = self.items[index].mask
            if not path:
                return None
            try:
                m = np.asarray(load_image(path).convert("L")) > 127
            except InputError:
                return None
        if m is not None and size is not None and m.shape != tuple(size):
            import cv2

            m = cv2.resize(m.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0
        return m

    def subset(self, count: int | None) -> "EvalDataset":
        """The first ``count`` items (all when None or 0), fakes and reals as they come."""
        if not count or count >= len(self.items):
            return self
        return EvalDataset(self.name, self.items[:count], f"{self.source} (first {count})",
                           self.zoo_samples[:count] if self.zoo_samples is not None else None)


def parse_label(value: Any, where: str) -> int:
    """0 / 1 / real / fake (any case, also genuine / forged ...) -> 0 or 1; else one clear error."""
    if isinstance(value, bool):
        value = int(value)
    text = str(value).strip().lower()
    if text in ("0.0",):
        text = "0"
    if text in ("1.0",):
        text = "1"
    if text in _REAL_WORDS:
        return 0
    if text in _FAKE_WORDS:
        return 1
    raise InputError(f"{where}: label {value!r} is not 0/1/real/fake")


def _zoo() -> EvalDataset:
    from .. import zoo

    samples = zoo.dataset("face_forgery_detector", "test")
    items = [Item(f"{ZOO_DATASET}/test/{i:04d}", int(s.label), None, None) for i, s in enumerate(samples)]
    return EvalDataset(ZOO_DATASET, items, "the zoo's face_forgery_detector test split", zoo_samples=samples)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _folder(root: Path) -> EvalDataset:
    subs = {name: root / name for name in ("real", "fake")}
    missing = [n for n, p in subs.items() if not p.is_dir()]
    if len(missing) == 2:
        raise InputError(f"dataset folder {str(root)!r} needs real/ and fake/ subfolders (images of each class); "
                         "or give a CSV / JSON list of (path, label)")
    items: list[Item] = []
    for label, name in ((0, "real"), (1, "fake")):
        sub = subs[name]
        if not sub.is_dir():
            continue
        for p in _images_under(sub):
            rel = p.relative_to(sub)
            video = f"{name}/{rel.parent.as_posix()}" if len(rel.parts) > 1 else None
            items.append(Item(str(p), label, video, None))
    if not items:
        raise InputError(f"dataset folder {str(root)!r} holds no images under real/ or fake/ "
                         f"({', '.join(IMAGE_SUFFIXES)})")
    return EvalDataset(root.name, items, f"folder {root}")


def _resolve_path(raw: str, base: Path) -> str:
    p = Path(os.path.expanduser(str(raw)))
    return str(p if p.is_absolute() else base / p)


def _rows_to_items(rows: Sequence[Mapping[str, Any]], source: Path, kind: str) -> list[Item]:
    if not rows:
        raise InputError(f"{kind} {str(source)!r} lists no images")
    items = []
    for n, row in enumerate(rows, start=1):
        where = f"{kind} {str(source)!r}, row {n}"
        if not isinstance(row, Mapping):
            raise InputError(f"{where}: expected an object with 'path' and 'label', got {type(row).__name__}")
        for col in ("path", "label"):
            if col not in row or row[col] is None or str(row[col]).strip() == "":
                raise InputError(f"{where}: missing column {col!r} (the columns are path, label[, video][, mask])")
        video = row.get("video")
        mask = row.get("mask")
        items.append(Item(_resolve_path(row["path"], source.parent), parse_label(row["label"], where),
                          str(video) if video not in (None, "") else None,
                          _resolve_path(mask, source.parent) if mask not in (None, "") else None))
    return items


def read_list(path: str | os.PathLike) -> EvalDataset:
    """A CSV (header ``path,label[,video][,mask]``) or a JSON list of such objects."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        try:
            with p.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                header = [h.strip() for h in (reader.fieldnames or [])]
                missing = [c for c in ("path", "label") if c not in header]
                if missing:
                    raise InputError(f"CSV {str(p)!r} has no {' and no '.join(repr(c) for c in missing)} column "
                                     f"(header: {', '.join(header) or 'empty'}; expected path, label[, video][, mask])")
                rows = [{k.strip(): v for k, v in r.items() if k is not None} for r in reader]
        except UnicodeDecodeError as err:
            raise InputError(f"CSV {str(p)!r} is not UTF-8 text: {err}") from None
        return EvalDataset(p.stem, _rows_to_items(rows, p, "CSV"), f"CSV {p}")
    data = read_json(p, "dataset JSON")
    if isinstance(data, list):
        return EvalDataset(p.stem, _rows_to_items(data, p, "JSON list"), f"JSON list {p}")
    return read_deepfakebench_json(p, data=data)


def _is_video(entry: Any) -> bool:
    return isinstance(entry, Mapping) and "frames" in entry


def _videos(node: Any, compression: str | None) -> Mapping[str, Any]:
    """The ``{video: {"label", "frames"}}`` mapping under a label's split, descending into a
    compression level (``c23`` ...) when there is one."""
    if not isinstance(node, Mapping):
        return {}
    if not node or any(_is_video(v) for v in node.values()):
        return node
    for key in ([compression] if compression else []) + ["c23", *sorted(node)]:
        if key in node and isinstance(node[key], Mapping):
            return _videos(node[key], None)
    return {}


def read_deepfakebench_json(path: str | os.PathLike, name: str | None = None, config: Mapping[str, Any] | None = None,
                            data: Any = None, split: str = "test") -> EvalDataset:
    """DeepfakeBench's dataset JSON (see the module docstring), the ``split`` frames of every label."""
    p = Path(path)
    data = read_json(p, "dataset JSON") if data is None else data
    config = dict(config or {})
    if not isinstance(data, Mapping) or not data:
        raise InputError(f"dataset JSON {str(p)!r} is neither a list of (path, label) objects nor DeepfakeBench's "
                         "{dataset: {label: {split: {video: {label, frames}}}}} layout")
    key = name if name in data else (next(iter(data)) if len(data) == 1 else None)
    if key is None:
        raise InputError(f"dataset JSON {str(p)!r} holds datasets {', '.join(map(str, data))}: name one")
    label_dict = config.get("label_dict") or {}
    rgb_dir = config.get("rgb_dir")
    base = Path(_resolve_path(rgb_dir, p.parent)) if rgb_dir else p.parent
    items: list[Item] = []
    for label_name, by_split in (data[key] or {}).items():
        if not isinstance(by_split, Mapping) or split not in by_split:
            continue
        for video, info in _videos(by_split[split], config.get("compression")).items():
            vlabel = info.get("label", label_name)
            if vlabel in label_dict:
                label = 1 if int(label_dict[vlabel]) else 0
            else:
                label = 0 if "real" in str(vlabel).lower() else 1
            for frame in info.get("frames") or []:
                frame_path = _resolve_path(frame, base)
                mask = frame_path.replace("frames", "masks") if "frames" in frame_path else None
                items.append(Item(frame_path, label, f"{vlabel}_{video}",
                                  mask if mask and Path(mask).is_file() else None))
    if not items:
        raise InputError(f"dataset JSON {str(p)!r}: dataset {key!r} lists no {split!r} frames "
                         f"(labels found: {', '.join(map(str, data[key] or {})) or 'none'})")
    return EvalDataset(str(key), items, f"DeepfakeBench JSON {p}")


def resolve_dataset(spec: str | os.PathLike | None = None, config: Mapping[str, Any] | None = None,
                    max_samples: int | None = None) -> EvalDataset:
    """The test set named by ``spec`` (see the module docstring); ``config`` is the detector YAML's
    extra keys (``dataset_json_folder``, ``rgb_dir``, ``label_dict``, ``compression``)."""
    text = str(spec) if spec not in (None, "") else ZOO_DATASET
    if text in _ZOO_ALIASES:
        return _zoo().subset(max_samples)
    p = Path(os.path.expanduser(text))
    if p.is_dir():
        return _folder(p).subset(max_samples)
    if p.is_file():
        if p.suffix.lower() not in (".csv", ".json"):
            raise InputError(f"dataset file {str(p)!r} is neither a CSV nor a JSON list (.csv / .json)")
        return read_list(p).subset(max_samples)
    config = dict(config or {})
    looked = [f"{p} (no such file or folder)"]
    folder = config.get("dataset_json_folder")
    if folder:
        candidate = Path(os.path.expanduser(str(folder))) / f"{text}.json"
        if candidate.is_file():
            return read_deepfakebench_json(candidate, text, config).subset(max_samples)
        looked.append(f"{candidate} (dataset_json_folder)")
    else:
        looked.append("no dataset_json_folder in the detector config")
    raise InputError(f"test dataset {text!r} resolves to nothing: looked for " + "; ".join(looked)
                     + f". Give a folder with real/ and fake/, a CSV / JSON list, a DeepfakeBench JSON, or {ZOO_DATASET}")
