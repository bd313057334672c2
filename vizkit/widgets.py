"""ipywidgets explorers over cached results: moving a control redraws from the cache and
never runs the model."""
from __future__ import annotations

from typing import Any

import ipywidgets as W
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import display

from . import render
from .attention_math import HEAD_FUSIONS

VIEWS = ("CLS attention", "rollout", "gradient-weighted")


class AttentionExplorer:
    """Sample x layer x head explorer over an :class:`~vizkit.attention_visualizer.AttentionCache`.

    Controls: ``sample``, ``layer`` (1-based), ``head`` (None = fused), ``fusion``
    (mean/max/min) and ``view`` (CLS attention of the layer, rollout, gradient-weighted).
    ``drawn`` holds the ``[h, w]`` map on screen; ``draws`` counts redraws.
    """

    def __init__(self, cache: Any, head_fusion: str = "mean", cmap: str = "jet"):
        self.cache, self.cmap = cache, cmap
        n_samples, n_layers = len(cache.images), len(cache.layers)
        style = {"description_width": "70px"}
        self.sample = W.IntSlider(0, 0, n_samples - 1, description="sample", style=style)
        self.layer = W.IntSlider(n_layers, 1, n_layers, description="layer", style=style)
        self.head = W.Dropdown(options=[("fused", None)] + [(f"head {h + 1}", h) for h in range(cache.num_heads)],
                               value=None, description="head", style=style)
        self.fusion = W.Dropdown(options=list(HEAD_FUSIONS), value=head_fusion, description="fusion", style=style)
        views = list(VIEWS) if cache.relevance is not None else list(VIEWS[:2])
        self.view = W.ToggleButtons(options=views, value=views[0], description="view", style=style)
        self.output = W.Output()
        self.widget = W.VBox([W.HBox([self.sample, self.layer]), W.HBox([self.head, self.fusion]), self.view, self.output])
        self.fig, (self.ax_raw, self.ax_overlay) = plt.subplots(1, 2, figsize=(6.5, 3.2))
        plt.close(self.fig)  # drawn into the Output widget only
        self.drawn: np.ndarray | None = None
        self.draws = 0
        for control in (self.sample, self.layer, self.head, self.fusion, self.view):
            control.observe(lambda change: self.redraw(), names="value")
        self.redraw()

    def current_map(self) -> np.ndarray:
        """The ``[h, w]`` map the controls select, read from the cache."""
        s, view = self.sample.value, self.view.value
        if view == "rollout":
            return self.cache.rollout_map(s, self.fusion.value)
        if view == "gradient-weighted":
            return self.cache.relevance[s].numpy()
        return self.cache.cls_map(s, self.layer.value - 1, self.head.value, self.fusion.value)

    def title(self) -> str:
        s, view = self.sample.value, self.view.value
        label, pred = int(self.cache.labels[s]), int(self.cache.preds[s])
        what = view if view != "CLS attention" else (
            f"layer {self.layer.value}, " + (f"head {self.head.value + 1}" if self.head.value is not None
                                             else f"{self.fusion.value} of heads"))
        return f"sample {s} (label {label}, predicted {pred}): {what}"

    def redraw(self) -> None:
        heat = self.current_map()
        image = self.cache.images[self.sample.value]
        blended = render.overlay(image, heat, cmap=self.cmap)
        if self.draws == 0:
            self._raw = render.show_heatmap(self.ax_raw, heat, title="attention", cmap=self.cmap)
            self._over = self.ax_overlay.imshow(blended)
            self.ax_overlay.set_title("overlay")
            self.ax_overlay.set_xticks([])
            self.ax_overlay.set_yticks([])
        else:  # update the artists in place: no new axes, no new images
            self._raw.set_data(heat)
            self._raw.set_clim(float(heat.min()), float(heat.max()))
            self._over.set_data(blended)
        self.fig.suptitle(self.title(), fontsize=9)
        self.drawn = heat
        self.draws += 1
        with self.output:
            self.output.clear_output(wait=True)
            display(self.fig)

    def _ipython_display_(self) -> None:
        display(self.widget)


class ClipExplorer:
    """Switch the target text, the CAM method and the layer of a CLIP explanation.

    A new (text, method, layer) combination costs one forward and backward pass; combinations
    already seen are redrawn from the cache.
    """

    def __init__(self, adapter: Any, image: Any, names: list[str], texts: list[str], methods: list[str],
                 layers: list[str], cmap: str = "jet"):
        from .clip_gradcam import display_crop, explain_clip

        self._explain, self.adapter, self.image = explain_clip, adapter, image
        self.names, self.texts, self.cmap = names, texts, cmap
        self.display_image = display_crop(image, adapter.image_size)
        self.text = W.Dropdown(options=[(n, i) for i, n in enumerate(names)], value=0, description="text")
        self.method = W.Dropdown(options=methods, value=methods[0], description="method")
        self.layer = W.Dropdown(options=layers, value=layers[0], description="layer")
        self.output = W.Output()
        self.widget = W.VBox([W.HBox([self.text, self.method, self.layer]), self.output])
        self.cache: dict[tuple[int, str, str], Any] = {}
        self.fig, (self.ax_map, self.ax_overlay) = plt.subplots(1, 2, figsize=(7, 3.4))
        plt.close(self.fig)
        self.drawn: np.ndarray | None = None
        for control in (self.text, self.method, self.layer):
            control.observe(lambda change: self.redraw(), names="value")
        self.redraw()

    def result(self) -> Any:
        key = (self.text.value, self.method.value, self.layer.value)
        if key not in self.cache:
            self.cache[key] = self._explain(self.adapter, [self.image], self.names, self.texts, self.text.value,
                                            self.method.value, self.layer.value)[0]
        return self.cache[key]

    def redraw(self) -> None:
        res = self.result()
        self.ax_map.clear()
        self.ax_overlay.clear()
        render.show_heatmap(self.ax_map, res.heatmap, title=f"{res.method} @ {res.layers[0]}", cmap=self.cmap)
        render.show_overlay(self.ax_overlay, self.display_image, res.heatmap,
                            title=f"{res.names[res.target]} (p={res.probs[res.target]:.3f})", cmap=self.cmap)
        self.drawn = res.heatmap
        with self.output:
            self.output.clear_output(wait=True)
            display(self.fig)

    def _ipython_display_(self) -> None:
        display(self.widget)
