"""Per-token relevance of a VLM answer (issue 26): the core's attention_gradients on a VLM's keyword
inputs, against an independent backward through the model's own eager ``output_attentions``, for
every option (head fusion, aggregation, layer subset, token by index / negative index / word), on
a GQA family with two images (Qwen2-VL) and an anyres family (LLaVA-NeXT); the hand-computed core
rows; the mosaic placement and the image share; the errors; the run folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import vlm_folders as VF
from PIL import Image

from vizkit.errors import InputError, ParameterError, VizkitError
from vizkit.explain import AttentionGradients, attention_gradients
from vizkit.models.vlm import load_vlm
from vizkit.models.vlm.relevance import answer_relevance, answer_token_index
from vizkit.models.vlm.trace import attention_implementations, build_inputs, extend_inputs, trace_sample
from vizkit.positions import IMAGE, PositionMap
from vizkit.token_video import image_share, image_views

PROBLEM = "What colour is the star?"


def _images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    shapes = [(60, 80), (96, 48)]
    return [Image.fromarray(rng.integers(0, 255, (*shapes[k], 3), dtype=np.uint8)) for k in range(n)]


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm_relevance")
    out = {}
    for name, builder in (("qwen2_vl", VF.save_random_qwen2_vl), ("llava_next", VF.save_random_llava_next)):
        vlm = load_vlm(builder(root / name, layers=3))
        trace = trace_sample(vlm, PROBLEM, _images(2), [1], max_new_tokens=6, start_phrase=None)
        out[name] = (vlm, trace)
    return out


def _eager_reference(vlm, trace, j, layers, fusion, aggregation, attention_layer):
    """Relevance and attention rows from HF's own eager attentions and autograd, by hand."""
    model = vlm.model
    inputs, _ = build_inputs(vlm, trace.problem, trace.images)
    inputs.pop("original_sizes")
    L = trace.prompt_len
    full = extend_inputs(inputs, trace.input_ids[L : L + j].tolist())
    model.set_attn_implementation("eager")
    try:
        with torch.enable_grad():
            out = model(**full, output_attentions=True, use_cache=False)
            score = out.logits[0, -1, int(trace.input_ids[L + j])]
            grads = torch.autograd.grad(score, out.attentions)
    finally:
        model.set_attn_implementation("sdpa")
    fuse = {"mean": lambda t: t.mean(0), "max": lambda t: t.amax(0), "min": lambda t: t.amin(0)}[fusion]
    K = out.attentions[0].shape[-1]
    bars = [fuse((out.attentions[i][0] * grads[i][0]).clamp(min=0)).double() for i in layers]
    if aggregation == "relevance":
        R = torch.eye(K, dtype=torch.float64)
        for a in bars:
            R = R + a @ R
    else:
        R = sum(bars) / len(bars)
    attn = fuse(out.attentions[attention_layer][0].detach())[-1].double()
    return R[-1].clamp(min=0).detach().numpy(), attn.numpy(), float(score.detach())


OPTIONS = [  # (token, layers, head fusion, aggregation)
    (0, None, "mean", "relevance"),
    (3, None, "max", "relevance"),
    (-1, [1, 2], "min", "relevance"),
    (2, [0, 2], "mean", "mean"),
]


@pytest.mark.parametrize("family", ["qwen2_vl", "llava_next"])
@pytest.mark.parametrize("token,layers,fusion,aggregation", OPTIONS)
def test_relevance_equals_an_eager_backward_by_hand(traced, family, token, layers, fusion, aggregation):
    vlm, trace = traced[family]
    impl = attention_implementations(vlm.model)
    r = answer_relevance(vlm, trace, token, layers=layers, head_fusion=fusion, aggregation=aggregation)
    j = token % trace.num_answer_tokens
    chosen = layers or [0, 1, 2]
    ref, attn, score = _eager_reference(vlm, trace, j, chosen, fusion, aggregation, attention_layer=1)
    assert r.token == j and r.query == trace.prompt_len - 1 + j and r.layers == chosen and r.attention_layer == 1
    assert r.token_id == int(trace.input_ids[trace.prompt_len + j])
    assert r.relevance.shape == (trace.prompt_len + j,)
    np.testing.assert_allclose(r.relevance, ref, atol=1e-5, rtol=1e-4)
    # and at the scale of the earlier positions (the query's own 1 from the identity left out)
    scale = ref[:-1].max()
    assert scale > 0
    np.testing.assert_allclose(r.relevance[:-1] / scale, ref[:-1] / scale, atol=1e-4)
    np.testing.assert_allclose(r.attention, attn, atol=1e-6)
    assert r.score == pytest.approx(score, abs=1e-4)
    # the image positions carry relevance (the image reaches the answer), and the model state is back
    assert r.relevance[trace.pmap.kind[: len(r.relevance)] == IMAGE].sum() > 0
    assert attention_implementations(vlm.model) == impl and not vlm.model.training
    assert not any(p.requires_grad for p in vlm.model.parameters()) or all(
        p.requires_grad for p in vlm.model.parameters()
    )


