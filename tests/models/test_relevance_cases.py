"""Per-token relevance of a VLM answer (:mod:`vizkit.models.vlm.relevance`): the ``relevance.npz``
arrays, how a token is named (index, numeric string, word from the start phrase on) and which
layers, fusion and aggregation a result records. Cases a mutation run found untested."""

from __future__ import annotations

import numpy as np
import pytest
import vlm_folders as VF
from PIL import Image

from vizkit.errors import ParameterError
from vizkit.models.vlm import load_vlm
from vizkit.models.vlm.relevance import TokenRelevance, answer_relevance, answer_token_index
from vizkit.models.vlm.trace import trace_sample
from vizkit.positions import PositionMap, Trace


def test_token_relevance_arrays():
    r = TokenRelevance(2, 17, " red", 9, 1.5, np.arange(10.0), np.ones(10), [0, 2], 1, "max", "mean")
    out = r.arrays()
    assert list(out) == [
        "token",
        "token_id",
        "piece",
        "query",
        "score",
        "relevance",
        "attention",
        "layers",
        "attention_layer",
        "head_fusion",
        "aggregation",
    ]
    assert (out["token"], out["token_id"], out["query"], out["attention_layer"]) == (2, 17, 9, 1)
    assert all(out[k].dtype == np.int64 for k in ("token", "token_id", "query", "attention_layer"))
    assert out["score"] == 1.5 and out["score"].dtype == np.float64
    assert out["piece"].item() == " red" and out["head_fusion"].item() == "max" and out["aggregation"].item() == "mean"
    assert out["relevance"] is r.relevance and out["attention"] is r.attention
    assert out["layers"].tolist() == [0, 2] and out["layers"].dtype == np.int64
    empty = TokenRelevance(0, 1, "", 0, 0.0, np.zeros(1), np.zeros(1), [], 0, "mean", "relevance").arrays()
    assert empty["layers"].dtype == np.int64


def _trace(answer: list[str], start: int = 0) -> Trace:
    pieces = ["<p>", "Q"] + answer
    n = len(pieces)
    t = Trace(np.arange(n), 2, pieces, PositionMap.empty(n, 2), {}, "".join(answer), "generate", "all", [])
    t.start = start
    return t


def test_answer_token_by_word_index_and_numeric_string():
    t = _trace([" The", " red", "dish", " star", ",", " red,", " X2", " is", " big"], start=2)
    assert answer_token_index(t, "star") == 3
    assert answer_token_index(t, " red ") == 5  # from the start phrase on: not the " red" before it
    assert answer_token_index(t, "stars") == 3  # the word starts with the piece
    assert answer_token_index(t, "st") == 3  # the piece starts with the word
    assert answer_token_index(t, "X2") == 6  # a word, not an index
    assert answer_token_index(t, "-1") == 8 and answer_token_index(t, " 3 ") == 3
    assert answer_token_index(t, -9) == 0 and answer_token_index(t, 8) == 8
    for bad in (9, -10, "12"):
        with pytest.raises(
            ParameterError, match=r"answer token -?\d+ is out of range: the answer has 9 tokens \(0..8\)"
        ):
            answer_token_index(t, bad)
    with pytest.raises(
        ParameterError, match=r"no answer token starts 'moon'; the answer's tokens begin: 'dish star , red, X2 is big'"
    ):
        answer_token_index(t, "moon")


def test_the_error_shows_twenty_tokens_from_the_start():
    t = _trace([" skip"] + [f" w{i}" for i in range(25)], start=1)
    shown = " ".join(f"w{i}" for i in range(20))
    with pytest.raises(ParameterError, match=f"the answer's tokens begin: '{shown}' "):
        answer_token_index(t, "moon")


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    vlm = load_vlm(VF.save_random_qwen2_vl(tmp_path_factory.mktemp("rel") / "q", layers=3, heads=2, kv_heads=1))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    trace = trace_sample(vlm, "What colour?", [image], [2], mode="solution", solution="It is red.", start_phrase=None)
    return vlm, trace


def test_what_a_result_records(traced):
    vlm, trace = traced
    r = answer_relevance(vlm, trace, 2, head_fusion="max", aggregation="mean")
    L = trace.prompt_len
    assert (r.token, r.query, r.piece, r.token_id) == (2, L + 1, trace.pieces[L + 2], int(trace.input_ids[L + 2]))
    assert (r.layers, r.attention_layer, r.head_fusion, r.aggregation) == ([0, 1, 2], 2, "max", "mean")
    assert r.relevance.shape == (L + 2,) and r.attention.shape == (L + 2,)
    # the plain attention row is the trace's own row for that token (layer 2, heads fused by max)
    np.testing.assert_allclose(r.attention, trace.head_rows(2, "max")[2, : L + 2], atol=1e-5)
    # an explicit attention layer, a layer subset given with a negative index
    r1 = answer_relevance(vlm, trace, 0, layers=[-3, 1], attention_layer=1)
    assert (r1.layers, r1.attention_layer) == ([0, 1], 1)
    assert answer_relevance(vlm, trace, 0, layers=[-1, 2]).layers == [2]


def test_attention_layer_without_captured_rows(traced):
    vlm, trace = traced
    bare = Trace(
        trace.input_ids,
        trace.prompt_len,
        trace.pieces,
        trace.pmap,
        {},
        trace.text,
        "solution",
        "all",
        trace.images,
        problem=trace.problem,
    )
    assert answer_relevance(vlm, bare, 0).attention_layer == 2  # the last of the chosen layers
    assert answer_relevance(vlm, bare, 0, layers=[0, 1]).attention_layer == 1


@pytest.mark.parametrize("kwargs", [{"layers": [3]}, {"layers": [-4]}, {"attention_layer": 3}, {"attention_layer": -4}])
def test_layer_indices_out_of_range(traced, kwargs):
    vlm, trace = traced
    with pytest.raises(
        ParameterError, match=r"layer index -?\d is out of range: the model has 3 decoder layers \(0..2\)"
    ):
        answer_relevance(vlm, trace, 0, **kwargs)
