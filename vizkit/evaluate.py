"""Explanations scored over a dataset: the one loop every scenario and the zoo use.

:func:`batched` is the shared loop over samples (chunks, optional progress bar);
:func:`binary_metrics` scores a binary (real/fake) classifier's probabilities as DeepfakeBench
does (AUC, accuracy, EER, AP, video-level AUC); :func:`localization` runs an explanation over
samples with ground-truth masks and scores every map with :mod:`vizkit.metrics` (pointing game at one
or more pixel tolerances, energy inside the mask and, given a score function, the deletion AUC).

Example::

    from vizkit import cam, evaluate, zoo
    bundle = zoo.load("face_forgery_detector")
    fakes = [s for s in zoo.dataset("face_forgery_detector", "test") if s.label == 1]
    res = evaluate.localization(
        fakes, inputs=lambda chunk: torch.stack([bundle.preprocess(s.image) for s in chunk]),
        explain=lambda x, chunk: cam(bundle.model, x, targets=1))
    res.pointing()          # fraction of maps whose peak lies inside the manipulated region
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .metrics import deletion_auc, energy_pointing_game, pointing_game

__all__ = ["batched", "Localization", "localization", "masks_like", "binary_metrics", "binary_metrics_table"]

S = TypeVar("S")


def batched(
    items: Sequence[S], batch_size: int | None = None, *, progress: bool | str = False, unit: str = "sample"
) -> Iterator[tuple[int, Sequence[S]]]:
    """Yield ``(start, chunk)`` over ``items`` in chunks of ``batch_size`` (None: one chunk).

    ``progress``: False, True or a description; draws a tqdm bar counted in units of ``unit``.
    """
    n = len(items)
    size = n if not batch_size or batch_size >= n else int(batch_size)
    if size <= 0:
        return
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=progress if isinstance(progress, str) else None, unit=unit)
    try:
        for start in range(0, n, size):
            chunk = items[start : start + size]
            yield start, chunk
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()


def masks_like(masks: Sequence[Any] | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Boolean masks ``[N, H, W]`` resized (nearest) to ``size`` when they differ."""
    m = (
        masks
        if isinstance(masks, torch.Tensor)
        else torch.from_numpy(np.stack([np.asarray(k, dtype=bool) for k in masks]))
    )
    m = m.bool()
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.interpolate(m[:, None].float(), size=tuple(size), mode="nearest")[:, 0] > 0
    return m


@dataclass
class Localization:
    """Per-sample scores of :func:`localization`.

    ``hits[tolerance]`` ``[N]`` bool (pointing game), ``energy`` ``[N]`` (share of the map
    inside the mask), ``deletion`` ``[N]`` (deletion AUC, when a score function was given),
    ``layers`` the explained layers (from the last batch).
    """

    hits: dict[int, torch.Tensor]
    energy: torch.Tensor
    layers: list[str] = field(default_factory=list)
    deletion: torch.Tensor | None = None

    def pointing(self, tolerance: int = 0) -> float:
        """Fraction of samples whose map peaks inside the mask (within ``tolerance`` px)."""
        return float(self.hits[tolerance].float().mean())

    def summary(self) -> dict[str, float]:
        """Means: pointing per tolerance, energy, deletion AUC."""
        out = {f"pointing_tol{t}" if t else "pointing": float(h.float().mean()) for t, h in self.hits.items()}
        out["energy_in_mask"] = float(self.energy.mean())
        if self.deletion is not None:
            out["deletion_auc"] = float(self.deletion.mean())
        return out