def test_plain_attention_is_the_traced_row(traced):
    vlm, trace = traced["qwen2_vl"]
    for j in range(trace.num_answer_tokens):
        r = answer_relevance(vlm, trace, j, layers=[1])
        np.testing.assert_allclose(r.attention, trace.head_rows(1, "mean")[j, : r.query + 1], atol=1e-5)


def test_token_by_word_and_errors(traced):
    vlm, trace = traced["qwen2_vl"]
    pieces = trace.pieces[trace.prompt_len :]
    j = next(i for i, p in enumerate(pieces) if p.strip())
    assert answer_token_index(trace, pieces[j].strip()) == j
    assert answer_token_index(trace, "-1") == trace.num_answer_tokens - 1
    with pytest.raises(ParameterError, match=r"out of range: the answer has \d+ tokens"):
        answer_relevance(vlm, trace, trace.num_answer_tokens)
    with pytest.raises(ParameterError, match="no answer token starts 'zzzqqq'"):
        answer_token_index(trace, "zzzqqq")
    with pytest.raises(ParameterError, match="layer index 7 is out of range: the model has 3 decoder layers"):
        answer_relevance(vlm, trace, 0, layers=[7])
    with pytest.raises(ParameterError, match="head_fusion must be one of mean, max, min"):
        answer_relevance(vlm, trace, 0, head_fusion="sum")
    other, _ = traced["llava_next"]
    with pytest.raises(ParameterError, match="made with the same model folder"):
        answer_relevance(other, trace, 0)


# one head, N = 3 tokens: the hand-computed rows of the core on a token sequence (no grid)
A1 = torch.tensor([[1.0, 0.0, 0.0], [0.4, 0.6, 0.0], [0.1, 0.1, 0.8]])
G1 = torch.tensor([[1.0, 1.0, 1.0], [2.0, -1.0, 0.0], [3.0, -2.0, 1.0]])  # (G1*A1)+ = [[1,0,0],[.8,0,0],[.3,0,.8]]
A2 = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
G2 = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 2.0, -1.0]])  # (G2*A2)+ = [[0,0,0],[.5,.5,0],[.2,.6,0]]


def test_token_relevance_by_hand():
    c = AttentionGradients(
        attentions={"l1": A1[None, None], "l2": A2[None, None]},
        gradients=[{"l1": G1[None, None], "l2": G2[None, None]}],
        scores=[torch.zeros(1)],
        classes=[None],
        layers=["l1", "l2"],
        grid=None,
        prefix_tokens=0,
        image_size=None,
    )
    # R1 = I + Ā1; row 2 of R1 = [.3, 0, 1.8]; R2 = R1 + Ā2 R1: row 2 += .2 R1[0] + .6 R1[1]
    # R1[0] = [2, 0, 0], R1[1] = [.8, 1, 0] -> row 2 = [.3 + .4 + .48, .6, 1.8]
    torch.testing.assert_close(c.token_relevance(2), torch.tensor([[1.18, 0.6, 1.8]]))
    torch.testing.assert_close(c.token_relevance(-1, layers=["l1"]), torch.tensor([[0.3, 0.0, 1.8]]))
    # mean aggregation: (Ā1 + Ā2) / 2, row 1 = [(.8 + .5) / 2, .25, 0]
    torch.testing.assert_close(c.token_relevance(1, aggregation="mean"), torch.tensor([[0.65, 0.25, 0.0]]))
    torch.testing.assert_close(c.matrix(0, "mean", ["l2"])[0, 2], torch.tensor([0.2, 0.6, 1.0]))
    with pytest.raises(VizkitError, match="no image grid"):
        c.relevance(0)
    with pytest.raises(VizkitError, match="query position 3 is out of range for 3 positions"):
        c.token_relevance(3)


