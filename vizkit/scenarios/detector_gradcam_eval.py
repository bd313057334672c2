"""Scenario 3: Grad-CAM / Grad-CAM++ of a CLIP deepfake detector on named transformer layers,
and an evaluation over a test set that explains its mistakes (seed 002; notebook
``03_detector_gradcam_eval.ipynb``, CLIs ``vizkit detector-gradcam`` and ``vizkit evaluate``).

What is explained: the logit of the explained class of a real/fake detector
(``[B, 3, H, W] -> [B, 2]``, class 1 = fake) — in the evaluation by default the fake class, the
score the metrics rank by (``target="fake"``; ``"predicted"``, ``"real"`` or ``"label"``
otherwise; the seed's ``generate_gradcam`` explains the predicted class) — by Grad-CAM (Selvaraju et al.,
ICCV 2017) or Grad-CAM++ (Chattopadhay et al., WACV 2018) at each requested layer, all layers
from ONE forward and ONE ``torch.autograd.grad`` (:func:`vizkit.cam`: gradients only from the
score down to the earliest requested layer, no parameter gradients).

Layer names are the seed's Hugging Face names relative to the vision model:
``encoder.layers.N`` (a block's output; N < 0 counts from the end) or a submodule of it such as
``encoder.layers.N.layer_norm1`` (the block's input, layer-normed), found in the detector by
suffix match (``backbone.encoder.layers.N`` or ``backbone.vision_model.encoder.layers.N``
depending on the transformers version). The LAST block's output is zero for a CLS-pooled
classifier (no patch token of it reaches the score), so the default layers are the block
INPUTS: the seed's blocks 23, 20, 15, 10 on a 24-layer model, else the last four blocks.

The evaluation (:func:`run_evaluation`) is a batch of :mod:`vizkit.batch`: the test set in fixed
chunks of ``batch_size`` samples, each chunk's predictions, per-layer maps and localisation
scores computed by :func:`evaluate_chunk` (a pure function of (arguments, chunk index)) and
written atomically to ``chunks/NNNNN.json`` + ``.npz`` by its unit, so an interrupted run resumes
where it stopped. Metrics (AUC, accuracy, EER, AP, video AUC; scikit-learn) come from all chunk
files; the sample folders and the report's figures are units too (rendered where the units run).

Example::

    from vizkit.scenarios import run_evaluation
    summary = run_evaluation(output_dir="eval_out", gradcam_enabled=True, gradcam_samples=10,
                             max_samples=100)          # the zoo detector on its test faces
    summary.metrics["auc"], summary.localization      # AUC, pointing game per layer x method
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import render
from ..batch import BatchMapper, BatchRun, Job, Unit, records, resolved, run_inputs
from ..datasets import ZOO_DATASET, EvalDataset, parse_label, resolve_dataset
from ..errors import InputError, ParameterError, VizkitError
from ..evaluate import binary_metrics, localization
from ..evaluate import binary_metrics_table as metrics_table
from ..explain import cam
from ..io import image_files, write_csv, write_json, write_text
from ..layers import find_blocks, probe, resolve_layers
from ..methods import get_method
from ..models import Detector, load_detector
from ..render import combined_map, display_image
from ..report import Report
from ..runs import chunk_paths, clear_complete, is_complete, mark_complete, read_chunk_arrays, read_chunks, write_chunk
from ..state import model_device, resolve_device
from ..widgets import Control, Explorer, HeatmapView

if TYPE_CHECKING:
    from ..distributed.chunks import ClusterOptions

__all__ = [
    "Detector",
    "LayerInfo",
    "load_eval_detector",
    "resolve_gradcam_layers",
    "default_layers",
    "layer_table",
    "EvalArgs",
    "EvalSummary",
    "evaluate_chunk",
    "evaluation_context",
    "run_evaluation",
    "evaluate_detector",
    "config_defaults",
    "ConfigDefaults",
    "detector_metrics",
    "metrics_table",
    "metadata_text",
    "select_samples",
    "gradcam_demo",
    "gradcam_image",
    "CLIPDetectorWithGradCAM",
    "DetectorGradCAMExplorer",
    "load_run",
    "notebook_parameters",
    "check_notebook_parameters",
    "SEED_LAYERS",
    "TARGETS",
    "CAM_METHODS",
    "resolve_dataset",
    "EvalDataset",
    "parse_label",
]  # Detector lives in vizkit.models; the last three in vizkit.datasets

SEED_LAYERS = ("encoder.layers.23", "encoder.layers.20", "encoder.layers.15", "encoder.layers.10")
CAM_METHODS = ("gradcam", "gradcam++")
TARGETS = ("predicted", "fake", "real", "label")
LABEL_NAMES = {0: "Real", 1: "Fake"}
_DISPLAY_MIN = 224  # overlays of small models are upscaled to this size for legibility (render.display_image)


# --------------------------------------------------------------------------------------
# the detector: vizkit.models.Detector, loaded by vizkit.models.load_detector
# --------------------------------------------------------------------------------------
def load_eval_detector(
    config: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    *,
    num_heads: int | None = None,
    test_config: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
) -> Detector:
    """:func:`vizkit.models.load_detector` (the zoo's ``face_forgery_detector`` when neither is
    given), checked to be a two-class real/fake detector."""
    det = load_detector(config or None, weights or None, num_heads=num_heads, test_config=test_config, device=device)
    if len(det.class_names) != 2:
        raise VizkitError(
            f"the detector has {len(det.class_names)} outputs ({', '.join(det.class_names)}); a "
            "real/fake detector has 2"
        )
    return det


# --------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------
@dataclass
class LayerInfo:
    """A requested layer: ``name`` as the user wrote it (negative index made positive),
    ``module`` the module name in the detector, ``note`` what it reads."""

    name: str
    module: str
    note: str


def _blocks(model: nn.Module) -> tuple[str, int]:
    """The transformer block list's name and length (``("", 0)`` for a CNN)."""
    blocks = find_blocks(model)
    return (blocks[0][0].rsplit(".", 1)[0], len(blocks)) if blocks else ("", 0)


def _example(model: nn.Module, size: int | None) -> torch.Tensor:
    return torch.zeros(1, 3, size or 224, size or 224, device=model_device(model))


