"""Scenario 4's report: the pointing game of each CAM method on scenes with ground truth
(:func:`pointing_table`: is the map's peak inside the named object?) and
``clip_gradcam_report.md`` (:func:`write_clip_report`: parameters, model, per-image targets, the
pointing table, figures). The score: the image-text similarity of the named object's text.

Example::

    from vizkit import zoo
    from vizkit.scenarios.clip_text_report import pointing_table
    scenes = zoo.dataset("shapes_clip", "test")[:50]
    pointing_table(adapter, scenes, zoo.load("shapes_clip").class_names, ["gradcam", "layercam"])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..evaluate import pointing_by_method
from ..explain import cam
from ..models.clip import ClipAdapter
from ..state import model_device
from ..targets import ImageTextSimilarity
from .clip_text_faithfulness import layer_label

if TYPE_CHECKING:
    import pandas as pd

    from .clip_text_explain import ClipGradCAMResult

__all__ = ["pointing_table", "write_clip_report"]


def pointing_table(
    adapter: ClipAdapter,
    samples: Sequence[Any],
    texts: Sequence[str],
    methods: Sequence[str] = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam", "scorecam"),
    layers: Any = "auto",
    batch_size: int = 50,
) -> "pd.DataFrame":
    """Pointing game per CAM method on scenes with ground truth.

    Each sample (a :class:`vizkit.zoo.Sample`) names its object: ``meta["text"]`` (one of
    ``texts``) is the target and ``mask`` the object's pixels. A hit: the heatmap's maximum
    lies inside the mask. Returns one row per method: layer, scenes, hits, accuracy and the
    mean energy inside the mask (:func:`vizkit.evaluate.pointing_by_method`).
    """
    missing = sorted({s.meta["text"] for s in samples} - set(texts))
    if missing:
        raise InputError(
            f"the scenes name objects that are not among the texts: {', '.join(map(repr, missing))}; "
            "pass every text the scenes use (for the zoo's shapes scenes, the model's class_names)"
        )
    text = adapter.text_features(texts)
    device = model_device(adapter.model)
    index = {t: i for i, t in reversed(list(enumerate(texts)))}  # the first occurrence of a text

    def inputs(chunk: Sequence[Any]) -> torch.Tensor:
        return torch.stack([adapter.preprocess(Image.fromarray(np.asarray(s.image))) for s in chunk]).to(device)

    def explain(x: torch.Tensor, chunk: Sequence[Any], method: str) -> Any:
        target = torch.tensor([index[s.meta["text"]] for s in chunk])
        target_fn = ImageTextSimilarity(text, target, adapter.logit_scale)
        return cam(adapter.model, x, target_fn, layers=layers, method=method, forward=adapter.encode_image)

    return pointing_by_method(samples, inputs, explain, methods, batch_size=batch_size)


def write_clip_report(
    out: Path,
    params: dict[str, Any],
    adapter: ClipAdapter,
    results: Sequence[ClipGradCAMResult],
    figures: Sequence[Path],
    table: Any = None,
) -> Path:
    """``clip_gradcam_report.md``: parameters, model, per-image targets, the table (a
    :func:`~.clip_text_faithfulness.faithfulness_table` with what its numbers mean, or a
    :func:`pointing_table`), figures."""
    from ..report import Report

    rep = Report("CLIP image-text Grad-CAM")
    rep.heading("Run parameters").parameters(params)
    r0 = results[0]
    rep.heading("Model").bullets(
        [
            f"model: `{adapter.name}`",
            "layer (0-based): " + ", ".join(layer_label(n, with_module=True) for n in r0.layers),
            f"method: {r0.method}",
            f"explained score: image-text {r0.score}"
            + (" (logit scale x cosine)" if r0.score == "similarity" else " (softmax over the texts)"),
        ]
    )
    rep.heading("Targets")
    rows = [
        f"`{Path(r.image_path).name or 'scene'}`: target ({r.target_chosen}) **{r.names[r.target]}**, "
        f"p = {r.probs[r.target]:.3f}; most similar: {r.names[int(np.argmax(r.probs))]}"
        for r in results
    ]
    rep.bullets(rows)
    if table is not None and "road_combined" in table:
        from .clip_text_faithfulness import table_reading

        rep.heading("Does the map find the named object, and is it faithful? (held-out scenes)")
        rep.table(table, index=False)
        for sentence in table_reading(table):
            rep.paragraph(sentence)
    elif table is not None:
        rep.heading("Pointing game on held-out scenes (named object)")
        rep.table(table, index=False)
        best = table.loc[table["pointing_accuracy"].idxmax()]
        rep.paragraph(
            f"Best method: **{best['method']}** with {best['pointing_accuracy']:.1%} of "
            f"{int(best['scenes'])} scenes pointing inside the named object."
        )
    rep.heading("Figures")
    for f in figures:
        rep.figure(f, Path(f).stem.replace("_", " "), relative_to=out)
    return rep.write(out / "clip_gradcam_report.md")