def test_attention_gradients_keyword_inputs_errors(traced):
    vlm, _ = traced["qwen2_vl"]
    with pytest.raises(InputError, match="must hold input_ids, a \\[B, T\\] tensor"):
        attention_gradients(
            vlm.model,
            {"pixel_values": torch.zeros(1, 3)},
            [lambda out: out.logits[:, -1, 0]],
            layers=[vlm.decoder_layers[0]],
        )


def test_keyword_inputs_inside_inference_mode(traced):
    vlm, trace = traced["qwen2_vl"]
    expected = answer_relevance(vlm, trace, 1, layers=[0, 1]).relevance
    with torch.inference_mode():
        got = answer_relevance(vlm, trace, 1, layers=[0, 1]).relevance
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_image_grid_and_share_by_hand():
    pm = PositionMap.empty(9, prompt_len=8)
    pm.add_image(np.array([[2, 3], [4, 5]]), thumbnail=np.array([[6]]))
    values = np.arange(9, dtype=float)
    np.testing.assert_array_equal(pm.image_grid(values, 0), [[2, 3], [4, 5]])
    np.testing.assert_array_equal(pm.image_grid(values, 0, thumbnail=True), [[6]])
    with pytest.raises(ValueError, match="5 values do not reach image 0's last position 5"):
        pm.image_grid(values[:5], 0)

    class T:
        pmap = pm

    # image positions 2..6 of 0..7 (the query, position 8, left out): (2+3+4+5+6) / (0+...+7)
    assert image_share(T, values) == pytest.approx(20 / 28)
    views = image_views(T, values)
    from vizkit.positions import Trace

    tr = Trace(np.arange(9), 8, [f"w{i}" for i in range(9)], pm, {}, "", "generate", "all", [])
    # position 8 (the query) is left out; ties keep position order
    assert tr.top_positions(np.array([0, 5, 1, 3, 3, 0, 0, 2, 9.0]), 3) == [
        (1, "text", "w1", 5.0),
        (3, "image 0 (0, 1)", "w3", 3.0),
        (4, "image 0 (1, 0)", "w4", 3.0),
    ]
    assert [(k, v) for k, v, _ in views] == [(0, "mosaic"), (0, "thumbnail")]


def test_run_folder_with_relevance(tmp_path):
    from vizkit.scenarios.vlm_attention_video import run_video

    res = run_video(
        None,
        output_dir=tmp_path / "run",
        explain_token=-1,
        relevance_layers=[1, 2],
        max_new_tokens=8,
        ground_truth=False,
    )
    r = res["relevance"]
    saved = np.load(tmp_path / "run" / "relevance.npz")
    np.testing.assert_array_equal(saved["relevance"], r.relevance)
    np.testing.assert_array_equal(saved["layers"], [1, 2])
    assert int(saved["token"]) == res["trace"].num_answer_tokens - 1
    assert (tmp_path / "run" / f"relevance_token{r.token}.png").is_file()
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"## Why answer token {r.token}" in report and f"relevance_token{r.token}.png" in report
    with pytest.raises(ParameterError, match="out of range: the answer has"):
        run_video(None, output_dir=tmp_path / "bad", explain_token=500, max_new_tokens=8, ground_truth=False)
    assert not (tmp_path / "bad").exists()  # checked before the folder is made


def test_cli_explain_token_by_word_on_a_qwen_folder(tmp_path, capsys):
    from vizkit.cli import main

    folder = VF.save_random_qwen2_vl(tmp_path / "qwen", layers=3)
    bench = tmp_path / "bench.json"
    _images(1)[0].save(tmp_path / "a.png")
    bench.write_text('[{"id": "s0", "image": ["a.png"], "problem": "What colour is the star?", "solution": "red"}]')
    out = tmp_path / "run"
    code = main(
        [
            "vlm-video",
            "--model_path",
            str(folder),
            "--benchmark_json",
            str(bench),
            "--start_phrase",
            "",
            "--max_new_tokens",
            "5",
            "--layers",
            "0",
            "2",
            "--explain_token",
            "-2",
            "--relevance_layers",
            "1",
            "2",
            "--output-dir",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    saved = np.load(out / "relevance.npz")
    j = int(saved["token"])
    assert list(saved["layers"]) == [1, 2] and int(saved["attention_layer"]) == 0
    assert (out / f"relevance_token{j}.png").is_file() and "relevance_figure" in capsys.readouterr().out
    # the saved row is what answer_relevance gives for the same trace and options
    trace_ids = np.load(out / "attention.npz")["input_ids"]
    assert j == len(trace_ids) - int(np.load(out / "attention.npz")["prompt_len"]) - 2
