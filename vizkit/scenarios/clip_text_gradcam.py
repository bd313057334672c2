"""Scenario 4: Grad-CAM of a CLIP image encoder toward a text (seed 003; notebook
``04_clip_text_gradcam.ipynb``, CLI ``vizkit clip-gradcam``).

The explained score is the image-text similarity of the target text, ``logit_scale * cos``
(or, with ``probability=True``, its softmax probability over all class texts). The target is
the given text index, or the most similar text. Layers default to ``"auto"`` on the image
encoder (ResNet / ConvNeXt: last stage; EfficientNet: last convolutional block; ViT: the last
block read at its input; any other encoder: the last module with a spatial output).
Method: Grad-CAM (Selvaraju et al., ICCV 2017) and its relatives in :mod:`vizkit.methods`.

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from .. import render
from ..errors import InputError, VizkitError
from ..evaluate import localization
from ..explain import cam
from ..io import image_files, load_image, read_json, write_json
from ..methods import get_method
from ..models.clip import ClipAdapter
from ..models.load_clip import load_clip
from ..render import display_crop
from ..state import model_device, resolve_device
from ..targets import ImageTextSimilarity
from ..widgets import Control, Explorer, HeatmapView

if TYPE_CHECKING:
    import pandas as pd

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
    "text_maps_figure",
    "write_clip_report",
    "notebook_parameters",
    "check_notebook_parameters",
    "candidate_layers",
    "ZOO_CLIPS",
]

ZOO_CLIPS = ("shapes_clip", "shapes_clip_cnn")


def _zoo_adapter(name: str, device: torch.device) -> ClipAdapter:
    from .. import zoo
    from ..models.clip import adapt_open_clip

    bundle = zoo.load(name)
    model = bundle.model.to(device).eval()

    def preprocess(image: Any) -> torch.Tensor:
        return bundle.preprocess(np.asarray(image.convert("RGB")) if hasattr(image, "convert") else image)

    adapter = adapt_open_clip(model, bundle.tokenizer, preprocess, name=f"zoo:{name}")
    adapter.meta.update(bundle.meta)
    return adapter


def load_clip_model(
    model: str | None = None,
    model_path: str | None = None,
    *,
    image_encoder: str | None = None,
    text_encoder: str | None = None,
    embed_dim: int = 512,
    img_size: int = 224,
    device: str | torch.device = "cpu",
) -> ClipAdapter:
    """The CLIP to explain: a zoo name (default ``shapes_clip``), or anything
    :func:`vizkit.models.load_clip.load_clip` loads (open_clip name + weights, HF directory,
    custom two-tower checkpoint)."""
    if not (image_encoder or text_encoder):
        spec = model or "shapes_clip"
        spec = spec[4:] if spec.startswith("zoo:") else spec
        if spec in ZOO_CLIPS:
            if model_path is not None:
                raise VizkitError(
                    f"--model {spec} is a zoo model with its own weights: drop --model-path, or name the "
                    "open_clip architecture your weights belong to with --model"
                )
            return _zoo_adapter(spec, torch.device(device))
        model = spec
    return load_clip(
        model or "",
        model_path,
        image_encoder=image_encoder,
        text_encoder=text_encoder,
        embed_dim=embed_dim,
        img_size=img_size,
        device=device,
        known=ZOO_CLIPS,
    )


@dataclass
class ClipGradCAMResult:
    """One image explained toward one text. ``heatmap`` ``[H, W]`` in [0, 1]; ``probs`` ``[T]``."""

    image_path: str
    names: list[str]
    texts: list[str]
    probs: list[float]
    similarities: list[float]
    target: int
    target_chosen: str  # "given" or "most similar"
    score: str  # "similarity" or "probability"
    method: str
    layers: list[str]
    heatmap: np.ndarray
    display: np.ndarray

    def sidecar(self) -> dict[str, Any]:
        """What the JSON sidecar holds (everything but the arrays)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("heatmap", "display")}
        d["target_name"] = self.names[self.target]
        d["target_text"] = self.texts[self.target]
        return d


