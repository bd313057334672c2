"""Per-token relevance of a traced VLM answer: for answer token ``j``, the gradient-weighted
attention (``∂s/∂A ⊙ A``, Chefer et al. 2021) of every position, through the core's
:func:`vizkit.explain.attention_gradients` on the model's own keyword inputs.

The score ``s`` is the logit of token ``j`` at the position that predicted it (query position
``prompt_len - 1 + j``), from one teacher-forced forward of the prompt and answer tokens
``0 .. j - 1`` (the model's own attention implementation, captured as for classifiers). Per
decoder layer ``Ā = fuse_heads((∇A ⊙ A)⁺)``; ``R ← R + Ā R`` from ``R = I`` over the layers
in order (``aggregation="relevance"``), or the mean of the ``Ā`` (``"mean"``); the map is
``R``'s query row, clamped at 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ... import attention_math as am
from ...errors import ParameterError
from ...explain import attention_gradients
from ...positions import Trace
from . import VLM
from .trace import build_inputs, extend_inputs

__all__ = ["TokenRelevance", "answer_token_index", "answer_relevance"]


@dataclass
class TokenRelevance:
    """One answer token's relevance and plain attention, over positions ``0 .. query``.

    - ``token``: the answer-token index ``j``; ``token_id`` / ``piece``: what it is;
    - ``query``: the sequence position whose logit is explained (``prompt_len - 1 + j``);
    - ``score``: that logit;
    - ``relevance`` ``[query + 1]``: the relevance row (clamped at 0, not normalised) over
      ``layers`` (decoder indices) with ``head_fusion`` and ``aggregation``;
    - ``attention`` ``[query + 1]``: the plain attention row of decoder layer
      ``attention_layer`` for the same query, fused over heads with ``head_fusion`` (equal to the
      trace's row for that token).
    """

    token: int
    token_id: int
    piece: str
    query: int
    score: float
    relevance: np.ndarray
    attention: np.ndarray
    layers: list[int]
    attention_layer: int
    head_fusion: str
    aggregation: str

    def arrays(self) -> dict[str, np.ndarray]:
        """The ``relevance.npz`` arrays (docs/howto/vlm-video.md)."""
        return {
            "token": np.int64(self.token),
            "token_id": np.int64(self.token_id),
            "piece": np.array(self.piece),
            "query": np.int64(self.query),
            "score": np.float64(self.score),
            "relevance": self.relevance,
            "attention": self.attention,
            "layers": np.array(self.layers, np.int64),
            "attention_layer": np.int64(self.attention_layer),
            "head_fusion": np.array(self.head_fusion),
            "aggregation": np.array(self.aggregation),
        }


def answer_token_index(trace: Trace, token: int | str) -> int:
    """The answer-token index ``token`` names: an int (negative counts from the end) or a word,
    the first answer token (from the start phrase on) whose text, stripped, starts it."""
    n = trace.num_answer_tokens
    if isinstance(token, str) and not token.strip().lstrip("-").isdigit():
        word = token.strip()
        pieces = trace.pieces[trace.prompt_len :]
        for j in range(trace.start, n):
            piece = pieces[j].strip()
            if piece and (piece.startswith(word) or word.startswith(piece)):
                return j
        shown = " ".join(p.strip() for p in pieces[trace.start : trace.start + 20] if p.strip())
        raise ParameterError(
            f"no answer token starts {word!r}; the answer's tokens begin: {shown!r} "
            f"(pass one of them, or an index 0..{n - 1})"
        )
    j = int(token)
    if not -n <= j < n:
        raise ParameterError(f"answer token {j} is out of range: the answer has {n} tokens (0..{n - 1})")
    return j % n


def answer_relevance(
    vlm: VLM,
    trace: Trace,
    token: int | str,
    *,
    layers: Sequence[int] | None = None,
    attention_layer: int | None = None,
    head_fusion: str = "mean",
    aggregation: str = "relevance",
) -> TokenRelevance:
    """The relevance of every position for answer token ``token`` of ``trace`` (see the module
    docstring). ``layers``: the decoder layers the relevance runs over (default all, as Chefer's
    rule); ``attention_layer``: the layer of the plain attention row beside it (default the
    trace's first captured layer). One forward and one backward pass; the model's state and
    attention implementation are restored."""
    if head_fusion not in am.HEAD_FUSIONS:
        raise ParameterError(f"head_fusion must be one of {', '.join(am.HEAD_FUSIONS)}, got {head_fusion!r}")
    if aggregation not in am.AGGREGATIONS:
        raise ParameterError(f"aggregation must be one of {', '.join(am.AGGREGATIONS)}, got {aggregation!r}")
    j = answer_token_index(trace, token)
    L = trace.prompt_len
    inputs, _ = build_inputs(vlm, trace.problem, trace.images)
    inputs.pop("original_sizes")
    if inputs["input_ids"][0].tolist() != trace.input_ids[:L].tolist():
        raise ParameterError(
            "the trace's prompt is not what this model's processor builds for its problem and "
            "images: explain a trace made with the same model folder"
        )
    model = vlm.model
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    full = extend_inputs(inputs, trace.input_ids[L : L + j].tolist())
    blocks = vlm.decoder_layers
    n = len(blocks)
    bad = [
        i
        for i in list(layers or []) + ([attention_layer] if attention_layer is not None else [])
        if not -n <= int(i) < n
    ]
    if bad:
        raise ParameterError(f"layer index {bad[0]} is out of range: the model has {n} decoder layers (0..{n - 1})")
    chosen = sorted({int(i) % n for i in layers}) if layers else list(range(n))
    att_layer = (
        (sorted(trace.rows)[0] if trace.rows else chosen[-1]) if attention_layer is None else int(attention_layer) % n
    )
    captured = sorted(set(chosen) | {att_layer})
    token_id = int(trace.input_ids[L + j])
    ag = attention_gradients(
        model,
        full,
        [lambda out: out.logits[:, -1, token_id]],
        layers=[blocks[i] for i in captured],
        forward=lambda kw: model(**kw, use_cache=False),
    )
    name = dict(zip(captured, ag.layers))
    relevance = ag.token_relevance(-1, 0, head_fusion, [name[i] for i in chosen], aggregation)[0]
    attention = am.fuse_heads(ag.attentions[name[att_layer]][:, :, -1:], head_fusion)[0, 0]
    return TokenRelevance(
        token=j,
        token_id=token_id,
        piece=trace.pieces[L + j],
        query=L - 1 + j,
        score=float(ag.scores[0][0]),
        relevance=relevance.double().cpu().numpy(),
        attention=attention.double().cpu().numpy(),
        layers=chosen,
        attention_layer=att_layer,
        head_fusion=head_fusion,
        aggregation=aggregation,
    )
