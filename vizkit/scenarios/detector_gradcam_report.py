"""Scenario 3's outputs from a run's chunk files: ``metrics.json``, ``predictions.csv``,
``errors.csv``, ``localization.csv``, the sample folders (seed 002's layout: one overlay per
layer, ``gradcam_comparison.png``, ``sample{i}_metadata.txt``), the report's figures and
``report.md`` (:func:`finish_run`, :func:`write_report`). The score: the detector's fake
probability (AUC, accuracy, EER, AP) and how well its maps point at the manipulation.

Example::

    from vizkit.scenarios.detector_gradcam_report import metadata_text, select_samples
    chosen = select_samples(summary.predictions, 10)      # the first 10 mistakes, dataset order
    metadata_text(1, 0, 0.7234, "FaceForensics++")        # "True Label: 1 (Fake)\\n..."
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import render
from ..batch import BatchMapper, BatchRun, Job, Unit, records
from ..datasets import EvalDataset
from ..evaluate import binary_metrics
from ..figures.detector_eval import score_distribution_figure, worst_mistakes_figure
from ..figures.layer_comparison import comparison_figure, layer_label
from ..io import write_csv, write_json, write_text
from ..metrics import FAITHFULNESS_SCORES
from ..render import display_image
from ..report import Report
from ..runs import chunk_paths, mark_complete, read_chunk_arrays, read_chunks, written_chunks
from .detector_gradcam_params import LABEL_NAMES, EvalContext
from .detector_gradcam_run import PREDICTION_COLUMNS, EvalSummary, run_chance, run_frames, run_localization
from .detector_gradcam_sanity import RANDOMISATION_COUNT, randomisation_scores
from .detector_gradcam_tables import (
    CHANCE_MARGIN,
    METRIC_DEFINITIONS,
    faithfulness_sentence,
    layer_key,
    layer_scores,
    metrics_with_chance,
    score_table,
    shown_layer,
)

__all__ = ["select_samples", "metadata_text", "sample_title", "finish_run", "write_report"]


def select_samples(predictions: pd.DataFrame, count: int, save_all: bool = False) -> pd.DataFrame:
    """The samples whose maps are saved: the first ``count`` wrong predictions in dataset order (the
    first ``count`` predictions of any kind with ``save_all``)."""
    rows = predictions if save_all else predictions[~predictions["correct"].astype(bool)]
    return rows.sort_values("index").head(count).reset_index(drop=True)


def metadata_text(label: int, pred: int, confidence: float, dataset: str, fake_probability: float | None = None) -> str:
    """The seed's ``sample{i}_metadata.txt``: true and predicted label, the predicted class's
    probability (4 decimals), whether it is correct, the dataset; with ``fake_probability`` a last
    line ``Fake probability p(fake): ...`` (the number predictions.csv and samples.csv list)."""
    text = (
        f"True Label: {label} ({LABEL_NAMES[label]})\nPredicted Label: {pred} ({LABEL_NAMES[pred]})\n"
        f"Confidence: {confidence:.4f}\nCorrect: {label == pred}\nDataset: {dataset}\n"
    )
    return text + (f"Fake probability p(fake): {fake_probability:.4f}\n" if fake_probability is not None else "")


def _confidence(row: Mapping[str, Any]) -> float:
    """The predicted class's probability of a prediction row (``prob`` is the fake one)."""
    return row["prob"] if row["pred"] == 1 else 1 - row["prob"]


def sample_title(row: Mapping[str, Any]) -> str:
    """A prediction row as a title: true and predicted label, the fake probability ``prob`` as
    ``p(fake)`` (the number samples.csv lists), correct or WRONG."""
    verdict = "correct" if row["correct"] else "WRONG"
    return (
        f"true {LABEL_NAMES[int(row['label'])]}, predicted {LABEL_NAMES[int(row['pred'])]}, "
        f"p(fake) = {float(row['prob']):.3f} ({verdict})"
    )


def _save_sample(
    run: Path,
    i: int,
    row: Mapping[str, Any],
    display: np.ndarray,
    maps: Mapping[str, np.ndarray],
    method: str,
    dataset: str,
    scores: Mapping[str, float] | None = None,
    mask: np.ndarray | None = None,
) -> Path:
    """Sample folder ``i``: one overlay per layer, the comparison figure (``scores``: the run's
    pointing game per layer for ``method``; ``mask``: the manipulation mask at display size,
    outlined), then the metadata."""
    folder = run / f"sample{i}"
    meta = folder / f"sample{i}_metadata.txt"
    for layer, m in maps.items():
        render.save_overlay(display, m, folder / f"gradcam_{layer}_sample{i}.png", mask=mask)
    title = f"sample{i} (#{int(row['index'])}): {sample_title(row)}"
    fig = comparison_figure(display, maps, title, method, scores=scores or None, mask=mask)
    render.save_figure(fig, folder / "gradcam_comparison.png")
    conf = _confidence(row)
    text = metadata_text(int(row["label"]), int(row["pred"]), float(conf), dataset, float(row["prob"]))
    write_text(meta, text)  # last: marks it done
    return folder


