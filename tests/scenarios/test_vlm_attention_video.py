"""Scenario 5 (vizkit.scenarios.vlm_attention_video): capture parity against eager
``output_attentions``, the position map, frames, the CLI and its bad inputs.

Random tiny LLaVA / Qwen2-VL / Qwen2.5-VL folders are saved by each family's own model and
processor classes (tests/helpers/vlm_folders.py; tokenizer: the zoo's tiny_vlm BPE); nothing comes from a
hub. Every other family's capture and CLI run is in tests/models/test_vlm_families_capture.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import vlm_folders as VF
import vlm_folders_more as VM
from PIL import Image

from vizkit import cli, token_video
from vizkit.errors import InputError, ParameterError
from vizkit.models.vlm import family_for
from vizkit.models.vlm.trace import attention_implementations, build_inputs
from vizkit.positions import IMAGE, TEXT
from vizkit.scenarios import vlm_attention_video as V

PROBLEM = "What colour is the star?"


def _images(n: int = 2):
    rng = np.random.default_rng(0)
    shapes = [(56, 84), (112, 56)]  # non-square: Qwen grids (4, 6) -> (2, 3) and (8, 4) -> (4, 2)
    return [Image.fromarray(rng.integers(0, 255, (*shapes[k], 3), dtype=np.uint8)) for k in range(n)]


@pytest.fixture(scope="module")
def vlm_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlms")
    build = {
        "llava": VF.save_random_llava,
        "qwen2_vl": VF.save_random_qwen2_vl,
        "qwen2_5_vl": VF.save_random_qwen2_5_vl,
        "idefics3": VM.save_random_idefics3,
    }
    return {arch: save(root / arch, layers=3) for arch, save in build.items()}


@pytest.fixture(scope="module")
def tiny():
    return V.load_vlm(None)


@pytest.fixture(scope="module")
def benchmark():
    return V.default_benchmark()


def _inputs(vlm, images):
    inputs, prompt = build_inputs(vlm, PROBLEM, images)
    inputs.pop("original_sizes")
    return inputs, prompt


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl", "qwen2_5_vl"])
def test_captured_rows_equal_eager_output_attentions(vlm_dirs, arch):
    vlm = V.load_vlm(vlm_dirs[arch])
    assert attention_implementations(vlm.model) == ["sdpa"] * 3
    images = _images(2)
    trace = V.trace_sample(vlm, PROBLEM, images, [1, 2], max_new_tokens=6, start_phrase=None)
    # the capture ran only inside the call: every layer is back on sdpa
    assert attention_implementations(vlm.model) == ["sdpa"] * 3
    vlm.model.set_attn_implementation("eager")
    inputs, _ = _inputs(vlm, images)
    out = vlm.model.generate(
        **inputs,
        max_new_tokens=6,
        do_sample=False,
        output_attentions=True,
        return_dict_in_generate=True,
        pad_token_id=0,
    )
    L = inputs["input_ids"].shape[1]
    n = trace.num_answer_tokens
    assert out.sequences[0, L : L + n].tolist() == trace.input_ids[L:].tolist()  # capture does not change the text
    for layer in (1, 2):
        assert trace.rows[layer].shape[:2] == (n, 4)
        for j in range(n):
            ref = out.attentions[j][layer][0, :, -1, :].numpy()  # the step that produced token j
            got = trace.rows[layer][j]
            np.testing.assert_allclose(got[:, : ref.shape[-1]], ref, atol=1e-5, rtol=0)
            assert np.all(got[:, ref.shape[-1] :] == 0)
            np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def test_solution_mode_rows_equal_eager_forward(vlm_dirs):
    vlm = V.load_vlm(vlm_dirs["qwen2_vl"])
    solution = "Based on the following requirements, the star is red."
    trace = V.trace_sample(
        vlm, PROBLEM, _images(1), [0], mode="solution", solution=solution, heads="mean", start_phrase="the star"
    )
    vlm.model.set_attn_implementation("eager")
    inputs, _ = _inputs(vlm, _images(1))
    ids = torch.as_tensor(trace.input_ids)[None]
    full = dict(
        inputs,
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        mm_token_type_ids=torch.nn.functional.pad(inputs["mm_token_type_ids"], (0, ids.shape[1] - trace.prompt_len)),
    )
    with torch.no_grad():
        att = vlm.model(**full, output_attentions=True).attentions[0][0].mean(0)  # [T, T], heads averaged
    L = trace.prompt_len
    np.testing.assert_allclose(trace.rows[0][:, 0], att[L - 1 : -1, :-1].numpy(), atol=1e-5, rtol=0)
    assert np.all(att[L - 1 : -1, -1].numpy() == 0)  # the last position is never a key of a kept row
    assert trace.text.startswith(" Based") or trace.text.startswith("Based")
    # the video starts at the token where "the star" begins
    assert "".join(trace.pieces[L + trace.start :]).lstrip().startswith("the star")
    assert "the star" not in "".join(trace.pieces[L : L + trace.start])


def test_position_map_llava_one_and_two_images(vlm_dirs):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(vlm_dirs["llava"])
    img = cfg.image_token_id
    llava = family_for("llava")
    one = [1, 10, *[img] * 36, 12, 13]
    pm = llava.position_map(cfg, {"input_ids": one + [20, 21]}, prompt_len=len(one))
    assert pm.grids == [(6, 6)]
    assert [pm.label(t) for t in (0, 2, 3, 9, 37, 38, 40, 41)] == [
        "text",
        "image 0 (0, 0)",
        "image 0 (0, 1)",
        "image 0 (1, 1)",
        "image 0 (5, 5)",
        "text",
        "generated",
        "generated",
    ]
    two = [1, 10, *[img] * 36, 11, *[img] * 36, 12]  # separated by a text token
    pm = llava.position_map(cfg, {"input_ids": two})
    assert pm.grids == [(6, 6), (6, 6)] and [len(p) for p in pm.image_positions] == [36, 36]
    assert pm.label(38) == "text" and pm.label(39) == "image 1 (0, 0)" and pm.label(39 + 13) == "image 1 (2, 1)"
    adjacent = [1, *[img] * 72, 12]  # "<image><image>": one run, split by the tower's grid
    pm = llava.position_map(cfg, {"input_ids": adjacent})
    assert pm.label(36) == "image 0 (5, 5)" and pm.label(37) == "image 1 (0, 0)"


def test_position_map_qwen_spans_merge_and_non_square_grids(vlm_dirs):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(vlm_dirs["qwen2_vl"])
    s, e, p = cfg.vision_start_token_id, cfg.vision_end_token_id, cfg.image_token_id
    ids = [1, 10, s, *[p] * 6, e, s, *[p] * 8, e, 11, 12]
    thw = torch.tensor([[1, 4, 6], [1, 8, 4]])  # patches; 2x2 merge -> grids (2, 3) and (4, 2)
    qwen = family_for("qwen2_vl")
    pm = qwen.position_map(cfg, {"input_ids": ids, "image_grid_thw": thw})
    assert pm.grids == [(2, 3), (4, 2)]
    assert pm.label(2) == "special" and pm.label(3) == "image 0 (0, 0)" and pm.label(3 + 4) == "image 0 (1, 1)"
    assert pm.label(9) == "special" and pm.label(10) == "special" and pm.label(11) == "image 1 (0, 0)"
    assert pm.label(11 + 5) == "image 1 (2, 1)" and pm.label(18) == "image 1 (3, 1)" and pm.label(19) == "special"
    assert pm.label(20) == "text"
    assert (pm.kind == IMAGE).sum() == 14
    with pytest.raises(InputError, match="2 image span"):
        qwen.position_map(cfg, {"input_ids": ids, "image_grid_thw": thw[:1]})
    # the processor's real prompt agrees
    vlm = V.load_vlm(vlm_dirs["qwen2_vl"])
    inputs, _ = _inputs(vlm, _images(2))
    pm = vlm.position_map(inputs)
    assert pm.grids == [(2, 3), (4, 2)]


def test_failing_trace_leaves_no_hooks_and_the_same_state(vlm_dirs, monkeypatch):
    vlm = V.load_vlm(vlm_dirs["llava"])
    layers = vlm.decoder_layers
    before = [(len(b._forward_hooks), len(b._forward_pre_hooks)) for b in layers]

    def broken(*args, **kwargs):  # the tower fails mid-generate, inside the capture
        raise RuntimeError("vision tower failed")

    monkeypatch.setattr(vlm.model.model.vision_tower, "forward", broken)
    with pytest.raises(RuntimeError, match="vision tower failed"):
        V.trace_sample(vlm, PROBLEM, _images(1), [0, 2], max_new_tokens=3, start_phrase=None)
    assert [(len(b._forward_hooks), len(b._forward_pre_hooks)) for b in layers] == before
    assert attention_implementations(vlm.model) == ["sdpa"] * 3 and not vlm.model.training
    with pytest.raises(ParameterError, match="3 decoder layers"):
        V.resolve_layers(vlm.num_layers, 3)


def test_sinks_masked_rows_and_report(tiny, benchmark, tmp_path):
    """Sinks: position 0 plus outliers of the received attention; --sinks mask zeroes them and
    renormalises each row; the report's table gives each layer's share on them."""
    json_path, image_dir = benchmark
    sample, images, _ = V.load_sample(json_path, image_dir, 0)
    res = V.create_video(
        tiny,
        sample,
        images,
        layers=[1],
        start_phrase="",
        mode="solution",
        heads="mean",
        output_dir=tmp_path / "run",
        ground_truth=False,
        sinks="mask",
    )
    t = res["trace"]
    rows = t.rows[1].mean(1)  # [N, K]
    L = t.prompt_len
    received = np.array([rows[np.arange(len(rows)) + L > k, k].mean() for k in range(L)])  # by hand, per key
    q1, q3 = np.percentile(received, [25, 75])
    expect = [0] + [int(k) for k in np.argsort(-received, kind="stable") if received[k] > q3 + 3 * (q3 - q1) and k]
    assert t.sinks(1).tolist() == expect[:5]
    masked = t.head_rows(1, "mean", sinks="mask")
    keep = rows.copy()
    keep[:, expect[:5]] = 0
    np.testing.assert_allclose(masked, keep / keep.sum(1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(res["shares"]["sinks"], rows[:, expect[:5]].sum(1), atol=1e-6)
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Attention sinks" in report and "masks them" in report
    with np.load(res["outputs"]["attention"]) as z:
        assert z["sinks_layer1"].tolist() == expect[:5]
    with pytest.raises(ParameterError, match="sinks='drop'"):
        V.create_video(tiny, sample, images, layers=[1], sinks="drop", output_dir=tmp_path / "bad")


def test_video_frames_npz_report_and_explorer(tiny, benchmark, tmp_path):
    json_path, image_dir = benchmark
    sample, images, notes = V.load_sample(json_path, image_dir, 0)
    assert notes == []
    res = V.create_video(
        tiny,
        sample,
        images,
        layers=[1, 2],
        start_phrase="I count",
        mode="solution",
        heads="mean",
        output_dir=tmp_path / "run",
        ground_truth=False,
    )
    t = res["trace"]
    # hand count: the solution's tokens from the one where "I count" begins
    solution_ids = tiny.tokenizer(" " + sample["solution"], add_special_tokens=False)["input_ids"]
    before = tiny.tokenizer(" Based on the following requirements,", add_special_tokens=False)["input_ids"]
    assert solution_ids[: len(before)] == before
    assert t.num_answer_tokens == len(solution_ids) and t.start == len(before)
    for layer in (1, 2):
        video = res["outputs"][f"video_layer{layer}"]
        assert video.name == f"combined_attention_visualization_layer{layer}.mp4"
        frames = imageio.mimread(video, memtest=False)
        assert len(frames) == len(solution_ids) - len(before) == len(t.frame_tokens)
    with np.load(res["outputs"]["attention"]) as z:
        assert z["rows_layer1"].shape == (len(solution_ids), 4, len(t.input_ids) - 1)
        np.testing.assert_allclose(z["rows_layer1"].sum(-1), 1.0, atol=1e-5)
        assert int(z["prompt_len"]) == t.prompt_len and list(z["grids"][0]) == [6, 6]
        assert (z["kind"] == IMAGE).sum() == 36
    shares = res["shares"]
    np.testing.assert_allclose(shares[["image", "prompt", "special", "answer"]].sum(1), 1.0, atol=1e-5)
    assert (shares["image_entropy"] <= np.log(36) + 1e-9).all()
    report = (tmp_path / "run" / "report.md").read_text()
    assert "attention_shares.png" in report and (tmp_path / "run" / "contact_sheet_layer2.png").is_file()
    assert (tmp_path / "run" / ".complete.json").is_file()
    ex = V.VLMAttentionExplorer(t)
    first = ex.drawn.copy()
    ex.token.value = ex.token.max
    ex.head.value = 0
    assert ex.draws == 3 and not np.array_equal(first, ex.drawn)
    assert ex.drawn.shape == V.FrameRenderer(t, 1, 0).frame(ex.token.max).shape
    np.testing.assert_array_equal(ex.drawn, V.FrameRenderer(t, 1, 0).frame(ex.token.max))


def test_png_fallback_and_cjk(vlm_dirs, tmp_path, monkeypatch):
    # frame-rendering speed is a benchmark's business (benchmarks/), not a timed unit test
    vlm = V.load_vlm(vlm_dirs["qwen2_vl"])
    trace = V.trace_sample(vlm, "星星是什么颜色？ What colour?", _images(2), [1], max_new_tokens=40, start_phrase=None)
    r = V.FrameRenderer(trace, 1, "max")
    frames = [r.frame(j) for j in trace.frame_tokens]
    assert frames and all(f.ndim == 3 and f.shape[2] == 3 for f in frames)
    monkeypatch.setattr(token_video, "ffmpeg_problem", lambda: "no ffmpeg here")
    out, why = token_video.write_token_video(r, tmp_path / "v.mp4")
    assert "no ffmpeg here" in why and not (tmp_path / "v.mp4").exists()
    assert len(list(out.glob("frame_*.png"))) == len(frames)


def _cli(capsys, *args):
    code = cli.main(["vlm-video", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("arch, mode", [("qwen2_vl", "solution"), ("qwen2_5_vl", "generate"), ("llava", "generate")])
def test_cli_on_each_vlm_folder(vlm_dirs, benchmark, tmp_path, capsys, arch, mode):
    json_path, image_dir = benchmark
    code, out, err = _cli(
        capsys,
        "--model_path",
        str(vlm_dirs[arch]),
        "--benchmark_json",
        str(json_path),
        "--image_dir",
        str(image_dir),
        "--layers",
        "0",
        "2",
        "--heads",
        "1",
        "--mode",
        mode,
        "--max_new_tokens",
        "12",
        "--start_phrase",
        "",
        "--output-dir",
        str(tmp_path / "q"),
    )
    assert code == 0, err
    for layer in (0, 2):
        video = tmp_path / "q" / f"combined_attention_visualization_layer{layer}.mp4"
        assert video.is_file() and video.read_bytes()[4:8] == b"ftyp"  # an MP4 container
    assert "Ground truth" not in (tmp_path / "q" / "report.md").read_text()


@pytest.mark.parametrize("arch", ["qwen2_vl", "llava", "idefics3"])  # idefics3: tiles + a global view
def test_notebook_on_each_vlm_folder(vlm_dirs, benchmark, tmp_path, arch):
    """Notebook 05 run headless by papermill on a model folder from disk."""
    import os

    import papermill as pm

    json_path, image_dir = benchmark
    root = Path(__file__).resolve().parents[2]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pm.execute_notebook(
        str(root / "notebooks" / "05_vlm_attention_video.ipynb"),
        str(tmp_path / "out.ipynb"),
        parameters={
            "model_path": str(vlm_dirs[arch]),
            "benchmark_json": str(json_path),
            "image_dir": str(image_dir),
            "layers": [1],
            "max_new_tokens": 10,
            "start_phrase": "",
            "output_dir": str(tmp_path / "run"),
            "interactive": False,
            "ground_truth_questions": 0,
        },
        kernel_name="python3",
        cwd=str(tmp_path),
        progress_bar=False,
    )
    assert (tmp_path / "run" / "combined_attention_visualization_layer1.mp4").is_file()
    assert (tmp_path / "run" / "report.md").is_file()
    with np.load(tmp_path / "run" / "attention.npz") as z:
        tiled = arch == "idefics3"  # 3 x 3 tiles stitched into one mosaic, and the global image on its own grid
        assert bool((z["thumbnail_grids"] > 0).all()) == tiled and bool((z["tile"] > 0).any()) == tiled


def test_bad_inputs_one_message_exit_2_no_video(vlm_dirs, benchmark, tmp_path, capsys):
    json_path, image_dir = benchmark
    records = json.loads(json_path.read_text())
    out = tmp_path / "out"
    base = ["--benchmark_json", str(json_path), "--output-dir", str(out)]

    def fails(args, *expected):
        code, _, err = _cli(capsys, *args)
        assert code == 2, err
        assert "Traceback" not in err and err.count("error:") == 1
        for e in expected:
            assert e in err, err
        assert not out.exists() or not any(out.iterdir())

    fails([*base, "--sample_idx", "20"], "sample_idx 20 is out of range", "holds 20 samples")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{k: v for k, v in records[0].items() if k != "problem"}]))
    fails(
        ["--benchmark_json", str(broken), "--image_dir", str(image_dir), "--output-dir", str(out)],
        "sample 0 (id 'test-05000')",
        "no 'problem' key",
    )
    broken.write_text(json.dumps([{k: v for k, v in records[0].items() if k != "image"}]))
    fails(["--benchmark_json", str(broken), "--image_dir", str(image_dir), "--output-dir", str(out)], "no 'image' key")
    fails([*base, "--image_dir", str(tmp_path)], "image 'images/test-05000.png' not found under image_dir")
    fails([*base, "--layer_idx", "3"], "layer index 3 is out of range", "3 decoder layers")
    fails(
        [*base, "--start_phrase", "Once upon a time"],
        "'Once upon a time' is not in the generated text",
        "Based on the following requirements",
    )
    fails([*base, "--heads", "7"], "head 7 is out of range")
    notvlm = tmp_path / "bert"
    notvlm.mkdir()
    (notvlm / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    fails([*base, "--model_path", str(notvlm)], "this is a bert model (BertModel)", "supported are", "Qwen2-VL")
    # more images than max_image_num: the first N are used, and said so
    many = tmp_path / "many.json"
    many.write_text(json.dumps([dict(records[0], image=[records[0]["image"][0]] * 3)]))
    sample, images, notes = V.load_sample(many, image_dir, 0, max_image_num=2)
    assert len(images) == 2 and notes == ["sample 0 (id 'test-05000') has 3 images; using the first 2 (max_image_num)"]


def test_ground_truth_auto_heads_choose_the_supervised_head(tiny, benchmark, tmp_path):
    """The ground-truth table per head view (4 heads, mean, max) x 3 layers with its chance level; heads=auto
    shows layer 1's supervised head 0 (most mass on the asked-about object, above the mean over heads, far
    above chance) and the report says why, with the numbers."""
    json_path, image_dir = benchmark
    sample, images, _ = V.load_sample(json_path, image_dir, 1)
    res = V.create_video(
        tiny, sample, images, layers=[1], heads="auto", mode="solution", output_dir=tmp_path / "run", ground_truth=40
    )
    table, info = res["ground_truth"]
    assert info["questions"] >= 20 and 0 < info["random_pixel"] < 0.2 and len(table) == 3 * 6
    assert list(table["head"][:6]) == [0, 1, 2, 3, "mean", "max"]
    assert (table["chance"] == info["random_pixel"]).all()
    assert table["object mass"].between(0, 1).all()
    sup = table[(table.layer == 1) & (table["head"].map(lambda h: h == 0 and not isinstance(h, str)))].iloc[0]
    assert sup["trained with attention supervision"] == "yes"
    assert sup["answer token"] > 0.7 > info["random_pixel"] * 5
    assert V.table_value(table, 1, 0) == sup["object mass"] > V.table_value(table, 1, "mean") > info["random_pixel"]
    assert res["heads"] == {1: 0} == V.choose_heads(table, [1])
    flagged = table[table["at or below chance"] != ""]
    for r in flagged.to_dict("records"):
        assert any(r[c] <= r["chance"] for c in r["at or below chance"].split(", "))
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"layer 1: head 0, object mass {sup['object mass']:.3f}" in report
    assert "auto (layer 1: head 0)" in report and "head_choice" not in report
    assert V.resolve_auto_heads("auto", [1, 2], None) == (
        {1: "mean", 2: "mean"},
        "heads=auto: no ground-truth table for this model (tiny_vlm only): every layer shows the mean over heads.",
    )
    assert V.resolve_auto_heads(2, [1, 2], None) == ({1: 2, 2: 2}, "")


def test_frame_shares_are_shares_and_labels_agree(tiny, benchmark, tmp_path):
    """Each frame's second line is a share summing to 1 also for max over heads (hand-computed); the explorer's
    dropdown labels, its title and the frame's first line name the same 0-based layer and head."""
    import ipywidgets

    json_path, image_dir = benchmark
    sample, images, _ = V.load_sample(json_path, image_dir, 1)
    t = V.trace_sample(tiny, sample["problem"], images, [1, 2], mode="solution", solution=sample["solution"])
    j = t.num_answer_tokens - 1
    p = t.prompt_len + j
    fused = t.rows[1][j].max(0)  # [K] max over heads: sums to more than 1
    assert fused[:p].sum() > 1.2
    kinds = t.pmap.kind[:p]
    expect = {
        "image": fused[:p][kinds == IMAGE].sum() / fused[:p].sum(),
        "prompt": fused[:p][kinds == TEXT].sum() / fused[:p].sum(),
    }
    shares = token_video.row_shares(t, fused, j)
    assert shares["image"] == pytest.approx(expect["image"]) and shares["prompt"] == pytest.approx(expect["prompt"])
    assert sum(shares.values()) == pytest.approx(1.0)
    one = token_video.row_shares(t, t.rows[1][j, 0], j)  # one head: the softmax row's own mass, unchanged
    assert one["image"] == pytest.approx(t.rows[1][j, 0, :p][kinds == IMAGE].sum(), abs=1e-6)
    frame = V.token_shares(t, 1, "max")
    assert frame.loc[j, "image"] == pytest.approx(expect["image"]) and frame.loc[j, "head"] == "max over heads"
    ex = V.VLMAttentionExplorer(t, head={1: 0, 2: "max"})
    assert isinstance(ex.layer, ipywidgets.Dropdown) and ex.head.label == "head 0"
    for layer in (1, 2):
        for head in ("mean", "max", 0, 3):
            ex.layer.value, ex.head.value = layer, head
            title = ex.last_view.title
            assert title.startswith(f"{ex.layer.label} | {ex.head.label} | token {ex.token.value} of ")
            assert title == V.FrameRenderer(t, layer, head).title(ex.token.value)
    assert [o[0] for o in ex.layer.options] == ["layer 1", "layer 2"]
    # this sample's object: the mask of tiny_vlm's test item 5001, and the attention mass on its patches
    mask = V.sample_object_mask(sample)
    from vizkit.zoo import vlm_data

    np.testing.assert_array_equal(mask, vlm_data.item("test", 5001).mask)
    assert V.sample_object_mask(dict(sample, problem="How many shapes are there?")) is None
    assert V.sample_object_mask({"id": "chartqa-7", "problem": "?"}) is None
    pos = t.pmap.image_positions[0]
    cov = mask.reshape(6, 8, 6, 8).mean((1, 3)).ravel()  # each 8x8-pixel patch's covered fraction
    row = t.rows[1][j, 0, pos]
    assert V.trace_object_mass(t, 1, 0, mask)[j] == pytest.approx(float((row / row.sum() * cov).sum()))
    fused = t.rows[1][j].mean(0)[pos]
    assert V.trace_object_mass(t, 1, "mean", mask)[j] == pytest.approx(float((fused / fused.sum() * cov).sum()))
    assert [o[0] for o in ex.head.options] == ["mean over heads", "max over heads"] + [f"head {h}" for h in range(4)]