def localization(
    samples: Sequence[S],
    inputs: Callable[[Sequence[S]], torch.Tensor],
    explain: Callable[[torch.Tensor, Sequence[S]], Any],
    *,
    mask: Callable[[S], Any] = lambda s: s.mask,
    tolerances: Sequence[int] = (0,),
    score: Callable[[torch.Tensor], torch.Tensor] | None = None,
    deletion_steps: int = 20,
    batch_size: int | None = 50,
    progress: bool | str = False,
) -> Localization:
    """Explain ``samples`` batch by batch and score each map against its ground-truth mask.

    - ``inputs(chunk) -> [B, C, H, W]`` model inputs of a chunk of samples;
    - ``explain(x, chunk)`` -> an :class:`~vizkit.explain.Explanation` (its ``heatmap``
      ``[B, H, W]``) or a heatmap tensor ``[B, H, W]``;
    - ``mask(sample)`` -> the sample's boolean mask (resized by nearest neighbour to the map);
    - ``score(images) -> [N]``: given, the deletion AUC of each map is measured too.

    ``batch_size`` None explains every sample in one batch.
    """
    if len(samples) == 0:
        raise InputError("localization needs at least one sample")
    hits: dict[int, list[torch.Tensor]] = {int(t): [] for t in tolerances}
    energy, deletion, layers = [], [], []
    for _, chunk in batched(samples, batch_size, progress=progress):
        x = inputs(chunk)
        result = explain(x, chunk)
        heat = (result.heatmap if hasattr(result, "heatmap") else result).detach().cpu()
        layers = list(getattr(result, "layers", layers))
        masks = masks_like([mask(s) for s in chunk], heat.shape[-2:])
        for t in hits:
            hits[t].append(pointing_game(heat, masks, tolerance=t))
        energy.append(energy_pointing_game(heat, masks))
        if score is not None:
            deletion.append(deletion_auc(score, x, heat.to(x.device), steps=deletion_steps).cpu())
    return Localization(
        hits={t: torch.cat(h) for t, h in hits.items()},
        energy=torch.cat(energy),
        layers=layers,
        deletion=torch.cat(deletion) if deletion else None,
    )


def binary_metrics(
    labels: Sequence[int],
    probs: Sequence[float],
    preds: Sequence[int] | None = None,
    videos: Sequence[str | None] | None = None,
) -> dict[str, Any]:
    """AUC, accuracy, EER, AP (scikit-learn) of positive-class probabilities ``probs`` against
    ``labels`` (1 = positive, e.g. fake), the confusion matrix, and the video-level AUC (mean
    probability per video, as DeepfakeBench) when frames carry video names. ``preds`` default to
    ``probs >= 0.5``. EER as DeepfakeBench: the false-positive rate at the ROC point where it is
    closest to the false-negative rate, over every threshold (DeepfakeBench's ``roc_curve`` drops
    collinear points, one of which can be the crossing). One-class sets give None for the
    AUCs / EER (and AP without positives)."""
    import pandas as pd
    from sklearn.metrics import accuracy_score, average_precision_score, confusion_matrix, roc_auc_score, roc_curve

    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=float)
    pred = np.asarray(preds, dtype=int) if preds is not None else (p >= 0.5).astype(int)
    if len(y) == 0:
        raise InputError("no predictions to score: every image failed to load (see the errors listed for them)")
    two = len(set(y.tolist())) == 2
    out: dict[str, Any] = {
        "samples": int(len(y)),
        "real": int((y == 0).sum()),
        "fake": int((y == 1).sum()),
        "accuracy": float(accuracy_score(y, pred)),
    }
    if two:
        fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)  # every threshold: a dropped point can be the EER
        out.update(
            auc=float(roc_auc_score(y, p)),
            eer=float(fpr[np.nanargmin(np.abs((1 - tpr) - fpr))]),
            ap=float(average_precision_score(y, p)),
        )
    else:
        out.update(auc=None, eer=None, ap=float(average_precision_score(y, p)) if y.any() else None)
    cm = confusion_matrix(y, pred, labels=[0, 1])
    out["confusion"] = {
        "true_real_pred_real": int(cm[0, 0]),
        "true_real_pred_fake": int(cm[0, 1]),
        "true_fake_pred_real": int(cm[1, 0]),
        "true_fake_pred_fake": int(cm[1, 1]),
    }
    out["video_auc"], out["videos"] = None, 0
    if videos is not None and any(v for v in videos):
        frame = pd.DataFrame({"video": [v or f"__frame{i}" for i, v in enumerate(videos)], "y": y, "p": p})
        per = frame.groupby("video", sort=True).agg(y=("y", "max"), p=("p", "mean"))
        out["videos"] = int(len(per))
        if per["y"].nunique() == 2:
            out["video_auc"] = float(roc_auc_score(per["y"], per["p"]))
    return out


def binary_metrics_table(metrics: dict[str, Any]) -> Any:
    """The headline metrics of :func:`binary_metrics` as a one-column pandas table (None: n/a)."""
    import pandas as pd

    keys = [
        ("AUC", "auc"),
        ("accuracy", "accuracy"),
        ("EER", "eer"),
        ("AP", "ap"),
        ("video AUC", "video_auc"),
        ("samples", "samples"),
        ("videos", "videos"),
    ]
    return pd.DataFrame(
        {
            "metric": [k for k, _ in keys],
            "value": [
                "n/a"
                if metrics.get(v) is None
                else (round(metrics[v], 4) if isinstance(metrics[v], float) else metrics[v])
                for _, v in keys
            ],
        }
    )
