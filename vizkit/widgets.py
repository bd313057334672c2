"""Generic ipywidgets panes for the scenario explorers: a map beside its overlay, redrawn in
place. Scenario-specific explorers (which controls, which cache) live in
:mod:`vizkit.scenarios`; moving a control there redraws from a cache and never reruns a model
unless the combination was never computed."""
from __future__ import annotations

from typing import Any, Callable, Iterable

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

from . import render

__all__ = ["HeatmapPane", "observe_all", "describe_controls"]


class HeatmapPane:
    """A figure with the raw map (left) and its overlay on the image (right), shown in an
    ``ipywidgets.Output``.

    :meth:`draw` updates the two images in place (no new axes or artists after the first draw)
    and re-displays the figure. ``drawn`` holds the ``[h, w]`` map on screen; ``draws`` counts
    redraws.
    """

    def __init__(self, figsize: tuple[float, float] = (6.5, 3.2), cmap: str = "jet"):
        self.cmap = cmap
        self.output = W.Output()
        self.fig, (self.ax_map, self.ax_overlay) = plt.subplots(1, 2, figsize=figsize)
        plt.close(self.fig)  # drawn into the Output widget only
        self._map: Any = None
        self._over: Any = None
        self.drawn: np.ndarray | None = None
        self.draws = 0

    def draw(self, heat: Any, image: Any, *, map_title: str = "map", overlay_title: str = "overlay",
             suptitle: str | None = None, diverging: bool = False) -> None:
        """Show ``heat`` ``[h, w]`` and its overlay on ``image`` (anything :mod:`vizkit.render` reads).

        ``diverging``: a signed map, drawn with a diverging colormap centred at 0.
        """
        heat = np.asarray(heat)
        cmap = "RdBu_r" if diverging else self.cmap
        blended = render.overlay(image, np.abs(heat) if diverging else heat, cmap=self.cmap)
        if self._map is None:
            self._map = render.show_heatmap(self.ax_map, heat, title=map_title, cmap=self.cmap)
            self._over = self.ax_overlay.imshow(blended)
            self.ax_overlay.set_xticks([])
            self.ax_overlay.set_yticks([])
        else:
            self._map.set_data(heat)
            self._map.set_extent((-0.5, heat.shape[1] - 0.5, heat.shape[0] - 0.5, -0.5))
            self._over.set_data(blended)
        self._map.set_cmap(cmap)
        if diverging:
            bound = float(np.abs(heat).max()) or 1.0
            self._map.set_clim(-bound, bound)
        else:
            self._map.set_clim(float(heat.min()), float(heat.max()))
        self.ax_map.set_title(map_title)
        self.ax_overlay.set_title(overlay_title)
        if suptitle is not None:
            self.fig.suptitle(suptitle, fontsize=9)
        self.drawn = heat
        self.draws += 1
        with self.output:
            self.output.clear_output(wait=True)
            display(self.fig)


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
