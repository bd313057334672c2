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
from ..evaluate import binary_metrics, binary_metrics_table
from ..figures.detector_eval import score_distribution_figure, worst_mistakes_figure
from ..figures.layer_comparison import comparison_figure
from ..io import write_csv, write_json, write_text
from ..metrics import FAITHFULNESS_SCORES
from ..models.detector_layers import layer_table
from ..render import display_image
from ..report import Report, metric_winners
from ..runs import chunk_paths, mark_complete, read_chunk_arrays, read_chunks, written_chunks
from .detector_gradcam_params import LABEL_NAMES, EvalContext
from .detector_gradcam_run import PREDICTION_COLUMNS, EvalSummary, run_frames, run_localization

__all__ = ["select_samples", "metadata_text", "sample_title", "finish_run", "write_report"]


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


def _confidence(row: Mapping[str, Any]) -> float:
    """The predicted class's probability of a prediction row (``prob`` is the fake one)."""
    return row["prob"] if row["pred"] == 1 else 1 - row["prob"]


def sample_title(row: Mapping[str, Any]) -> str:
    """A prediction row as a title: true and predicted label, the predicted class's probability,
    correct or WRONG."""
    verdict = "correct" if row["correct"] else "WRONG"
    return (
        f"true {LABEL_NAMES[int(row['label'])]}, predicted {LABEL_NAMES[int(row['pred'])]} "
        f"(p = {_confidence(row):.3f}, {verdict})"
    )


def _save_sample(
    run: Path,
    i: int,
    row: Mapping[str, Any],
    display: np.ndarray,
    maps: Mapping[str, np.ndarray],
    method: str,
    dataset: str,
) -> Path:
    """Sample folder ``i``: one overlay per layer, the comparison figure, then the metadata."""
    folder = run / f"sample{i}"
    meta = folder / f"sample{i}_metadata.txt"
    for layer, m in maps.items():
        render.save_overlay(display, m, folder / f"gradcam_{layer}_sample{i}.png")
    render.save_figure(comparison_figure(display, maps, sample_title(row), method), folder / "gradcam_comparison.png")
    conf = _confidence(row)
    write_text(meta, metadata_text(int(row["label"]), int(row["pred"]), float(conf), dataset))  # last: marks it done
    return folder


def _worst_mistakes(summary: EvalSummary, dataset: EvalDataset, size: int) -> plt.Figure | None:
    """The run's most confident mistakes with the first method's layers-combined maps (None: no
    Grad-CAM or no mistake)."""
    if not summary.methods or summary.predictions["correct"].astype(bool).all():
        return None
    maps = read_chunk_arrays(summary.run_dir, written_chunks(summary.run_dir))
    method = summary.methods[0]
    layer_maps = {li.name: maps[f"{method}|{li.name}"] for li in summary.layers}
    return worst_mistakes_figure(summary.predictions, layer_maps, dataset.image, size, method)


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


def _render_unit(ctx: EvalContext, payload: tuple[str, int, Any, str], run: Path) -> dict[str, Any]:
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
    preds = pd.DataFrame(row, columns=PREDICTION_COLUMNS)
    path = run / "figures" / f"{kind}.png"
    if kind == "score_distribution":
        render.save_figure(score_distribution_figure(preds), path)
    else:
        empty = pd.DataFrame()
        summary = EvalSummary(run, {}, preds, empty, None, empty, ctx.layers, method.split(","))
        render.save_figure(_worst_mistakes(summary, ctx.dataset, ctx.detector.size), path)
    return {"figure": str(path.relative_to(run))}


def write_report(summary: EvalSummary, ctx: EvalContext, figures: Mapping[str, Path] | None = None) -> Path:
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
    rep.heading("Metrics").table(binary_metrics_table(m), index=False)
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
    rep.figure(figures["score_distribution"], "fake probability per true class", relative_to=run)
    if summary.methods:
        rep.heading("Layers").table(layer_table(ctx.layers), index=False)
    if summary.localization is not None:
        rep.heading("Does the map find the manipulation? (fakes with masks)")
        rep.paragraph(
            "Pointing game: the map's maximum lies inside the manipulated region (tol1: within 1 px); energy: "
            "the share of the map inside it. One row per layer and method, plus the layers combined."
        )
        loc = summary.localization
        if "road_combined" in loc:
            rep.paragraph(
                "Faithfulness (all images, the explained class's logit): ROAD replaces the most (MoRF) or least "
                "(LeRF) relevant pixels at each percentile by noisy linear imputation and averages the score "
                "change (MoRF lower, LeRF and combined = (LeRF - MoRF) / 2 higher is better); confidence_drop / "
                "confidence_increase: the score lost / the share of images gaining score when the image is "
                "weighted by its map."
            )
        rep.table(loc, index=False)
        if "road_combined" in loc:
            scores = {"pointing_game": "higher", "energy_in_mask": "higher", **FAITHFULNESS_SCORES}
            rep.paragraph(metric_winners(loc, ["method", "layer"], scores))
        if "pointing_game" in loc and loc["pointing_game"].notna().any():
            best = loc.loc[loc["pointing_game"].idxmax()]
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
