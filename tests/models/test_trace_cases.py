"""The pure parts of VLM generate-time capture (:mod:`vizkit.models.vlm.trace`) by hand: images to PIL,
the text each token adds (with the zoo's byte-level tokenizer, characters split over several
tokens and cut by the context window), the layers and the head asked for, the inputs extended by
an answer, the end-of-sequence ids and where the start phrase begins. Cases a mutation run found
untested."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import vlm_folders as VF
import vlm_folders_more as VM
from PIL import Image
from transformers import AutoTokenizer

from vizkit.errors import CaptureError, InputError, ParameterError
from vizkit.io import data_root
from vizkit.models.vlm import load_vlm
from vizkit.models.vlm.trace import (
    _eos_ids,
    build_inputs,
    check_head,
    extend_inputs,
    find_start,
    resolve_layers,
    to_pil,
    token_pieces,
    trace_sample,
)
from vizkit.positions import IMAGE, PositionMap, Trace


def test_to_pil():
    rgba = Image.fromarray(np.full((2, 3, 4), 200, np.uint8), "RGBA")
    assert to_pil(rgba).mode == "RGB" and np.array_equal(np.asarray(to_pil(rgba)), np.full((2, 3, 3), 200))
    a = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    assert np.array_equal(np.asarray(to_pil(a)), a)
    grey = np.array([[0, 255]], np.uint8)
    assert to_pil(grey).mode == "RGB" and np.asarray(to_pil(grey)).tolist() == [[[0] * 3, [255] * 3]]
    # floats in [0, 1]: x 255, rounded (half to even), clipped
    f = np.array([[[-0.5, 0.0, 0.5], [0.2, 1.0, 1.5]]])
    assert np.asarray(to_pil(f)).tolist() == [[[0, 0, 128], [51, 255, 255]]]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(data_root() / "zoo" / "tiny_vlm")


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_token_pieces_by_hand(tokenizer):
    ids = _ids(tokenizer, "café ok")  # é is two byte-level tokens
    assert ids == [70, 68, 73, 131, 106, 266, 78]
    assert token_pieces(tokenizer, ids) == ["c", "a", "f", "", "é", " o", "k"]
    assert token_pieces(tokenizer, np.array(ids, np.int64)) == ["c", "a", "f", "", "é", " o", "k"]
    # a short context cuts é at the window's left edge: its stray half is not new text
    assert token_pieces(tokenizer, ids, context=1) == ["c", "a", "f", "", "é", " o", "k"]
    euro = _ids(tokenizer, "naïve € x")  # € is three byte-level tokens
    want = ["n", "a", "", "ï", "v", "e", " ", "", "", "€", " ", "x"]
    assert token_pieces(tokenizer, euro) == want and token_pieces(tokenizer, euro, context=2) == want
    assert token_pieces(tokenizer, _ids(tokenizer, "The star is red.")) == ["The", " star", " is", " red", "."]
    # special tokens are kept as their text, never cleaned up
    assert token_pieces(tokenizer, [1] + _ids(tokenizer, "a , b")) == ["<s>", "a", " ", ",", " ", "b"]
    assert token_pieces(tokenizer, []) == []
    # only the replacement character is stripped from the end, not letters
    assert token_pieces(tokenizer, _ids(tokenizer, "XXL box X")) == ["X", "X", "L", " ", "b", "o", "x", " ", "X"]


def test_token_pieces_far_from_the_start(tokenizer):
    ids = _ids(tokenizer, "é" + " b" * 9)  # the context window slides past é's first byte
    pieces = token_pieces(tokenizer, ids)
    assert pieces[:4] == ["", "é", " ", "b"] and "".join(pieces) == "é" + " b" * 9
    assert token_pieces(tokenizer, ids, context=3) == pieces


@pytest.mark.parametrize(
    "num_layers, layer_idx, layers, want",
    [
        (32, None, None, [20]),
        (21, None, None, [20]),
        (20, None, None, [19]),
        (4, None, None, [3]),
        (4, 2, None, [2]),
        (4, -1, None, [3]),
        (4, -4, None, [0]),
        (4, None, [1, -1, 3, 1], [1, 3]),
        (4, 0, [2], [2]),
    ],
)
def test_resolve_layers(num_layers, layer_idx, layers, want):
    assert resolve_layers(num_layers, layer_idx, layers) == want


@pytest.mark.parametrize("bad", [4, -5, 7])
def test_resolve_layers_out_of_range(bad):
    with pytest.raises(
        ParameterError, match=rf"layer index {bad} is out of range: the model has 4 decoder layers \(0..3\)"
    ):
        resolve_layers(4, bad)


def test_check_head():
    assert check_head("mean", 4) == "mean" and check_head("max", 4) == "max"
    assert check_head("2", 4) == 2 and check_head(3, 4) == 3
    assert check_head(-1, 4) == 3 and check_head("-4", 4) == 0
    assert isinstance(check_head("1", 4), int)
    for bad in (4, -5, "9"):
        with pytest.raises(ParameterError, match=r"is out of range: the decoder has 4 heads \(0..3\)"):
            check_head(bad, 4)
    for bad in ("all", "MAX", None, 1.5j):
        with pytest.raises(ParameterError, match="use mean, max or a head index"):
            check_head(bad, 4)


def test_extend_inputs():
    inputs = {
        "input_ids": torch.tensor([[5, 6, 7, 4]], dtype=torch.int32),
        "attention_mask": torch.ones(1, 4, dtype=torch.bool),
        "token_type_ids": torch.tensor([[1, 1, 1, 1]]),
        "pixel_values": torch.zeros(1, 3, 2, 2),
        "image_grid_thw": torch.tensor([[1, 2, 3]]),  # 2-D but not per token: unchanged
        "note": "kept",
    }
    full = extend_inputs(inputs, [8, 9])
    assert full["input_ids"].dtype == torch.int32 and full["input_ids"].tolist() == [[5, 6, 7, 4, 8, 9]]
    assert full["attention_mask"].dtype == torch.bool and full["attention_mask"].tolist() == [[True] * 6]
    assert full["token_type_ids"].tolist() == [[1, 1, 1, 1, 0, 0]]
    assert full["pixel_values"] is inputs["pixel_values"] and full["image_grid_thw"] is inputs["image_grid_thw"]
    assert full["note"] == "kept" and inputs["input_ids"].shape == (1, 4)  # the original is untouched
    # the meta device stands in for a GPU: the answer tokens are made where the prompt is
    meta = extend_inputs({k: v.to("meta") for k, v in inputs.items() if torch.is_tensor(v)}, [8])
    assert meta["input_ids"].device.type == "meta" and meta["input_ids"].shape == (1, 5)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return load_vlm(VF.save_random_qwen2_vl(tmp_path_factory.mktemp("trace") / "q", layers=1, heads=2, kv_heads=1))


def test_eos_ids(qwen):
    gen, tok = qwen.model.generation_config, qwen.tokenizer
    saved = gen.eos_token_id, tok.eos_token_id
    try:
        gen.eos_token_id = [5, 7]
        assert _eos_ids(qwen) == {5, 7, tok.eos_token_id}
        gen.eos_token_id = 9
        assert _eos_ids(qwen) == {9, tok.eos_token_id}
        gen.eos_token_id = None
        assert _eos_ids(qwen) == {tok.eos_token_id}
        tok.eos_token = None
        assert tok.eos_token_id is None and _eos_ids(qwen) == set()
    finally:
        gen.eos_token_id = saved[0]
        tok.eos_token = tok.convert_ids_to_tokens(saved[1]) if saved[1] is not None else None


def test_build_inputs_without_and_with_images(qwen):
    inputs, prompt = build_inputs(qwen, "Which shape?", [])
    assert "Which shape?" in prompt and "original_sizes" in inputs
    assert inputs["original_sizes"].dtype == torch.long and inputs["original_sizes"].shape == (0, 2)
    image = np.zeros((30, 50, 3), np.uint8)
    inputs, prompt = build_inputs(qwen, "What colour is it?", [image, Image.fromarray(image[:20])])
    assert "What colour is it?" in prompt
    assert inputs["original_sizes"].tolist() == [[30, 50], [20, 50]] and inputs["original_sizes"].dtype == torch.long


def _trace(pieces: list[str], prompt_len: int, mode: str = "generate") -> Trace:
    n = len(pieces)
    text = "".join(pieces[prompt_len:])
    return Trace(np.arange(n), prompt_len, pieces, PositionMap.empty(n, prompt_len), {}, text, mode, "all", [])


def test_find_start():
    t = _trace(["<p>", "Q", "Hello", " there", ",", " Based", " on", " it", " Based", " on"], 2)
    assert find_start(t, None) == 0 and find_start(t, "") == 0
    assert find_start(t, "Hello") == 0
    assert find_start(t, "there") == 1  # begins inside the token " there"
    assert find_start(t, " there") == 1
    assert find_start(t, ", Based on") == 2
    assert find_start(t, "Based on") == 3  # the first occurrence
    assert find_start(t, "it") == 5
    long = _trace(["<p>"] + [" w"] * 14, 1, mode="solution")
    with pytest.raises(
        InputError,
        match=r"start phrase 'zz' is not in the solution text; its first words are: 'w w w w w w w w w w w w'",
    ):
        find_start(long, "zz")
    with pytest.raises(InputError, match="is not in the generated text"):
        find_start(t, "zz")
    # pieces that do not add up to the text (a tokenizer that normalises): the first token
    odd = Trace(np.arange(3), 1, ["<p>", "a", "b"], PositionMap.empty(3, 1), {}, "xyzab", "generate", "all", [])
    assert find_start(odd, "ab") == 0


def test_trace_sample_is_greedy_fuses_heads_and_takes_one_token(qwen):
    from vizkit.models.vlm.trace import trace_sample

    def run(**kw):
        return trace_sample(qwen, "Which shape?", [], [0], max_new_tokens=4, start_phrase=None, **kw)

    full = run()
    assert full.rows[0].shape[1] == 2  # [N, heads, K]
    cfg = qwen.model.generation_config
    saved = cfg.do_sample, cfg.top_k, cfg.temperature
    try:  # a saved config that samples: the trace still decodes greedily
        cfg.do_sample, cfg.top_k, cfg.temperature = True, 0, 5.0
        for seed in (1, 2):
            torch.manual_seed(seed)
            assert run().input_ids.tolist() == full.input_ids.tolist()
    finally:
        cfg.do_sample, cfg.top_k, cfg.temperature = saved
    np.testing.assert_allclose(run(heads="max").rows[0], full.rows[0].max(axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(run(heads=1).rows[0], full.rows[0][:, 1:2], atol=1e-6)
    one = trace_sample(qwen, "Which shape?", [], [0], max_new_tokens=1, start_phrase=None)
    assert (
        len(one.input_ids) == one.prompt_len + 1
        and one.input_ids.tolist() == full.input_ids.tolist()[: one.prompt_len + 1]
    )


def test_trace_sample_solution_joins_the_prompt_with_one_space_unless_it_ends_in_one(qwen):
    from vizkit.models.vlm.trace import trace_sample

    tok = qwen.tokenizer

    def solution_ids():
        t = trace_sample(qwen, "Which shape?", [], [0], mode="solution", solution="A circle.", start_phrase=None)
        return t.input_ids[t.prompt_len :].tolist()

    _, prompt = build_inputs(qwen, "Which shape?", [])
    assert not prompt[-1].isspace()  # this template's prompt ends in a letter: one space before the solution
    assert solution_ids() == tok(" A circle.", add_special_tokens=False)["input_ids"]
    saved = qwen.processor.chat_template
    try:  # a template whose prompt ends in a newline: nothing added
        qwen.processor.chat_template = saved + "{{ '\\n' }}"
        assert build_inputs(qwen, "Which shape?", [])[1].endswith("\n")
        assert solution_ids() == tok("A circle.", add_special_tokens=False)["input_ids"]
    finally:
        qwen.processor.chat_template = saved


def test_trace_sample_generates_64_tokens_by_default(qwen):
    from vizkit.models.vlm.trace import trace_sample

    t = trace_sample(qwen, "Which shape?", [], [0], start_phrase=None)
    assert len(t.input_ids) - t.prompt_len == 64  # this random model never says its end-of-sequence token


def test_trace_sample_records_mode_special_tokens_image_pieces_and_start(qwen):
    from vizkit.models.vlm.trace import trace_sample

    image = np.full((28, 28, 3), 200, np.uint8)
    t = trace_sample(
        qwen, "Which shape?", [image], [0], mode="solution", solution="A circle. Based on it.", start_phrase="Based"
    )
    assert (
        t.mode == "solution"
        and trace_sample(qwen, "Which shape?", [], [0], max_new_tokens=2, start_phrase=None).mode == "generate"
    )
    special = set(qwen.tokenizer.all_special_ids)
    assert t.special.tolist() == [int(i) in special for i in t.input_ids] and t.special.any()
    images = np.flatnonzero(t.pmap.kind == IMAGE)
    assert len(images) > 0 and all(t.pieces[p] == "" for p in images)
    assert any(t.pieces[p] for p in range(t.prompt_len) if p not in set(images.tolist()))
    answer = "".join(t.pieces[t.prompt_len :])
    assert answer == " A circle. Based on it." and t.start == find_start(t, "Based") > 0
    assert "".join(t.pieces[t.prompt_len + t.start :]).lstrip().startswith("Based")


def test_token_pieces_are_never_cleaned_up():
    """A WordPiece tokenizer saved with ``clean_up_tokenization_spaces=True`` (BERT-style) drops the space before
    punctuation when it decodes by default; the pieces keep the text as the tokens give it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1, "b": 2, ",": 3, ".": 4}, unk_token="[UNK]"))
    wordpiece.pre_tokenizer = pre_tokenizers.Whitespace()
    wordpiece.decoder = decoders.WordPiece(cleanup=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]", clean_up_tokenization_spaces=True)
    ids = _ids(tok, "a , b .")
    assert ids == [1, 3, 2, 4] and tok.decode(ids) == "a, b."  # the tokenizer's own default cleans up
    assert token_pieces(tok, ids) == ["a", " ,", " b", " ."]


