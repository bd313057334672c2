"""Test sets for deepfake-detector evaluation (scenario 3, notebook 03, and any caller below the
scenarios): where the images and labels come from (label 0 = real, 1 = fake). Nothing is read
until asked: :meth:`EvalDataset.image` reads one image, so one unreadable file is reported by
the evaluation and skipped, not fatal here.

Example::

    from vizkit.datasets import resolve_dataset
    ds = resolve_dataset("faces/", max_samples=10)              # a folder, a CSV, a DeepfakeBench JSON / NAME
    ds.image(0), ds.items[0].label, ds.mask(1)                  # uint8 HxWx3, 0/1, bool HxW or None

:func:`resolve_dataset` accepts

- a name of ``named``, the test sets the caller holds in memory (the scenarios pass the zoo's:
  ``zoo:face_forgery``, the zoo detector's test split, :mod:`vizkit.zoo.face_test_split`);
- a folder with ``real/`` and ``fake/`` subfolders (images found recursively; an image in a
  sub-subfolder ``fake/<video>/frame.png`` belongs to video ``fake/<video>``);
- a CSV file with columns ``path``, ``label`` and optionally ``video`` and ``mask`` (paths
  relative to the CSV's folder), or a JSON list of objects with the same keys;
- DeepfakeBench's own dataset JSON given by path (``preprocessing/rearrange.py`` writes it), read
  as DeepfakeBench reads it, with the detector config's keys (:func:`read_deepfakebench_json`);
- a dataset NAME resolved as DeepfakeBench does: ``<dataset_json_folder>/<NAME>.json``, the
  folder from the detector config, relative to DeepfakeBench's root (``root``, by default the
  working directory).

Labels of folders / CSVs / JSON lists may be ``0`` / ``1`` / ``real`` / ``fake`` (any case);
anything else is an error naming the row.

DeepfakeBench (github SCLBD/DeepfakeBench, ``training/dataset/abstract_dataset.py``:
``collect_img_and_label_for_one_dataset``, ``load_rgb``) in test mode, reproduced here:

1. the JSON is ``{NAME: {label_name: {"test": {[compression: ]{video: {"label": label_name,
   "frames": [paths]}}}}}}``;
2. a NAME ending in ``_c40`` (``FaceForensics++_c40``, ``FF-DF_c40`` ...) reads the base name's
   entry at compression ``c40``; otherwise the config's ``compression`` (``c23`` in its configs,
   and here when the config has none). DeepfakeBench applies it to the FF family only; here it is
   decided by the data: a split whose entries are compression levels (no ``frames`` in them) is
   descended into, one whose entries are videos (Celeb-DF-v2, DFDC ...) is used as it is;
3. a video's label is ``label_dict[video["label"]]`` (0 = real, any other number = fake); a label
   missing from the config's ``label_dict`` is an error. Without a ``label_dict`` a label name
   containing ``real`` (any case) is 0 and any other 1 (a vizkit fallback: DeepfakeBench needs it);
4. a frame's video is ``<video["label"]>_<video name>``;
5. frames are sorted by the integer in their file name (the part of the last path component, split
   on ``/`` or ``\\``, before the first ``.``), then the config's ``frame_num`` (``{test: N}`` or
   an int) keeps the first N (see :func:`_select_frames`);
6. a frame path is read with ``\\`` turned into ``/`` (on POSIX); one starting with ``.`` is
   relative to DeepfakeBench's root (the working directory it runs from), an absolute one stays,
   any other is joined onto the config's ``rgb_dir`` (older configs: ``dataset_root_rgb``), which
   itself, when relative, is relative to the root too, not to the JSON's folder (no ``rgb_dir``:
   the root);
7. a frame's manipulation mask is its path with ``frames`` replaced by ``masks``, used when that
   file exists.

Unlike DeepfakeBench the frames are not shuffled: labels in JSON order, videos in JSON order,
frames in frame-number order.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, VizkitError
from .io import IMAGE_SUFFIXES, load_image, read_json

__all__ = [
    "Item",
    "EvalDataset",
    "resolve_dataset",
    "parse_label",
    "read_list",
    "read_deepfakebench_json",
]

_REAL_WORDS = ("0", "real", "genuine", "pristine")
_FAKE_WORDS = ("1", "fake", "forged", "manipulated")
_C40 = "_c40"
_DEFAULT_COMPRESSION = "c23"

ImageReader = Callable[[str], np.ndarray]


@dataclass
class Item:
    """One test image: where it is (a path, or ``<test set>/<split>/<i>`` for one held in memory), its label, the
    video it belongs to (or None) and its manipulation mask file (or None)."""

    path: str
    label: int
    video: str | None = None
    mask: str | None = None


@dataclass
class EvalDataset:
    """A resolved test set: ``name`` (the metadata's ``Dataset:``), ``items``, ``source`` (where it
    was read from). ``samples``: for a test set held in memory, one object per item with ``image``
    (uint8 HxWx3), ``label`` and ``mask`` (bool HxW or None), in the order of ``items``.
    ``has_masks``: at least one fake has a manipulation mask."""

    name: str
    items: list[Item]
    source: str
    samples: list[Any] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def has_masks(self) -> bool:
        if self.samples is not None:
            return any(s.label == 1 and s.mask is not None and s.mask.any() for s in self.samples)
        return any(it.mask for it in self.items)

    @property
    def has_videos(self) -> bool:
        return any(it.video for it in self.items)

    def image(self, index: int, reader: ImageReader | None = None) -> np.ndarray:
        """Item ``index`` as uint8 ``H x W x 3`` RGB.

        ``reader``: a callable ``path -> uint8 H x W x 3 RGB array`` (e.g. an OpenCV reader, as
        DeepfakeBench's ``load_rgb`` uses); None reads with :func:`vizkit.io.load_image` (PIL).
        Samples held in memory ignore ``reader``. An unreadable file, a reader that raises
        or returns anything but a uint8 ``H x W x 3`` array, raises :class:`InputError` naming the
        path (the evaluation reports it per image)."""
        if self.samples is not None:
            return np.asarray(self.samples[index].image, dtype=np.uint8)
        path = self.items[index].path
        if reader is None:
            return np.array(load_image(path), dtype=np.uint8)
        name = getattr(reader, "__name__", type(reader).__name__)
        try:
            out = reader(path)
        except VizkitError:
            raise
        except Exception as err:  # noqa: BLE001 - any reader failure is this image's failure
            raise InputError(f"cannot read image {path!r} with reader {name}: {type(err).__name__}: {err}") from err
        if out is None:
            raise InputError(f"cannot read image {path!r}: reader {name} returned None (missing or unreadable file)")
        arr = np.asarray(out)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise InputError(
                f"reader {name} returned a {arr.dtype} array of shape {tuple(arr.shape)} for image "
                f"{path!r}; it must return uint8 H x W x 3 RGB"
            )
        return arr

    def read_images(
        self, indices: Iterable[int], reader: ImageReader | None = None
    ) -> tuple[list[np.ndarray], list[int], list[dict[str, Any]]]:
        """Items ``indices`` read with :meth:`image`, skipping the unreadable ones: (the images,
        uint8 ``H x W x 3`` each; the indices read, in order; one ``{"index", "path", "error"}``
        per item that could not be read, its :class:`VizkitError` message)."""
        images, read, errors = [], [], []
        for i in indices:
            try:
                images.append(self.image(i, reader))
                read.append(i)
            except VizkitError as err:
                errors.append({"index": i, "path": self.items[i].path, "error": str(err)})
        return images, read, errors

    def mask(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray | None:
        """Item ``index``'s manipulation mask (bool ``H x W``, pixels > 127 of the grey image), or
        None; ``size`` = (H, W) resizes it (nearest). An unreadable mask file counts as no mask."""
        if self.samples is not None:
            m = self.samples[index].mask
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
        return EvalDataset(
            self.name,
            self.items[:count],
            f"{self.source} (first {count})",
            self.samples[:count] if self.samples is not None else None,
        )


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


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _folder(root: Path) -> EvalDataset:
    subs = {name: root / name for name in ("real", "fake")}
    missing = [n for n, p in subs.items() if not p.is_dir()]
    if len(missing) == 2:
        raise InputError(
            f"dataset folder {str(root)!r} needs real/ and fake/ subfolders (images of each class); "
            "or give a CSV / JSON list of (path, label)"
        )
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
        raise InputError(
            f"dataset folder {str(root)!r} holds no images under real/ or fake/ ({', '.join(IMAGE_SUFFIXES)})"
        )
    return EvalDataset(root.name, items, f"folder {root}")


def _resolve_path(raw: Any, base: Path) -> str:
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
        items.append(
            Item(
                _resolve_path(row["path"], source.parent),
                parse_label(row["label"], where),
                str(video) if video not in (None, "") else None,
                _resolve_path(mask, source.parent) if mask not in (None, "") else None,
            )
        )
    return items


def read_list(
    path: str | os.PathLike, config: Mapping[str, Any] | None = None, root: str | os.PathLike | None = None
) -> EvalDataset:
    """A CSV (header ``path,label[,video][,mask]``) or a JSON list of such objects (paths relative
    to the file's folder); a JSON that is not a list is DeepfakeBench's dataset JSON, read by
    :func:`read_deepfakebench_json` with ``config`` and ``root``."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        try:
            with p.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                header = [h.strip() for h in (reader.fieldnames or [])]
                missing = [c for c in ("path", "label") if c not in header]
                if missing:
                    raise InputError(
                        f"CSV {str(p)!r} has no {' and no '.join(repr(c) for c in missing)} column "
                        f"(header: {', '.join(header) or 'empty'}; expected path, label[, video][, mask])"
                    )
                rows = [{k.strip(): v for k, v in r.items() if k is not None} for r in reader]
        except UnicodeDecodeError as err:
            raise InputError(f"CSV {str(p)!r} is not UTF-8 text: {err}") from None
        return EvalDataset(p.stem, _rows_to_items(rows, p, "CSV"), f"CSV {p}")
    data = read_json(p, "dataset JSON")
    if isinstance(data, list):
        return EvalDataset(p.stem, _rows_to_items(data, p, "JSON list"), f"JSON list {p}")
    return read_deepfakebench_json(p, config=config, data=data, root=root)


# --- DeepfakeBench ---------------------------------------------------------------------------
def _root(root: str | os.PathLike | None) -> Path:
    """DeepfakeBench's root, absolute: ``root`` (relative: to the working directory; ``..`` folded),
    else the working directory now."""
    return Path(os.path.abspath(os.path.expanduser(str(root)))) if root not in (None, "") else Path(os.getcwd())


def _rgb_dir(config: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(the config key, its value) of the frames' root folder: ``rgb_dir``, else ``dataset_root_rgb``."""
    for key in ("rgb_dir", "dataset_root_rgb"):
        if config.get(key) not in (None, ""):
            return key, str(config[key])
    return None, None


def _posix(raw: Any) -> str:
    text = str(raw)
    return text.replace("\\", "/") if os.sep == "/" else text


def _frame_path(raw: Any, rgb_base: Path, root: Path) -> str:
    """Where DeepfakeBench reads frame ``raw``: ``.``-paths from the root, absolute paths as they
    are, any other joined onto ``rgb_base``."""
    text = _posix(raw)
    if text.startswith("."):
        return str(root / text)
    p = Path(text)
    return str(p if p.is_absolute() else rgb_base / p)


def _frame_number(raw: Any) -> int | None:
    """The integer DeepfakeBench sorts frame ``raw`` by: its last path component (split on ``/`` or
    ``\\``) up to the first ``.``, as ``int()`` reads it; None when that is not an integer."""
    stem = re.split(r"[\\/]", str(raw))[-1].split(".")[0]
    try:
        return int(stem)
    except ValueError:
        return None


def _select_frames(frames: Sequence[Any], count: int | None) -> list[Any]:
    """The frames DeepfakeBench keeps of one video: sorted by frame number (:func:`_frame_number`;
    stable, so equal numbers keep their JSON order), then the first ``count`` when ``count`` is
    smaller than their number (all when ``count`` is None).

    DeepfakeBench's comment says "select frame_num frames evenly distributed throughout the video",
    but its code first sets ``total_frames = frame_num`` and then takes ``step = total_frames //
    frame_num`` (= 1) and ``frames[0:total_frames:step][:frame_num]``: the first ``frame_num``
    frames in frame-number order, which is what is reproduced here. When one frame's name holds no
    integer (DeepfakeBench would crash), the video's frames keep their JSON order."""
    numbers = [_frame_number(f) for f in frames]
    ordered = list(frames)
    if ordered and all(n is not None for n in numbers):
        ordered = [f for _, f in sorted(zip(numbers, ordered), key=lambda pair: pair[0])]
    if count is not None and count < len(ordered):
        ordered = ordered[:count]
    return ordered


def _frame_count(config: Mapping[str, Any], split: str) -> int | None:
    """The config's ``frame_num`` for ``split`` (``{split: N}`` or an int N); None: all frames."""
    value = config.get("frame_num")
    if isinstance(value, Mapping):
        value = value.get(split)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(
            f"the config's frame_num {config.get('frame_num')!r} gives {value!r} frames for split "
            f"{split!r}; set frame_num to a positive integer or {{{split}: N}}"
        )
    return int(value)


def _is_video(entry: Any) -> bool:
    return isinstance(entry, Mapping) and "frames" in entry


def _videos(node: Any, compression: str, where: str, c40_name: bool) -> Mapping[str, Any]:
    """The ``{video: {"label", "frames"}}`` mapping of one label's split: the node itself when it
    holds videos, its ``compression`` entry when it holds compression levels (mappings without
    ``frames``); a missing level is an error naming the levels there are."""
    if not isinstance(node, Mapping) or not node:
        return {}
    if any(_is_video(v) for v in node.values()):
        return node
    if not all(isinstance(v, Mapping) for v in node.values()):
        return {}
    if compression not in node:
        how = (
            "name the dataset without _c40"
            if c40_name
            else "set the config's compression to one of them (or name the dataset <NAME>_c40 for c40)"
        )
        raise InputError(f"{where} holds compression levels {', '.join(map(str, node))} but not {compression!r}: {how}")
    level = node[compression]
    return level if isinstance(level, Mapping) else {}


def _label(video_label: Any, label_dict: Mapping[str, Any] | None, dataset: str, source: Path) -> int:
    if not label_dict:
        return 0 if "real" in str(video_label).lower() else 1
    if video_label not in label_dict:
        raise InputError(
            f"label {video_label!r} of dataset {dataset!r} ({source}) is not in the config's label_dict "
            f"(it has {', '.join(map(str, label_dict))}): add {video_label}: 0 (real) or 1 (fake) to "
            "label_dict"
        )
    value = label_dict[video_label]
    try:
        return 1 if int(value) else 0
    except (TypeError, ValueError):
        raise InputError(
            f"the config's label_dict maps {video_label!r} to {value!r}: use 0 (real) or a non-zero integer (fake)"
        ) from None


def read_deepfakebench_json(
    path: str | os.PathLike,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    data: Any = None,
    split: str = "test",
    root: str | os.PathLike | None = None,
) -> EvalDataset:
    """DeepfakeBench's dataset JSON at ``path`` read as DeepfakeBench reads it (the rules in the
    module docstring): the ``split`` frames of every label, in one :class:`EvalDataset` named
    ``name``.

    ``name``: the dataset (``FaceForensics++``, ``FaceForensics++_c40`` ...); None: the file's
    stem when it (or, for ``<base>_c40``, its base) is a key of the JSON, else its only key.
    ``config``: the detector YAML's keys ``label_dict``, ``compression``, ``frame_num``,
    ``rgb_dir`` (or ``dataset_root_rgb``). ``data``: the JSON already parsed (None: read
    ``path``). ``root``: DeepfakeBench's root, against which ``.``-frame paths and a relative
    ``rgb_dir`` are read (None: the working directory at call time).

    When none of the selected frames exists, one :class:`InputError` names the dataset, the first
    paths tried, the ``rgb_dir`` and the root; when only some are missing the evaluation reports
    them per image."""
    p = Path(path)
    data = read_json(p, "dataset JSON") if data is None else data
    config = dict(config or {})
    base_dir = _root(root)
    if not isinstance(data, Mapping) or not data:
        raise InputError(
            f"dataset JSON {str(p)!r} is neither a list of (path, label) objects nor DeepfakeBench's "
            "{dataset: {label: {split: {video: {label, frames}}}}} layout"
        )
    requested = name if name is not None else p.stem
    c40_name = requested.endswith(_C40) and requested[: -len(_C40)] in data
    if c40_name:
        key = requested[: -len(_C40)]
    elif requested in data:
        key = requested
    elif len(data) == 1:
        key, requested = next(iter(data)), (name if name is not None else next(iter(data)))
    else:
        raise InputError(f"dataset JSON {str(p)!r} holds datasets {', '.join(map(str, data))}: name one")
    compression = "c40" if c40_name else str(config.get("compression") or _DEFAULT_COMPRESSION)
    label_dict = config.get("label_dict") or None
    if label_dict is not None and not isinstance(label_dict, Mapping):
        raise InputError(
            f"the config's label_dict is a {type(label_dict).__name__}: make it a mapping {{label name: 0 or 1}}"
        )
    count = _frame_count(config, split)
    rgb_key, rgb_dir = _rgb_dir(config)
    rgb_base = base_dir / Path(os.path.expanduser(rgb_dir)) if rgb_dir else base_dir
    items: list[Item] = []
    for label_name, by_split in (data[key] or {}).items():
        if not isinstance(by_split, Mapping) or split not in by_split:
            continue
        where = f"dataset JSON {str(p)!r}: {key} / {label_name} / {split}"
        for video, info in _videos(by_split[split], compression, where, c40_name).items():
            if not isinstance(info, Mapping):
                continue
            video_label = info.get("label", label_name)
            label = _label(video_label, label_dict, str(requested), p)
            for raw in _select_frames(info.get("frames") or [], count):
                frame = _frame_path(raw, rgb_base, base_dir)
                mask = (
                    _frame_path(str(raw).replace("frames", "masks"), rgb_base, base_dir)
                    if "frames" in str(raw)
                    else None
                )
                items.append(
                    Item(frame, label, f"{video_label}_{video}", mask if mask and os.path.isfile(mask) else None)
                )
    if not items:
        raise InputError(
            f"dataset JSON {str(p)!r}: dataset {key!r} lists no {split!r} frames "
            f"(labels found: {', '.join(map(str, data[key] or {})) or 'none'})"
        )
    if not any(os.path.isfile(it.path) for it in items):
        tried = ", ".join(it.path for it in items[:3]) + (", ..." if len(items) > 3 else "")
        rgb = (
            f"the config's {rgb_key} {rgb_dir!r} (= {rgb_base})"
            if rgb_key
            else f"DeepfakeBench's root {base_dir} (the config has no rgb_dir)"
        )
        raise InputError(
            f"none of the {len(items)} frames of dataset {requested!r} ({p}) exists (tried {tried}): "
            f"relative frame paths are read under {rgb} and paths starting with '.' under DeepfakeBench's "
            f"root {base_dir} (the working directory unless root= is given); run from DeepfakeBench's "
            "root, or set rgb_dir to an absolute path, or pass root="
        )
    return EvalDataset(str(requested), items, f"DeepfakeBench JSON {p}")


def resolve_dataset(
    spec: str | os.PathLike | None = None,
    config: Mapping[str, Any] | None = None,
    max_samples: int | None = None,
    root: str | os.PathLike | None = None,
    *,
    named: Mapping[str, Callable[[], EvalDataset]] | None = None,
) -> EvalDataset:
    """The test set named by ``spec`` (see the module docstring), its first ``max_samples`` items
    (all when None or 0).

    ``spec``: a name of ``named`` (``{name: function returning the test set}``), a folder, a CSV /
    JSON file (a path, relative to the working directory), or a DeepfakeBench dataset NAME.
    ``config``: the detector YAML's extra keys (``dataset_json_folder``, ``rgb_dir``,
    ``label_dict``, ``compression``, ``frame_num``); they apply to a DeepfakeBench JSON given by
    path as well as by NAME. ``root``: DeepfakeBench's root, against which a relative
    ``dataset_json_folder`` / ``rgb_dir`` and ``.``-frame paths are read (None: the working
    directory at call time). A NAME is looked up as ``<dataset_json_folder>/<NAME>.json``; for
    ``<base>_c40`` without its own JSON, ``<base>.json``
    (which holds the c40 frames too)."""
    named = dict(named or {})
    if spec in (None, ""):
        raise InputError(
            "no test dataset given: pass a folder with real/ and fake/, a CSV / JSON list, a DeepfakeBench JSON or NAME"
            + (f", or one of {', '.join(named)}" if named else "")
        )
    text = str(spec)
    if text in named:
        return named[text]().subset(max_samples)
    p = Path(os.path.expanduser(text))
    if p.is_dir():
        return _folder(p).subset(max_samples)
    if p.is_file():
        if p.suffix.lower() not in (".csv", ".json"):
            raise InputError(f"dataset file {str(p)!r} is neither a CSV nor a JSON list (.csv / .json)")
        return read_list(p, config, root).subset(max_samples)
    config = dict(config or {})
    looked = [f"{p} (no such file or folder)"]
    folder = config.get("dataset_json_folder")
    if folder:
        json_dir = _root(root) / Path(os.path.expanduser(str(folder)))
        names = [text] + ([text[: -len(_C40)]] if text.endswith(_C40) else [])
        for stem in names:
            candidate = json_dir / f"{stem}.json"
            if candidate.is_file():
                return read_deepfakebench_json(candidate, text, config, root=root).subset(max_samples)
            looked.append(f"{candidate} (dataset_json_folder)")
    else:
        looked.append("no dataset_json_folder in the detector config")
    raise InputError(
        f"test dataset {text!r} resolves to nothing: looked for "
        + "; ".join(looked)
        + ". Give a folder with real/ and fake/, a CSV / JSON list, a DeepfakeBench JSON"
        + (f", or one of {', '.join(named)}" if named else "")
    )