def test_sample_indices_forms():
    assert V.sample_indices("all", 4) == [0, 1, 2, 3]
    assert V.sample_indices("0,2, 3", 5) == [0, 2, 3] and V.sample_indices("1-3", 5) == [1, 2, 3]
    assert V.sample_indices([-1, 0, 4], 5) == [4, 0]
    with pytest.raises(InputError, match="sample_idx 7 is out of range: the benchmark holds 5 samples"):
        V.sample_indices("1,7", 5)
    with pytest.raises(ParameterError, match="use an index, a list"):
        V.sample_indices("first", 5)


def test_many_samples_resume_failures_and_dask(benchmark, tmp_path, capsys):
    """--sample_idx list / range: one sample_<idx>/ run folder each and index.md; a rerun into the
    folder skips the complete samples; a failing sample is reported (exit 1) and redone next time;
    --workers runs the same samples on a Dask LocalCluster with the same numbers."""
    json_path, image_dir = benchmark
    records = json.loads(json_path.read_text())
    bench = tmp_path / "bench.json"
    broken = [dict(r) for r in records[:4]]
    broken[1]["image"] = ["images/missing.png"]
    bench.write_text(json.dumps(broken))
    out = tmp_path / "many"
    common = [
        "--benchmark_json",
        str(bench),
        "--image_dir",
        str(image_dir),
        "--layers",
        "1",
        "--mode",
        "solution",
        "--start_phrase",
        "",
        "--output-dir",
        str(out),
    ]
    code, stdout, err = _cli(capsys, *common, "--sample_idx", "0,2")
    assert code == 0, err
    assert sorted(p.name for p in out.glob("sample_*")) == ["sample_0", "sample_2"]
    first = (out / "sample_0" / "attention.npz").stat().st_mtime_ns
    code, stdout, err = _cli(capsys, *common, "--sample_idx", "0-3")
    assert code == 1  # sample 1's image is missing
    assert (
        "sample 1: failed (InputError" in stdout
        and "missing.png" in stdout
        and "2 complete from an earlier run" in stdout
    )
    assert (out / "sample_0" / "attention.npz").stat().st_mtime_ns == first  # skipped, not redone
    assert (out / "sample_3" / ".complete.json").is_file() and not (out / "sample_1" / ".complete.json").exists()
    index = (out / "index.md").read_text()
    assert "failed" in index and "done (earlier run)" in index
    bench.write_text(json.dumps([dict(r) for r in records[:4]]))  # fixed: only sample 1 is redone
    code, stdout, err = _cli(capsys, *common, "--sample_idx", "all")
    assert code == 0, err
    assert "3 complete from an earlier run" in stdout and (out / ".complete.json").is_file()
    # the same samples on a Dask LocalCluster: the same rows
    dask_out = tmp_path / "dask"
    code, stdout, err = _cli(capsys, *common[:-1], str(dask_out), "--sample_idx", "0,3", "--workers", "2")
    assert code == 0, err
    for i in (0, 3):
        with (
            np.load(out / f"sample_{i}" / "attention.npz") as a,
            np.load(dask_out / f"sample_{i}" / "attention.npz") as b,
        ):
            np.testing.assert_allclose(a["rows_layer1"], b["rows_layer1"], atol=1e-6)
            np.testing.assert_array_equal(a["input_ids"], b["input_ids"])