def _gemma3_with_a_window(folder, window: int, layer_types: list[str]):
    VM.save_random_gemma3(folder)
    config = json.loads((folder / "config.json").read_text())
    config["text_config"].update(sliding_window=window, layer_types=layer_types)
    (folder / "config.json").write_text(json.dumps(config))
    return load_vlm(folder)


def test_a_sliding_window_layer_the_generated_sequence_outgrows_is_refused(tmp_path):
    """Gemma 3 with a 4-token sliding window on layer 0 and full attention on layer 1. Generating, layer 0's KV
    cache keeps 4 keys, fewer than the prompt: its rows cannot be placed (one clear error, not rows of the wrong
    positions); layer 1 gives one row per new token over every earlier position. Teacher-forced (one forward,
    where the mask holds the window), layer 0's rows are captured, each over at most the last 4 positions."""
    vlm = _gemma3_with_a_window(tmp_path / "g3", 4, ["sliding_attention", "full_attention"])
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    problem = "What colour is the star?"
    with pytest.raises(CaptureError, match=r"^layer 0 attended over fewer keys than there are positions"):
        trace_sample(vlm, problem, [image], [0, 1], max_new_tokens=3, start_phrase=None)
    full = trace_sample(vlm, problem, [image], [1], max_new_tokens=3, start_phrase=None)
    n, L = len(full.input_ids) - full.prompt_len, full.prompt_len
    assert L > 4 and full.rows[1].shape[0] == n and full.rows[1].shape[-1] == L + n - 1
    for j in range(n):
        assert (full.rows[1][j, :, : L + j] > 0).all() and not full.rows[1][j, :, L + j :].any()
    taught = trace_sample(vlm, problem, [image], [0], mode="solution", solution="red star", start_phrase=None)
    rows, L = taught.rows[0], taught.prompt_len
    assert rows.shape[0] == len(taught.input_ids) - L
    for j in range(rows.shape[0]):
        q = L - 1 + j  # the query's position: it attends to q - 3 .. q
        assert (rows[j, :, q - 3 : q + 1] > 0).all() and not rows[j, :, : q - 3].any() and not rows[j, :, q + 1 :].any()
