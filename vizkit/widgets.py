"""Generic ipywidgets panes for the scenario explorers: a map beside its overlay, redrawn in
place. Scenario-specific explorers (which controls, which cache) live in
:mod:`vizkit.scenarios`; moving a control there redraws from a cache and never reruns a model
unless the combination was never computed."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import html
from functools import lru_cache

import cv2
import ipywidgets as W
import numpy as np

from . import render

__all__ = ["HeatmapPane", "observe_all", "describe_controls"]


class HeatmapPane:
    """The raw map (left) and its overlay on the image (right) as two ``ipywidgets.Image``
    PNGs with their titles, in one box (:attr:`output`).

    A redraw colours the map with a colormap lookup table, blends the overlay with
    :func:`vizkit.render.overlay` and PNG-encodes both with OpenCV: a few milliseconds, and
    the browser swaps two small images (no matplotlib figure is rendered per move). ``drawn``
    holds the ``[h, w]`` map on screen; ``draws`` counts redraws; ``png`` holds the two PNGs.
    """

    def __init__(self, figsize: tuple[float, float] = (6.5, 3.2), cmap: str = "jet", size: int = 0):
        self.cmap = cmap
        self.size = int(size or figsize[0] * 100 / 2)  # each panel's width in pixels
        self.suptitle = W.HTML()
        self.map_title, self.overlay_title = W.HTML(), W.HTML()
        self.map_image = W.Image(format="png", width=self.size)
        self.overlay_image = W.Image(format="png", width=self.size)
        self.output = W.VBox([self.suptitle, W.HBox([W.VBox([self.map_title, self.map_image]),
                                                     W.VBox([self.overlay_title, self.overlay_image])])])
        self.drawn: np.ndarray | None = None
        self.draws = 0
        self.png: tuple[bytes, bytes] = (b"", b"")

    def _panel(self, heat: np.ndarray, diverging: bool) -> np.ndarray:
        """``[h, w]`` -> RGB uint8 at the panel size (nearest-neighbour: one block per cell)."""
        if diverging:
            bound = float(np.abs(heat).max()) or 1.0
            unit = (heat / bound + 1.0) / 2.0
        else:
            lo, hi = float(heat.min()), float(heat.max())
            unit = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
        rgb = _lut("RdBu_r" if diverging else self.cmap)[np.clip((unit * 255).round(), 0, 255).astype(np.intp)]
        h, w = heat.shape
        scale = max(1, self.size // max(h, w))
        return cv2.resize(rgb, (w * scale, h * scale), interpolation=cv2.INTER_NEAREST)

    def draw(self, heat: Any, image: Any, *, map_title: str = "map", overlay_title: str = "overlay",
             suptitle: str | None = None, diverging: bool = False) -> None:
        """Show ``heat`` ``[h, w]`` and its overlay on ``image`` (anything :mod:`vizkit.render` reads).

        ``diverging``: a signed map, drawn with a diverging colormap centred at 0 (the overlay
        shows its magnitude).
        """
        heat = np.asarray(heat, dtype=np.float32)
        blended = render.overlay(image, np.abs(heat) if diverging else heat, cmap=self.cmap)
        over = cv2.cvtColor((blended * 255).round().astype(np.uint8), cv2.COLOR_RGB2BGR)
        side = self.size / max(over.shape[:2])
        if side < 1:
            over = cv2.resize(over, (round(over.shape[1] * side), round(over.shape[0] * side)),
                              interpolation=cv2.INTER_AREA)
        png_map = cv2.imencode(".png", cv2.cvtColor(self._panel(heat, diverging), cv2.COLOR_RGB2BGR))[1].tobytes()
        png_over = cv2.imencode(".png", over)[1].tobytes()
        rng = f"{float(heat.min()):.3g} .. {float(heat.max()):.3g}"
        self.map_title.value = f"<b>{html.escape(map_title)}</b> <small>({rng})</small>"
        self.overlay_title.value = f"<b>{html.escape(overlay_title)}</b>"
        if suptitle is not None:
            self.suptitle.value = f"<small>{html.escape(suptitle)}</small>"
        with self.map_image.hold_sync(), self.overlay_image.hold_sync():
            self.map_image.value, self.overlay_image.value = png_map, png_over
        self.png = (png_map, png_over)
        self.drawn = heat
        self.draws += 1


@lru_cache(maxsize=16)
def _lut(cmap: str) -> np.ndarray:
    """``[256, 3]`` uint8 RGB lookup table of a matplotlib colormap."""
    import matplotlib

    return (matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)


def describe_controls(controls: Iterable[Any]) -> list[tuple[str, str]]:
    """``(label, kind)`` of each control as a person sees it in the page: kind ``slider``,
    ``dropdown`` or ``toggle`` (what the browser test moves)."""
    kinds = {"IntSlider": "slider", "FloatSlider": "slider", "SelectionSlider": "slider", "Dropdown": "dropdown",
             "ToggleButtons": "toggle"}
    out = []
    for c in controls:
        kind = kinds.get(type(c).__name__)
        if kind is None:
            raise TypeError(f"no browser-test kind for a {type(c).__name__} control")
        out.append((c.description, kind))
    return out


def observe_all(controls: Iterable[W.ValueWidget], callback: Callable[[], None]) -> None:
    """Call ``callback()`` whenever the value of any of ``controls`` changes."""
    for control in controls:
        control.observe(lambda change: callback(), names="value")
