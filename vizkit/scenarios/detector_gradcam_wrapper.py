"""Scenario 3's seed API: :class:`CLIPDetectorWithGradCAM`, seed 002's detector wrapper —
DeepfakeBench's ``forward(data_dict)`` (``{"cls", "prob"}``) and Grad-CAM / Grad-CAM++ maps on
demand at named layers, written as overlays and comparison figures. The score explained: the
detector's logit of ``target_class`` (None: the predicted class). A scenario module, not a model
wrapper of :mod:`vizkit.models`: it draws its figures (the presentation layer).

Example::

    from vizkit.scenarios import CLIPDetectorWithGradCAM
    det = CLIPDetectorWithGradCAM({"gradcam_save_dir": "viz"})     # the zoo detector
    with det.gradcam():
        maps = det.generate_gradcam({"image": x})                  # {layer: [B, H, W]}
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import render
from ..errors import VizkitError
from ..explain import cam
from ..figures.layer_comparison import comparison_figure
from ..models.detector_layers import default_layers, resolve_gradcam_layers
from ..models.load_detector import load_eval_detector

__all__ = ["CLIPDetectorWithGradCAM"]


class CLIPDetectorWithGradCAM(nn.Module):
    """Seed 002's detector wrapper: DeepfakeBench's ``forward(data_dict)`` (``{"cls", "prob"}``) and
    Grad-CAM on demand.

    ``config``: the seed's keys ``gradcam_enabled`` (default False), ``gradcam_layers``,
    ``gradcam_save_dir``, ``gradcam_method``; a detector comes from ``model`` (an ``nn.Module``
    ``[B, 3, H, W] -> [B, 2]``), else ``config["pretrained"]`` / ``config["detector_path"]``,
    else the zoo detector. No hook is ever left on the model: :meth:`generate_gradcam` hooks the
    layers for its own call only, so disabled means no hooks and no stored activations.
    """

    def __init__(self, config: Mapping[str, Any] | None = None, model: nn.Module | None = None):
        super().__init__()
        self.config = dict(config or {})
        if model is None:
            det = load_eval_detector(
                self.config.get("detector_path"), self.config.get("pretrained"), num_heads=self.config.get("num_heads")
            )
            model = det.model
        self.model = model
        self.gradcam_enabled = bool(self.config.get("gradcam_enabled", False))
        self.gradcam_layers = resolve_gradcam_layers(
            model, list(self.config.get("gradcam_layers") or default_layers(model))
        )
        self.gradcam_save_dir = Path(self.config.get("gradcam_save_dir", "./gradcam_visualizations"))
        self.gradcam_method = self.config.get("gradcam_method", "gradcam")

    def forward(self, data_dict: Mapping[str, Any], inference: bool = False) -> dict[str, torch.Tensor]:
        """``{"cls": [B, 2] logits, "prob": [B] fake probability}`` of ``data_dict["image"]``."""
        logits = self.model(data_dict["image"])
        return {"cls": logits, "prob": torch.softmax(logits, -1)[:, 1]}

    def enable_gradcam(self) -> None:
        self.gradcam_enabled = True

    def disable_gradcam(self) -> None:
        self.gradcam_enabled = False

    @contextmanager
    def gradcam(self) -> Iterator[CLIPDetectorWithGradCAM]:
        """Enable Grad-CAM inside a ``with`` block (e.g. a few validation batches), then restore."""
        before = self.gradcam_enabled
        self.gradcam_enabled = True
        try:
            yield self
        finally:
            self.gradcam_enabled = before

    def generate_gradcam(
        self,
        data_dict: Mapping[str, Any],
        save_visualizations: bool = True,
        filename_prefix: str = "gradcam",
        target_class: int | None = None,
        method: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """``{layer: [B, H, W]}`` maps in [0, 1] of ``data_dict["image"]`` for ``target_class``
        (None: the predicted class), all layers from one backward; with ``save_visualizations``
        writes ``{prefix}_{layer}_sample{b}.png`` per layer and ``{prefix}_comparison_sample{b}.png``
        into ``gradcam_save_dir`` (the image shown is the input de-normalised per image)."""
        if not self.gradcam_enabled:
            raise VizkitError("Grad-CAM is disabled: call enable_gradcam() or use `with model.gradcam():`")
        x = data_dict["image"]
        exp = cam(
            self.model,
            x,
            target_class,
            layers=[i.module for i in self.gradcam_layers],
            method=method or self.gradcam_method,
        )
        maps = {i.name: exp.layer_heatmaps[i.module] for i in self.gradcam_layers}
        if save_visualizations:
            for b in range(x.shape[0]):
                display = render.to_numpy_image(x[b].detach().cpu())  # min-max scaled for display
                per = {n: m[b].cpu().numpy() for n, m in maps.items()}
                for n, m in per.items():
                    render.save_overlay(display, m, self.gradcam_save_dir / f"{filename_prefix}_{n}_sample{b}.png")
                p = float(torch.softmax(exp.output[b].float(), -1)[1])
                render.save_figure(
                    comparison_figure(display, per, f"p(fake) = {p:.3f}", exp.method),
                    self.gradcam_save_dir / f"{filename_prefix}_comparison_sample{b}.png",
                )
        return maps