def load_class_texts(
    class_texts: Sequence[str] | None = None, class_texts_file: str | os.PathLike | None = None
) -> tuple[list[str], list[str]]:
    """``(names, texts)`` from a list (names = texts) or a JSON file ``{"name": "description"}``.

    Exactly one source must be given; an empty list, a malformed or empty JSON file is an error.
    """
    if (class_texts is None or len(class_texts) == 0) == (class_texts_file is None):
        if class_texts is not None and len(class_texts) == 0 and class_texts_file is None:
            raise InputError("the list of class texts is empty: give at least one text")
        raise InputError(
            "give the class texts either as a list (--class-texts) or as a JSON file "
            "(--class-texts-file), not both and not neither"
        )
    if class_texts_file is None:
        texts = [str(t) for t in class_texts]
        if any(not t.strip() for t in texts):
            raise InputError("a class text is empty")
        return texts, texts
    path = Path(class_texts_file)
    data = read_json(path, "class texts file")
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise InputError(
            f"class texts file {str(path)!r} must hold one JSON object "
            '{"name": "description", ...} with string names and descriptions'
        )
    if not data:
        raise InputError(f"class texts file {str(path)!r} holds no class texts")
    return list(data), list(data.values())


def explain_clip(
    adapter: ClipAdapter,
    images: Sequence[Image.Image],
    names: Sequence[str],
    texts: Sequence[str],
    target_text_idx: int | None = None,
    method: str = "gradcam",
    layers: Any = "auto",
    probability: bool = False,
    image_paths: Sequence[str] | None = None,
    layout: Any = None,
) -> list[ClipGradCAMResult]:
    """Grad-CAM of each image toward its target text; one batched forward and backward.
    ``layout``: where the target layer's channels are (see :func:`vizkit.cam`)."""
    get_method(method)
    if target_text_idx is not None and not 0 <= target_text_idx < len(texts):
        raise InputError(
            f"target text index {target_text_idx} is out of range: there are {len(texts)} class texts "
            f"(valid 0..{len(texts) - 1})"
        )
    model = adapter.model
    device = model_device(model)
    x = torch.stack([adapter.preprocess(im) for im in images]).to(device)
    text = adapter.text_features(texts)
    chosen = "given" if target_text_idx is not None else "most similar"
    # one forward: the target reads every text's similarity from the explained pass itself
    target_fn = ImageTextSimilarity(text, target_text_idx, adapter.logit_scale, probability=probability)
    explanation = cam(model, x, target_fn, layers=layers, method=method, forward=adapter.encode_image, layout=layout)
    sims = target_fn.observed.float().cpu()  # [B, T]
    probs = sims.softmax(-1)
    target = target_fn.index.expand(len(images)) if target_fn.index.ndim == 0 else target_fn.index
    paths = list(image_paths) if image_paths is not None else [""] * len(images)
    return [
        ClipGradCAMResult(
            paths[b],
            list(names),
            list(texts),
            probs[b].tolist(),
            sims[b].tolist(),
            int(target[b]),
            chosen,
            "probability" if probability else "similarity",
            explanation.method,
            explanation.layers,
            explanation.heatmap[b].cpu().numpy(),
            display_crop(images[b], x.shape[-1]),
        )
        for b in range(len(images))
    ]


