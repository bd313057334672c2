"""Figures of class maps over one image: one map (:func:`class_map_figure`: the image, the map,
the overlay), two maps compared (:func:`map_comparison_figure`: both overlays, their signed
difference, their overlap) and rows of maps (:func:`map_rows_figure`, e.g. a class per row and a
layer choice per column). Maps are ``[H, W]`` arrays in [0, 1] at the image's size; images are
what :func:`model_view` returns (the image resized to the model's input, float ``H x W x 3``).

Example::

    from vizkit.figures.class_maps import class_map_figure, model_view
    image = model_view(pil_image, (224, 224))
    fig = class_map_figure(image, fake_map, "fake-class attention", "face 3: fake class, p = 0.97")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from .. import render

__all__ = ["model_view", "class_map_figure", "map_comparison_figure", "map_rows_figure"]


def model_view(image: Any, size: tuple[int, int]) -> np.ndarray:
    """The image as the model sees it: float ``H x W x 3`` in [0, 1] (:func:`vizkit.render.to_numpy_image`
    of an array, or of a PIL image converted to RGB) resized to ``size`` ``(H, W)`` with
    ``cv2.INTER_AREA`` when it is not that size already."""
    import cv2

    arr = render.to_numpy_image(np.asarray(image.convert("RGB")) if hasattr(image, "convert") else image)
    return arr if arr.shape[:2] == tuple(size) else cv2.resize(arr, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def class_map_figure(image: np.ndarray, heatmap: np.ndarray, map_title: str, suptitle: str) -> plt.Figure:
    """Three panels: the image, the map ``[H, W]`` (with a colour bar, titled ``map_title``) and the
    map over the image."""
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    render.show_overlay(axes[0], image, heatmap, title="image", alpha=0.0, colorbar=False)
    render.show_heatmap(axes[1], heatmap, title=map_title, colorbar=True)
    render.show_overlay(axes[2], image, heatmap, title="overlay")
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def map_comparison_figure(
    image: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    titles: tuple[str, str],
    suptitle: str,
    names: tuple[str, str] = ("real", "fake"),
) -> plt.Figure:
    """Four panels comparing maps ``a`` and ``b`` ``[H, W]`` of one image: each over the image
    (``titles``), the signed difference ``b - a`` (diverging colours centred on 0, bound
    ``max |b - a|``) and the overlap ``min(a, b)``; ``names`` label the last two."""
    fig, axes = plt.subplots(1, 4, figsize=(14, 4))
    render.show_overlay(axes[0], image, a, title=titles[0])
    render.show_overlay(axes[1], image, b, title=titles[1])
    render.show_signed(axes[2], b - a, title=f"{names[1]} - {names[0]}")
    render.show_heatmap(axes[3], np.minimum(a, b), title=f"overlap min({names[0]}, {names[1]})", colorbar=True)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    return fig


def map_rows_figure(image: np.ndarray, rows: Sequence[Sequence[tuple[str, np.ndarray]]], suptitle: str) -> plt.Figure:
    """A grid of maps over one image (:func:`vizkit.render.figure_grid`): ``rows[r][c]`` is
    ``(title, map [H, W])``."""
    panels = [[render.Panel(image=image, heatmap=heat, title=title) for title, heat in row] for row in rows]
    return render.figure_grid(panels, suptitle=suptitle)