def resolve_gradcam_layers(model: nn.Module, names: Sequence[str | int], size: int | None = None) -> list[LayerInfo]:
    """Map the seed's layer names to modules of ``model`` (:func:`vizkit.layers.resolve_layers`:
    ``encoder.layers.N[.sub]`` by the alias rule, N < 0 from the end; an int N means block N;
    ``"auto"`` the model's automatic layer — on a CNN detector its last convolutional block,
    found by a probe forward at ``size`` px), before any work. An unknown name raises
    :class:`LayerNotFoundError` with the closest valid names."""
    if isinstance(names, (str, int)):
        names = [names]
    if not names:
        raise ParameterError("give at least one layer (e.g. encoder.layers.-1.layer_norm1)")
    prefix, depth = _blocks(model)
    out: list[LayerInfo] = []
    for raw in names:
        spec: str | int = (
            int(raw) if isinstance(raw, int) or re.fullmatch(r"-?\d+", str(raw).strip()) else str(raw).strip()
        )
        example = _example(model, size) if spec == "auto" else None
        ((module, _),) = resolve_layers(
            model, spec, probe_fn=(lambda ex=example: probe(model, model, ex)) if example is not None else None
        )
        m = re.fullmatch(re.escape(prefix) + r"\.(\d+)(.*)", module) if prefix else None
        name = f"encoder.layers.{m.group(1)}{m.group(2)}" if m and prefix.endswith("encoder.layers") else module
        note = _layer_note(module, prefix, depth)
        out.append(LayerInfo(name, module, f"last convolutional block (auto): {note}" if spec == "auto" else note))
    if len({i.module for i in out}) != len(out):
        raise ParameterError(f"layers {', '.join(i.name for i in out)} name the same module twice")
    return out


def _layer_note(module: str, prefix: str, depth: int) -> str:
    m = re.fullmatch(re.escape(prefix) + r"\.(\d+)(.*)", module) if prefix else None
    if not m:
        return f"module {module}"
    i, rest = int(m.group(1)), m.group(2)
    if rest == "":
        if i == depth - 1:
            return (
                f"output of the last block ({i}): zero for a CLS-pooled classifier, no patch token of it reaches "
                f"the score; read encoder.layers.{i}.layer_norm1 instead"
            )
        return f"output of block {i} = input of block {i + 1}"
    if rest == ".layer_norm1":
        return f"input of block {i}, layer-normed (the tokens its attention reads)"
    return f"{rest[1:]} inside block {i}"


def default_layers(model: nn.Module) -> list[str]:
    """ViT detectors: the block inputs ``encoder.layers.N.layer_norm1`` of the seed's blocks
    (23, 20, 15, 10) when the detector has 24 or more, else of its last four blocks (all of them
    when it has fewer), shallow to deep. CNN detectors (no transformer blocks): ``["auto"]``,
    the last convolutional block."""
    _, depth = _blocks(model)
    if not depth:
        return ["auto"]
    idx = [10, 15, 20, 23] if depth >= 24 else list(range(max(0, depth - 4), depth))
    return [f"encoder.layers.{i}.layer_norm1" for i in idx]


def layer_table(layers: Sequence[LayerInfo]) -> pd.DataFrame:
    """Which module each requested name maps to, and what it reads."""
    return pd.DataFrame([{"layer": i.name, "module": i.module, "reads": i.note} for i in layers])


# --------------------------------------------------------------------------------------
# metrics: vizkit.evaluate.binary_metrics (AUC, accuracy, EER, AP, video AUC)
# --------------------------------------------------------------------------------------
detector_metrics = binary_metrics  # seed 002's name


# --------------------------------------------------------------------------------------
# one chunk: a pure function of (arguments, chunk index)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalArgs:
    """Everything that determines a run's results (its manifest)."""

    detector_path: str | None = None
    weights_path: str | None = None
    test_dataset: str = ZOO_DATASET
    max_samples: int = 0
    gradcam_enabled: bool = True
    layers: tuple[str, ...] = ()
    method: str = "gradcam"
    table_methods: tuple[str, ...] = CAM_METHODS
    target: str = "fake"
    batch_size: int = 32
    gradcam_samples: int = 50
    save_all_predictions: bool = False
    #: images per Grad-CAM forward/backward inside a chunk: the activations kept for the backward
    #: scale with it (a ViT-B/16 x 24 at 224 px keeps ~115 MiB per image down to block 10)
    cam_batch_size: int = 2
    #: where the Grad-CAM layers' channels are (None: decided per layer; see :func:`vizkit.cam`)
    layout: str | None = None
    #: attention heads per layer of a CLIP detector whose width is not a known CLIP tower
    num_heads: int | None = None
    #: DeepfakeBench's test_config.yaml merged over the detector YAML (rgb_dir, label_dict, ...)
    test_config: str | None = None

    def manifest(self, dataset: EvalDataset, layers: Sequence[LayerInfo]) -> dict[str, Any]:
        d = asdict(self)
        d["layers"] = [i.name for i in layers]
        d["dataset"] = {"name": dataset.name, "source": dataset.source, "samples": len(dataset)}
        for key in ("detector_path", "weights_path", "test_config"):
            if d[key]:
                p = Path(d[key])
                d[key] = str(p.resolve())
                if p.is_file():
                    d[key + "_size"] = p.stat().st_size
        return json.loads(json.dumps(d))  # as stored: tuples become lists


@dataclass
class _Context:
    args: EvalArgs
    detector: Detector
    dataset: EvalDataset
    layers: list[LayerInfo]
    methods: list[str]
    device: torch.device


def _methods(args: EvalArgs, dataset: EvalDataset) -> list[str]:
    if not args.gradcam_enabled:
        return []
    extra = list(args.table_methods) if dataset.has_masks else []
    return list(dict.fromkeys([get_method(args.method).name] + [get_method(m).name for m in extra]))


def _targets(args: EvalArgs, labels: torch.Tensor, fake: int) -> Any:
    if args.target == "predicted":
        return None
    if args.target == "fake":
        return fake
    if args.target == "real":
        return 1 - fake
    return torch.where(labels == 1, fake, 1 - fake)


