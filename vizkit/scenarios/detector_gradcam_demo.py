"""Scenario 3's one-image demo (seed 002's ``vizkit detector-gradcam``): per image, Grad-CAM /
Grad-CAM++ of a real/fake detector at named layers, one overlay per layer, the comparison figure
and a JSON sidecar; a batch of :mod:`vizkit.batch` (one unit per image, resumable, optionally on
a Dask cluster). The score explained: the detector's logit of the explained class (``target``:
``predicted``, ``fake``, ``real``; ``label`` explains the predicted class, no label being known).

Example::

    from vizkit.scenarios.detector_gradcam_demo import gradcam_demo
    results, failures = gradcam_demo(["face.png"], "demo_out")   # the zoo detector, default layers
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import render
from ..batch import Job, resolved, run_inputs
from ..errors import ParameterError, VizkitError
from ..explain import cam
from ..figures.layer_comparison import comparison_figure
from ..io import image_files, write_json
from ..models import Detector
from ..models.detector_layers import LayerInfo, default_layers, resolve_gradcam_layers
from ..models.load_detector import load_eval_detector
from ..render import display_image
from ..state import model_device
from ..targets import real_fake_targets
from .detector_gradcam_params import LABEL_NAMES, TARGETS

if TYPE_CHECKING:
    from ..distributed.chunks import ClusterOptions

__all__ = ["gradcam_demo", "gradcam_image"]


def gradcam_demo(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    output: str | os.PathLike,
    config: str | None = None,
    weights: str | None = None,
    layers: Sequence[str] | None = None,
    method: str = "gradcam",
    target: str = "predicted",
    overwrite: bool = False,
    progress: bool = False,
    device: str | torch.device = "cpu",
    layout: Any = None,
    num_heads: int | None = None,
    cluster: ClusterOptions | None = None,
) -> tuple[list[dict[str, Any]], list]:
    """Per image: ``gradcam_{layer}_{stem}.png`` per layer, ``{stem}_comparison.png`` (prediction and
    p(fake) in the title) and ``{stem}.json``. Returns (results, failures). ``layout``: where the layers'
    channels are (see :func:`vizkit.cam`). A batch of :mod:`vizkit.batch` (one unit per image;
    a rerun with the same arguments resumes); ``cluster``: the images on a Dask cluster."""
    if target not in TARGETS:
        raise ParameterError(f"target {target!r}: choose one of {', '.join(TARGETS)}")
    files = image_files([inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs))
    det = load_eval_detector(config, weights, num_heads=num_heads, device=device)
    infos = resolve_gradcam_layers(
        det.model, list(layers or det.config.get("gradcam_layers") or default_layers(det.model)), det.size
    )
    names = [i.name for i in infos]
    manifest = {
        "command": "detector-gradcam",
        "config": resolved(config),
        "weights": resolved(weights),
        "num_heads": num_heads,
        "layers": names,
        "method": method,
        "target": target,
        "layout": layout,
    }
    job = Job(
        _gradcam_unit,
        _gradcam_model,
        (config, weights, tuple(names), str(device), num_heads),
        None if cluster is not None else (det, infos),
        catch=(VizkitError,),
        name="detector-gradcam",
    )
    _, outcomes = run_inputs(
        output,
        "detector-gradcam",
        manifest,
        files,
        job,
        lambda f, _: (str(f), method, target, layout),
        overwrite=overwrite,
        cluster=cluster,
        progress=progress,
        columns=["prediction", "fake_probability"],
    )
    return ([o.record for o in outcomes if o.ok], [(f.name, o.error) for f, o in zip(files, outcomes) if not o.ok])


def gradcam_image(
    det: Detector,
    infos: Sequence[LayerInfo],
    path: Path,
    out: Path,
    method: str = "gradcam",
    target: str = "predicted",
    layout: Any = None,
) -> dict[str, Any]:
    """One image of :func:`gradcam_demo`: its files written into ``out``; its JSON sidecar returned
    (a :class:`VizkitError` when the image cannot be read, nothing written then)."""
    image = det.read(path)
    x = det.preprocess(image)[None].to(model_device(det.model))
    targets = real_fake_targets(target, torch.tensor([1]), det.fake_index)
    exp = cam(
        det.model,
        x,
        targets if target != "label" else None,
        layers=[i.module for i in infos],
        method=method,
        layout=layout,
    )
    prob = float(torch.softmax(exp.output.float(), -1)[0, det.fake_index])
    pred = int(prob >= 0.5) if det.fake_index == 1 else int(exp.output.argmax(-1)[0] == det.fake_index)
    display = display_image(image, det.size)
    maps = {i.name: exp.layer_maps[i.module][0].cpu().numpy() for i in infos}
    for name, m in maps.items():
        render.save_overlay(display, m, out / f"gradcam_{name}_{path.stem}.png")
    title = f"{path.name}: predicted {LABEL_NAMES[pred]}, p(fake) = {prob:.3f}"
    render.save_figure(comparison_figure(display, maps, title, exp.method), out / f"{path.stem}_comparison.png")
    res = {
        "image": str(path),
        "fake_probability": prob,
        "prediction": LABEL_NAMES[pred],
        "method": exp.method,
        "target": target,
        "layers": {i.name: i.module for i in infos},
    }
    write_json(out / f"{path.stem}.json", res)
    return res


def _gradcam_unit(
    ctx: tuple[Detector, list[LayerInfo]], payload: tuple[str, str, str, Any], out: Path
) -> dict[str, Any]:
    path, method, target, layout = payload
    return gradcam_image(*ctx, Path(path), out, method, target, layout)


def _gradcam_model(
    spec: tuple[str | None, str | None, tuple[str, ...], str, int | None],
) -> tuple[Detector, list[LayerInfo]]:
    config, weights, layer_names, device, num_heads = spec
    det = load_eval_detector(config, weights, num_heads=num_heads, device=device)
    return det, resolve_gradcam_layers(det.model, list(layer_names), det.size)
