"""Scenario 2's report: the CLS-attention statistics per layer (:func:`layer_summary`), sentences
computed from them (:func:`observations`: where the attention is most concentrated, the trend of
its entropy with depth, the most local and most global heads, the misclassified samples, rollout
against the last layer) and ``attention_analysis_report.md`` (:func:`write_report`). The score:
the predicted digit's CLS attention.

Example::

    from vizkit.scenarios.vit_mnist_report import layer_summary, observations
    df = visualizer.statistics()                 # per sample x layer x head
    layer_summary(df), observations(df, visualizer.cache)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..attention_cache import AttentionCache
from ..explain import rollout
from ..report import Report

__all__ = ["layer_summary", "observations", "write_report"]


def layer_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean max / mean / entropy / distance per layer (rows in layer order, 1-based layer numbers)."""
    out = df.groupby("layer_index")[["max", "mean", "entropy", "distance"]].mean()
    out.index = pd.Index(out.index + 1, name="layer")
    return out


def observations(df: pd.DataFrame, cache: AttentionCache, head_fusion: str = "mean") -> list[str]:
    """Sentences computed from the numbers (not canned text)."""
    per_layer = layer_summary(df)
    per_head = df.groupby(["layer_index", "head"])["distance"].mean()
    obs = []
    lo, hi = int(per_layer["entropy"].idxmin()), int(per_layer["entropy"].idxmax())
    n_tokens = cache.attn.maps[cache.layers[0]].shape[-1]
    obs.append(
        f"The CLS attention is most concentrated in layer {lo} (mean entropy {per_layer.loc[lo, 'entropy']:.3f} "
        f"nats) and most diffuse in layer {hi} ({per_layer.loc[hi, 'entropy']:.3f} nats); a uniform row over "
        f"{n_tokens} tokens would have {np.log(n_tokens):.3f}."
    )
    if len(per_layer) > 2:
        rho = float(pd.Series(per_layer.index).corr(pd.Series(per_layer["entropy"].values), method="spearman"))
        trend = "falls" if rho <= -0.5 else "rises" if rho >= 0.5 else "shows no monotonic trend"
        obs.append(f"Entropy {trend} with depth (Spearman rho = {rho:+.2f} between layer number and mean entropy).")
    (l_loc, h_loc), (l_glob, h_glob) = per_head.idxmin(), per_head.idxmax()
    obs.append(
        f"The most local head is layer {l_loc + 1}, head {h_loc + 1} (mean attention distance "
        f"{per_head.min():.2f} patches); the most global is layer {l_glob + 1}, head {h_glob + 1} "
        f"({per_head.max():.2f} patches)."
    )
    top = int(per_layer["max"].idxmax())
    obs.append(
        f"The strongest single CLS->patch weight is found in layer {top} (mean max {per_layer.loc[top, 'max']:.3f})."
    )
    n = len(cache.labels)
    wrong = [i for i in range(n) if int(cache.preds[i]) != int(cache.labels[i])]
    obs.append(
        f"{n - len(wrong)} of {n} analysed samples are classified correctly"
        + (
            "; misclassified: "
            + ", ".join(f"sample {i} ({int(cache.labels[i])} -> {int(cache.preds[i])})" for i in wrong)
            + "."
            if wrong
            else "."
        )
    )
    last = cache.attn.cls_attention(-1, head_fusion=head_fusion).flatten(1)
    roll = rollout(cache.attn, head_fusion=head_fusion).flatten(1)
    corr = float(np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(last.numpy(), roll.numpy())]))
    obs.append(
        f"Rollout and the raw last-layer attention agree with a mean Pearson correlation of {corr:.2f} "
        "over the samples."
    )
    return obs


def write_report(
    out: Path,
    params: dict[str, Any],
    info: dict[str, Any],
    accuracy: float | None,
    sample_acc: float,
    df: pd.DataFrame,
    summary: pd.DataFrame,
    obs: list[str],
    files: list[Path],
    indices: Sequence[int],
    cache: AttentionCache,
) -> Path:
    """``attention_analysis_report.md``: parameters, accuracy, figures, statistics, observations."""
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
            f"{cache.attn.grid[0]}x{cache.attn.grid[1]} + {cache.attn.prefix_tokens} CLS token",
            f"analysed samples (test-set indices): {', '.join(str(i) for i in indices)}; "
            f"accuracy on them {sample_acc:.0%}",
        ]
    )
    rep.heading("Observations").bullets(obs)
    rep.heading("Statistics per layer (mean and std over samples and heads)")
    rep.table(summary)
    rep.heading("Figures")
    for f in files:
        rep.figure(f, f.stem.replace("_", " "), relative_to=out)
    return rep.write(out / "attention_analysis_report.md")
