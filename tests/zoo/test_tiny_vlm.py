"""Zoo model ``tiny_vlm``: a real HF LLaVA (CLIP tower + Llama decoder) trained here on
questions about shape scenes. Real computations on held-out scenes, no skips."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vizkit import zoo
from vizkit.errors import VizkitError
from vizkit.metrics import pointing_game
from vizkit.scenarios.vlm_attention_video import explain_answer_attention
from vizkit.zoo import tiny_vlm as tv
from vizkit.zoo import vlm_data
from vizkit.zoo.__main__ import build_function

FOLDER = zoo.zoo_dir("tiny_vlm")
BENCHMARK = FOLDER / "benchmark" / "sample.json"


@pytest.fixture(scope="module")
def bundle():
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    start = time.perf_counter()
    b = zoo.load("tiny_vlm")
    b.meta["load_seconds"] = time.perf_counter() - start
    return b


def test_bundle_loads_fast_and_is_complete(bundle):
    assert bundle.meta["load_seconds"] < 5
    assert not bundle.model.training
    assert type(bundle.model).__name__ == "LlavaForConditionalGeneration"
    size = sum(p.stat().st_size for p in FOLDER.rglob("*") if p.is_file())
    assert size <= 10 * 1024 * 1024, size
    meta = bundle.meta
    assert meta["num_image_tokens"] == 36 and meta["grid"] == [6, 6]
    assert meta["image_token_id"] == bundle.tokenizer.convert_tokens_to_ids("<image>")
    assert meta["prompt_format"] == "USER: <image>\n{problem} ASSISTANT:"
    assert meta["metrics"]["accuracy"] >= 0.9 and meta["metrics"]["n_eval"] >= 200
    x = bundle.preprocess(vlm_data.item("test", 0).image)
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32


def test_folder_loads_like_any_local_hf_model(bundle):
    from transformers import AutoProcessor, CLIPImageProcessor, LlavaForConditionalGeneration, LlavaProcessor

    model = LlavaForConditionalGeneration.from_pretrained(FOLDER, local_files_only=True).eval()
    processor = AutoProcessor.from_pretrained(FOLDER, local_files_only=True)
    assert isinstance(processor, LlavaProcessor) and isinstance(processor.image_processor, CLIPImageProcessor)
    cfg = model.config
    assert cfg.vision_feature_select_strategy == "default"  # the CLS token is dropped
    grid = cfg.vision_config.image_size // cfg.vision_config.patch_size
    assert grid * grid == 36 == cfg.image_seq_length
    s = vlm_data.item("test", 3)
    text = tv.prompt(s.question)
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": s.question}]}]
    assert processor.apply_chat_template(chat, add_generation_prompt=True) == text
    inputs = processor(text=[text], images=[s.image], return_tensors="pt")
    ids = inputs["input_ids"][0]
    image_pos = (ids == cfg.image_token_id).nonzero().flatten()
    off = bundle.meta["image_offset"]
    assert image_pos.tolist() == list(range(off, off + 36))  # 6 x 6 patches, row-major, no CLS
    assert ids[0] == processor.tokenizer.bos_token_id
    assert ids.tolist() == tv.Encoder(processor.tokenizer).prompt_ids(s.question)
    torch.testing.assert_close(inputs["pixel_values"][0], bundle.preprocess(s.image), atol=1e-5, rtol=0)
    with torch.no_grad():
        a = model(**inputs).logits
        b = bundle.model(**inputs).logits
    torch.testing.assert_close(a, b)
    gen = model.generate(**inputs, max_new_tokens=32, do_sample=False)
    solution = processor.decode(gen[0, ids.shape[0] :], skip_special_tokens=True)
    assert solution.strip().startswith(vlm_data.PREFIX)
    assert vlm_data.parse_answer(solution) in {
        "red",
        "green",
        "blue",
        "yellow",
        "purple",
        "orange",
        "1",
        "2",
        "3",
        "circle",
        "square",
        "triangle",
        "star",
        "yes",
        "no",
    }


def test_answer_accuracy_on_held_out_questions(bundle):
    from vizkit.zoo.train import tiny_vlm as tt

    samples = vlm_data.dataset("test", n=240, start=1000, masks=False)
    res = tt.evaluate(bundle.model, bundle.tokenizer, samples)
    print(f"tiny_vlm: accuracy {res['accuracy']:.3f} on {res['n']} held-out questions {res['accuracy_per_kind']}")
    assert res["n"] == 240
    assert res["accuracy"] >= 0.90


def test_sample_benchmark_reads_and_is_answered(bundle):
    items = vlm_data.load_benchmark(BENCHMARK)
    assert len(items) == 20
    raw = json.loads(BENCHMARK.read_text())
    for rec, s in zip(raw, items):
        assert set(rec) == {"id", "image", "problem", "solution", "answer"}
        assert isinstance(rec["image"], list) and not Path(rec["image"][0]).is_absolute()
        assert rec["solution"].startswith("Based on the following requirements")
        assert rec["solution"].endswith(f"Answer: {rec['answer']}")
        assert s.image.shape == (48, 48, 3) and s.image.dtype == np.uint8
    texts = tv.answer(bundle.model, bundle.tokenizer, [s.image for s in items], [s.question for s in items])
    acc = np.mean([vlm_data.parse_answer(t) == s.answer for t, s in zip(texts, items)])
    assert acc >= 0.85


def test_load_benchmark_errors(tmp_path):
    (tmp_path / "images").mkdir()
    ok = {"id": "a", "image": ["images/a.png"], "problem": "p", "solution": "s", "answer": "x"}
    path = tmp_path / "b.json"
    path.write_text(json.dumps([ok]))
    with pytest.raises(VizkitError, match="not found"):
        vlm_data.load_benchmark(path)
    bad = dict(ok)
    del bad["solution"]
    path.write_text(json.dumps([bad]))
    with pytest.raises(VizkitError, match="lacks key.*solution"):
        vlm_data.load_benchmark(path)
    path.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(VizkitError, match="JSON list"):
        vlm_data.load_benchmark(path)
    with pytest.raises(VizkitError, match="does not exist"):
        vlm_data.load_benchmark(tmp_path / "missing.json")
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "elsewhere.png")
    path.write_text(json.dumps([dict(ok, image="elsewhere.png")]))
    assert vlm_data.load_benchmark(path)[0].image.shape == (64, 64, 3)


def test_dataset_is_deterministic_with_masks_and_disjoint_splits():
    a, b = zoo.dataset("tiny_vlm", "test")[:40], vlm_data.dataset("test", n=40)
    assert len(zoo.dataset("tiny_vlm", "val")) == 300
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and x.question == y.question and x.answer == y.answer
        assert x.meta["solution"] == y.meta["solution"]
        assert x.meta["solution"].startswith(vlm_data.PREFIX) and x.meta["solution"].endswith(f"Answer: {x.answer}")
        assert all(m.any() for m in x.masks) and len(x.masks) == len(x.meta["objects"])
        if x.meta["target"] is None:
            assert x.mask is None and (x.meta["kind"] == "count" or x.answer == "no")
        else:
            assert x.mask is x.masks[x.meta["target"]] and x.mask.any()
    kinds = {s.meta["kind"] for s in a}
    assert kinds == set(vlm_data.KINDS)
    train = {s.image.tobytes() for s in vlm_data.dataset("train", n=300, masks=False)}
    held = {s.image.tobytes() for split in ("val", "test") for s in vlm_data.dataset(split, n=300, masks=False)}
    assert not train & held
    assert vlm_data.parse_answer(" I look for the star. The star is red. Answer: Red.") == "red"
    assert vlm_data.parse_answer("no answer here") == ""


def test_quick_build_writes_a_loadable_checkpoint(tmp_path):
    start = time.perf_counter()
    metrics = build_function("tiny_vlm")(tmp_path, quick=True)
    assert time.perf_counter() - start < 60
    folder = tmp_path / "tiny_vlm"
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["vizkit"]["metrics"]["accuracy"] == metrics["accuracy"] and cfg["vizkit"]["quick"] is True
    assert len(vlm_data.load_benchmark(folder / "benchmark" / "sample.json")) == 20
    b = tv.load(root=tmp_path)
    assert not b.model.training and b.meta["num_image_tokens"] == 36
    # the decoder stage trains with eager attention for its attention supervision, and the
    # saved model keeps the default implementation
    assert cfg["vizkit"]["train"]["attn_sup"] > 0
    assert cfg.get("_attn_implementation") in (None, "sdpa") and b.model.config._attn_implementation == "sdpa"


def test_decoder_attention_over_image_tokens(bundle):
    """vizkit.attention on the language model's decoder layers for (prompt + generated
    solution): [B, heads, T, T] maps, rows summing to 1, the image tokens where the processor
    puts them; the answer's attention over the 6 x 6 image tokens, averaged over heads and
    layers and upsampled, plays the pointing game against the asked-about object, from the ":"
    that predicts the answer and from the answer token. The decoder was trained with one head
    supervised to look at that object (vizkit.zoo.train.tiny_vlm.attention_supervision_loss), so the
    average points at it far above a random pixel's rate; before that supervision the same
    test measured 0.104 and 0.354."""
    model, tok = bundle.model, bundle.tokenizer
    samples = [s for s in vlm_data.dataset("test", n=240, start=2000) if s.mask is not None][:96]
    res = explain_answer_attention(model, tok, samples)
    maps, ids, att = res["maps"], res["input_ids"], res["attention_mask"]
    names = [f"model.language_model.layers.{i}" for i in range(model.config.text_config.num_hidden_layers)]
    assert list(maps) == names
    b, t = ids.shape
    off = bundle.meta["image_offset"]
    for name in names:
        a = maps[name]
        assert a.shape == (b, model.config.text_config.num_attention_heads, t, t)
        valid = att.bool()
        rows = a.sum(-1)  # [B, H, T]
        torch.testing.assert_close(rows.permute(0, 2, 1)[valid], torch.ones_like(rows.permute(0, 2, 1)[valid]))
        assert torch.all(a.triu(1) == 0)  # causal
    for i in range(b):  # right-padded: the image tokens sit at the same positions in every row
        img = (ids[i] == bundle.meta["image_token_id"]).nonzero().flatten()
        assert img.tolist() == list(range(off, off + 36))
    heat = res["heatmaps"]
    assert heat.shape == (b, 48, 48)
    masks = torch.as_tensor(np.stack([s.mask for s in samples]))
    hits = pointing_game(heat, masks)
    rate, chance = float(hits.float().mean()), float(masks.float().mean())  # chance: a random pixel's hit rate
    answer = explain_answer_attention(model, tok, samples, query="answer")
    assert answer["query_positions"].tolist() == (res["query_positions"] + 1).tolist()
    rate_answer = float(pointing_game(answer["heatmaps"], masks).float().mean())
    print(
        f"tiny_vlm: attention pointing game on {b} questions: from the ':' {rate:.3f}, "
        f"from the answer token {rate_answer:.3f} (chance {chance:.3f})"
    )
    assert hits.shape == (b,)
    # measured on these 96: 0.844 and 0.927 against a chance of 0.049
    assert chance < 0.1
    assert rate >= 0.8
    assert rate_answer >= 0.85


def test_cached_tower_features_give_the_models_own_forward():
    """The decoder stage trains on cached tower outputs scattered into the image positions;
    that must be exactly what ``LlavaForConditionalGeneration`` computes from pixels."""
    from vizkit.zoo.train import tiny_vlm as tt

    torch.manual_seed(0)
    tok = tt.build_tokenizer(vlm_data.corpus(n_per_kind=20, template=tv.PROMPT_FORMAT + " {solution}"))
    model = tt.build_model(tok).eval()
    samples = vlm_data.dataset("val", n=3, masks=False)
    enc = tv.Encoder(tok)
    ids, att, _ = enc.batch(
        [enc.prompt_ids(s.question) for s in samples], [enc.solution_ids(s.meta["solution"]) for s in samples]
    )
    px = tv.to_pixels(np.stack([s.image for s in samples]))
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=att, pixel_values=px).logits
        feats = tt.tower_features(model, px, batch_size=2)
        got = model(inputs_embeds=tt.embeds_from_features(model, ids, feats), attention_mask=att).logits
    assert feats.shape == (3, 36, model.config.vision_config.hidden_size)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_vision_targets_and_attention_probe_targets_by_hand():
    from vizkit.zoo.common import Sample
    from vizkit.zoo.train import tiny_vlm as tt

    m1 = np.zeros((48, 48), bool)  # a 6 x 6 grid of 8 px patches
    m1[0:8, 0:16] = True  # patches (0,0) and (0,1), fully
    m2 = np.zeros((48, 48), bool)
    m2[8:10, 0:8] = True  # a quarter of patch (1,0), index 6
    objects = [{"shape": "star", "color": "red"}, {"shape": "circle", "color": "blue"}]
    labels, cover = tt.vision_targets(Sample(image=None, masks=[m1, m2], meta={"objects": objects}))
    red, blue = list(vlm_data.shapes.COLORS).index("red"), list(vlm_data.shapes.COLORS).index("blue")
    star, circle = vlm_data.shapes.SHAPES.index("star"), vlm_data.shapes.SHAPES.index("circle")
    assert labels.shape == (2 * 36 + 2 * 3 + 1,) and cover.shape == (3, 36)
    colour, shape = labels[:36], labels[36:72]
    assert colour[[0, 1, 6]].tolist() == [red + 1, red + 1, blue + 1] and colour.sum() == 2 * (red + 1) + blue + 1
    assert shape[[0, 1, 6]].tolist() == [star + 1, star + 1, circle + 1]
    assert labels[72:78].tolist() == [red, blue, -100, star, circle, -100] and labels[-1] == 1
    assert cover[0, :2].tolist() == [1.0, 1.0] and cover[1, 6] == 0.25 and cover[2].sum() == 0

    # two red objects (a star and a square) and a blue star
    c = torch.tensor([[0, 0, 2]])
    s = torch.tensor([[3, 1, 3]])
    t = tt.AttentionProbe.targets(c, s)
    assert t["colour_present"][0].tolist() == [1, 0, 1, 0, 0, 0]
    assert t["colour_other"][0].tolist() == [-100, -100, 3, -100, -100, -100]  # red is ambiguous, blue -> star
    assert t["shape_present"][0].tolist() == [0, 1, 0, 1]
    assert t["shape_other"][0].tolist() == [-100, 0, -100, -100]  # square -> red; two stars: ambiguous
    pairs = t["pair_present"][0].view(6, 4)
    assert pairs.nonzero().tolist() == [[0, 1], [0, 3], [2, 3]]

    # the probe's logits [1, 34, 12]: queries 0-5 colours, 6-9 shapes, 10-33 pairs; outputs 0-5
    # colour logits, 6-9 shape logits, 10-11 present logits
    logits = torch.zeros(1, 34, 12)
    parts = tt.AttentionProbe.split(logits)
    assert {k: tuple(v.shape) for k, v in parts.items()} == {
        "colour_other": (1, 6, 4),
        "colour_present": (1, 6, 2),
        "shape_other": (1, 4, 6),
        "shape_present": (1, 4, 2),
        "pair_present": (1, 24, 2),
    }
    logits[0, 2, 6 + 3] = 1.0  # blue's query says star: right (the only defined colour_other)
    logits[0, 6 + 1, 2] = 1.0  # square's query says blue: wrong (red)
    assert tt.AttentionProbe.split(logits)["colour_other"][0, 2].argmax() == 3
    assert tt.AttentionProbe(8).accuracy(logits, c, s) == (1.0, 0.0)


def test_attention_supervision_targets_and_loss_by_hand():
    """The decoder's auxiliary loss: head attention [B, T, K] against the asked-about object's
    normalised patch coverage, averaged over supervised solution positions only."""
    from vizkit.zoo.train import tiny_vlm as tt

    cover = np.zeros((3, 4), np.float32)
    cover[0] = [1.0, 0.5, 0.5, 0.0]
    cover[1] = [0.0, 0.0, 0.0, 0.25]
    assert tt.target_attention(cover, 0).tolist() == [0.5, 0.25, 0.25, 0.0]
    assert tt.target_attention(cover, 1).tolist() == [0.0, 0.0, 0.0, 1.0]
    assert tt.target_attention(cover, None).tolist() == [0.0] * 4  # "how many shapes": no target
    assert tt.target_attention(cover, 2).tolist() == [0.0] * 4  # an empty slot is not supervised

    attn = torch.tensor(
        [
            [[0.5, 0.25, 0.25, 0.0], [0.1, 0.1, 0.1, 0.7], [1.0, 0.0, 0.0, 0.0]],
            [[0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.0, 1.0], [0.4, 0.2, 0.2, 0.2]],
        ]
    )
    target = torch.tensor([[0.5, 0.25, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0]])
    positions = torch.tensor([[True, True, False], [True, True, True]])
    got = tt.attention_supervision_loss(attn, target, positions)  # eps 1e-6: no log(0)
    # row 0 at t = 0: -(0.5 ln 0.5 + 0.5 ln 0.25); at t = 1: -(0.5 ln 0.1 + 0.5 ln 0.1);
    # t = 2 is not a supervised position and row 1 has no target
    want = (-(0.5 * np.log(0.5) + 0.5 * np.log(0.25)) - np.log(0.1)) / 2
    assert abs(float(got) - want) < 1e-5
    # its gradient reaches the attention only where supervised
    a = attn.clone().requires_grad_(True)
    tt.attention_supervision_loss(a, target, positions).backward()
    assert torch.all(a.grad[0, 2] == 0) and torch.all(a.grad[1] == 0)
    want_grad = torch.tensor([-0.5 / 0.5, -0.25 / 0.25, -0.25 / 0.25, 0.0]) / 2  # -target / attn / 2 positions
    torch.testing.assert_close(a.grad[0, 0], want_grad, atol=1e-5, rtol=1e-5)
    # nothing supervised: 0, still differentiable
    none = tt.attention_supervision_loss(a, torch.zeros(2, 4), positions)
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_the_whole_zoo_is_listed_and_fits_in_40_mb():
    assert zoo.names() == ["face_forgery_detector", "mnist_vit", "shapes_clip", "shapes_clip_cnn", "tiny_vlm"]
    root = zoo.data_root() / "zoo"
    sizes = {n: sum(p.stat().st_size for p in (root / n).rglob("*") if p.is_file()) for n in zoo.names()}
    assert all(sizes.values()), sizes  # every checkpoint is there
    assert sum(sizes.values()) <= 40 * 1024 * 1024, sizes
