"""Explanations scored over a dataset: the one loop every scenario and the zoo use.

:func:`batched` is the shared loop over samples (chunks, optional progress bar);
:func:`cam_in_parts` is :func:`vizkit.cam` over a batch in parts of a few images (bounded memory);
:func:`binary_metrics` scores a binary (real/fake) classifier's probabilities as DeepfakeBench
does (AUC, accuracy, EER, AP, video-level AUC); :func:`localization` runs an explanation over
samples with ground-truth masks and scores every map with :mod:`vizkit.metrics` (pointing game at one
or more pixel tolerances, energy inside the mask and, given a score function, the deletion AUC);
:func:`score_maps` scores maps already computed the same way, and :func:`localization_table`
averages such scores kept in parts (one per chunk of a resumable run) per layer and method.

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

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .metrics import deletion_auc, energy_pointing_game, pointing_game

if TYPE_CHECKING:
    import pandas as pd

    from .explain import Explanation

__all__ = [
    "batched",
    "cam_in_parts",
    "Localization",
    "localization",
    "score_maps",
    "localization_table",
    "masks_like",
    "binary_metrics",
    "binary_metrics_table",
]

S = TypeVar("S")


def batched(
    items: Sequence[S], batch_size: int | None = None, *, progress: bool | str = False, unit: str = "sample"
) -> Iterator[tuple[int, Sequence[S]]]:
    """Yield ``(start, chunk)`` over ``items`` in chunks of ``batch_size`` (None: one chunk).

    ``progress``: False, True or a description; draws a tqdm bar counted in ``unit``s.
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


def cam_in_parts(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: Any = None,
    *,
    layers: Any = "auto",
    method: str = "gradcam",
    part_size: int = 2,
    layout: Any = None,
) -> Explanation:
    """:func:`vizkit.cam` of ``inputs`` ``[B, C, H, W]`` in parts of ``part_size`` images, the
    parts' explanations concatenated along the batch (``heatmap`` ``[B, H, W]``, ``layer_maps``
    ``{layer: [B, h, w]}``, ``layer_heatmaps``, ``scores``, ``output``, ``targets``). The
    activations kept for the backward scale with the part, so memory stays bounded; every map is
    per image (the combined heatmap is normalised per image), so the result equals one call's.
    ``targets``: as :func:`vizkit.cam`; one per image (a 1-D tensor or a list) is split with the
    images. ``layers``, ``method``, ``layout``: passed to :func:`vizkit.cam`."""
    from .explain import Explanation, cam  # here: importing vizkit.evaluate loads no capture machinery

    if part_size < 1:
        raise InputError(f"part_size must be at least 1 image, got {part_size}")
    if len(inputs) == 0:
        raise InputError("cam_in_parts needs at least one image")
    per_image = isinstance(targets, (list, tuple)) or (isinstance(targets, torch.Tensor) and targets.ndim > 0)
    exps = [
        cam(model, x, targets[s : s + len(x)] if per_image else targets, layers=layers, method=method, layout=layout)
        for s, x in batched(inputs, part_size)
    ]
    if len(exps) == 1:
        return exps[0]
    first = exps[0]

    def cat(get: Callable[[Explanation], torch.Tensor | None]) -> torch.Tensor | None:
        parts = [get(e) for e in exps]
        return None if any(p is None for p in parts) else torch.cat(parts)  # type: ignore[arg-type]

    return Explanation(
        heatmap=cat(lambda e: e.heatmap),
        layer_maps={n: cat(lambda e, n=n: e.layer_maps[n]) for n in first.layer_maps},
        layer_heatmaps={n: cat(lambda e, n=n: e.layer_heatmaps[n]) for n in first.layer_heatmaps},
        scores=cat(lambda e: e.scores),
        layers=list(first.layers),
        method=first.method,
        targets=cat(lambda e: e.targets),
        output=cat(lambda e: e.output),
    )


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

    def record(self, index: Sequence[int], digits: int = 6) -> dict[str, list]:
        """The per-sample scores as JSON lists, for a part of :func:`localization_table`:
        ``{"index": index, "hit": [bool], "hit_tol<t>": [bool] per tolerance t > 0, "energy":
        [float rounded to digits]}`` (``"deletion"`` too when measured)."""
        out: dict[str, list] = {"index": [int(i) for i in index]}
        out.update({f"hit_tol{t}" if t else "hit": h.tolist() for t, h in self.hits.items()})
        out["energy"] = [round(float(e), digits) for e in self.energy]
        if self.deletion is not None:
            out["deletion"] = [round(float(d), digits) for d in self.deletion]
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
        part = score_maps(heat, [mask(s) for s in chunk], tolerances)
        for t in hits:
            hits[t].append(part.hits[t])
        energy.append(part.energy)
        if score is not None:
            deletion.append(deletion_auc(score, x, heat.to(x.device), steps=deletion_steps).cpu())
    return Localization(
        hits={t: torch.cat(h) for t, h in hits.items()},
        energy=torch.cat(energy),
        layers=layers,
        deletion=torch.cat(deletion) if deletion else None,
    )


def score_maps(
    heatmaps: torch.Tensor, masks: Sequence[Any] | torch.Tensor, tolerances: Sequence[int] = (0,)
) -> Localization:
    """Maps already computed, ``[N, H, W]``, scored against their ground-truth masks (``[N, h, w]``
    booleans, a tensor or N arrays, resized by nearest neighbour to the maps): the pointing game
    at each pixel tolerance and the share of each map's energy inside its mask (what
    :func:`localization` measures per batch)."""
    heat = heatmaps.detach().cpu()
    if len(heat) == 0 or len(heat) != len(masks):
        raise InputError(
            f"score_maps needs one mask per map and at least one map: {len(heat)} maps, {len(masks)} masks"
        )
    m = masks_like(masks, heat.shape[-2:])
    hits = {int(t): pointing_game(heat, m, tolerance=int(t)) for t in tolerances}
    return Localization(hits=hits, energy=energy_pointing_game(heat, m))


def localization_table(
    parts: Iterable[Mapping[str, Mapping[str, Mapping[str, Sequence[Any]]]]], count_name: str = "samples"
) -> pd.DataFrame | None:
    """Mean localisation scores per (layer, method) over scores kept in parts (e.g. one per chunk
    of a resumable run), each ``{method: {layer: record}}`` with ``record`` as
    :meth:`Localization.record` writes it. One row per (layer, method) in order of first
    appearance: ``layer``, ``method``, ``count_name`` (the samples scored), then the mean of each
    score list — ``hit`` as ``pointing_game``, ``hit_tol<t>`` as ``pointing_game_tol<t>``,
    ``energy`` as ``energy_in_mask``, ``deletion`` as ``deletion_auc``. None when no part holds a
    score."""
    import pandas as pd

    names = {"hit": "pointing_game", "energy": "energy_in_mask", "deletion": "deletion_auc"}
    acc: dict[tuple[str, str], dict[str, list]] = {}
    for part in parts:
        for method, by_layer in part.items():
            for layer, record in by_layer.items():
                lists = acc.setdefault((layer, method), {})
                for key, values in record.items():
                    if key != "index":
                        lists.setdefault(key, []).extend(values)
    if not acc:
        return None
    rows = []
    for (layer, method), lists in acc.items():
        row: dict[str, Any] = {"layer": layer, "method": method, count_name: len(next(iter(lists.values()), []))}
        for key, values in lists.items():
            row[names.get(key, key.replace("hit_", "pointing_game_"))] = float(np.mean(values))
        rows.append(row)
    return pd.DataFrame(rows)


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
