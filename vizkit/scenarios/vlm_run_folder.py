"""Scenario 5's run folder of one sample (:func:`create_video`): trace the answer of a
vision-language model (:func:`~vizkit.models.vlm.trace.trace_sample`), then write one video and
one contact sheet per layer (:func:`vizkit.token_video.write_layer_videos`), ``attention.npz``, the
explained token's relevance when asked, tiny_vlm's ground-truth table when it is the model, and
``report.md`` (:mod:`.vlm_report`). The score: the attention share of each answer token's row.

Example::

    from vizkit.models.vlm import load_vlm
    from vizkit.scenarios.vlm_run_folder import create_video
    from vizkit.vlm_benchmarks import load_sample
    from vizkit.zoo.common import default_benchmark
    sample, images, notes = load_sample(*default_benchmark(), 0, 2)
    res = create_video(load_vlm(None), sample, images, layers=[1], output_dir="runs/vlm")
    res["outputs"]["video_layer1"], res["shares"]          # the mp4, one row per answer token
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ParameterError
from ..io import save_npz
from ..models.vlm import VLM
from ..models.vlm.relevance import answer_relevance
from ..models.vlm.trace import DEFAULT_START_PHRASE, check_head, resolve_layers, trace_sample
from ..positions import SINK_MODES
from ..token_video import head_label, relevance_figure, write_layer_videos
from ..zoo.common import default_benchmark
from .vlm_ground_truth import ground_truth_table
from .vlm_report import token_shares, write_report

__all__ = ["create_video", "resolve_auto_heads", "AUTO"]

#: ``heads="auto"``: each layer's head view chosen from tiny_vlm's ground-truth table (:func:`resolve_auto_heads`)
AUTO = "auto"


def resolve_auto_heads(
    head: Any, layers: Sequence[int], ground_truth: tuple[Any, dict[str, Any]] | None
) -> tuple[dict[int, Any], str]:
    """``({layer: head view}, why)`` for the videos. A fixed ``head`` (``"mean"``, ``"max"``, an index)
    applies to every layer (``why`` empty). ``"auto"``: per layer, the view with the highest attention mass
    on the asked-about object in ``ground_truth`` (:func:`~.vlm_ground_truth.choose_heads`, measured on
    held-out questions, not on this sample), ``why`` giving that number, the mean over heads' and chance;
    without a ground-truth table (a model other than tiny_vlm), the mean over heads, and ``why`` says so."""
    from ..token_video import layer_label
    from .vlm_ground_truth import choose_heads, table_value

    if head != AUTO:
        return {int(i): head for i in layers}, ""
    if ground_truth is None:
        return {int(i): "mean" for i in layers}, (
            "heads=auto: no ground-truth table for this model (tiny_vlm only): every layer shows the mean over heads."
        )
    table, info = ground_truth
    chosen = choose_heads(table, layers)
    parts = [
        f"{layer_label(i)}: {head_label(h)}, object mass {table_value(table, i, h):.3f} "
        f"(mean over heads {table_value(table, i, 'mean'):.3f})"
        for i, h in chosen.items()
    ]
    why = (
        "heads=auto: each layer's video shows the head view whose attention puts the most mass on the asked-about "
        f"object over {info['questions']} held-out questions (ground-truth table below; chance "
        f"{info['random_pixel']:.3f}, the object's share of the image): " + "; ".join(parts) + "."
    )
    return chosen, why


def create_video(
    vlm: VLM,
    sample: dict[str, Any],
    images: Sequence[Any],
    *,
    layer_idx: int | None = None,
    layers: Sequence[int] | None = None,
    start_phrase: str | None = DEFAULT_START_PHRASE,
    heads: Any = "mean",
    max_new_tokens: int = 128,
    mode: str = "generate",
    output_dir: str | Path | None = None,
    overwrite: bool = False,
    fps: int = 4,
    ground_truth: bool | None = None,
    notes: Sequence[str] = (),
    sinks: str = "keep",
    explain_token: int | str | None = None,
    relevance_layers: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Trace one sample and write the run folder: one video per layer, contact sheets,
    ``attention.npz``, ``report.md``; with ``explain_token`` (an answer-token index or word) its
    relevance beside the plain attention (:func:`~vizkit.models.vlm.relevance.answer_relevance`
    over ``relevance_layers``, default all): ``relevance_token<j>.png`` and ``relevance.npz``.
    Every check runs before the folder is created."""
    from ..render import save_figure
    from ..runs import mark_complete, run_folder

    layer_list = resolve_layers(vlm.num_layers, layer_idx, layers)
    head = heads if heads == AUTO else check_head(heads, vlm.num_heads)
    if sinks not in SINK_MODES:
        raise ParameterError(f"sinks={sinks!r}: use {' or '.join(SINK_MODES)}")
    if fps < 1:
        raise ParameterError(f"fps must be positive, got {fps}")
    trace = trace_sample(
        vlm,
        sample["problem"],
        images,
        layer_list,
        mode=mode,
        solution=sample.get("solution"),
        max_new_tokens=max_new_tokens,
        heads="all",
        start_phrase=start_phrase,
    )
    trace.notes = list(notes)
    rel = (
        None
        if explain_token in (None, "")
        else answer_relevance(
            vlm,
            trace,
            explain_token,
            layers=relevance_layers,
            attention_layer=layer_list[0],
            head_fusion=head if head in ("mean", "max") else "mean",
        )
    )
    import pandas as pd

    gt = None
    is_zoo = Path(vlm.path).resolve() == (Path(default_benchmark()[1]).parent).resolve()
    if ground_truth or (ground_truth is None and is_zoo):  # an int: how many test items to draw (default 200)
        drawn = ground_truth if isinstance(ground_truth, int) and not isinstance(ground_truth, bool) else 200
        gt = ground_truth_table(n=drawn)
    layer_heads, head_choice = resolve_auto_heads(head, layer_list, gt)
    out = run_folder(output_dir, "vlm-video", overwrite=overwrite, overwrite_hint="pass --overwrite")
    videos, why = write_layer_videos(trace, layer_list, layer_heads, out, sinks=sinks, fps=fps)
    written: dict[str, Any] = dict(videos)
    trace.notes.extend(why)
    written["attention"] = trace.save(out / "attention.npz")
    if rel is not None:
        fig = relevance_figure(
            trace,
            rel.attention,
            rel.relevance,
            rel.token,
            f"attention (layer {rel.attention_layer}, {head_label(rel.head_fusion)})",
            f"relevance ({len(rel.layers)} layers, {head_label(rel.head_fusion)})",
        )
        written["relevance_figure"] = save_figure(fig, out / f"relevance_token{rel.token}.png")
        written["relevance"] = save_npz(out / "relevance.npz", rel.arrays())
    shares = pd.concat([token_shares(trace, i, layer_heads[i]) for i in layer_list], ignore_index=True)
    if gt is not None:
        written["ground_truth"] = "report.md (table)"
    params = {
        "model": vlm.path,
        "sample": sample.get("id", "?"),
        "layers": layer_list,
        "heads": head
        if head != AUTO
        else f"auto ({', '.join(f'layer {i}: {head_label(layer_heads[i])}' for i in layer_list)})",
        "head_choice": head_choice,
        "start_phrase": start_phrase,
        "mode": mode,
        "max_new_tokens": max_new_tokens,
        "fps": fps,
        "sinks": sinks,
        **({"explain_token": rel.token, "relevance_layers": rel.layers} if rel else {}),
    }
    written["report"] = write_report(out, trace, sample, params, dict(written), shares, gt, rel)
    mark_complete(out, {"layers": layer_list, "frames": len(trace.frame_tokens)})
    return {
        "folder": out,
        "outputs": written,
        "trace": trace,
        "notes": trace.notes,
        "shares": shares,
        "ground_truth": gt,
        "relevance": rel,
        "heads": layer_heads,
    }
