"""Scenario 5's report: the share of each answer token's attention row on the image, the prompt text,
special markers, earlier answer tokens and the layer's sinks, with the entropy over the image
patches (:func:`token_shares`), their plot (:func:`shares_figure`) and ``report.md``
(:func:`write_report`: the sample, the answer, the shares, the sinks, the explained token's
relevance and tiny_vlm's ground-truth table). The score: the attention share of each row.

Example::

    from vizkit.scenarios.vlm_report import token_shares
    frame = token_shares(trace, layer=2, head="mean")   # one row per answer token
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..models.vlm.relevance import TokenRelevance
from ..positions import IMAGE, Trace
from ..token_video import head_label, image_share, row_shares

__all__ = ["token_shares", "shares_plot", "shares_figure", "write_report"]


def token_shares(trace: Trace, layer: int, head: Any = "mean") -> Any:
    """Per answer token: the row's share on image / prompt text / special markers / earlier answer
    tokens (:func:`vizkit.token_video.row_shares`: the row renormalised over the positions it sees, so
    the four sum to 1 also for heads fused by ``max``; the same numbers as the frames' second line),
    the share of the unnormalised row on the layer's sinks, and the entropy (nats) of its normalised
    distribution over the image patches."""
    import pandas as pd

    from ..stats import row_entropy

    rows = trace.head_rows(layer, head)
    kind = trace.pmap.kind
    sink = trace.sink_share(layer, head)
    out = []
    for j in range(trace.num_answer_tokens):
        p = trace.prompt_len + j
        img = rows[j, :p][kind[:p] == IMAGE]
        dist = img / img.sum() if img.sum() > 0 else img
        ent = float(row_entropy(torch.from_numpy(dist.astype(np.float64))[None])[0]) if len(img) else float("nan")
        out.append(
            {
                "layer": layer,
                "head": head_label(head),
                "token": j,
                "text": trace.pieces[p],
                **row_shares(trace, rows[j], j),
                "sinks": float(sink[j]),
                "image_entropy": ent,
            }
        )
    return pd.DataFrame(out)


def shares_plot(frames: Any) -> Any:
    """Seaborn plot over the answer tokens: attention share on image / prompt / earlier answer
    (top) and the entropy over image patches (bottom), one line style per layer and head view shown
    (``frames``' ``layer`` and ``head`` columns, :func:`token_shares`); legends beside the panels."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frames = frames.assign(view=[f"layer {la}, {hd}" for la, hd in zip(frames["layer"], frames["head"])])
    long = frames.melt(
        id_vars=["view", "token"], value_vars=["image", "prompt", "answer"], var_name="on", value_name="share"
    )
    fig, (a, b) = plt.subplots(2, 1, figsize=(9.5, 5.5), sharex=True, layout="constrained")
    sns.lineplot(data=long, x="token", y="share", hue="on", style="view", ax=a)
    a.set_ylabel("attention share")
    a.set_ylim(-0.03, 1.03)  # a share of exactly 0 or 1 stays visible off the frame
    sns.lineplot(data=frames, x="token", y="image_entropy", style="view", ax=b, color="k")
    b.set_ylabel("entropy over image\npatches (nats)")
    b.set_xlabel("answer token")
    for ax in (a, b):
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title=None)
    return fig


def shares_figure(frames: Any, path: str | Path) -> Path:
    """:func:`shares_plot` of ``frames`` saved (atomically) to ``path``."""
    from ..render import save_figure

    return save_figure(shares_plot(frames), path)


def write_report(
    folder: str | Path,
    trace: Trace,
    sample: dict[str, Any],
    params: dict[str, Any],
    outputs: dict[str, Any],
    shares: Any,
    ground_truth: tuple[Any, dict[str, Any]] | None = None,
    relevance: TokenRelevance | None = None,
) -> Path:
    """``report.md``: the sample, the answer, the share / entropy plot, per-layer means, the
    chosen token's relevance and the ground-truth layer x head table (tiny_vlm)."""
    from ..report import Report

    folder = Path(folder)
    fig = shares_figure(shares, folder / "attention_shares.png")
    rep = Report("VLM per-token attention video")
    rep.heading("Sample").bullets(
        [
            f"id: {sample.get('id', '?')}",
            f"problem: {sample.get('problem', '')}",
            f"reference solution: {sample.get('solution', '(none)')}",
            f"images: {', '.join(map(str, sample.get('image', [])))}",
        ]
    )
    what = "generated answer" if trace.mode == "generate" else "teacher-forced solution"
    rep.heading("Answer").paragraph(
        f"The {what} ({trace.num_answer_tokens} tokens; the video starts at token "
        f"{trace.start}, {len(trace.frame_tokens)} frames):"
    )
    rep.paragraph("> " + trace.text.strip().replace("\n", "\n> "))
    params = dict(params)
    head_choice = params.pop("head_choice", "")
    rep.heading("Parameters").parameters(params)
    rep.heading("Outputs").bullets(
        [f"{k}: {Path(v).name if isinstance(v, (str, Path)) else v}" for k, v in outputs.items()]
    )
    rep.heading("Where the answer looks")
    rep.paragraph(
        "Each frame shows the attention row of the step that produced the token (the query is the token "
        "before it), over every earlier position (layers and heads 0-based). Shares per answer token: on the "
        "image tokens, on the prompt text, on special markers, on the earlier answer tokens (the row renormalised "
        "over the positions it sees, so they sum to 1 also for heads fused by max); entropy of the row's "
        "distribution over image patches (natural log; uniform over all patches would be ln(patches)). "
        f"Heads: {params.get('heads')}."
    )
    if head_choice:
        rep.paragraph(str(head_choice))
    rep.figure(
        fig, "attention share on image / prompt / earlier answer, and entropy over image patches", relative_to=folder
    )
    rep.table(shares.groupby(["layer", "head"])[["image", "prompt", "special", "answer", "image_entropy"]].mean())
    rep.heading("Attention sinks")
    rep.paragraph(
        "A few positions can take a large share of every row whatever the token (the first token, some "
        "image patches): attention sinks. Here a sink is position 0 plus the prompt positions whose "
        "attention received, averaged over the answer rows and heads, lies above Q3 + 3 IQR of all prompt "
        "positions (at most 5). Share of each row on them, per layer (mean, min, max over answer tokens); "
        + (
            "the video masks them (rows renormalised over the rest)."
            if params.get("sinks") == "mask"
            else "the video keeps them (--sinks mask hides them)."
        )
    )
    sink_rows = []
    for layer, group in shares.groupby("layer"):
        where = ", ".join(f"{int(t)} ({trace.pmap.label(int(t))})" for t in trace.sinks(int(layer)))
        sink_rows.append(
            {
                "layer": int(layer),
                "sinks": where,
                "mean share": group["sinks"].mean(),
                "min": group["sinks"].min(),
                "max": group["sinks"].max(),
            }
        )
    import pandas as pd

    rep.table(pd.DataFrame(sink_rows), index=False, floatfmt=".3f")
    if relevance is not None:
        r = relevance
        rep.heading(f"Why answer token {r.token} ({r.piece.strip()!r}): relevance beside attention")
        rep.paragraph(
            f"Attention says where one layer looked; relevance says what moved the answer. For the logit of "
            f"{r.piece.strip()!r} ({r.score:.3f}) read at position {r.query}, each decoder layer's attention is "
            f"weighted by its gradient and kept where positive (dscore/dA * A, heads fused by {r.head_fusion}), and "
            f"the layers {r.layers[0]}..{r.layers[-1]} are chained (Chefer et al. 2021; {r.aggregation}). Share on "
            f"image positions: attention (layer {r.attention_layer}) {image_share(trace, r.attention):.1%}, "
            f"relevance {image_share(trace, r.relevance):.1%}."
        )
        rep.figure(
            Path(outputs["relevance_figure"]),
            "the image, the attention row and the relevance row on its patches",
            relative_to=folder,
        )
    if ground_truth is not None:
        table, info = ground_truth
        rep.heading("Ground truth: does the answer look at the asked-about object? (tiny_vlm)")
        rep.paragraph(
            f"Over {info['questions']} held-out questions that name one object ({info['split']} items "
            f"{info['start']}..{info['start'] + info['drawn'] - 1}), the fraction whose attention over the 6x6 image "
            f"grid peaks inside that object's mask (pointing game), per decoder layer and head view (each head, "
            f"and the heads fused by mean and by max): from the answer token's own row, and from the step that "
            f"produced it (what the video shows); 'object mass' is the share of that step's attention over the "
            f"image that falls on the object. Chance, {info['random_pixel']:.3f}, is the object's share of the "
            f"image: a random pixel's hit rate and uniform attention's mass alike. One head of tiny_vlm "
            f"({info['supervised']}) was trained with attention supervision (an auxiliary loss pulling it onto the "
            f"named object); the other heads were not, and are shown beside it."
        )
        rep.table(table, index=False, floatfmt=".3f")
    return rep.write(folder / "report.md")