def test_notebook05_reads_as_a_student_would_see_it():
    """The committed notebook 05: no literal backslash-n in markdown, no figure repr or progress bar in any
    output, the input image shown as a PNG, teaching cells at the top, 0-based stated, each exercise followed
    by a collapsed answer cell whose checked output is one 'answer:' line."""
    path = Path(__file__).resolve().parents[2] / "notebooks" / "05_vlm_attention_video.ipynb"
    cells = json.loads(path.read_text())["cells"]
    markdown = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    assert not [m[:60] for m in markdown if "\\n" in m]
    outputs = [json.dumps(o) for c in cells if c["cell_type"] == "code" for o in c["outputs"]]
    for bad in ("<Figure size", "Loading weights", "it/s]", "Traceback"):
        assert not [o[:80] for o in outputs if bad in o], bad
    sample_cell = next(c for c in cells if "".join(c["source"]).startswith("params = va.check_notebook_parameters"))
    assert any("image/png" in o.get("data", {}) for o in sample_cell["outputs"])
    assert "## What you will learn" in markdown[1] and "## What you need to know first" in markdown[1]
    method = [m for m in markdown if m.startswith("### Method in brief:")]
    assert len(method) == 2 and all("$$" in m and "When it fails" in m and "](https://arxiv.org/" in m for m in method)
    assert "0-based" in markdown[0]
    exercises = [i for i, c in enumerate(cells) if "exercise" in c["metadata"].get("tags", [])]
    assert len(exercises) == 3
    for i in exercises:
        answer = cells[i + 1]
        assert answer["metadata"]["tags"] == ["answer"] and answer["metadata"]["jupyter"]["source_hidden"] is True
        assert "".join(answer["source"]).startswith("# NBVAL_CHECK_OUTPUT\n")
        printed = "".join("".join(o.get("text", "")) for o in answer["outputs"])
        assert printed.startswith("answer: ") and printed.count("\n") == 1, printed