def figure(result: ClipGradCAMResult, title: str | None = None) -> plt.Figure:
    """Original, heatmap, overlay and the probability of every text (target highlighted)."""
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2), gridspec_kw={"width_ratios": [1, 1, 1, 1.5]})
    render.show_overlay(axes[0], result.display, result.heatmap, title="image", alpha=0.0)
    render.show_heatmap(axes[1], result.heatmap, title=f"{result.method} heatmap")
    render.show_overlay(axes[2], result.display, result.heatmap, title="overlay")
    render.bar_chart(axes[3], result.names, result.probs, highlight=result.target, title="probability per text")
    t = result.target
    fig.suptitle(
        title
        or (
            f"target ({result.target_chosen}): {result.names[t]!r} - p = {result.probs[t]:.3f}; "
            f"explained score: image-text {result.score}; layer {', '.join(result.layers)}"
        ),
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def save_result(result: ClipGradCAMResult, output_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """Write ``<stem>.png`` (full figure), ``<stem>_overlay.png`` and ``<stem>.json``; all or nothing."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"figure": out / f"{stem}.png", "overlay": out / f"{stem}_overlay.png", "sidecar": out / f"{stem}.json"}
    written: list[Path] = []
    try:
        written.append(render.save_figure(figure(result), paths["figure"]))
        written.append(render.save_image(render.overlay(result.display, result.heatmap), paths["overlay"]))
        write_json(paths["sidecar"], result.sidecar())
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return paths


def output_stem(image_path: str | os.PathLike, output_name: str | None, batch: bool) -> str:
    """``clip_gradcam_<image stem>``; ``--output-name NAME`` -> ``NAME`` (``NAME_<image stem>`` in a batch)."""
    image_stem = Path(image_path).stem
    if not output_name:
        return f"clip_gradcam_{image_stem}"
    name = Path(output_name).name
    name = name[:-4] if name.lower().endswith(".png") else name
    return f"{name}_{image_stem}" if batch else name


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
    mean energy inside the mask.
    """
    import pandas as pd

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

    rows = []
    for method in methods:

        def explain(x: torch.Tensor, chunk: Sequence[Any], method: str = method) -> Any:
            target = torch.tensor([index[s.meta["text"]] for s in chunk])
            return cam(
                adapter.model,
                x,
                ImageTextSimilarity(text, target, adapter.logit_scale),
                layers=layers,
                method=method,
                forward=adapter.encode_image,
            )

        res = localization(samples, inputs, explain, batch_size=batch_size)
        h = res.hits[0]
        rows.append(
            {
                "method": method,
                "layer": ", ".join(res.layers),
                "scenes": int(h.numel()),
                "hits": int(h.sum()),
                "pointing_accuracy": res.pointing(),
                "energy_in_mask": float(res.energy.mean()),
            }
        )
    return pd.DataFrame(rows)


def text_maps(
    adapter: ClipAdapter, image: Image.Image, texts: Sequence[str], method: str = "gradcam", layers: Any = "auto"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The map of ``image`` toward EVERY text in one batched pass: ``([T, H, W] maps, [T] probs, layers)``."""
    x = adapter.preprocess(image)[None].repeat(len(texts), 1, 1, 1).to(model_device(adapter.model))
    text = adapter.text_features(texts)
    with torch.no_grad():
        sims = adapter.logit_scale * torch.nn.functional.normalize(adapter.encode_image(x[:1]).float(), dim=-1) @ text.T
    exp = cam(
        adapter.model,
        x,
        ImageTextSimilarity(text, torch.arange(len(texts)), adapter.logit_scale),
        layers=layers,
        method=method,
        forward=adapter.encode_image,
    )
    return exp.heatmap.cpu().numpy(), sims.softmax(-1)[0].cpu().numpy(), exp.layers


def text_maps_figure(
    display: np.ndarray, names: Sequence[str], maps: np.ndarray, probs: np.ndarray, columns: int = 6, title: str = ""
) -> plt.Figure:
    """All texts' overlays side by side, each titled with its probability."""
    panels = [render.Panel(image=display, heatmap=m, title=f"{n}\np={p:.3f}") for n, m, p in zip(names, maps, probs)]
    rows = [panels[i : i + columns] for i in range(0, len(panels), columns)]
    return render.figure_grid(rows, suptitle=title)


def write_clip_report(
    out: Path,
    params: dict[str, Any],
    adapter: ClipAdapter,
    results: Sequence[ClipGradCAMResult],
    figures: Sequence[Path],
    table: Any = None,
) -> Path:
    """``clip_gradcam_report.md``: parameters, model, per-image targets, pointing game, figures."""
    from ..report import Report

    rep = Report("CLIP image-text Grad-CAM")
    rep.heading("Run parameters").parameters(params)
    r0 = results[0]
    rep.heading("Model").bullets(
        [
            f"model: `{adapter.name}`",
            f"layer: `{', '.join(r0.layers)}`",
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
    if table is not None:
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


def candidate_layers(adapter: ClipAdapter, image: Image.Image, count: int = 4) -> list[str]:
    """Layers worth switching between: "auto", then the last transformer blocks (ViT towers) or
    the last stages with a spatial output (CNN towers) that the image encoder runs."""
    from ..layers import find_blocks, probe

    x = adapter.preprocess(image)[None].to(model_device(adapter.model))
    pr = probe(adapter.model, adapter.encode_image, x)
    blocks = find_blocks(adapter.model, pr.executed)
    if blocks:
        names = [n for n, _ in blocks[-count:]]
    else:
        shallow = [s[0] for s in pr.spatial if s[5] and s[0].count(".") <= min(t[0].count(".") for t in pr.spatial) + 1]
        names = list(dict.fromkeys(reversed(shallow)))[:count][::-1]
    return ["auto"] + names


# ---------------------------------------------------------------- explorer
class ClipExplorer(Explorer):
    """Switch the target text, the CAM method and the layer of a CLIP explanation (a
    :class:`vizkit.widgets.Explorer`; ``interactive=False`` or no ipywidgets: :meth:`static` instead of widgets).

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
        cmap: str = "jet",
        *,
        interactive: bool = True,
    ):
        self.adapter, self.image, self.names, self.texts = adapter, image, names, texts
        self.methods, self.layers = list(methods), list(layers)
        self.display_image = display_crop(image, adapter.image_size)
        super().__init__(interactive=interactive, cmap=cmap, figsize=(7, 3.4))

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
            map_title=f"{res.method} @ {res.layers[0]}",
            overlay_title=f"{res.names[res.target]} (p={res.probs[res.target]:.3f})",
        )
