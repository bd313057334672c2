"""Image preprocessing of detectors and classifiers: uint8 RGB image -> normalised ``[3, S, S]``.

:class:`CvResizeNormalize` resizes with OpenCV (``INTER_CUBIC`` as DeepfakeBench's test loader,
``INTER_AREA`` as the zoo's detector), scales to [0, 1] and normalises with a mean and std, in
the same float32 operations as torchvision's ``ToTensor`` + ``Normalize``. Inputs are turned
into 3-channel uint8 first the way ``cv2.imread`` would: grey is replicated, an alpha channel
is dropped (not composited).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import InputError

__all__ = ["as_rgb_uint8", "CvResizeNormalize", "INTERPOLATIONS"]

#: the OpenCV resize modes :class:`CvResizeNormalize` accepts (``cv2.INTER_CUBIC``, ``INTER_AREA``,
#: ``INTER_LINEAR``)
INTERPOLATIONS = ("cubic", "area", "linear")


def as_rgb_uint8(image: Any) -> np.ndarray:
    """``H x W x 3`` uint8 from a PIL image or an array ``H x W``, ``H x W x 1``, ``H x W x 3`` or
    ``H x W x 4`` (uint8, or floats in [0, 1] / [0, 255]): grey replicated to 3 channels and an
    alpha channel dropped, as ``cv2.imread(path, IMREAD_COLOR)`` turns such files into 3 channels."""
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL: keep alpha / grey to handle them below
        image = image.convert(
            "RGBA" if "A" in image.mode or image.mode == "P" else "L" if image.mode in ("L", "1") else "RGB"
        )
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise InputError(f"expected an image H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA), got shape {a.shape}")
    a = a[..., :3]
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and float(a.max()) <= 1.0:
            a = a * 255.0
        a = np.clip(a, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


class CvResizeNormalize:
    """``image -> [3, size, size]`` float32: :func:`as_rgb_uint8`, ``cv2.resize`` to ``size`` with
    ``interpolation`` (skipped when the image already has that size: OpenCV copies it then),
    ``/ 255``, ``(x - mean) / std``.

    ``batch(images)``: ``[N, size, size, 3]`` uint8 already at the size -> ``[N, 3, size, size]``.
    """

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], interpolation: str = "cubic"):
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
        self.size, self.interpolation = int(size), interpolation
        self.mean_values, self.std_values = [float(v) for v in mean], [float(v) for v in std]
        self.mean = torch.tensor(self.mean_values, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(self.std_values, dtype=torch.float32)[:, None, None]

    def resize(self, image: Any) -> np.ndarray:
        """The uint8 ``size x size x 3`` image the model sees."""
        import cv2

        a = as_rgb_uint8(image)
        if a.shape[:2] != (self.size, self.size):
            flag = {"cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}[self.interpolation]
            a = cv2.resize(a, (self.size, self.size), interpolation=flag)
        return a

    def __call__(self, image: Any) -> torch.Tensor:
        a = self.resize(image)
        x = torch.from_numpy(a if a.flags.writeable else a.copy()).permute(2, 0, 1).float().div(255.0)
        return (x - self.mean) / self.std

    def batch(self, images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(np.stack(list(images)))).permute(0, 3, 1, 2).float().div(255.0)
        return (x - self.mean) / self.std

    def describe(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "interpolation": self.interpolation,
            "mean": self.mean_values,
            "std": self.std_values,
        }
