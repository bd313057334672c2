"""Scenario 5: per-token attention of a vision-language model over text and image patches,
as a video (seed 004).

A user of a LLaVA / Qwen-VL / Idefics3 / ... model watches, token by token, where the decoder
looks while it writes its answer: over the earlier text and over the image patches, side by side
in an mp4 that starts at a phrase such as "Based on the following requirements".

This module orchestrates; the mechanics live in their layers:

- :mod:`vizkit.models.vlm`: :func:`load_vlm` and one adapter per family placing each image patch
  (image, tile, row, col; thumbnails; special markers) from the model's config and the
  processor's outputs; :func:`~vizkit.models.vlm.trace.trace_sample` runs ``generate`` (or a
  teacher-forced solution) with :class:`vizkit.hooks.RowAttentionCapture` on the chosen decoder
  layers -- only the new query rows are kept, the generated text is unchanged.
- :mod:`vizkit.positions`: the :class:`Trace` (rows, position map, sinks, ``attention.npz``).
- :mod:`vizkit.token_video`: frames, mp4 (PNG frames without ffmpeg), contact sheets.

Here: the seed's :class:`AttentionVisualizer` API, the batch command :func:`run_video` (several
samples: :func:`run_many`, a :mod:`vizkit.batch`), the notebook's parameters and
:class:`VLMAttentionExplorer`. Beside it: :func:`create_video` in :mod:`.vlm_run_folder` (one
sample's run folder: a video and a contact sheet per layer, ``attention.npz``, ``report.md`` with
shares and sinks, written by :mod:`.vlm_report`) and :func:`ground_truth_table` in
:mod:`.vlm_ground_truth` (tiny_vlm: how often the answer's attention peaks on the asked-about
object). Every name is importable from here.

Example::

    from vizkit.scenarios.vlm_attention_video import AttentionVisualizer
    viz = AttentionVisualizer("path/to/Qwen2-VL-folder", max_image_num=2)   # None: the zoo's tiny_vlm
    sample, images = viz.load_sample_data("test.json", "images/", sample_idx=0)
    mp4 = viz.create_attention_visualization_for_sample(sample, images, layer_idx=20,
                                                        start_phrase="Based on the following requirements")

or ``vizkit vlm-video --model_path DIR --benchmark_json FILE --image_dir DIR --layers 10 20``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ParameterError
from ..models.vlm import VLM, load_vlm
from ..models.vlm.relevance import answer_relevance
from ..models.vlm.trace import DEFAULT_START_PHRASE, check_head, resolve_layers, trace_sample
from ..positions import SINK_MODES, PositionMap, Trace
from ..token_video import FrameRenderer, contact_sheet, head_label, image_share, layer_label
from ..vlm_benchmarks import load_sample, sample_indices
from ..widgets import Control, Explorer, FrameView
from ..zoo.common import default_benchmark
from .vlm_ground_truth import (
    choose_heads,
    explain_answer_attention,
    ground_truth_table,
    sample_object_mask,
    table_value,
    trace_object_mass,
)
from .vlm_report import token_shares, write_report
from .vlm_run_folder import AUTO, create_video, resolve_auto_heads

__all__ = [
    "explain_answer_attention",
    "VLM",
    "load_vlm",
    "PositionMap",
    "Trace",
    "trace_sample",
    "resolve_layers",
    "FrameRenderer",
    "contact_sheet",
    "load_sample",
    "create_video",
    "AttentionVisualizer",
    "VLMAttentionVisualizer",
    "VLMAttentionExplorer",
    "run_video",
    "run_many",
    "sample_indices",
    "write_report",
    "answer_relevance",
    "image_share",
    "ground_truth_table",
    "choose_heads",
    "table_value",
    "sample_object_mask",
    "trace_object_mass",
    "resolve_auto_heads",
    "token_shares",
    "DEFAULT_START_PHRASE",
]


class AttentionVisualizer:
    """The seed's API (``visualizeHeatMap.AttentionVisualizer``), on vizkit's capture.

    ``AttentionVisualizer(model_name_or_path, max_image_num=2)`` loads a local LLaVA / Qwen2-VL
    / Qwen2.5-VL folder (None: the zoo's ``tiny_vlm``); :meth:`load_sample_data` ->
    ``(sample, images)``; :meth:`create_attention_visualization_for_sample` -> the mp4 path
    (the PNG-frame folder when ffmpeg is unavailable). ``last`` holds the last run's
    :func:`create_video` result (folder, outputs, trace). Exported from ``vizkit.scenarios`` as
    ``VLMAttentionVisualizer`` (scenario 2 owns the plain name there).
    """

    def __init__(self, model_name_or_path: str | Path | None = None, max_image_num: int = 2, device: str = "cpu"):
        if int(max_image_num) < 1:
            raise ParameterError(f"max_image_num must be at least 1, got {max_image_num}")
        self.vlm = load_vlm(model_name_or_path, device=device)
        self.model, self.processor = self.vlm.model, self.vlm.processor
        self.max_image_num = int(max_image_num)
        self.notes: list[str] = []
        self.last: dict[str, Any] | None = None

    def load_sample_data(self, benchmark_json: str | Path, image_dir: str | Path | None, sample_idx: int = 0):
        sample, images, notes = load_sample(benchmark_json, image_dir, sample_idx, self.max_image_num)
        for n in notes:
            print(f"vizkit vlm-video: {n}", file=sys.stderr)
        self.notes = notes
        return sample, images

    def create_attention_visualization_for_sample(
        self,
        sample: dict[str, Any],
        images: Sequence[Any],
        layer_idx: int | None = 20,
        start_phrase: str | None = DEFAULT_START_PHRASE,
        *,
        layers: Sequence[int] | None = None,
        heads: Any = "mean",
        max_new_tokens: int = 128,
        mode: str = "generate",
        output_dir: str | Path | None = None,
        overwrite: bool = False,
        fps: int = 4,
        ground_truth: bool | None = None,
        sinks: str = "keep",
        explain_token: int | str | None = None,
        relevance_layers: Sequence[int] | None = None,
    ) -> str:
        images = list(images)
        if len(images) > self.max_image_num:
            self.notes.append(f"{len(images)} images given; using the first {self.max_image_num} (max_image_num)")
            images = images[: self.max_image_num]
        if layer_idx is not None and layer_idx == 20 and self.vlm.num_layers <= 20 and not layers:
            layer_idx = None  # the seed's default on a model with fewer layers: its last layer
        self.last = create_video(
            self.vlm,
            sample,
            images,
            layer_idx=layer_idx,
            layers=layers,
            start_phrase=start_phrase,
            heads=heads,
            max_new_tokens=max_new_tokens,
            mode=mode,
            output_dir=output_dir,
            overwrite=overwrite,
            fps=fps,
            ground_truth=ground_truth,
            notes=self.notes,
            sinks=sinks,
            explain_token=explain_token,
            relevance_layers=relevance_layers,
        )
        first = resolve_layers(self.vlm.num_layers, layer_idx, layers)[0]
        return str(self.last["outputs"][f"video_layer{first}"])


VLMAttentionVisualizer = AttentionVisualizer


def run_video(
    model_path: str | Path | None = None,
    benchmark_json: str | Path | None = None,
    image_dir: str | Path | None = None,
    sample_idx: Any = 0,
    layer_idx: int | None = None,
    start_phrase: str | None = DEFAULT_START_PHRASE,
    layers: Sequence[int] | None = None,
    heads: Any = "mean",
    max_image_num: int = 2,
    max_new_tokens: int = 128,
    mode: str = "generate",
    output_dir: str | Path | None = None,
    overwrite: bool = False,
    fps: int = 4,
    ground_truth: bool | None = None,
    sinks: str = "keep",
    cluster: Any = None,
    explain_token: int | str | None = None,
    relevance_layers: Sequence[int] | None = None,
) -> dict[str, Any]:
    """``vizkit vlm-video``. One sample (an int): load it first (bad input fails before the model
    loads), then the model, then :func:`create_video` into the run folder. Several
    (:func:`sample_indices`: a list, a range, ``"all"``): :func:`run_many`. No ``model_path``:
    tiny_vlm; no ``benchmark_json``: its sample benchmark."""
    if benchmark_json in (None, ""):
        benchmark_json, default_dir = default_benchmark()
        image_dir = image_dir or default_dir
    kw = dict(
        layer_idx=layer_idx,
        layers=layers,
        start_phrase=start_phrase,
        heads=heads,
        max_new_tokens=max_new_tokens,
        mode=mode,
        fps=fps,
        ground_truth=ground_truth,
        sinks=sinks,
        explain_token=explain_token,
        relevance_layers=relevance_layers,
    )
    if not isinstance(sample_idx, (int, np.integer)):
        from ..io import read_json

        records = read_json(Path(benchmark_json), "benchmark file")
        count = len(records) if isinstance(records, list) else 0
        return run_many(
            model_path,
            benchmark_json,
            image_dir,
            sample_indices(sample_idx, count),
            max_image_num,
            output_dir,
            overwrite,
            cluster,
            **kw,
        )
    sample, images, notes = load_sample(benchmark_json, image_dir, sample_idx, max_image_num)
    vlm = load_vlm(model_path)
    return create_video(vlm, sample, images, output_dir=output_dir, overwrite=overwrite, notes=notes, **kw)


def run_many(
    model_path: str | Path | None,
    benchmark_json: str | Path,
    image_dir: str | Path | None,
    indices: Sequence[int],
    max_image_num: int = 2,
    output_dir: str | Path | None = None,
    overwrite: bool = False,
    cluster: Any = None,
    **kw: Any,
) -> dict[str, Any]:
    """Several samples into one run folder: ``sample_<idx>/`` each (the files of a one-sample run)
    and ``index.md``. A batch of :mod:`vizkit.batch` (one unit per sample): a rerun with the same
    arguments into the same folder skips the samples done and redoes the rest (``overwrite``
    redoes all). ``cluster``: a :class:`vizkit.distributed.chunks.ClusterOptions`
    (``--workers`` / ``--scheduler``)."""
    from ..batch import EARLIER, FAILED, BatchMapper, BatchRun, Job, Unit, resolved
    from ..runs import mark_complete

    model = str(model_path) if model_path else None
    job = Job(_sample_unit, load_vlm, {"model_name_or_path": model}, name="vlm-video")
    if cluster is None:  # a bad folder, layer or head stops here, once, before any output
        vlm = job.resolve()
        resolve_layers(vlm.num_layers, kw.get("layer_idx"), kw.get("layers"))
        if kw.get("heads", "mean") != AUTO:
            check_head(kw.get("heads", "mean"), vlm.num_heads)
    manifest = {
        "command": "vlm-video",
        "model_path": resolved(model),
        "benchmark_json": resolved(benchmark_json),
        "image_dir": resolved(image_dir),
        "max_image_num": max_image_num,
        **kw,
    }
    batch = BatchRun.open(output_dir or None, "vlm-video", manifest, overwrite)
    payload = (str(benchmark_json), str(image_dir) if image_dir else None, max_image_num, dict(kw))
    units = [Unit(f"sample_{i}", (i, *payload)) for i in indices]
    outcomes = batch.run(BatchMapper(cluster, progress=cluster is not None), job, units)
    columns = ["answer_tokens", "frames", "answer"]
    table = [
        {
            "sample": i,
            "status": o.status,
            **{k: o.record.get(k, "") for k in columns},
            "error": f"{o.error_type}: {o.error}" if o.status == FAILED else "",
        }
        for i, o in zip(indices, outcomes)
    ]
    skipped = sum(o.status == EARLIER for o in outcomes)
    index = batch.write_index(
        "VLM per-token attention videos",
        f"{len(indices)} sample(s) of "
        f"{Path(benchmark_json).name}; each sample_<idx>/ holds its videos, contact sheets, "
        "attention.npz and report.md.",
        columns,
    )
    failed = [r for r in table if r["status"] == FAILED]
    if not failed:
        mark_complete(batch.folder, {"samples": list(indices)})
    return {"folder": batch.folder, "index": index, "samples": table, "failed": failed, "skipped": skipped}


def _sample_unit(vlm: VLM, payload: tuple, folder: Path) -> dict[str, Any]:
    """One sample of :func:`run_many` into ``folder/sample_<idx>`` (its own run folder): its row."""
    index, benchmark_json, image_dir, max_image_num, kw = payload
    sample, images, notes = load_sample(benchmark_json, image_dir, index, max_image_num)
    res = create_video(vlm, sample, images, output_dir=folder / f"sample_{index}", overwrite=True, notes=notes, **kw)
    t = res["trace"]
    return {
        "sample": index,
        "id": str(sample.get("id", index)),
        "answer_tokens": t.num_answer_tokens,
        "frames": len(t.frame_tokens),
        "answer": t.text.strip()[:80],
    }


def notebook_parameters() -> list[Any]:
    """The parameters of ``notebooks/05_vlm_attention_video.ipynb``."""
    from ..notebook import Param, positive
    from .registry import common_parameters

    return [
        Param("model_path", (str,), help="local VLM folder; empty: tiny_vlm"),
        Param("benchmark_json", (str,)),
        Param("image_dir", (str,)),
        Param("sample_idx", (int,)),
        Param("layer_idx", (int,), help="-1: the seed's 20 or the last layer"),
        Param("layers", (list,), check=lambda v: None if all(isinstance(i, int) for i in v) else "must hold ints"),
        Param("start_phrase", (str,)),
        Param(
            "heads",
            (str, int),
            check=lambda v: (
                None if isinstance(v, int) or v in ("auto", "mean", "max") else "use auto, mean, max or a head index"
            ),
        ),
        Param("max_image_num", (int,), check=positive),
        Param("max_new_tokens", (int,), check=positive),
        Param("mode", (str,), choices=("generate", "solution")),
        Param("fps", (int,), check=positive),
        Param("sinks", (str,), choices=SINK_MODES),
        Param("ground_truth_questions", (int,), check=lambda v: None if v >= 0 else "must be >= 0"),
        Param("explain_token", (str, int), help="answer token (index or word) to explain by relevance; empty: none"),
        Param(
            "relevance_layers",
            (list,),
            check=lambda v: None if all(isinstance(i, int) for i in v) else "must hold ints",
        ),
        *common_parameters("output_dir", "overwrite", "interactive", "seed"),
    ]


def check_notebook_parameters(namespace: dict, before: Any) -> dict[str, Any]:
    """Validate the notebook's parameters (names, types, values) before any work."""
    from ..notebook import check_parameters

    return check_parameters(namespace, before, notebook_parameters())


class VLMAttentionExplorer(Explorer):
    """Token x layer x head explorer over a :class:`Trace` (a :class:`vizkit.widgets.Explorer`).

    Controls: ``token`` (answer token, 0-based, from the start phrase on), ``layer`` (the captured
    decoder layers, 0-based) and ``head`` (mean / max over heads, or one head, 0-based). The dropdowns
    name each option as the frame's title does (:func:`~vizkit.token_video.layer_label`,
    :func:`~vizkit.token_video.head_label`), so the title always repeats what the controls show.
    Moving one redraws both panels -- the text and the image grids, the same frame the video shows --
    from the captured rows; no model runs. ``head``: the initial view, or a mapping ``{layer: view}``
    (``create_video(...)["heads"]``: the view of the first captured layer is shown first). ``drawn``
    holds the frame on screen; ``draws`` counts redraws. ``interactive=False`` (or no ipywidgets): no
    widgets, the explorer displays :meth:`static`.
    """

    #: the controls as the page shows them (label, kind): read by the notebook build and the browser test
    CONTROLS = (("token", "slider"), ("layer", "dropdown"), ("head", "dropdown"))
    DESCRIPTION_WIDTH = "50px"
    VIEW = FrameView

    def __init__(self, trace: Trace, head: Any = "mean", sinks: str = "keep", *, interactive: bool = True):
        first = sorted(trace.rows)[0]
        self.trace, self.sinks = trace, sinks
        self.initial_head = head.get(first, "mean") if isinstance(head, Mapping) else head
        super().__init__(interactive=interactive)

    def control_specs(self) -> list[Control]:
        """token (the answer tokens with frames), layer (the captured ones), head (mean, max, or one head)."""
        trace, tokens, layers = self.trace, self.trace.frame_tokens, sorted(self.trace.rows)
        n_heads = next(iter(trace.rows.values())).shape[1] if trace.heads == "all" else 0
        heads = [(head_label(h), h) for h in ("mean", "max", *range(n_heads))]
        return [
            Control("token", "slider", "token", min=tokens.start, max=tokens.stop - 1, value=tokens.start),
            Control("layer", "dropdown", "layer", [(layer_label(i), i) for i in layers], layers[0]),
            Control("head", "dropdown", "head", heads, self.initial_head),
        ]

    def renderer(self, state: Mapping[str, Any] | None = None) -> FrameRenderer:
        """The frame renderer of the selected (or ``state``'s) layer and head, built once per pair."""
        st = self.state if state is None else state
        key = (st["layer"], st["head"])
        return self.cached(key, lambda: FrameRenderer(self.trace, *key, sinks=self.sinks))

    def render(self, state: Mapping[str, Any]) -> FrameView:
        """The frame of the selected token, titled as its first line reads (:meth:`FrameRenderer.title`)."""
        renderer = self.renderer(state)
        return FrameView(renderer.frame(state["token"]), renderer.title(state["token"]))