def _worst_mistakes(summary: EvalSummary, dataset: EvalDataset, size: int) -> plt.Figure | None:
    """The run's most confident mistakes with the first method's map at the layer this run's
    pointing game chooses (:func:`shown_layer`; the layers combined when the set has no masks), the
    masks outlined (None: no Grad-CAM or no mistake)."""
    if not summary.methods or summary.predictions["correct"].astype(bool).all():
        return None
    maps = read_chunk_arrays(summary.run_dir, written_chunks(summary.run_dir))
    method = summary.methods[0]
    layer_maps = {li.name: maps[f"{method}|{li.name}"] for li in summary.layers}
    chosen = shown_layer(summary.localization, method)
    why = "" if chosen is None else f"the best pointing game of this run: {chosen[1]:.0%} of the fakes"
    return worst_mistakes_figure(
        summary.predictions,
        layer_maps,
        dataset.image,
        size,
        method,
        shown=None if chosen is None else chosen[0],
        why=why or "no masks to choose a layer by",
        mask=lambda i, s: dataset.mask(i, (s, s)) if dataset.has_masks else None,
    )


def finish_run(
    ctx: EvalContext, batch: BatchRun, n: int, report: bool, mapper: BatchMapper, chunk_job: Job
) -> EvalSummary:
    """The outputs of a run whose ``n`` chunks are written: metrics, tables, the sample folders
    and report figures (units of ``mapper``, run with ``chunk_job``'s context), ``report.md``,
    the units' index and the completion marker."""
    run = batch.folder
    chunks = read_chunks(run, n)
    preds, errors = run_frames(chunks)
    metrics = binary_metrics(
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
    loc = run_localization(chunks)
    chance = run_chance(chunks)
    if chance is not None:
        metrics["chance"] = chance
    if ctx.args.faithfulness and ctx.methods:  # the randomisation check (Adebayo et al. 2018), first images
        count = min(RANDOMISATION_COUNT, ctx.args.faithfulness_samples or RANDOMISATION_COUNT)
        metrics["randomisation"] = randomisation_scores(ctx, count)
        metrics["randomisation_images"] = count
    if ctx.args.faithfulness and loc is not None:  # ROAD and confidence change per method|layer, over all images
        metrics["faithfulness"] = {
            f"{r['method']}|{r['layer']}": {k: round(float(r[k]), 6) for k in FAITHFULNESS_SCORES}
            for r in records(loc)
            if r.get("images") == r.get("images")  # rows with faithfulness scores (not NaN)
        }
    write_json(run / "metrics.json", metrics)
    write_csv(
        run / "predictions.csv",
        preds[["path", "label", "prob", "pred", "correct"]]
        .rename(columns={"prob": "fake_probability", "pred": "prediction"})
        .assign(fake_probability=lambda d: d["fake_probability"].round(6)),
    )
    write_csv(run / "errors.csv", errors)
    if loc is not None:
        write_csv(run / "localization.csv", loc.round(6))
    samples = pd.DataFrame(columns=["sample", "index", "path", "label", "pred", "prob", "correct"])
    units = []  # the sample folders and the report's figures: units, rendered where the units run
    rows = records(preds)
    if ctx.methods:
        chosen = select_samples(preds, ctx.args.gradcam_samples, ctx.args.save_all_predictions)
        scores = layer_scores(loc, ctx.methods[0])
        units += [
            Unit(f"sample{i}", ("sample", i, row, ctx.methods[0], scores)) for i, row in enumerate(records(chosen))
        ]
        samples = chosen.assign(sample=[f"sample{i}" for i in range(len(chosen))])[samples.columns]
        write_csv(run / "samples.csv", samples)
    if report:
        units.append(Unit("figure-score_distribution", ("score_distribution", 0, rows, "", None)))
        if ctx.methods and not preds["correct"].astype(bool).all():
            table = None if loc is None else records(loc)
            units.append(Unit("figure-worst_mistakes", ("worst_mistakes", 0, rows, ",".join(ctx.methods), table)))
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


def _render_unit(ctx: EvalContext, payload: tuple[str, int, Any, str, Any], run: Path) -> dict[str, Any]:
    """A unit that renders from the written chunks: sample folder ``i`` (``row``: its prediction,
    ``extra``: the run's pointing game per layer) or one of the report's figures (``row``: all
    predictions, ``extra``: the localisation table's records or None)."""
    kind, i, row, method, extra = payload
    if kind == "sample":
        k = int(row["index"]) // ctx.args.batch_size
        with np.load(chunk_paths(run, k)[1]) as z:
            j = list(z["index"]).index(int(row["index"]))
            layer_maps = {li.name: z[f"{method}|{li.name}"][j] for li in ctx.layers}
        display = display_image(ctx.dataset.image(int(row["index"]), ctx.detector.read), ctx.detector.size)
        mask = ctx.dataset.mask(int(row["index"]), display.shape[:2]) if ctx.dataset.has_masks else None
        mask = mask if mask is not None and mask.any() else None  # a real's empty mask: no outline, no note
        _save_sample(run, i, row, display, layer_maps, method, ctx.dataset.name, extra, mask)
        return {"samples": 1, "index": int(row["index"])}
    preds = pd.DataFrame(row, columns=PREDICTION_COLUMNS)
    path = run / "figures" / f"{kind}.png"
    if kind == "score_distribution":
        render.save_figure(score_distribution_figure(preds), path)
    else:
        empty = pd.DataFrame()
        loc = None if extra is None else pd.DataFrame(extra)
        summary = EvalSummary(run, {}, preds, empty, loc, empty, ctx.layers, method.split(","))
        render.save_figure(_worst_mistakes(summary, ctx.dataset, ctx.detector.size), path)
    return {"figure": str(path.relative_to(run))}


def write_report(summary: EvalSummary, ctx: EvalContext, figures: Mapping[str, Path] | None = None) -> Path:
    """``report.md``: metrics with their definitions and chance levels, confusion matrix, score
    distributions, the layer key ("layer k" -> module), the localisation / faithfulness table per
    layer x method with its chance row and flags and what its numbers say, worst mistakes, the
    saved samples. ``figures``: the figures already rendered (``score_distribution``,
    ``worst_mistakes``: their paths); None: rendered here."""
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
    rep.heading("Metrics").table(metrics_with_chance(m), index=False)
    rep.bullets(METRIC_DEFINITIONS)
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
        worst = _worst_mistakes(summary, ctx.dataset, ctx.detector.size)
        if worst is not None:
            figures["worst_mistakes"] = render.save_figure(worst, fig_dir / "worst_mistakes.png")
    rep.figure(figures["score_distribution"], "p(fake) per true class; dashed: the 0.5 threshold", relative_to=run)
    if summary.methods:
        rep.heading("Layers").paragraph("Layers are numbered from 0 (the first transformer block), as in every figure.")
        rep.table(layer_key(ctx.layers), index=False)
    chosen = shown_layer(summary.localization, summary.methods[0]) if summary.methods else None
    if summary.localization is not None:
        _score_section(rep, summary)
    if figures.get("worst_mistakes") is not None:
        rep.heading("Worst mistakes")
        shown = (
            f"{summary.methods[0]} at {layer_label(chosen[0])}, chosen because it has this run's best pointing game "
            f"({chosen[1]:.0%} of the fakes)"
            if chosen is not None
            else "the layers combined (no masks to choose a layer by)"
        )
        rep.figure(
            figures["worst_mistakes"],
            f"most confident wrong predictions with p(fake); map: {shown}; cyan: the manipulated region",
            relative_to=run,
        )
    if len(summary.samples):
        rep.heading("Saved samples")
        rep.paragraph(
            f"{len(summary.samples)} sample folder(s) with one overlay per layer, gradcam_comparison.png (each "
            "layer's pointing game in its title, the best marked) and the metadata; samples.csv maps each to its "
            "image and lists its p(fake)."
        )
    return rep.write(run / "report.md")


def _score_section(rep: Report, summary: EvalSummary) -> None:
    """The localisation / faithfulness table of ``summary`` with its chance row, flags and sentences."""
    m, loc = summary.metrics, summary.localization
    rep.heading("Does the map find the manipulation? Is it faithful? (fakes with masks)")
    rep.paragraph(
        "Pointing game: the map's maximum lies inside the manipulated region (tol1: within 1 px); energy: the "
        "share of the map inside it. Their chance level (the row *random map*) is the mask's share of the image: "
        "a map that knows nothing hits the region that often. One row per layer and method, plus the layers "
        f"combined; *at or below chance* names the scores no better than chance (within {CHANCE_MARGIN})."
    )
    if "road_combined" in loc:
        rep.paragraph(
            "Faithfulness (all images, the explained class's logit): ROAD replaces the most (MoRF) or least "
            "(LeRF) relevant pixels at each percentile by noisy linear imputation and averages the score "
            "change (MoRF lower, LeRF and combined = (LeRF - MoRF) / 2 higher is better); confidence_drop / "
            "confidence_increase: the score lost / the share of images gaining score when the image is "
            "weighted by its map. Their chance level: the same scores of a uniform random map per image. "
            "randomisation_spearman: the rank correlation of each map with the map after every weight of the "
            f"detector is re-initialised, top-down (cascading, on the first {m.get('randomisation_images')} images): "
            "0 = the map depends on "
            "the weights, near 1 = it only shows the input."
        )
    table = score_table(loc, m.get("chance"), m.get("randomisation"))
    rep.table(table, index=False)
    low = [f"{r['method']} @ {r['layer']}" for _, r in table.iterrows() if r.get("at or below chance")]
    if low:
        rep.paragraph(f"At or below chance on at least one score: {', '.join(low)}.")
    rep.paragraph(faithfulness_sentence(table))
