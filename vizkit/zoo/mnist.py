"""Read the MNIST IDX files shipped in ``data/mnist/`` (numpy + gzip, no torchvision).

Splits: ``train`` = the first 55,000 images of the training file, ``val`` = its last 5,000,
``test`` = the 10,000 t10k images. :func:`load_mnist` validates each file's IDX header
(magic number, dimensions, length) and raises :class:`~vizkit.errors.VizkitError` with the
file name on a corrupt or truncated file. Decoded arrays are cached per process.
:func:`mnist_preprocess` normalises a digit with the training set's pixel mean and std.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import VizkitError
from .common import data_root

#: the MNIST splits vizkit reads
SPLITS = ("train", "val", "test")
#: the first 55,000 of the 60,000 training images train; the rest is the validation split
N_TRAIN = 55_000
IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
#: the MNIST training images' pixel mean on [0, 1]
MNIST_MEAN = 0.1307
#: the MNIST training images' pixel standard deviation on [0, 1]
MNIST_STD = 0.3081
FILES = {
    "train": ("train-images.idx3-ubyte.gz", "train-labels.idx1-ubyte.gz"),
    "test": ("t10k-images.idx3-ubyte.gz", "t10k-labels.idx1-ubyte.gz"),
}


def mnist_dir() -> Path:
    """``data/mnist/`` (follows ``$VIZKIT_DATA``)."""
    return data_root() / "mnist"


def _read(path: Path) -> bytes:
    if not path.exists():
        raise VizkitError(
            f"MNIST file {path} is missing: copy the four IDX .gz files into {path.parent} (see data/README.md)"
        )
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as err:
        raise VizkitError(f"MNIST file {path} is not a readable gzip file: {err}") from err


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Decode one IDX file (big-endian header: magic, then one uint32 per dimension) to uint8."""
    data = _read(Path(path))
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    if len(data) < 4:
        raise VizkitError(f"MNIST file {path} is too short ({len(data)} bytes) to hold an IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise VizkitError(
            f"MNIST file {path} has IDX magic number 0x{found:08x}; expected 0x{magic:08x} "
            f"(uint8 {kind}, {ndim}-D): the file is corrupt or not an MNIST {kind} file"
        )
    if len(data) < header:
        raise VizkitError(
            f"MNIST file {path} is too short ({len(data)} bytes) to hold an IDX header "
            f"with {ndim} dimensions: the file is truncated"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    expected = int(np.prod(dims))
    if len(data) - header != expected:
        raise VizkitError(
            f"MNIST file {path} declares shape {dims} ({expected} bytes) but holds "
            f"{len(data) - header} bytes of data: the file is truncated or corrupt"
        )
    return np.frombuffer(data, np.uint8, expected, header).reshape(dims)


@lru_cache(maxsize=4)
def _load_file_pair(kind: str, root: str) -> tuple[np.ndarray, np.ndarray]:
    img_name, lab_name = FILES[kind]
    images = read_idx(Path(root) / img_name, IMAGES_MAGIC)
    labels = read_idx(Path(root) / lab_name, LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise VizkitError(f"MNIST file {Path(root) / img_name} holds {images.shape[1:]} images, expected 28x28")
    if len(images) != len(labels):
        raise VizkitError(f"MNIST {kind} files disagree: {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise VizkitError(f"MNIST file {Path(root) / lab_name} holds label {labels.max()}: labels are 0-9")
    images.setflags(write=False)
    labels = labels.astype(np.int64)
    labels.setflags(write=False)
    return images, labels


def load_mnist(split: str = "train", root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 28, 28], labels int64 [N])`` of ``split`` (train / val / test).

    The arrays are read-only views of a per-process cache; copy them before editing.
    """
    if split not in SPLITS:
        raise VizkitError(f"unknown MNIST split {split!r}: choose one of {', '.join(SPLITS)}")
    root = Path(root) if root is not None else mnist_dir()
    images, labels = _load_file_pair("test" if split == "test" else "train", str(root.resolve()))
    if split == "train":
        return images[:N_TRAIN], labels[:N_TRAIN]
    if split == "val":
        return images[N_TRAIN:], labels[N_TRAIN:]
    return images, labels


def mnist_preprocess(image: Any) -> torch.Tensor:
    """uint8 28x28 (or [1, 28, 28] float in [0, 1]) -> normalised ``[1, 28, 28]`` tensor."""
    t = torch.from_numpy(np.array(image, copy=True)) if not isinstance(image, torch.Tensor) else image
    t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
    if t.ndim == 2:
        t = t[None]
    return (t - MNIST_MEAN) / MNIST_STD


__all__ = ["load_mnist", "read_idx", "mnist_dir", "mnist_preprocess", "SPLITS", "N_TRAIN", "MNIST_MEAN", "MNIST_STD"]
