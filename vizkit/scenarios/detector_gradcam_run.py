"""Scenario 3's run folder read back: a finished evaluation (:func:`load_run` ->
:class:`EvalSummary`: metrics, one prediction per image, unreadable images, the localisation
table, the saved samples) and its test set read again as it was read (:func:`run_dataset`).
Nothing is recomputed: the predictions and maps come from the chunk files the evaluation wrote.
The score: the detector's fake probability per image, and the pointing game of its maps.

Example::

    from vizkit.scenarios.detector_gradcam_run import load_run
    summary = load_run("eval_out")
    summary.metrics["auc"], summary.predictions.head()
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..datasets import EvalDataset
from ..errors import InputError
from ..evaluate import binary_metrics_table, join_score_tables, localization_table
from ..models.detector_layers import LayerInfo
from ..models.load_detector import read_detector_config
from ..runs import chunk_paths, is_complete, read_chunks, written_chunks
from ..zoo.face_test_split import resolve_test_set

__all__ = [
    "EvalSummary",
    "load_run",
    "run_frames",
    "run_localization",
    "run_chance",
    "run_dataset",
    "run_pointing_chance",
]

PREDICTION_COLUMNS = ["index", "path", "label", "prob", "pred", "correct", "video"]


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
        tables = [binary_metrics_table(self.metrics)]
        tables += [self.localization.round(4)] if self.localization is not None else []
        return "\n".join(t.to_string(index=False) for t in tables)


def run_frames(chunks: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The chunks' predictions (one row per image read: index, path, label, prob, pred, correct,
    video) and unreadable images (index, path, error), in chunk order."""
    preds = pd.DataFrame([p for c in chunks for p in c["predictions"]], columns=PREDICTION_COLUMNS)
    errors = pd.DataFrame([e for c in chunks for e in c["errors"]], columns=["index", "path", "error"])
    return preds, errors


def run_localization(chunks: Sequence[Mapping[str, Any]]) -> pd.DataFrame | None:
    """The chunks' localisation scores averaged per layer x method (:func:`vizkit.evaluate.localization_table`;
    ``fakes``: the fakes with masks scored), and when the run scored faithfulness its means over all
    images beside them (``images``, ``road_morf``, ``road_lerf``, ``road_combined``,
    ``confidence_drop``, ``confidence_increase``); None without masks (or faithfulness) or Grad-CAM."""
    loc = localization_table((c["localization"] for c in chunks), count_name="fakes")
    faith = localization_table((c.get("faithfulness", {}) for c in chunks), count_name="images")
    return join_score_tables(loc, faith)


def run_chance(chunks: Sequence[Mapping[str, Any]]) -> dict[str, float] | None:
    """The chance levels of the run's scores, from the chunks: what a map with no information
    scores, averaged over the same images as the maps' scores — ``pointing_game`` and
    ``energy_in_mask`` (the fakes' mask area fraction, :func:`vizkit.metrics.pointing_chance`),
    ``pointing_game_tol1`` (the mask dilated by 1 px), and with faithfulness ROAD and the confidence
    change of a uniform random map per image. None when the chunks hold none (a run without masks,
    or written before chance levels were kept)."""
    out: dict[str, float] = {}
    pointing = [v for c in chunks for v in c.get("chance", {}).get("pointing", [])]
    if pointing:
        out["pointing_game"] = float(np.mean(pointing))
        out["pointing_game_tol1"] = float(np.mean([v for c in chunks for v in c["chance"]["pointing_tol1"]]))
        out["energy_in_mask"] = out["pointing_game"]
    faith = [c["faithfulness_chance"] for c in chunks if c.get("faithfulness_chance")]
    for key in faith[0] if faith else {}:
        if key != "index":
            out[key] = float(np.mean([v for f in faith for v in f[key]]))
    return {k: round(v, 6) for k, v in out.items()} or None


def load_run(run_dir: str | os.PathLike) -> EvalSummary:
    """A finished run read back from its folder (metrics, predictions, samples, localisation)."""
    run = Path(run_dir)
    if not is_complete(run):
        raise InputError(f"{str(run)!r} holds no finished evaluation (no completion marker): run it (again) to finish")
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    n = written_chunks(run)
    chunks = read_chunks(run, n)
    preds, errors = run_frames(chunks)
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
        run_localization(chunks),
        samples,
        layers,
        methods,
        report if report.is_file() else None,
    )


def run_dataset(run_dir: str | os.PathLike) -> EvalDataset:
    """The test set of a run, read again as the run read it: its ``test_dataset`` and
    ``max_samples`` with the dataset keys of its detector YAML and test config (when those files
    still exist)."""
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text(encoding="utf-8"))
    det, test = manifest.get("detector_path"), manifest.get("test_config")
    test = test if test and Path(test).is_file() else None
    if det and Path(det).is_file():
        config = read_detector_config(det, test).extra
    else:
        config = read_detector_config(test).extra if test else {}
    return resolve_test_set(manifest["test_dataset"], config, manifest["max_samples"] or None)


def run_pointing_chance(run_dir: str | os.PathLike, tolerance: int = 0) -> float:
    """The pointing game's chance level on a finished run's fakes with masks, with the mask dilated
    by ``tolerance`` pixels (:func:`vizkit.metrics.pointing_chance`, at the detector's input size):
    the share of the image a map with no information hits. The masks are read again from the run's
    test set."""
    import torch

    from ..metrics import pointing_chance

    metrics = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
    size = (int(metrics["input_size"]),) * 2
    ds = run_dataset(run_dir)
    masks = [ds.mask(i, size) for i in range(len(ds)) if ds.items[i].label == 1]
    masks = [m for m in masks if m is not None and m.any()]
    if not masks:
        raise InputError(f"{str(run_dir)!r}: no fake with a manipulation mask, no chance level")
    return float(pointing_chance(torch.from_numpy(np.stack(masks)), tolerance).mean())