def chunk_count(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size


def evaluate_chunk(ctx: _Context, k: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Chunk ``k`` (samples ``k*B .. (k+1)*B - 1``): predictions, unreadable images, and with
    Grad-CAM the raw per-layer maps of every method (``{"<method>|<layer>": [n, h, w]}``) and the
    localisation scores of the fakes with masks. A pure function of (arguments, chunk index)."""
    a, det = ctx.args, ctx.detector
    start = k * a.batch_size
    indices = list(range(start, min(start + a.batch_size, len(ctx.dataset))))
    images, ok, errors = [], [], []
    for i in indices:
        try:
            images.append(ctx.dataset.image(i, det.read))
            ok.append(i)
        except VizkitError as err:
            errors.append({"index": i, "path": ctx.dataset.items[i].path, "error": str(err)})
    result: dict[str, Any] = {"chunk": k, "indices": ok, "errors": errors, "predictions": [], "localization": {}}
    arrays: dict[str, np.ndarray] = {"index": np.asarray(ok, dtype=np.int64)}
    if not ok:
        return result, arrays
    x = torch.stack([det.preprocess(im) for im in images]).to(ctx.device)
    labels = torch.tensor([ctx.dataset.items[i].label for i in ok])
    explanations = {}
    if ctx.methods:
        for method in ctx.methods:
            explanations[method] = _cam_in_parts(
                det.model,
                x,
                _targets(a, labels, det.fake_index),
                [i.module for i in ctx.layers],
                method,
                a.cam_batch_size,
                a.layout,
            )
        logits = explanations[ctx.methods[0]].output
    else:
        with torch.inference_mode():
            logits = det.model(x)
    probs = torch.softmax(logits.float(), -1)[:, det.fake_index].cpu()
    preds = (logits.argmax(-1).cpu() == det.fake_index).long()
    for j, i in enumerate(ok):
        item = ctx.dataset.items[i]
        result["predictions"].append(
            {
                "index": i,
                "path": item.path,
                "label": int(item.label),
                "prob": float(probs[j]),
                "pred": int(preds[j]),
                "correct": bool(int(preds[j]) == int(item.label)),
                "video": item.video,
            }
        )
    names = {i.module: i.name for i in ctx.layers}
    for method, exp in explanations.items():
        for module, m in exp.layer_maps.items():
            arrays[f"{method}|{names[module]}"] = m.detach().float().cpu().numpy()
    if explanations and ctx.dataset.has_masks:
        size = tuple(x.shape[-2:])
        fakes = [(j, i) for j, i in enumerate(ok) if ctx.dataset.items[i].label == 1]
        masks = {i: ctx.dataset.mask(i, size) for _, i in fakes}
        fakes = [(j, i) for j, i in fakes if masks[i] is not None and masks[i].any()]
        if fakes:
            rows = torch.tensor([j for j, _ in fakes])
            for method, exp in explanations.items():
                heats = {names[mod]: h for mod, h in exp.layer_heatmaps.items()}
                heats["all layers"] = exp.heatmap
                result["localization"][method] = {}
                for layer, heat in heats.items():
                    res = localization(
                        fakes,
                        inputs=lambda c: x[:0],
                        explain=lambda _x, c, h=heat: h[rows].cpu(),
                        mask=lambda s: masks[s[1]],
                        tolerances=(0, 1),
                        batch_size=None,
                    )
                    result["localization"][method][layer] = {
                        "index": [i for _, i in fakes],
                        "hit": res.hits[0].tolist(),
                        "hit_tol1": res.hits[1].tolist(),
                        "energy": [round(float(e), 6) for e in res.energy],
                    }
    return result, arrays


def _cam_in_parts(
    model: nn.Module,
    x: torch.Tensor,
    targets: Any,
    layers: list[str],
    method: str,
    part: int,
    layout: str | None = None,
) -> Any:
    """:func:`vizkit.cam` over ``x`` in parts of ``part`` images (bounded memory for the backward),
    the parts' results concatenated (the combined heatmap is per image, so the same as in one call)."""
    from types import SimpleNamespace

    exps = []
    for s in range(0, x.shape[0], max(1, part)):
        t = targets[s : s + part] if isinstance(targets, torch.Tensor) and targets.ndim else targets
        exps.append(cam(model, x[s : s + part], t, layers=layers, method=method, layout=layout))
    if len(exps) == 1:
        return exps[0]
    cat = lambda get: torch.cat([get(e) for e in exps])  # noqa: E731
    return SimpleNamespace(
        heatmap=cat(lambda e: e.heatmap),
        output=cat(lambda e: e.output),
        method=exps[0].method,
        layer_maps={n: cat(lambda e, n=n: e.layer_maps[n]) for n in exps[0].layer_maps},
        layer_heatmaps={n: cat(lambda e, n=n: e.layer_heatmaps[n]) for n in exps[0].layer_heatmaps},
    )


# --------------------------------------------------------------------------------------
# the evaluation
# --------------------------------------------------------------------------------------
@dataclass
class EvalSummary:
    """What a finished run holds: ``metrics`` (also metrics.json), ``predictions`` (one row per
    image), ``errors`` (unreadable images), ``localization`` (pointing game / energy per layer x
    method, or None), ``samples`` (the saved sample folders), ``layers`` and ``run_dir``."""

    run_dir: Path
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    errors: pd.DataFrame
    localization: pd.DataFrame | None
    samples: pd.DataFrame
    layers: list[LayerInfo]
    methods: list[str]
    report: Path | None = None

    def text(self) -> str:
        """The metrics table, and the localisation table when the set has masks, as text."""
        tables = [metrics_table(self.metrics)] + ([self.localization.round(4)] if self.localization is not None else [])
        return "\n".join(t.to_string(index=False) for t in tables)


def _prepare(
    args: EvalArgs, device: str | torch.device, detector: Detector | None = None, dataset: EvalDataset | None = None
) -> _Context:
    if args.batch_size < 1:
        raise ParameterError(f"--batch-size must be positive, got {args.batch_size}")
    if args.gradcam_samples <= 0:
        raise ParameterError(f"--gradcam_samples must be positive, got {args.gradcam_samples}")
    if args.target not in TARGETS:
        raise ParameterError(f"target {args.target!r}: choose one of {', '.join(TARGETS)}")
    for m in (args.method, *args.table_methods):
        if m not in CAM_METHODS:
            raise ParameterError(f"method {m!r}: scenario 3 compares {' and '.join(CAM_METHODS)}")
    det = detector or load_eval_detector(
        args.detector_path, args.weights_path, num_heads=args.num_heads, test_config=args.test_config, device=device
    )
    layers = resolve_gradcam_layers(det.model, list(args.layers) or default_layers(det.model), det.size)
    ds = dataset or resolve_dataset(args.test_dataset, det.config, args.max_samples or None)
    return _Context(args, det, ds, layers, _methods(args, ds), model_device(det.model))


def run_evaluation(
    output_dir: str | os.PathLike | None = None,
    *,
    detector_path: str | None = None,
    weights_path: str | None = None,
    test_dataset: str | None = None,
    max_samples: int = 0,
    gradcam_enabled: bool = True,
    layers: Sequence[str] | None = None,
    method: str = "gradcam",
    table_methods: Sequence[str] = CAM_METHODS,
    target: str = "fake",
    batch_size: int = 32,
    gradcam_samples: int = 50,
    save_all_predictions: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    device: str | torch.device = "cpu",
    detector: Detector | None = None,
    report: bool = True,
    map_chunks: BatchMapper | None = None,
    layout: str | None = None,
    num_heads: int | None = None,
    test_config: str | os.PathLike | None = None,
) -> EvalSummary:
    """Evaluate a detector on a test set (see the module docstring); resumable. Returns the
    summary of the finished run (also when it was already complete). ``layout``: where the
    Grad-CAM layers' channels are (see :func:`vizkit.cam`); ``num_heads``: a CLIP detector's
    heads when its width is not a known CLIP tower; ``test_config``: DeepfakeBench's
    ``test_config.yaml`` (dataset keys) merged over the detector YAML. A run whose images were
    partly unreadable is finished with them listed in ``errors.csv``; running it again reads
    those chunks again (add the missing frames first); ``overwrite`` starts afresh.

    ``map_chunks``: the :class:`vizkit.batch.BatchMapper` the units (chunks, sample folders,
    report figures) run on, e.g. on a Dask cluster (default: this process)."""
    args = EvalArgs(
        detector_path and str(detector_path),
        weights_path and str(weights_path),
        str(test_dataset or ZOO_DATASET),
        int(max_samples or 0),
        bool(gradcam_enabled),
        tuple(str(x) for x in (layers or ())),
        method,
        tuple(table_methods),
        target,
        int(batch_size),
        int(gradcam_samples),
        bool(save_all_predictions),
        layout=layout,
        num_heads=num_heads,
        test_config=str(test_config) if test_config else None,
    )
    ctx = _prepare(args, device, detector)
    batch = BatchRun.open(output_dir, "detector-gradcam-eval", args.manifest(ctx.dataset, ctx.layers), overwrite)
    run, n = batch.folder, chunk_count(len(ctx.dataset), args.batch_size)
    units = [Unit(f"chunk-{k:05d}", k) for k in range(n)]
    todo = [u for u in units if not batch.done(u.key)]
    if batch.resuming and is_complete(run) and not todo:
        return load_run(run)
    clear_complete(run)
    if todo:  # chunks computed (again): the sample folders and figures may change
        batch.forget([p.stem for p in (run / ".units").glob("*.json") if not p.stem.startswith("chunk-")])
        for folder in run.glob("sample*"):
            if folder.is_dir():
                shutil.rmtree(folder)
    mapper = map_chunks or BatchMapper(progress=progress)
    with mapper if mapper.distributed and mapper.client is None else nullcontext():
        job = Job(
            _chunk_unit,
            _prepare,
            dict(args=args, device=str(ctx.device)),
            None if mapper.distributed else ctx,
            catch=(),
            name="evaluate",
        )
        batch.run(mapper, job, units)
        return _finalize(ctx, batch, n, report, mapper, job)


def _chunk_unit(ctx: _Context, k: int, run: Path) -> dict[str, Any]:
    """The unit of chunk ``k``: :func:`evaluate_chunk`'s results and arrays written to its files."""
    result, arrays = evaluate_chunk(ctx, k)
    write_chunk(run, k, result, arrays)
    bad = len(result["errors"])  # a chunk with unreadable images is read again by the next run
    return {
        "chunk": k,
        "samples": len(result["indices"]),
        "unreadable": bad,
        **({"incomplete": f"{bad} unreadable image(s)"} if bad else {}),
    }


def evaluation_context(args: EvalArgs, device: str | torch.device = "cpu") -> _Context:
    """What :func:`evaluate_chunk` needs for ``args`` (the detector loaded, the dataset resolved):
    a process that computes chunks elsewhere builds it once from the picklable ``args``."""
    return _prepare(args, device)


@dataclass
class ConfigDefaults:
    """What DeepfakeBench's configs decide when the caller does not (:func:`config_defaults`)."""

    test_config: str | None
    test_dataset: str | None
    gradcam_enabled: bool
    output_dir: str
    layers: list[str] | None


def config_defaults(
    detector_path: str | None = None,
    test_config: str | None = None,
    *,
    test_dataset: str | None = None,
    gradcam_enabled: bool | None = None,
    output_dir: str | None = None,
    layers: Sequence[str] | None = None,
) -> ConfigDefaults:
    """The values given, else the configs' as DeepfakeBench's test.py reads them: with a
    ``detector_path``, ``test_config`` defaults to ``training/config/test_config.yaml`` under the
    working directory when that file exists, merged over the detector YAML; the merged config's
    ``test_dataset`` (its first when a list), ``gradcam_enabled`` (else off), ``gradcam_save_dir``
    (else ``gradcam_evaluation``) and ``gradcam_layers`` fill what is None."""
    from ..models.load_detector import read_detector_config

    extra: dict[str, Any] = {}
    if detector_path:
        default = Path("training/config/test_config.yaml")
        if test_config is None and default.is_file():
            test_config = str(default.resolve())
        extra = read_detector_config(detector_path, test_config).extra
    elif test_config:
        extra = read_detector_config(test_config).extra
    named = extra.get("test_dataset")
    if test_dataset is None and isinstance(named, (list, str)) and named:
        test_dataset = named if isinstance(named, str) else named[0]
    return ConfigDefaults(
        test_config,
        test_dataset,
        gradcam_enabled if gradcam_enabled is not None else bool(extra.get("gradcam_enabled", False)),
        output_dir or extra.get("gradcam_save_dir") or "gradcam_evaluation",
        list(layers or ()) or extra.get("gradcam_layers") or None,
    )


def evaluate_detector(
    output_dir: str | None = None,
    *,
    detector_path: str | None = None,
    weights_path: str | None = None,
    test_config: str | None = None,
    test_dataset: str | None = None,
    gradcam_enabled: bool | None = None,
    layers: Sequence[str] | None = None,
    table_methods: str | Sequence[str] = CAM_METHODS,
    cluster: ClusterOptions | None = None,
    device: str | torch.device = "auto",
    **options: Any,
) -> EvalSummary:
    """``vizkit evaluate``: :func:`run_evaluation` with what is not given taken from the
    DeepfakeBench configs (:func:`config_defaults`), ``table_methods`` also as ``"a,b"``,
    ``device`` by :func:`vizkit.state.resolve_device` and the units on a Dask cluster when
    ``cluster`` is given. ``options``: the other keywords of :func:`run_evaluation`."""
    d = config_defaults(
        detector_path,
        test_config,
        test_dataset=test_dataset,
        gradcam_enabled=gradcam_enabled,
        output_dir=output_dir,
        layers=layers,
    )
    if isinstance(table_methods, str):
        table_methods = [m.strip() for m in table_methods.split(",") if m.strip()]
    with BatchMapper(cluster, progress=bool(options.get("progress"))) as mapper:
        return run_evaluation(
            d.output_dir,
            detector_path=detector_path,
            weights_path=weights_path,
            test_dataset=d.test_dataset,
            gradcam_enabled=d.gradcam_enabled,
            layers=d.layers,
            table_methods=table_methods,
            device=resolve_device(device),
            map_chunks=mapper,
            test_config=d.test_config,
            **options,
        )


def _localization_table(chunks: Sequence[dict[str, Any]]) -> pd.DataFrame | None:
    acc: dict[tuple[str, str], dict[str, list]] = {}
    for c in chunks:
        for method, by_layer in c["localization"].items():
            for layer, r in by_layer.items():
                d = acc.setdefault((layer, method), {"hit": [], "hit_tol1": [], "energy": []})
                for key in d:
                    d[key] += r[key]
    if not acc:
        return None
    rows = [
        {
            "layer": layer,
            "method": method,
            "fakes": len(d["hit"]),
            "pointing_game": float(np.mean(d["hit"])),
            "pointing_game_tol1": float(np.mean(d["hit_tol1"])),
            "energy_in_mask": float(np.mean(d["energy"])),
        }
        for (layer, method), d in acc.items()
    ]
    return pd.DataFrame(rows)


def select_samples(predictions: pd.DataFrame, count: int, save_all: bool = False) -> pd.DataFrame:
    """The samples whose maps are saved: the first ``count`` wrong predictions in dataset order (the
    first ``count`` predictions of any kind with ``save_all``)."""
    rows = predictions if save_all else predictions[~predictions["correct"].astype(bool)]
    return rows.sort_values("index").head(count).reset_index(drop=True)


def metadata_text(label: int, pred: int, confidence: float, dataset: str) -> str:
    """The seed's ``sample{i}_metadata.txt``: true and predicted label, the predicted class's
    probability (4 decimals), whether it is correct, the dataset."""
    return (
        f"True Label: {label} ({LABEL_NAMES[label]})\nPredicted Label: {pred} ({LABEL_NAMES[pred]})\n"
        f"Confidence: {confidence:.4f}\nCorrect: {label == pred}\nDataset: {dataset}\n"
    )


def _title(row: Mapping[str, Any]) -> str:
    conf = row["prob"] if row["pred"] == 1 else 1 - row["prob"]
    verdict = "correct" if row["correct"] else "WRONG"
    return (
        f"true {LABEL_NAMES[int(row['label'])]}, predicted {LABEL_NAMES[int(row['pred'])]} (p = {conf:.3f}, {verdict})"
    )


def comparison_figure(display: np.ndarray, maps: Mapping[str, np.ndarray], title: str, method: str) -> plt.Figure:
    """The image, one overlay per layer and the layers combined, the prediction in the title."""
    panels = [render.Panel(image=display, kind="image", title="input")]
    panels += [render.Panel(image=display, heatmap=m, title=layer) for layer, m in maps.items()]
    if len(maps) > 1:
        panels.append(
            render.Panel(
                image=display, heatmap=combined_map(list(maps.values()), display.shape[0]), title="layers combined"
            )
        )
    return render.figure_grid([panels], suptitle=f"{method}: {title}")


def _save_sample(
    run: Path,
    i: int,
    row: Mapping[str, Any],
    display: np.ndarray,
    maps: Mapping[str, np.ndarray],
    method: str,
    dataset: str,
) -> Path:
    folder = run / f"sample{i}"
    meta = folder / f"sample{i}_metadata.txt"
    for layer, m in maps.items():
        render.save_image(render.overlay(display, m), folder / f"gradcam_{layer}_sample{i}.png")
    render.save_figure(comparison_figure(display, maps, _title(row), method), folder / "gradcam_comparison.png")
    conf = row["prob"] if row["pred"] == 1 else 1 - row["prob"]
    write_text(meta, metadata_text(int(row["label"]), int(row["pred"]), float(conf), dataset))  # last: marks it done
    return folder


def _finalize(ctx: _Context, batch: BatchRun, n: int, report: bool, mapper: BatchMapper, chunk_job: Job) -> EvalSummary:
    run = batch.folder
    chunks = read_chunks(run, n)
    preds = pd.DataFrame(
        [p for c in chunks for p in c["predictions"]],
        columns=["index", "path", "label", "prob", "pred", "correct", "video"],
    )
    errors = pd.DataFrame([e for c in chunks for e in c["errors"]], columns=["index", "path", "error"])
    metrics = detector_metrics(
        preds["label"], preds["prob"], preds["pred"], preds["video"].tolist() if ctx.dataset.has_videos else None
    )
    metrics.update(
        dataset=ctx.dataset.name,
        unreadable=int(len(errors)),
        model=ctx.detector.source,
        method=ctx.args.method if ctx.methods else None,
        target=ctx.args.target,
        layers=[i.name for i in ctx.layers] if ctx.methods else [],
        input_size=ctx.detector.size,
    )
    write_json(run / "metrics.json", metrics)
    write_csv(
        run / "predictions.csv",
        preds[["path", "label", "prob", "pred", "correct"]]
        .rename(columns={"prob": "fake_probability", "pred": "prediction"})
        .assign(fake_probability=lambda d: d["fake_probability"].round(6)),
    )
    write_csv(run / "errors.csv", errors)
    loc = _localization_table(chunks)
    if loc is not None:
        write_csv(run / "localization.csv", loc.round(6))
    samples = pd.DataFrame(columns=["sample", "index", "path", "label", "pred", "prob", "correct"])
    units = []  # the sample folders and the report's figures: units, rendered where the units run
    rows = records(preds)
    if ctx.methods:
        chosen = select_samples(preds, ctx.args.gradcam_samples, ctx.args.save_all_predictions)
        units += [Unit(f"sample{i}", ("sample", i, row, ctx.methods[0])) for i, row in enumerate(records(chosen))]
        samples = chosen.assign(sample=[f"sample{i}" for i in range(len(chosen))])[samples.columns]
        write_csv(run / "samples.csv", samples)
    if report:
        units.append(Unit("figure-score_distribution", ("score_distribution", 0, rows, "")))
        if ctx.methods and not preds["correct"].astype(bool).all():
            units.append(Unit("figure-worst_mistakes", ("worst_mistakes", 0, rows, ",".join(ctx.methods))))
    done = batch.run(mapper, replace(chunk_job, fn=_render_unit, name="samples"), units)
    summary = EvalSummary(run, metrics, preds, errors, loc, samples, ctx.layers, ctx.methods)
    if report:
        figures = {o.key.split("-", 1)[1]: run / o.record["figure"] for o in done if o.key.startswith("figure-")}
        summary.report = write_report(summary, ctx, figures)
    batch.write_index(
        "Deepfake detector evaluation: units",
        "Chunks of the test set (chunks/), sample folders and report figures.",
        columns=["samples", "unreadable"],
    )
    mark_complete(run, {"samples": int(len(preds)), "unreadable": int(len(errors))})
    return summary


def _render_unit(ctx: _Context, payload: tuple[str, int, Any, str], run: Path) -> dict[str, Any]:
    """A unit that renders from the written chunks: sample folder ``i`` (``row``: its prediction)
    or one of the report's figures (``row``: all predictions)."""
    kind, i, row, method = payload
    if kind == "sample":
        k = int(row["index"]) // ctx.args.batch_size
        with np.load(chunk_paths(run, k)[1]) as z:
            j = list(z["index"]).index(int(row["index"]))
            layer_maps = {li.name: z[f"{method}|{li.name}"][j] for li in ctx.layers}
        display = display_image(ctx.dataset.image(int(row["index"]), ctx.detector.read), ctx.detector.size)
        _save_sample(run, i, row, display, layer_maps, method, ctx.dataset.name)
        return {"samples": 1, "index": int(row["index"])}
    preds = pd.DataFrame(row, columns=["index", "path", "label", "prob", "pred", "correct", "video"])
    path = run / "figures" / f"{kind}.png"
    if kind == "score_distribution":
        render.save_figure(score_distribution_figure(preds), path)
    else:
        empty = pd.DataFrame()
        summary = EvalSummary(run, {}, preds, empty, None, empty, ctx.layers, method.split(","))
        render.save_figure(worst_mistakes_figure(summary, ctx.dataset, ctx.detector.size), path)
    return {"figure": str(path.relative_to(run))}


def load_run(run_dir: str | os.PathLike) -> EvalSummary:
    """A finished run read back from its folder (metrics, predictions, samples, localisation)."""
    run = Path(run_dir)
    if not is_complete(run):
        raise InputError(f"{str(run)!r} holds no finished evaluation (no completion marker): run it (again) to finish")
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    n = len(list((run / "chunks").glob("*.json")))
    chunks = read_chunks(run, n)
    preds = pd.DataFrame(
        [p for c in chunks for p in c["predictions"]],
        columns=["index", "path", "label", "prob", "pred", "correct", "video"],
    )
    errors = pd.DataFrame([e for c in chunks for e in c["errors"]], columns=["index", "path", "error"])
    samples = pd.read_csv(run / "samples.csv") if (run / "samples.csv").is_file() else pd.DataFrame()
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    layers = [LayerInfo(n_, "", "") for n_ in manifest["layers"]] if metrics.get("layers") else []
    methods: list[str] = []
    if n:
        with np.load(chunk_paths(run, 0)[1]) as z:
            methods = list(dict.fromkeys(k.split("|")[0] for k in z.files if "|" in k))
    report = run / "report.md"
    return EvalSummary(
        run,
        metrics,
        preds,
        errors,
        _localization_table(chunks),
        samples,
        layers,
        methods,
        report if report.is_file() else None,
    )


# --------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------
def score_distribution_figure(preds: pd.DataFrame) -> plt.Figure:
    """Seaborn histogram of the fake probability per true class."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    frame = preds.assign(true=preds["label"].map({0: "real", 1: "fake"}))
    sns.histplot(
        frame,
        x="prob",
        hue="true",
        hue_order=["real", "fake"],
        bins=25,
        binrange=(0, 1),
        stat="count",
        element="step",
        common_norm=False,
        ax=ax,
    )
    ax.axvline(0.5, color="grey", ls="--", lw=1)
    ax.set_xlabel("fake probability")
    ax.set_title("score distribution per true class")
    fig.tight_layout()
    return fig


def worst_mistakes_figure(summary: EvalSummary, dataset: EvalDataset, size: int, count: int = 8) -> plt.Figure | None:
    """The ``count`` most confident wrong predictions, each with its layers-combined map."""
    wrong = summary.predictions[~summary.predictions["correct"].astype(bool)].copy()
    if wrong.empty or not summary.methods:
        return None
    wrong["confidence"] = np.where(wrong["pred"] == 1, wrong["prob"], 1 - wrong["prob"])
    wrong = wrong.sort_values(["confidence", "index"], ascending=[False, True]).head(count)
    maps = read_chunk_arrays(summary.run_dir, len(list((summary.run_dir / "chunks").glob("*.json"))))
    method = summary.methods[0]
    panels = []
    for _, row in wrong.iterrows():
        display = display_image(dataset.image(int(row["index"])), size)
        heat = combined_map([maps[f"{method}|{li.name}"][int(row["index"])] for li in summary.layers], display.shape[0])
        panels.append(
            render.Panel(
                image=display,
                heatmap=heat,
                title=f"#{int(row['index'])} {LABEL_NAMES[int(row['label'])]}->"
                f"{LABEL_NAMES[int(row['pred'])]} p={row['confidence']:.2f}",
            )
        )
    rows = [panels[i : i + 4] for i in range(0, len(panels), 4)]
    return render.figure_grid(rows, suptitle=f"worst mistakes ({method}, layers combined)")


def write_report(summary: EvalSummary, ctx: _Context, figures: Mapping[str, Path] | None = None) -> Path:
    """``report.md``: metrics, confusion matrix, score distributions, layer mapping, localisation
    table per layer x method, worst mistakes, the saved samples. ``figures``: the figures already
    rendered (``score_distribution``, ``worst_mistakes``: their paths); None: rendered here."""
    run, m = summary.run_dir, summary.metrics
    rep = Report("Deepfake detector evaluation with Grad-CAM")
    rep.heading("Run").bullets(
        [
            f"model: `{ctx.detector.source}`",
            f"test set: `{ctx.dataset.name}` ({ctx.dataset.source})",
            f"images: {m['samples']} scored, {m['unreadable']} unreadable (errors.csv)",
            f"Grad-CAM: {', '.join(summary.methods) if summary.methods else 'off'}; explained class: {ctx.args.target}",
        ]
    )
    rep.heading("Metrics").table(metrics_table(m), index=False)
    c = m["confusion"]
    rep.heading("Confusion matrix").table(
        pd.DataFrame(
            {
                "true \\ predicted": ["real", "fake"],
                "real": [c["true_real_pred_real"], c["true_fake_pred_real"]],
                "fake": [c["true_real_pred_fake"], c["true_fake_pred_fake"]],
            }
        ),
        index=False,
    )
    fig_dir = run / "figures"
    if figures is None:
        figures = {
            "score_distribution": render.save_figure(
                score_distribution_figure(summary.predictions), fig_dir / "score_distribution.png"
            )
        }
        worst = worst_mistakes_figure(summary, ctx.dataset, ctx.detector.size)
        if worst is not None:
            figures["worst_mistakes"] = render.save_figure(worst, fig_dir / "worst_mistakes.png")
    rep.figure(figures["score_distribution"], "fake probability per true class", relative_to=run)
    if summary.methods:
        rep.heading("Layers").table(layer_table(ctx.layers), index=False)
    if summary.localization is not None:
        rep.heading("Does the map find the manipulation? (fakes with masks)")
        rep.paragraph(
            "Pointing game: the map's maximum lies inside the manipulated region (tol1: within 1 px); energy: "
            "the share of the map inside it. One row per layer and method, plus the layers combined."
        )
        rep.table(summary.localization, index=False)
        best = summary.localization.loc[summary.localization["pointing_game"].idxmax()]
        rep.paragraph(
            f"Best: **{best['layer']}** with {best['method']}, pointing game {best['pointing_game']:.1%} "
            f"of {int(best['fakes'])} fakes."
        )
    if figures.get("worst_mistakes") is not None:
        rep.heading("Worst mistakes")
        rep.figure(figures["worst_mistakes"], "most confident wrong predictions", relative_to=run)
    if len(summary.samples):
        rep.heading("Saved samples")
        rep.paragraph(
            f"{len(summary.samples)} sample folder(s) with one overlay per layer, gradcam_comparison.png and "
            "the metadata; samples.csv maps each to its image."
        )
    return rep.write(run / "report.md")


# --------------------------------------------------------------------------------------
# the seed's one-image demo
# --------------------------------------------------------------------------------------
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
    """Per image: ``gradcam_{layer}_{stem}.png`` per layer, ``{stem}_comparison.png`` (prediction in
    the title) and ``{stem}.json``. Returns (results, failures). ``layout``: where the layers'
    channels are (see :func:`vizkit.cam`). A batch of :mod:`vizkit.batch` (one unit per image;
    a rerun with the same arguments resumes); ``cluster``: the images on a Dask cluster."""
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
    targets = _targets(EvalArgs(target=target), torch.tensor([1]), det.fake_index)
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
        render.save_image(render.overlay(display, m), out / f"gradcam_{name}_{path.stem}.png")
    conf = prob if pred == 1 else 1 - prob
    title = f"{path.name}: predicted {LABEL_NAMES[pred]} (p = {conf:.3f})"
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


# --------------------------------------------------------------------------------------
# the seed's Python API
# --------------------------------------------------------------------------------------
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
        logits = self.model(data_dict["image"])
        return {"cls": logits, "prob": torch.softmax(logits, -1)[:, 1]}

    def enable_gradcam(self) -> None:
        self.gradcam_enabled = True

    def disable_gradcam(self) -> None:
        self.gradcam_enabled = False

    @contextmanager
    def gradcam(self) -> Iterator["CLIPDetectorWithGradCAM"]:
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
                    render.save_image(
                        render.overlay(display, m), self.gradcam_save_dir / f"{filename_prefix}_{n}_sample{b}.png"
                    )
                p = float(torch.softmax(exp.output[b].float(), -1)[1])
                render.save_figure(
                    comparison_figure(display, per, f"p(fake) = {p:.3f}", exp.method),
                    self.gradcam_save_dir / f"{filename_prefix}_comparison_sample{b}.png",
                )
        return maps


# --------------------------------------------------------------------------------------
# explorer (reads the saved run, never recomputes)
# --------------------------------------------------------------------------------------
class DetectorGradCAMExplorer(Explorer):
    """Browse a finished run: sample x layer x method, optionally wrong predictions only. Every map
    comes from the run's chunk files; nothing is recomputed (a :class:`vizkit.widgets.Explorer`:
    ``interactive=False`` or no ipywidgets displays :meth:`static` instead of widgets)."""

    CONTROLS = (("show", "toggle"), ("sample", "dropdown"), ("layer", "dropdown"), ("method", "dropdown"))
    LAYOUT = (("show", "sample"), ("layer", "method"))

    def __init__(
        self,
        run_dir: str | os.PathLike,
        dataset: EvalDataset | None = None,
        size: int | None = None,
        cmap: str = "jet",
        *,
        interactive: bool = True,
    ):
        self.summary = load_run(run_dir)
        if not self.summary.methods:
            raise InputError(f"{str(run_dir)!r} was evaluated without Grad-CAM: nothing to explore")
        manifest = json.loads((self.summary.run_dir / "manifest.json").read_text(encoding="utf-8"))
        self.dataset = dataset or resolve_dataset(
            manifest["test_dataset"], _manifest_config(manifest), manifest["max_samples"] or None
        )
        self.maps = read_chunk_arrays(self.summary.run_dir, len(list((self.summary.run_dir / "chunks").glob("*.json"))))
        self.size = int(size or self.summary.metrics.get("input_size") or _DISPLAY_MIN)
        self.layer_names = [li.name for li in self.summary.layers]
        super().__init__(interactive=interactive, cmap=cmap, figsize=(7, 3.4))

    def control_specs(self) -> list[Control]:
        """show (all / wrong only), sample, layer (one or combined), method."""
        methods = self.summary.methods
        return [
            Control("show", "toggle", "show", ["all", "wrong only"], "all"),
            Control("sample", "dropdown", "sample", self._options("all")),
            Control("layer", "dropdown", "layer", self.layer_names + ["layers combined"], self.layer_names[-1]),
            Control("method", "dropdown", "method", methods, methods[0]),
        ]

    def _options(self, show: str) -> list[tuple[str, int]]:
        p = self.summary.predictions
        if show == "wrong only":
            p = p[~p["correct"].astype(bool)]
        return [
            (
                f"#{int(r.index)} {LABEL_NAMES[int(r.label)]}->{LABEL_NAMES[int(r.pred)]} p(fake)={r.prob:.2f}",
                int(r.index),
            )
            for r in p.itertuples()
        ]

    def on_change(self, label: str) -> None:
        """``show`` refilters the samples (keeping the list when no sample is wrong)."""
        if label == "show":
            options = self._options(self.show.value)
            if options:
                self.sample.options = options
                self.sample.value = options[0][1]

    def current_map(self, state: Mapping[str, Any] | None = None) -> np.ndarray:
        """The selected sample's map of the selected layer (or all layers combined) and method."""
        st = self.state if state is None else state
        i, method, layer = st["sample"], st["method"], st["layer"]
        if layer == "layers combined":
            return combined_map([self.maps[f"{method}|{n}"][i] for n in self.layer_names], self.size)
        return self.maps[f"{method}|{layer}"][i]

    def render(self, state: Mapping[str, Any]) -> HeatmapView | None:
        """The map over the sample's image, titled with its label and prediction (None: no sample)."""
        i = state["sample"]
        if i is None:
            return None
        row = self.summary.predictions.set_index("index").loc[i]
        display = display_image(self.dataset.image(i), self.size)
        return HeatmapView(
            self.current_map(state),
            display,
            map_title=f"{state['method']} @ {state['layer']}",
            overlay_title=_title({**row.to_dict(), "index": i}),
        )


def _manifest_config(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset keys a run was evaluated with (its detector YAML + test config), to read its
    test set again as it was read."""
    from ..models.load_detector import read_detector_config

    det, test = manifest.get("detector_path"), manifest.get("test_config")
    if det and Path(det).is_file():
        return read_detector_config(det, test if test and Path(test).is_file() else None).extra
    return read_detector_config(test).extra if test and Path(test).is_file() else {}


# --------------------------------------------------------------------------------------
# notebook parameters
# --------------------------------------------------------------------------------------
def notebook_parameters() -> list:
    """The parameter spec of ``notebooks/03_detector_gradcam_eval.ipynb``."""
    from ..notebook import Param, positive
    from .registry import common_parameters

    def methods_ok(value: str) -> str | None:
        bad = [m for m in value.split(",") if m.strip() and m.strip() not in CAM_METHODS]
        return f"unknown method(s) {', '.join(bad)}: choose from {', '.join(CAM_METHODS)}" if bad else None

    return [
        Param("detector_path", (str,)),
        Param("weights_path", (str,)),
        Param("test_dataset", (str,)),
        Param("max_samples", (int,), check=lambda v: None if v >= 0 else "must be >= 0 (0 means all)"),
        Param("layers", (str,)),
        Param("method", (str,), choices=CAM_METHODS),
        Param("table_methods", (str,), check=methods_ok),
        Param("target", (str,), choices=TARGETS),
        Param("gradcam_samples", (int,), check=positive),
        Param("save_all_predictions", (bool,)),
        Param("num_compare", (int,), check=lambda v: None if v >= 0 else "must be >= 0"),
        Param("batch_size", (int,), check=positive),
        *common_parameters("output_dir", "overwrite", "interactive", "seed", "device"),
    ]


def check_notebook_parameters(namespace: dict, before: Any) -> dict[str, Any]:
    """Validate the notebook's parameters, including the combinations."""
    from ..notebook import check_parameters

    p = check_parameters(namespace, before, notebook_parameters())
    for key in ("detector_path", "weights_path"):
        if p[key] and not Path(p[key]).exists():
            raise ParameterError(f"{key} {p[key]!r} does not exist")
    if p["detector_path"] and not p["weights_path"]:
        raise ParameterError("detector_path needs weights_path (the .pth the config describes)")
    resolve_device(p["device"])  # cuda without a GPU: one clear error
    return p
