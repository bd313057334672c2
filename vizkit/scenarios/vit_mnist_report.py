"""Scenario 2's report: the CLS-attention statistics per layer (:func:`layer_summary`) and per head
(:func:`head_table`, with a flag on heads at the level of uniform attention), sentences computed from
them (:func:`observations`: where the CLS attention is most concentrated, the trend of its entropy with
depth, the spread of the CLS row and the patch-query distance against uniform attention, the
misclassified samples, rollout against the last layer) and ``attention_analysis_report.md``
(:func:`write_report`). Layers are 0-based block numbers ("layer 4" is ``blocks.4``), heads 0-based.

Example::

    from vizkit.scenarios.vit_mnist_report import head_table, layer_summary, observations
    df, reference = visualizer.statistics(), visualizer.reference()   # per sample x layer x head; uniform levels
    layer_summary(df, reference), head_table(df, reference), observations(df, visualizer.statistics_cache)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..attention_cache import AttentionCache
from ..explain import rollout
from ..figures.cls_attention import layer_numbers
from ..metrics.chance import at_or_below_chance
from ..report import Report
from ..stats import uniform_statistics

__all__ = [
    "SUMMARY",
    "CHANCE_MARGIN",
    "layer_summary",
    "head_table",
    "top_patch",
    "entropy_trend",
    "rollout_agreement",
    "observations",
    "write_report",
]

#: the statistics the tables show (the mean CLS->patch weight is left out: near 1/16 by construction)
SUMMARY = ("max", "entropy", "cls_distance", "distance")
#: a head's distance within this many patches of the uniform-attention distance (or above it) is "at chance"
CHANCE_MARGIN = 0.1
#: the label of the chance row of :func:`layer_summary`
UNIFORM_ROW = "uniform (chance)"
#: a head whose CLS row peaks on the same patch in at least this share of the images reads a fixed position
FIXED_SHARE = 0.9


def _numbered(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``layer_no``, the 0-based block number of each row's module."""
    order = df.drop_duplicates("layer_index").sort_values("layer_index")
    numbers = dict(zip(order["layer_index"], layer_numbers(list(order["layer"]))))
    return df.assign(layer_no=df["layer_index"].map(numbers))


