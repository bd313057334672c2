"""Explanations scored over a dataset: the one loop every scenario and the zoo use.

:func:`batched` is the shared loop over samples (chunks, optional progress bar), and
:func:`predicted_classes` a classifier's predictions over it; :func:`select_indices` picks samples of a
labelled set (one per class, given indices, the misclassified first);
:func:`cam_in_parts` is :func:`vizkit.cam` over a batch in parts of a few images (bounded memory);
:func:`binary_metrics` scores a binary (real/fake) classifier's probabilities as DeepfakeBench
does (AUC, accuracy, EER, AP, video-level AUC); :func:`localization` runs an explanation over
samples with ground-truth masks and scores every map with :mod:`vizkit.metrics` (pointing game at one
or more pixel tolerances, energy inside the mask and, given a score function, the deletion AUC);
:func:`config_maps` and :func:`config_scores` do the same for several map configurations (head
fusions, layer choices ...) computed together; :func:`pointing_by_method` tabulates it for several
explanation methods; :func:`score_maps` scores maps already computed the same way, and
:func:`localization_table` averages such scores kept in parts (one per chunk of a resumable run) per
layer and method; :func:`faithfulness_record` keeps ROAD and the confidence change of maps
(:func:`vizkit.metrics.faithfulness_scores`) in the same form, and :func:`join_score_tables` puts
both averages side by side.

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

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError, VizkitError
from .metrics import deletion_auc, energy_pointing_game, faithfulness_scores, pointing_game
from .state import model_device
from .stats import map_entropy

if TYPE_CHECKING:
    import pandas as pd

    from .explain import Explanation

__all__ = [
    "batched",
    "predicted_classes",
    "SELECTIONS",
    "select_indices",
    "cam_in_parts",
    "Localization",
    "localization",
    "score_maps",
    "localization_table",
    "faithfulness_record",
    "join_score_tables",
    "pointing_by_method",
    "masks_like",
    "config_maps",
    "config_scores",
    "binary_metrics",
    "binary_metrics_table",
]

S = TypeVar("S")
K = TypeVar("K", bound=Hashable)


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


def predicted_classes(
    model: torch.nn.Module,
    images: Sequence[Any],
    preprocess: Callable[[Any], torch.Tensor],
    batch_size: int | None = 1000,
) -> torch.Tensor:
    """The class each image is predicted as, ``[N]`` int64 on the CPU: ``preprocess(image)``
    ``[C, H, W]`` stacked ``batch_size`` at a time, ``argmax`` of the model's ``[B, classes]``
    output, without gradients."""
    device = model_device(model)
    preds = []
    with torch.no_grad():
        for _, chunk in batched(images, batch_size):
            x = torch.stack([preprocess(im) for im in chunk])
            preds.append(model(x.to(device)).argmax(-1).cpu())
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


#: the ways :func:`select_indices` picks samples
SELECTIONS = ("one_per_class", "indices", "misclassified_first")


def select_indices(
    labels: Sequence[int] | np.ndarray,
    num_samples: int,
    selection: str = "one_per_class",
    indices: Sequence[int] | None = None,
    predictions: Callable[[], Any] | None = None,
) -> list[int]:
    """Indices of ``num_samples`` samples of a labelled set (``labels`` ``[N]``, classes 0..K-1).

    ``one_per_class``: the first sample of each class in turn (0, 1, 2, ..., 0, 1, ...: the
    second of each class once the first are used); ``indices``: the given ``indices``, checked
    against ``N`` (``num_samples`` is then ignored); ``misclassified_first``: the samples whose
    prediction (``predictions()`` ``[N]``, called only for this selection) differs from the label,
    in order, then the others.
    """
    labels = np.asarray(labels)
    if selection not in SELECTIONS:
        raise VizkitError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    if selection == "indices":
        if not indices:
            raise VizkitError("selection='indices' needs a non-empty list of test-set indices")
        bad = [i for i in indices if not 0 <= int(i) < len(labels)]
        if bad:
            raise VizkitError(f"test-set indices {bad} are out of range 0..{len(labels) - 1}")
        return [int(i) for i in indices]
    if num_samples < 1:
        raise VizkitError(f"num_samples must be positive, got {num_samples}")
    if selection == "one_per_class":
        firsts = {c: iter(np.flatnonzero(labels == c)) for c in range(int(labels.max()) + 1)}
        return [int(next(firsts[k % len(firsts)])) for k in range(num_samples)]
    if predictions is None:
        raise VizkitError("selection='misclassified_first' needs the predictions")
    wrong = torch.nonzero(torch.as_tensor(predictions()) != torch.from_numpy(np.array(labels))).flatten().tolist()
    right = [i for i in range(len(labels)) if i not in set(wrong)]
    return (wrong + right)[:num_samples]


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


def config_maps(
    explain: Callable[[torch.Tensor], Mapping[K, torch.Tensor]], inputs: torch.Tensor, batch_size: int | None = 50
) -> dict[K, torch.Tensor]:
    """Every configuration's maps of ``inputs`` ``[N, C, H, W]``, batch by batch: ``explain(x)``
    returns ``{config: [b, H, W]}`` for a batch ``x`` (every configuration from one call, e.g. from
    one cached pass). Returns ``{config: [N, H, W]}`` in the order ``explain`` gives them."""
    out: dict[K, list[torch.Tensor]] = {}
    for start, chunk in batched(range(len(inputs)), batch_size):
        for key, maps in explain(inputs[start : start + len(chunk)]).items():
            out.setdefault(key, []).append(maps)
    return {key: torch.cat(v) for key, v in out.items()}


def config_scores(
    samples: Sequence[S],
    inputs: torch.Tensor,
    maps: Mapping[K, torch.Tensor],
    score: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    mask: Callable[[S], Any] = lambda s: s.mask,
    deletion_steps: int = 20,
    batch_size: int | None = 50,
) -> dict[K, dict[str, float]]:
    """:func:`localization` of precomputed maps, per configuration: ``samples`` with masks, their
    model inputs ``inputs`` ``[N, C, H, W]`` and ``maps[config]`` ``[N, H, W]`` (e.g. from
    :func:`config_maps`). Per config: ``pointing`` (fraction of peaks inside the mask),
    ``energy_in_mask`` (mean share of the map inside it), ``deletion_auc`` (mean, given ``score``)
    and ``entropy`` (mean :func:`vizkit.stats.map_entropy` of the maps, nats, NaN maps skipped)."""
    positions = list(range(len(samples)))
    out: dict[K, dict[str, float]] = {}
    for key, m in maps.items():
        loc = localization(
            positions,
            lambda chunk: inputs[list(chunk)],
            lambda x, chunk, m=m: m[list(chunk)],
            mask=lambda i: mask(samples[i]),
            score=score,
            deletion_steps=deletion_steps,
            batch_size=batch_size,
        )
        out[key] = {"pointing": loc.pointing(), "energy_in_mask": float(loc.energy.mean())}
        if loc.deletion is not None:
            out[key]["deletion_auc"] = float(loc.deletion.mean())
        out[key]["entropy"] = float(map_entropy(m).nanmean())
    return out


def pointing_by_method(
    samples: Sequence[S],
    inputs: Callable[[Sequence[S]], torch.Tensor],
    explain: Callable[[torch.Tensor, Sequence[S], str], Any],
    methods: Sequence[str],
    batch_size: int | None = 50,
) -> Any:
    """:func:`localization` of ``samples`` once per method: ``explain(x, chunk, method)`` like
    :func:`localization`'s ``explain``, ``inputs`` and the samples' ``mask`` as there. A pandas table,
    one row per method: ``method``, ``layer`` (the explained layers, comma-joined), ``scenes``,
    ``hits`` (maps peaking inside the mask), ``pointing_accuracy`` (hits / scenes) and
    ``energy_in_mask`` (the mean share of each map inside its mask)."""
    import pandas as pd

    rows = []
    for method in methods:
        res = localization(samples, inputs, lambda x, chunk, m=method: explain(x, chunk, m), batch_size=batch_size)
        hits = res.hits[0]
        rows.append(
            {
                "method": method,
                "layer": ", ".join(res.layers),
                "scenes": int(hits.numel()),
                "hits": int(hits.sum()),
                "pointing_accuracy": res.pointing(),
                "energy_in_mask": float(res.energy.mean()),
            }
        )
    return pd.DataFrame(rows)


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


def faithfulness_record(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    maps: torch.Tensor,
    index: Sequence[int],
    targets: Any = None,
    *,
    digits: int = 6,
    **options: Any,
) -> dict[str, list]:
    """:func:`vizkit.metrics.faithfulness_scores` of ``maps`` ``[B, H, W]`` (in [0, 1], at the
    resolution of ``inputs`` ``[B, C, H, W]``) as JSON lists, a part of :func:`localization_table`
    like :meth:`Localization.record`: ``{"index": index, "road_morf": [B floats], "road_lerf",
    "road_combined", "confidence_drop", "confidence_increase"}``, rounded to ``digits``.
    ``targets`` and ``options`` (``percentiles``, ``noise``, ``seed``, ...): as
    :func:`~vizkit.metrics.faithfulness_scores` takes them."""
    if len(index) != len(inputs):
        raise InputError(f"faithfulness_record needs one index per image: {len(index)} for {len(inputs)} images")
    scores = faithfulness_scores(model, inputs, maps, targets, **options)
    out: dict[str, list] = {"index": [int(i) for i in index]}
    out.update({k: [round(float(v), digits) for v in t.cpu()] for k, t in scores.items()})
    return out


def join_score_tables(left: Any, right: Any, on: Sequence[str] = ("layer", "method")) -> Any:
    """Two tables of :func:`localization_table` (either may be None) side by side: one row per
    ``on`` key in ``left``'s order then ``right``'s new keys; a score missing on one side is NaN.
    None when both are None."""
    if left is None or right is None:
        return right if left is None else left
    import pandas as pd

    keys = list(on)
    joined = left.merge(right, on=keys, how="left")
    new = right.merge(left[keys], on=keys, how="left", indicator=True)
    new = new[new["_merge"] == "left_only"].drop(columns="_merge")
    return pd.concat([joined, new], ignore_index=True) if len(new) else joined


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
