"""File I/O: atomic writing (the one implementation every module uses) and input image listing.

A file is written into a hidden temporary file beside its target, then moved into place
with :func:`os.replace`, so a reader (or a crash) never sees a half-written file: the target
is either the old file or the complete new one. On any error the temporary file is removed.
"""

from __future__ import annotations

import io
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "atomic_path",
    "write_text",
    "write_csv",
    "write_json",
    "save_npz",
    "save_safetensors",
    "image_files",
    "unique_stems",
    "load_image",
    "read_image_opencv",
    "data_root",
    "IMAGE_SUFFIXES",
]


def data_root() -> Path:
    """The project's ``data/`` folder (``$VIZKIT_DATA`` overrides it): the zoo's checkpoints live in
    ``data/zoo/<name>/``."""
    env = os.environ.get("VIZKIT_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data"


#: the file suffixes read as images when a folder is listed
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


@contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); move it onto ``path`` on success.

    ``mode``: permission bits to set before the move (e.g. ``0o644``). On any exception the
    temporary file is removed and ``path`` is left untouched. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) atomically; return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def write_csv(path: str | os.PathLike[str], frame: Any) -> Path:
    """Write a pandas DataFrame as CSV (no index column) atomically; return the path."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    return write_text(path, buf.getvalue())


def write_json(path: str | os.PathLike[str], obj: Any, *, sort_keys: bool = False) -> Path:
    """Write ``obj`` as indented UTF-8 JSON (non-ASCII kept as is, trailing newline) atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    """The JSON document at ``path``; a missing file or invalid JSON is one :class:`InputError`
    naming ``what`` and the path."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} {str(p)!r} does not exist")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{what} {str(p)!r} is not valid JSON: {err}") from None


def save_npz(path: str | os.PathLike[str], arrays: dict[str, Any]) -> Path:
    """Write ``arrays`` (name -> array) as a compressed ``.npz`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return path


def save_safetensors(
    state: dict[str, Any], path: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> Path:
    """Write a state dict of tensors as safetensors atomically (readable by all: mode 0o644)."""
    from safetensors.torch import save_file

    path = Path(path)
    with atomic_path(path, mode=0o644) as tmp:
        save_file(
            {k: v.detach().contiguous() for k, v in state.items()},
            str(tmp),
            metadata={"format": "pt", **(metadata or {})},
        )
    return path


def image_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files given directly, plus the images inside given folders (sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"folder {str(raw)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"image {str(raw)!r} does not exist")
    return files


def unique_stems(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Output stems of ``paths``: the file stems, made unique (``a``, ``a_2``) when two share one."""
    seen: dict[str, int] = {}
    out = []
    for raw in paths:
        stem = Path(raw).stem
        n = seen.get(stem, 0) + 1
        seen[stem] = n
        out.append(stem if n == 1 else f"{stem}_{n}")
    return out


def load_image(path: str | os.PathLike[str]) -> Any:
    """An RGB PIL image; grey, RGBA, palette and 16-bit images are converted, not rejected."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {str(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            im.load()
            image = im.copy()
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"cannot read image {str(path)!r}: {err}") from err
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(image, dtype=np.float64)
        hi = 65535.0 if a.max() > 255 else 255.0
        image = Image.fromarray(np.clip(a / hi * 255.0, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        a = np.asarray(image, dtype=np.float64)
        a = (a - a.min()) / (a.max() - a.min() + 1e-12)
        image = Image.fromarray((a * 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def read_image_opencv(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as uint8 ``H x W x 3`` RGB, decoded exactly as ``cv2.imread(path)`` does
    (``IMREAD_COLOR``: grey is replicated to 3 channels, an alpha channel is dropped, not
    composited, 16-bit images are scaled to 8 bits), then ``cv2.cvtColor(BGR2RGB)``: the way
    DeepfakeBench reads its frames. An unreadable file raises :class:`InputError`."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {str(path)!r} does not exist")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(
            f"cannot read image {str(path)!r}: OpenCV could not decode it (not an image, or a format "
            "OpenCV was built without)"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