def layer_summary(df: pd.DataFrame, reference: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Mean over samples and heads of the :data:`SUMMARY` statistics per layer: index ``layer`` (0-based block
    numbers, in capture order), a ``module`` column, then the statistics. With ``reference`` (e.g.
    :func:`vizkit.stats.uniform_statistics`) a last row ``"uniform (chance)"`` holds the uniform-attention levels."""
    d = _numbered(df)
    out = d.groupby(["layer_index", "layer_no", "layer"])[list(SUMMARY)].mean().reset_index(level=[0, 2])
    out = out.drop(columns="layer_index").rename(columns={"layer": "module"})
    out.index.name = "layer"
    if reference is not None:
        chance = pd.DataFrame([{"module": "", **{k: reference[k] for k in SUMMARY}}], index=[UNIFORM_ROW])
        out = pd.concat([out, chance])
        out.index.name = "layer"
    return out


def head_table(df: pd.DataFrame, reference: Mapping[str, float], margin: float = CHANCE_MARGIN) -> pd.DataFrame:
    """Mean over samples per (layer, head) of the :data:`SUMMARY` statistics, index ``(layer, head)``
    (0-based), and a ``flag`` column: ``"patch queries at chance"`` when the head's mean attention distance is
    within ``margin`` patches of the uniform-attention distance or above it (its patch queries are no more
    local than uniform attention), ``"CLS row at chance"`` likewise for its CLS-row distance; empty otherwise."""
    d = _numbered(df).rename(columns={"layer_no": "layer_0"})
    out = d.groupby(["layer_index", "layer_0", "head"])[list(SUMMARY)].mean().droplevel("layer_index")
    out.index = out.index.set_names(["layer", "head"])

    def flag(row: pd.Series) -> str:
        found = [
            what
            for what, key in (("patch queries at chance", "distance"), ("CLS row at chance", "cls_distance"))
            if at_or_below_chance(float(row[key]), reference[key], higher_is_better=False, margin=margin)
        ]
        return "; ".join(found)

    return out.assign(flag=out.apply(flag, axis=1))


def top_patch(cache: AttentionCache) -> pd.DataFrame:
    """Per (layer, head), 0-based: the patch (``row``, ``col`` on the grid) that most often holds the largest
    weight of the CLS row over the cached images, and ``share``, the fraction of the images where it does.
    A share near 1 is a head that reads a fixed position whatever the image."""
    numbers, w = layer_numbers(cache.layers), cache.attn.grid[1]
    rows = []
    for li in range(len(cache.layers)):
        top = cache.attn.cls_attention(li, head_fusion=None).flatten(2).argmax(-1)  # [S, heads]
        for head in range(top.shape[1]):
            counts = top[:, head].bincount()
            patch = int(counts.argmax())
            share = float(counts[patch]) / top.shape[0]
            rows.append({"layer": numbers[li], "head": head, "row": patch // w, "col": patch % w, "share": share})
    return pd.DataFrame(rows).set_index(["layer", "head"])


def entropy_trend(df: pd.DataFrame) -> float:
    """Spearman correlation between the layer number and the layer's mean CLS-row entropy (over the images and
    heads in ``df``): near -1 the CLS attention sharpens with depth, near +1 it spreads."""
    per_layer = layer_summary(df)
    return float(pd.Series(per_layer.index).corr(pd.Series(per_layer["entropy"].values), method="spearman"))


def rollout_agreement(cache: AttentionCache, head_fusion: str = "mean") -> float:
    """Mean over the cached samples of the Pearson correlation between the raw last-layer CLS attention
    and attention rollout over all captured layers (heads fused by ``head_fusion``)."""
    last = cache.attn.cls_attention(-1, head_fusion=head_fusion).flatten(1)
    roll = rollout(cache.attn, head_fusion=head_fusion).flatten(1)
    return float(np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(last.numpy(), roll.numpy())]))


def observations(
    df: pd.DataFrame,
    cache: AttentionCache,
    head_fusion: str = "mean",
    shown: AttentionCache | None = None,
    margin: float = CHANCE_MARGIN,
) -> list[str]:
    """Sentences computed from the numbers (not canned text): ``df`` the statistics of the images in
    ``cache``; ``shown`` (default ``cache``) the samples whose classification is reported."""
    reference = uniform_statistics(cache.attn.grid, cache.attn.prefix_tokens)
    per_layer = layer_summary(df)
    heads = head_table(df, reference, margin)
    n_images, n_heads = df["sample"].nunique(), len(heads)
    obs = []
    lo, hi = int(per_layer["entropy"].idxmin()), int(per_layer["entropy"].idxmax())
    n_tokens = cache.attn.maps[cache.layers[0]].shape[-1]
    obs.append(
        f"Over {n_images} test images, the CLS attention is most concentrated in layer {lo} (mean entropy "
        f"{per_layer.loc[lo, 'entropy']:.3f} nats) and most diffuse in layer {hi} ({per_layer.loc[hi, 'entropy']:.3f} "
        f"nats); uniform attention over the {n_tokens} tokens would have {reference['entropy']:.3f}."
    )
    fixed = top_patch(cache).query("share >= @FIXED_SHARE")
    if len(fixed) and n_images > 1:
        obs.append(
            "Concentrated is not informative: "
            + "; ".join(
                f"layer {layer} head {head} puts its largest CLS weight on patch (row {int(r.row)}, col {int(r.col)}) "
                f"in {r.share:.0%} of the images"
                for (layer, head), r in fixed.iterrows()
            )
            + " - a fixed position whatever the digit."
        )
    if len(per_layer) > 2:
        rho = entropy_trend(df)
        trend = "falls" if rho <= -0.5 else "rises" if rho >= 0.5 else "shows no monotonic trend"
        obs.append(f"Entropy {trend} with depth (Spearman rho = {rho:+.2f} between layer number and mean entropy).")
    uniform = reference["distance"]
    (l_lo, h_lo), (l_hi, h_hi) = heads["cls_distance"].idxmin(), heads["cls_distance"].idxmax()
    cls_chance = heads.index[heads["flag"].str.contains("CLS row")].tolist()
    obs.append(
        f"The CLS row (what the maps show) spreads over {heads['cls_distance'].min():.2f} patches (layer {l_lo}, "
        f"head {h_lo}) to {heads['cls_distance'].max():.2f} patches (layer {l_hi}, head {h_hi}) on average; "
        f"uniform attention gives {uniform:.3f}: "
        + (
            f"{len(cls_chance)} of {n_heads} heads are at chance ({_heads(cls_chance)})."
            if cls_chance
            else f"every head's CLS row is more concentrated than uniform attention (margin {margin} patch)."
        )
    )
    (l_loc, h_loc), (l_glob, h_glob) = heads["distance"].idxmin(), heads["distance"].idxmax()
    at_chance = heads.index[heads["flag"].str.contains("patch queries")].tolist()
    obs.append(
        f"The mean attention distance of the patch queries runs from {heads['distance'].min():.2f} patches "
        f"(layer {l_loc}, head {h_loc}, the most local) to {heads['distance'].max():.2f} (layer {l_glob}, head "
        f"{h_glob}), against {uniform:.3f} for uniform attention: {len(at_chance)} of {n_heads} heads are within "
        f"{margin} patch of it or above"
        + (
            f" ({_heads(at_chance)}): their patch queries are no more local than uniform attention."
            if at_chance
            else "."
        )
    )
    top = int(per_layer["max"].idxmax())
    obs.append(
        f"The strongest single CLS->patch weight is found in layer {top} (mean max {per_layer.loc[top, 'max']:.3f}; "
        f"uniform attention: {reference['max']:.3f})."
    )
    shown = cache if shown is None else shown
    n = len(shown.labels)
    wrong = [i for i in range(n) if int(shown.preds[i]) != int(shown.labels[i])]
    obs.append(
        f"{n - len(wrong)} of {n} shown samples are classified correctly"
        + (
            "; misclassified: "
            + ", ".join(f"sample {i} ({int(shown.labels[i])} -> {int(shown.preds[i])})" for i in wrong)
            + "."
            if wrong
            else "."
        )
    )
    obs.append(
        f"Rollout and the raw last-layer attention agree with a mean Pearson correlation of "
        f"{rollout_agreement(cache, head_fusion):.2f} over the {len(cache.labels)} images."
    )
    return obs


def _heads(index: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"layer {layer} head {head}" for layer, head in index)


def write_report(
    out: Path,
    params: dict[str, Any],
    info: dict[str, Any],
    accuracy: float | None,
    sample_acc: float,
    per_layer: pd.DataFrame,
    per_head: pd.DataFrame,
    obs: list[str],
    files: list[Path],
    indices: Sequence[int],
    cache: AttentionCache,
    statistics_images: int,
) -> Path:
    """``attention_analysis_report.md``: parameters, accuracy, observations, the per-layer table (its chance
    row: uniform attention) and the per-head table (flags on heads at chance), figures."""
    rep = Report("ViT attention analysis on MNIST")
    rep.heading("Run parameters").parameters(params or {"(defaults)": True})
    rep.heading("Model")
    source = info.get("source", "?")
    acc = f"{accuracy:.2%}" if accuracy is not None else "not measured"
    rep.bullets(
        [
            f"source: `{source}`",
            f"test accuracy (10,000 MNIST test images): **{acc}**",
            f"layers analysed: {len(cache.layers)}, heads per layer: {cache.num_heads}, patch grid "
            f"{cache.attn.grid[0]}x{cache.attn.grid[1]} + {cache.attn.prefix_tokens} CLS token; layers and heads "
            "are numbered from 0 (layer k is the block `blocks.k`)",
            f"shown samples (test-set indices): {', '.join(str(i) for i in indices)}; "
            f"accuracy on them {sample_acc:.0%}",
            f"statistics over the first {statistics_images} test images",
        ]
    )
    rep.heading("Observations").bullets(obs)
    rep.heading("Statistics per layer (mean over images and heads; last row: uniform attention)")
    rep.paragraph(
        "max: the largest CLS->patch weight; entropy: of the CLS row (nats); cls_distance: the distance between two "
        "patches drawn from the CLS row (the spread of the maps shown); distance: the mean attention distance of "
        "the patch queries (Dosovitskiy et al., 2021). Both distances are in patches."
    )
    rep.table(per_layer)
    rep.heading(f"Statistics per head (flag: within {CHANCE_MARGIN} patch of uniform attention or above)")
    rep.table(per_head)
    rep.heading("Figures")
    for f in files:
        rep.figure(f, f.stem.replace("_", " "), relative_to=out)
    return rep.write(out / "attention_analysis_report.md")
