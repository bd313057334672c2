"""Scenario 4: Grad-CAM of a CLIP image encoder toward a text (seed 003; notebook
``04_clip_text_gradcam.ipynb``, CLI ``vizkit clip-gradcam``).

The explained score is the image-text similarity of the target text, ``logit_scale * cos``
(or, with ``probability=True``, its softmax probability over all class texts). The target is
the given text index, or the most similar text. Layers default to ``"auto"`` on the image
encoder (ResNet / ConvNeXt: last stage; EfficientNet: last convolutional block; ViT: the last
block read at its input; any other encoder: the last module with a spatial output).
Method: Grad-CAM (Selvaraju et al., ICCV 2017) and its relatives in :mod:`vizkit.methods`.

Here: the batch command :func:`run_clip_gradcam`, the seed's :func:`visualize_clip_gradcam`, the
notebook's parameters and :class:`ClipExplorer`. The explanation of a batch and its files are in
:mod:`.clip_text_explain`, the pointing game and ``clip_gradcam_report.md`` in
:mod:`.clip_text_report`, the localisation / ROAD / randomisation table beside chance in
:mod:`.clip_text_faithfulness`; loading (:func:`vizkit.zoo.load_clip.load_clip_model`,
:func:`vizkit.models.clip_texts.load_class_texts`), the layer choices
(:func:`vizkit.models.clip.candidate_layers`) and the figures (:mod:`vizkit.figures.text_maps`)
in their layers. Every name is importable from here.

Example::

    from vizkit.scenarios import load_clip_model, explain_clip, load_image
    adapter = load_clip_model("shapes_clip")                    # the zoo model, offline
    [res] = explain_clip(adapter, [load_image("scene.png")], ["red circle", "blue square"],
                         ["a red circle", "a blue square"])
    res.heatmap, res.probs, res.target                          # [H, W] in [0, 1], [T], int
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from ..errors import InputError
from ..figures.text_maps import text_maps_figure
from ..io import image_files, load_image
from ..models.clip import ClipAdapter, candidate_layers
from ..models.clip_texts import load_class_texts
from ..render import RELEVANCE_CMAP, display_crop
from ..state import resolve_device
from ..widgets import Control, Explorer, HeatmapView
from ..zoo.load_clip import ZOO_CLIPS, load_clip_model
from .clip_text_explain import (
    ClipGradCAMResult,
    explain_clip,
    figure,
    output_stem,
    save_result,
    text_map_spread,
    text_maps,
    text_maps_table,
    text_masks,
)
from .clip_text_faithfulness import faithfulness_table, layer_label, table_reading
from .clip_text_report import pointing_table, write_clip_report

if TYPE_CHECKING:
    from ..distributed.chunks import ClusterOptions

__all__ = [
    "ClipGradCAMResult",
    "ClipExplorer",
    "load_clip_model",
    "load_class_texts",
    "load_image",
    "display_crop",
    "explain_clip",
    "figure",
    "save_result",
    "output_stem",
    "run_clip_gradcam",
    "ClipBatchRun",
    "explain_file",
    "visualize_clip_gradcam",
    "pointing_table",
    "text_maps",
    "text_map_spread",
    "text_maps_table",
    "text_masks",
    "text_maps_figure",
    "faithfulness_table",
    "table_reading",
    "layer_label",
    "write_clip_report",
    "notebook_parameters",
    "check_notebook_parameters",
    "candidate_layers",
    "ZOO_CLIPS",
]


@dataclass
class ClipBatchRun:
    """What :func:`run_clip_gradcam` did: the model, method, layers and explained score (of the first
    image), the text names, and one row per image: ``image`` (file name), ``target``,
    ``target_chosen``, ``prob`` (the target's probability) and ``figure`` (the written figure)."""

    model: str
    method: str
    layers: list[str]
    score: str
    names: list[str]
    rows: list[dict[str, Any]]


def explain_file(
    adapter: ClipAdapter,
    image: Image.Image,
    path: str,
    stem: str,
    output_dir: str | os.PathLike,
    names: Sequence[str],
    texts: Sequence[str],
    target_text_idx: int | None = None,
    method: str = "gradcam",
    target_layer: Any = "auto",
    probability: bool = False,
    layout: Any = None,
) -> dict[str, Any]:
    """One image of :func:`run_clip_gradcam`: explained, its files written as ``stem`` into
    ``output_dir``; its row (see :class:`ClipBatchRun`)."""
    result = explain_clip(
        adapter, [image], names, texts, target_text_idx, method, target_layer, probability, [str(path)], layout=layout
    )[0]
    written = save_result(result, output_dir, stem)
    t = result.target
    return {
        "image": Path(path).name,
        "model": adapter.name,
        "method": result.method,
        "layers": list(result.layers),
        "score": result.score,
        "target": t,
        "target_chosen": result.target_chosen,
        "prob": float(result.probs[t]),
        "figure": str(written["figure"]),
    }


def _clip_unit(adapter: ClipAdapter, payload: tuple, out: Path) -> dict[str, Any]:
    """One image ``(path, stem, options)`` of :func:`run_clip_gradcam`: its files and row."""
    path, stem, args = payload
    return explain_file(adapter, load_image(path), path, stem, out, *args)


def run_clip_gradcam(
    image_paths: Sequence[str | os.PathLike],
    class_texts: Sequence[str] | None = None,
    class_texts_file: str | os.PathLike | None = None,
    *,
    model: str | None = None,
    model_path: str | None = None,
    image_encoder: str | None = None,
    text_encoder: str | None = None,
    embed_dim: int = 512,
    img_size: int = 224,
    target_text_idx: int | None = None,
    method: str = "gradcam",
    target_layer: Any = "auto",
    probability: bool = False,
    layout: Any = None,
    output_dir: str | os.PathLike = "clip_gradcam_results",
    output_name: str | None = None,
    device: str | torch.device = "auto",
    cluster: ClusterOptions | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> ClipBatchRun:
    """``vizkit clip-gradcam``: explain each image (files or folders) toward its target text and write
    ``<stem>.png``, ``<stem>_overlay.png`` and ``<stem>.json`` per image (:func:`output_stem`).
    Bad input (texts, target index, an unreadable image, the model) fails before anything is
    written. ``device`` by :func:`vizkit.state.resolve_device`. A batch of :mod:`vizkit.batch`
    (one unit per image; a rerun with the same model and texts resumes, ``overwrite`` starts
    afresh); ``cluster``: the images on a Dask cluster, the same files as without it."""
    from ..batch import Job, resolved, run_inputs

    if class_texts is None and class_texts_file is None:
        raise InputError("give the class texts with --class-texts or --class-texts-file")
    names, texts = load_class_texts(class_texts, class_texts_file)
    if target_text_idx is not None and not 0 <= target_text_idx < len(texts):
        raise InputError(
            f"--target-text-idx {target_text_idx} is out of range: there are {len(texts)} class "
            f"texts (valid 0..{len(texts) - 1})"
        )
    files = image_files(image_paths)
    for f in files:  # every image is read before anything is written
        load_image(f)
    model_kwargs = dict(
        model=model,
        model_path=model_path,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        embed_dim=embed_dim,
        img_size=img_size,
        device=str(resolve_device(device)),
    )
    adapter = load_clip_model(**model_kwargs)
    args = (names, texts, target_text_idx, method, target_layer, probability, layout)
    manifest = {
        "command": "clip-gradcam",
        **{k: v for k, v in model_kwargs.items() if k != "device"},
        "names": names,
        "texts": texts,
        "target_text_idx": target_text_idx,
        "method": method,
        "target_layer": str(target_layer),
        "probability": probability,
        "layout": layout,
        "output_name": output_name,
    }
    manifest.update(
        {
            k: resolved(manifest[k])
            for k in ("model", "model_path", "text_encoder")
            if manifest[k] and Path(manifest[k]).exists()
        }
    )
    job = Job(_clip_unit, load_clip_model, model_kwargs, None if cluster else adapter, catch=(), name="clip-gradcam")
    _, outcomes = run_inputs(
        output_dir,
        "clip-gradcam",
        manifest,
        files,
        job,
        lambda f, _: (str(f), output_stem(f, output_name, len(files) > 1), args),
        overwrite=overwrite,
        cluster=cluster,
        progress=progress,
        columns=["target", "prob", "figure"],
    )
    rows = [o.record for o in outcomes]
    first = rows[0]
    return ClipBatchRun(first["model"], first["method"], first["layers"], first["score"], list(names), rows)


def visualize_clip_gradcam(
    model: Any,
    image_path: str | os.PathLike,
    class_texts: Sequence[str] | None,
    save_path: str | os.PathLike,
    target_text_idx: int | None = None,
    method: str = "gradcam",
    target_layer: Any = "auto",
    class_texts_file: str | None = None,
    probability: bool = False,
    tokenizer: Any = None,
    processor: Any = None,
) -> ClipGradCAMResult:
    """Seed 003's function: explain one image toward the target text and save the figure at
    ``save_path`` (plus ``<save_path stem>_overlay.png`` and a ``.json`` sidecar beside it).

    ``model`` is a :class:`ClipAdapter`, a zoo name such as ``"shapes_clip"``, or a CLIP model
    (open_clip with ``tokenizer``, HF ``CLIPModel`` with ``processor``, or a custom model with
    ``encode_image`` / ``encode_text``).
    """
    from ..models.clip import adapt_clip

    if isinstance(model, str):
        adapter = load_clip_model(model)
    elif isinstance(model, ClipAdapter):
        adapter = model
    else:
        adapter = adapt_clip(model, tokenizer=tokenizer, processor=processor)
    names, texts = load_class_texts(class_texts, class_texts_file)
    image = load_image(image_path)
    result = explain_clip(
        adapter, [image], names, texts, target_text_idx, method, target_layer or "auto", probability, [str(image_path)]
    )[0]
    save_path = Path(save_path)
    stem = save_path.name[:-4] if save_path.name.lower().endswith(".png") else save_path.name
    save_result(result, save_path.parent, stem)
    return result


def notebook_parameters() -> list:
    """The parameter spec of ``notebooks/04_clip_text_gradcam.ipynb``."""
    from ..methods import METHODS
    from ..notebook import Param, positive
    from .registry import common_parameters

    def methods_ok(value: str) -> str | None:
        bad = [m for m in value.split(",") if m.strip() and m.strip() not in METHODS]
        return f"unknown method(s) {', '.join(bad)}: choose from {', '.join(METHODS)}" if bad else None

    return [
        Param("model", (str,)),
        Param("model_path", (str,)),
        Param("image_path", (str,)),
        Param(
            "class_texts",
            (list, tuple),
            check=lambda v: None if all(isinstance(t, str) and t.strip() for t in v) else "a list of non-empty strings",
        ),
        Param("class_texts_file", (str,)),
        Param("target_text_idx", (int,), check=lambda v: None if v >= -1 else "-1 (most similar) or a text index"),
        Param("method", (str,), choices=tuple(METHODS)),
        Param("target_layer", (str,)),
        Param("probability", (bool,)),
        Param("image_encoder", (str,)),
        Param("text_encoder", (str,)),
        Param("embed_dim", (int,), check=positive),
        Param("img_size", (int,), check=positive),
        Param("num_scenes", (int,), check=lambda v: None if v >= 0 else "must be >= 0"),
        Param("road_scenes", (int,), check=positive),
        Param("randomisation_scenes", (int,), check=lambda v: None if v >= 0 else "must be >= 0"),
        Param("table_methods", (str,), check=methods_ok),
        *common_parameters("output_dir", "overwrite", "interactive", "seed", "device"),
    ]


def check_notebook_parameters(namespace: dict, before: Any) -> dict[str, Any]:
    """Validate the notebook's parameters, including the combinations (one text source, ...)."""
    from ..notebook import ParameterError, check_parameters

    p = check_parameters(namespace, before, notebook_parameters())
    if p["class_texts"] and p["class_texts_file"]:
        raise ParameterError("give class_texts or class_texts_file, not both")
    if p["class_texts_file"] and not Path(p["class_texts_file"]).is_file():
        raise ParameterError(f"class_texts_file {p['class_texts_file']!r} does not exist")
    if p["image_path"] and not Path(p["image_path"]).exists():
        raise ParameterError(f"image_path {p['image_path']!r} does not exist")
    resolve_device(p["device"])  # cuda without a GPU: one clear error
    return p


# ---------------------------------------------------------------- explorer
class ClipExplorer(Explorer):
    """Switch the target text, the CAM method and the layer of a CLIP explanation (a
    :class:`vizkit.widgets.Explorer`; ``interactive=False`` or no ipywidgets: :meth:`static` instead of widgets).
    Layers are listed by module name; titles give the block's 0-based number (:func:`layer_label`).

    A new (text, method, layer) combination costs one forward and backward pass; combinations
    already seen are redrawn from the cache.
    """

    #: the controls as the page shows them (label, kind): read by the notebook build and the browser test
    CONTROLS = (("text", "dropdown"), ("method", "dropdown"), ("layer", "dropdown"))

    def __init__(
        self,
        adapter: ClipAdapter,
        image: Image.Image,
        names: list[str],
        texts: list[str],
        methods: list[str],
        layers: list[str],
        cmap: str = RELEVANCE_CMAP,
        *,
        interactive: bool = True,
    ):
        self.adapter, self.image, self.names, self.texts = adapter, image, names, texts
        self.methods, self.layers = list(methods), list(layers)
        self.display_image = display_crop(image, adapter.image_size)
        colours = {"cmap": cmap} if cmap else {}  # None: the suite's relevance colour map (vizkit.widgets)
        super().__init__(interactive=interactive, figsize=(7, 3.4), **colours)

    def control_specs(self) -> list[Control]:
        """text (by index), method, layer."""
        return [
            Control("text", "dropdown", "text", [(n, i) for i, n in enumerate(self.names)], 0),
            Control("method", "dropdown", "method", self.methods, self.methods[0]),
            Control("layer", "dropdown", "layer", self.layers, self.layers[0]),
        ]

    @property
    def cache(self) -> dict[Any, Any]:
        """The explanations computed so far, by (text index, method, layer)."""
        return self.view_cache

    def result(self, state: Mapping[str, Any] | None = None) -> ClipGradCAMResult:
        """The explanation of the selected (or ``state``'s) text, method and layer, computed once."""
        st = self.state if state is None else state
        key = (st["text"], st["method"], st["layer"])
        return self.cached(key, lambda: explain_clip(self.adapter, [self.image], self.names, self.texts, *key)[0])

    def render(self, state: Mapping[str, Any]) -> HeatmapView:
        """The explanation's map over the displayed crop, titled with the text's probability."""
        res = self.result(state)
        return HeatmapView(
            res.heatmap,
            self.display_image,
            map_title=f"{res.method} @ {', '.join(layer_label(n) for n in res.layers)}",  # "layer 2" (0-based)
            overlay_title=f"{res.names[res.target]} (p={res.probs[res.target]:.3f})",
        )
