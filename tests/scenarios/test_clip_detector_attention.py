"""Scenario 1: gradient-weighted attention of a deepfake detector (API, files, CLI, explorer)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from eager_attention import class_maps
from models import all_hooks, resnet18, timm_vit
from PIL import Image

import vizkit
from vizkit import zoo
from vizkit.errors import CaptureError, VizkitError
from vizkit.metrics import faithfulness_scores, pointing_chance, pointing_game, top_region_iou
from vizkit.models import ClipDetector
from vizkit.scenarios import clip_detector_attention as cda
from vizkit.scenarios.detector_attention_eval import below_chance, same_maps

ROOT = Path(__file__).resolve().parents[2]
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"}


@pytest.fixture(scope="module")
def detector():
    return cda.load_detector_model()


@pytest.fixture(scope="module")
def faces():
    test = zoo.dataset("face_forgery_detector", "test")
    return [s for s in test if s.label == 1][:6], [s for s in test if s.label == 0][:6]


def _dfb_checkpoint(folder: Path, layers: int = 6) -> tuple[Path, Path, ClipDetector]:
    from transformers import CLIPVisionConfig

    torch.manual_seed(0)
    model = ClipDetector(
        CLIPVisionConfig(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=layers,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    ).eval()
    sd = {k.replace("backbone.vision_model.", "backbone."): v for k, v in model.state_dict().items()}
    torch.save(sd, folder / "det.pth")
    (folder / "clip.yaml").write_text(
        yaml.safe_dump(
            {
                "model_name": "clip",
                "resolution": 32,
                "mean": [0.5] * 3,
                "std": [0.5] * 3,
                "log_dir": "/somewhere",
                "num_heads": 2,
            }
        )
    )
    return folder / "clip.yaml", folder / "det.pth", model


def test_comparison_numbers_and_sentence_by_hand():
    real = torch.zeros(6, 6)
    fake = torch.zeros(6, 6)
    fake[:2, :2] = 1.0  # fake map: upper-left 2x2 block
    real[4:, 4:] = 1.0  # real map: lower-right 2x2 block
    n = cda.comparison_numbers(real, fake)
    assert n["top20_iou"] == 0.0 and n["overlap_mean"] == 0.0 and n["difference_mean"] == 0.0
    cells = np.array(n["difference_by_region"])
    assert cells[0, 0] == 1.0 and cells[2, 2] == -1.0 and np.abs(cells).sum() == 2.0
    assert cda.where_they_differ(n) == (
        "The fake-class map is stronger in the upper left (+1.00), the real-class map "
        "in the lower right (-1.00); their top-20 % regions overlap with IoU 0.00."
    )
    same = cda.comparison_numbers(real, real)
    assert same["top20_iou"] == 1.0
    assert cda.where_they_differ(same).startswith("The two maps agree")


def test_both_classes_from_one_pass_equal_gradient_attention(detector, faces):
    x = torch.stack([detector.preprocess(s.image) for s in faces[0][:3] + faces[1][:2]])
    calls = []
    h = detector.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        res = cda.CLIPViTGradCAM(detector.model, "all", "max", class_names=detector.class_names).explain(x)
    finally:
        h.remove()
    assert len(calls) == 1
    # the raw maps against Chefer relevance written out on eager output_attentions (tests/eager_attention.py)
    _, eager = class_maps(detector.model.backbone, detector.model.head, x, [0, 1], "max", "relevance")
    for k in (0, 1):
        ref = vizkit.gradient_attention(detector.model, x, targets=k, head_fusion="max")
        torch.testing.assert_close(res.raw(k), eager[k], atol=1e-6 * float(eager[k].max()), rtol=1e-4)
        torch.testing.assert_close(res.heatmap(k), ref.heatmap, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(res.probs, detector.model(x).softmax(-1))
    # the last-layer mode equals gradient attention over the last block alone, for both aggregations
    last = res.layer_names[-1:]
    for agg in ("relevance", "mean"):
        torch.testing.assert_close(
            res.heatmap(1, "mean", "last_layer", agg),
            vizkit.gradient_attention(detector.model, x, 1, layers=last).heatmap,
            atol=1e-6,
            rtol=1e-5,
        )


def test_seed_call_and_target_layers(detector, faces):
    x = torch.stack([detector.preprocess(s.image) for s in faces[0][:2]])
    g = cda.CLIPViTGradCAM(detector.model, [-2, -1])
    assert g.target_layers == g.layer_names[-2:]
    m = g(x, class_idx=1)
    ref = vizkit.gradient_attention(detector.model, x, 1, layers=g.layer_names[-2:]).heatmap
    torch.testing.assert_close(m, ref, atol=1e-6, rtol=1e-5)
    with pytest.raises(VizkitError, match="head_fusion must be one of mean, max, min"):
        cda.CLIPViTGradCAM(detector.model, head_fusion="median")
    with pytest.raises(VizkitError, match="layer index 7 is out of range: ClipDetector has 4 transformer blocks"):
        cda.CLIPViTGradCAM(detector.model, [7])


def test_not_tied_to_clip_or_two_classes():
    model = timm_vit(depth=3, num_classes=3)
    x = torch.rand(2, 3, 32, 32)
    res = cda.CLIPViTGradCAM(model, "last_4").explain(x)
    assert res.class_names == ["class 0", "class 1", "class 2"] and res.probs.shape == (2, 3)
    for k in range(3):
        torch.testing.assert_close(res.heatmap(k), vizkit.gradient_attention(model, x, k).heatmap, atol=1e-6, rtol=1e-5)


def test_no_attention_names_the_model():
    with pytest.raises(CaptureError, match="No attention weights found: ResNet has no transformer blocks"):
        cda.CLIPViTGradCAM(resnet18())


def test_failing_call_restores_state(detector):
    model = timm_vit(depth=2, num_classes=2).train()
    g = cda.CLIPViTGradCAM(model, "all")
    with pytest.raises(VizkitError, match="target class 5 is out of range: the model has 2 classes"):
        g.explain(torch.rand(1, 3, 32, 32), classes=[0, 5])
    assert model.training and all(p.requires_grad for p in model.parameters()) and all_hooks(model) == 0


def test_analyze_images_files_and_sidecar(tmp_path, detector, faces):
    paths = []
    for i, s in enumerate(faces[0][:2]):
        Image.fromarray(s.image).save(tmp_path / f"face{i}.png")
        paths.append(tmp_path / f"face{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    results, failures = cda.analyze_images(
        detector, paths + [tmp_path / "broken.png"], out, "last_4", "min", multi_layer=True
    )
    assert [r.stem for r in results] == ["face0", "face1"] and [f[0] for f in failures] == ["broken"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        f"face{i}{suffix}"
        for i in range(2)
        for suffix in (".json", "_real_attention.png", "_fake_attention.png", "_comparison.png", "_layers.png")
    )
    side = json.loads((out / "face0.json").read_text())
    assert side["head_fusion"] == "min" and side["aggregation"] == "relevance" and len(side["layers"]) == 4
    x = detector.preprocess(np.array(Image.open(paths[0]).convert("RGB")))[None]
    with torch.no_grad():
        assert side["probabilities"] == pytest.approx(detector.model(x).softmax(-1)[0].tolist(), abs=1e-6)
    real = cda.CLIPViTGradCAM(detector.model, "last_4", "min").explain(x)
    n = cda.comparison_numbers(real.heatmap(0)[0], real.heatmap(1)[0])
    assert side["comparison"]["top20_iou"] == pytest.approx(n["top20_iou"])
    assert side["where_they_differ"] == cda.where_they_differ(n)


def test_analyze_single_image_equals_gradient_attention(tmp_path, detector, faces):
    Image.fromarray(faces[0][0].image).save(tmp_path / "face.png")
    res = cda.analyze_single_image(None, None, tmp_path / "face.png", tmp_path / "out", [-2, -1], "max", False)
    x = detector.preprocess(detector.read(tmp_path / "face.png"))[None]
    last_two = cda.CLIPViTGradCAM(detector.model).layer_names[-2:]
    real, fake = (vizkit.gradient_attention(detector.model, x, k, layers=last_two, head_fusion="max") for k in (0, 1))
    np.testing.assert_allclose(res.real, real.heatmap[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(res.fake, fake.heatmap[0].numpy(), atol=1e-6)
    with torch.no_grad():
        probs = detector.model(x).softmax(-1)[0]
    assert res.probs == pytest.approx(probs.tolist(), abs=1e-6) and res.predicted == int(probs.argmax())
    numbers = cda.comparison_numbers(real.heatmap[0], fake.heatmap[0])
    for key in ("top20_iou", "overlap_mean", "difference_mean"):
        assert res.numbers[key] == pytest.approx(numbers[key], abs=1e-6), key
    np.testing.assert_allclose(res.numbers["difference_by_region"], numbers["difference_by_region"], atol=1e-6)
    assert (res.stem, res.layers, res.head_fusion, res.aggregation) == ("face", last_two, "max", "relevance")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "face.json",
        "face_comparison.png",
        "face_fake_attention.png",
        "face_real_attention.png",
    ]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(VizkitError):
        cda.analyze_single_image(None, None, tmp_path / "broken.png", tmp_path / "out2")


def test_faithfulness_table_matches_direct_computation(detector, faces):
    fakes, reals = faces
    table = cda.faithfulness_table(
        detector,
        fakes,
        reals,
        head_fusions=["mean"],
        layer_modes=["last_layer"],
        aggregations=["relevance"],
        deletion_steps=4,
        sanity_samples=3,
        sanity_blocks=1,
        road_samples=2,
        road_percentiles=(50.0,),
    )
    assert len(table) == 1
    x = torch.stack([detector.preprocess(s.image) for s in fakes])
    maps = cda.CLIPViTGradCAM(detector.model, "all").explain(x).heatmap(1, "mean", "last_layer")
    masks = torch.stack([torch.from_numpy(s.mask) for s in fakes])
    assert table.loc[0, "pointing"] == pytest.approx(float(pointing_game(maps, masks).float().mean()))
    assert table.loc[0, "layers"] == 1 and -1.0 <= table.loc[0, "sanity_spearman"] <= 1.0
    assert 0 <= table.attrs["deletion_auc_random_order"] <= 1
    # ROAD of the fake probability on the first 2 fakes, as faithfulness_scores computes it directly
    probs = lambda images: detector.model(images).float().softmax(-1)  # noqa: E731
    direct = faithfulness_scores(probs, x[:2], maps[:2], 1, percentiles=(50.0,))
    assert table.loc[0, "road_combined"] == pytest.approx(float(direct["road_combined"].mean()), abs=1e-6)
    assert table.loc[0, "road_morf"] == pytest.approx(float(direct["road_morf"].mean()), abs=1e-6)
    # the chance column: the chance functions on the same masks and the random order's deletion AUC
    chance = table.attrs["chance"]
    assert chance["pointing"] == pytest.approx(float(pointing_chance(masks).mean()))
    assert chance["energy_in_mask"] == chance["pointing"] and chance["sanity_spearman"] == 0.0
    assert chance["deletion_auc"] == table.attrs["deletion_auc_random_order"]
    shown = cda.table_with_chance(table)
    assert len(shown) == 2 and shown.loc[1, "head_fusion"] == "chance"
    assert shown.loc[1, "pointing"] == chance["pointing"] and shown.loc[1, "road_lerf"] == chance["road_lerf"]
    assert table.loc[0, "below_chance"] == below_chance(table.loc[0], chance)
    notes = cda.faithfulness_observations(table)
    assert any("entropy" in n for n in notes) and any(n.startswith("ROAD on 2 fakes") for n in notes)
    assert notes[-1].startswith("Default **heads mean, last_layer, relevance**") or "No variant" in notes[-1]


def test_identical_variants_are_computed_not_assumed(detector, faces, tmp_path):
    x = torch.stack([detector.preprocess(s.image) for s in faces[0][:2]])
    res = cda.CLIPViTGradCAM(detector.model, "all").explain(x)
    assert len(res.layer_names) == 4
    assert cda.distinct_layer_modes(res, list(cda.LAYER_MODES)) == (
        ["last_layer", "last_4_layers"],
        {"all_layers": "last_4_layers"},
    )
    # six blocks: all layers differ from the last four
    _, _, six = _dfb_checkpoint(tmp_path, layers=6)
    res6 = cda.CLIPViTGradCAM(six, "all").explain(torch.rand(1, 3, 32, 32))
    assert cda.distinct_layer_modes(res6, list(cda.LAYER_MODES)) == (list(cda.LAYER_MODES), {})
    # same_maps compares the maps themselves: one block makes the two aggregations equal
    maps = {
        (f, m, a): res.heatmap(1, f, m, a)
        for a in ("relevance", "mean")
        for m in ("last_layer", "all_layers")
        for f in ("mean",)
    }
    assert same_maps(maps) == {("mean", "last_layer", "mean"): ("mean", "last_layer", "relevance")}
    assert same_maps({"a": torch.zeros(1, 2, 2), "b": torch.ones(1, 2, 2), "c": torch.zeros(1, 2, 2)}) == {"c": "a"}
    fig = cda.layers_figure(res, 0, faces[0][0].image, "f0")
    assert "all_layers = last_4_layers (same blocks)" in fig._suptitle.get_text() and len(fig.axes) >= 2 * 2


def test_chance_levels_by_hand():
    # two random 2-pixel top regions of a 3 x 3 map (fraction 0.2 keeps 2 of 9 pixels): overlap 0, 1 or 2
    # with probabilities 21/36, 14/36, 1/36 and IoU 0, 1/3, 1 -> 14/108 + 1/36 = 17/108
    assert cda.pair_top_iou_chance((3, 3), 0.2) == pytest.approx(17 / 108, abs=1e-12)
    # the same number from top_region_iou of random maps
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(20000, 3, 3, generator=g), torch.rand(20000, 3, 3, generator=g)
    assert float(top_region_iou(a, b).mean()) == pytest.approx(17 / 108, abs=0.01)
    masks = torch.zeros(2, 4, 4)
    masks[0, :2, :2] = 1  # 4 of 16 pixels
    masks[1, 0, 0] = 1  # 1 of 16
    chance = cda.chance_levels(masks, 0.6, {"road_combined": 0.02})
    assert chance == {
        "pointing": pytest.approx(5 / 32),
        "energy_in_mask": pytest.approx(5 / 32),
        "sanity_spearman": 0.0,
        "deletion_auc": 0.6,
        "road_combined": 0.02,
    }
    row = pd.Series({"pointing": 0.15, "energy_in_mask": 0.5, "deletion_auc": 0.7, "road_combined": 0.03})
    assert below_chance(row, chance) == "≤ chance: pointing, deletion_auc"
    assert below_chance(pd.Series({"pointing": 0.9}), chance) == ""


# The notebook's faithfulness table (100 fakes, 100 reals; executed notebook 01 before this change):
# one row per distinct variant with the columns the rule reads.
NOTEBOOK_TABLE = [
    ("mean", "last_layer", "relevance", 0.88, 0.674, -0.223),
    ("max", "last_layer", "relevance", 0.88, 0.664, -0.211),
    ("min", "last_layer", "relevance", 0.88, 0.635, -0.050),
    ("mean", "last_4_layers", "relevance", 0.88, 0.538, 0.541),
    ("max", "last_4_layers", "relevance", 0.87, 0.493, 0.554),
    ("min", "last_4_layers", "relevance", 0.63, 0.413, 0.105),
    ("mean", "last_4_layers", "mean", 0.88, 0.560, 0.575),
    ("max", "last_4_layers", "mean", 0.87, 0.533, 0.604),
    ("min", "last_4_layers", "mean", 0.63, 0.426, 0.115),
]


def _table(rows):
    cols = ["head_fusion", "layer_mode", "aggregation", "pointing", "energy_in_mask", "sanity_spearman"]
    t = pd.DataFrame(rows, columns=cols)
    t["below_chance"] = ""
    return t


def test_default_is_the_rule_applied_to_the_table():
    table = _table(NOTEBOOK_TABLE)
    best, why = cda.recommended_variant(table)
    assert (best["head_fusion"], best["layer_mode"], best["aggregation"]) == ("mean", "last_layer", "relevance")
    assert "0.674" in why and "5 of 9 variants" in why and "Spearman 0.60" in why
    # the notebook's defaults are that variant
    text = (ROOT / "notebooks" / "01_clip_detector_attention.py").read_text()
    defaults = dict(re.findall(r'^(target_layers|head_fusion|aggregation): str = "(\w+)"', text, re.M))
    assert cda.LAYER_MODES[best["layer_mode"]] == defaults["target_layers"]
    assert (best["head_fusion"], best["aggregation"]) == (defaults["head_fusion"], defaults["aggregation"])
    # the rule: a higher energy that fails the randomisation check, or is flagged below chance, does not win
    rows = [*NOTEBOOK_TABLE, ("max", "last_4_layers", "mean", 0.9, 0.9, 0.7), ("min", "x", "mean", 0.9, 0.8, 0.0)]
    t = _table(rows)
    t.loc[10, "below_chance"] = "≤ chance: energy_in_mask"
    assert cda.recommended_variant(t)[0]["energy_in_mask"] == 0.674
    assert cda.recommended_variant(t, sanity_limit=0.8)[0]["energy_in_mask"] == 0.9
    # nothing passes: the highest energy, said so
    best, why = cda.recommended_variant(_table([r[:5] + (0.9,) for r in NOTEBOOK_TABLE]))
    assert best["energy_in_mask"] == 0.674 and why.startswith("No variant passes")


def test_zero_map_message_exactly_when_the_map_is_zero(detector, faces):
    x = torch.stack([detector.preprocess(s.image) for s in faces[0] + faces[1]])
    res = cda.CLIPViTGradCAM(detector.model, "all").explain(x)
    layer0 = f"layer 0: {res.layer_names[0]}"
    zeros = 0
    for k in (0, 1):
        for fusion in ("mean", "max", "min"):
            maps = res.layer_heatmap(k, res.layer_names[0], fusion)
            for m in maps:
                reason = cda.zero_map_reason(m, fusion, layer0)
                assert (reason is not None) == bool(m.eq(0).all())
                zeros += reason is not None
            share = float(maps.flatten(1).eq(0).all(1).float().mean())
            assert cda.zero_map_share(res, k, 0, fusion) == share
    assert zeros > 0 and cda.zero_map_share(res, 1, 0, "mean") == 0.0
    assert "at least one head" in cda.zero_map_reason(np.zeros((2, 2)), "min", layer0)
    assert "no head" in cda.zero_map_reason(np.zeros((2, 2)), "mean", "last_layer")
    # the explorer says it in its titles
    i = int(res.layer_heatmap(1, res.layer_names[0], "min").flatten(1).eq(0).all(1).nonzero()[0])
    ex = cda.DetectorAttentionExplorer(res, [s.image for s in faces[0] + faces[1]], interactive=False)
    view = ex.render({"image": i, "class": "fake", "heads": "min", "layers": layer0, "combine": "relevance"})
    assert view.map_title == "fake map: all zero" and "zero everywhere" in view.suptitle
    view = ex.render({"image": i, "class": "fake", "heads": "mean", "layers": layer0, "combine": "relevance"})
    assert view.map_title == "fake map" and "zero" not in view.suptitle


def test_mask_outline_drawn_on_every_image_panel(detector, faces, tmp_path):
    fakes = faces[0][:1]
    results, _ = cda.analyze_images(detector, [fakes[0].image], tmp_path, "last", stems=["f"], masks=[fakes[0].mask])
    res = results[0]
    assert res.mask is not None
    fig = cda.class_figure(res, "fake")
    drawn = [ax for ax in fig.axes if ax.images and ax.collections]
    assert len(drawn) == 3  # image, map and overlay each carry the contour
    res.mask = None
    fig = cda.class_figure(res, "fake")
    assert not any(ax.collections for ax in fig.axes if ax.images)


def test_explorer_redraws_from_the_cache(detector, faces):
    pytest.importorskip("ipywidgets")
    x = torch.stack([detector.preprocess(s.image) for s in faces[0][:3]])
    res = cda.CLIPViTGradCAM(detector.model, "all").explain(x)
    calls = []
    h = detector.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        ex = cda.DetectorAttentionExplorer(res, [s.image for s in faces[0][:3]])
        from vizkit.widgets import describe_controls

        assert describe_controls(ex.controls) == list(ex.CONTROLS)
        first = ex.drawn.copy()
        np.testing.assert_allclose(first, res.heatmap(1, "mean", "last_4_layers")[0].numpy())
        ex.image.value = 2
        ex.klass.value = "difference"
        diff = (res.heatmap(1, "mean", "last_4_layers") - res.heatmap(0, "mean", "last_4_layers"))[2].numpy()
        np.testing.assert_allclose(ex.drawn, diff)
        ex.layers.value = f"layer 0: {res.layer_names[0]}"
        ex.fusion.value = "max"
        ex.klass.value = "real"
        np.testing.assert_allclose(ex.drawn, res.layer_heatmap(0, res.layer_names[0], "max")[2].numpy())
        ex.aggregation.value = "mean"
    finally:
        h.remove()
    assert calls == []


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "vizkit.cli", "detector-attention", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=ENV,
        timeout=300,
    )


def test_cli_on_a_deepfakebench_checkpoint_of_another_depth(tmp_path):
    cfg, weights, model = _dfb_checkpoint(tmp_path, layers=6)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(imgs / f"im{i}.png")
    r = _cli(
        "--model-config",
        cfg,
        "--weights",
        weights,
        "--image-path",
        imgs,
        "--output-dir",
        tmp_path / "o",
        "--target-layers",
        "-4",
        "-3",
        "-2",
        "-1",
        "--head-fusion",
        "max",
        "--multi-layer",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    side = json.loads((tmp_path / "o" / "im1.json").read_text())
    assert side["layers"] == [f"backbone.encoder.layers.{i}" for i in range(2, 6)] and side["head_fusion"] == "max"
    assert (tmp_path / "o" / "im2_layers.png").is_file() and (tmp_path / "o" / "attention_report.md").is_file()
    # one unreadable image: reported, skipped, the others written, exit code 1
    (imgs / "zz_broken.png").write_bytes(b"x")
    r = _cli(
        "--model-config", cfg, "--weights", weights, "--image-path", imgs, "--output-dir", tmp_path / "o2", cwd=tmp_path
    )
    assert r.returncode == 1 and "skipped zz_broken" in r.stderr and "Traceback" not in r.stderr
    assert len(list((tmp_path / "o2").glob("im*_comparison.png"))) == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--weights", "missing.pth"], "detector weights not found"),
        (["--model-config", "missing.yaml", "--weights", "det.pth"], "detector config (YAML) not found"),
        (["--target-layers", "-9"], "out of range"),
        (["--target-layers", "encoder.layers.99"], "encoder.layers"),
    ],
)
def test_cli_bad_input(tmp_path, args, message):
    _dfb_checkpoint(tmp_path, layers=2)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "a.png")
    r = _cli("--image-path", tmp_path / "a.png", "--output-dir", tmp_path / "o", *args, cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_cli_refuses_a_folder_with_an_earlier_run(tmp_path):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "old.txt").write_text("x")
    r = _cli("--image-path", tmp_path / "a.png", "--output-dir", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 2 and "not empty" in r.stderr and "--overwrite" in r.stderr


def test_notebook_parameters_are_checked():
    from vizkit.notebook import ParameterError, baseline

    ns = {}
    before = baseline(ns)
    ns.update(
        model="face_forgery_detector",
        model_config="",
        images="",
        num_images=2,
        target_layers="last_4",
        head_fusion="mean",
        aggregation="relevance",
        layer_modes="last_layer",
        faithfulness_samples=0,
        road_samples=0,
        output_dir="",
        overwrite=False,
        interactive=False,
        seed=0,
        device="cpu",
    )
    assert cda.check_notebook_parameters(ns, before)["num_images"] == 2
    for bad, msg in [
        ({"head_fusion": "median"}, "choose one of"),
        ({"layer_modes": "first"}, "unknown layer mode"),
        ({"model": "nope.pth"}, "neither a zoo detector"),
        ({"images": "nope/"}, "images not found"),
        ({"target_layer": "last"}, "did you mean target_layers"),
    ]:
        with pytest.raises(ParameterError, match=msg):
            cda.check_notebook_parameters({**ns, **bad}, before)


def test_notebook_01_with_non_default_parameters(tmp_path, faces):
    from papermill_run import NOTEBOOKS, run

    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i, s in enumerate(faces[0][:2] + faces[1][:1]):
        Image.fromarray(s.image).save(imgs / f"face_{i}.png")
    run_dir = tmp_path / "run"
    nb = run(
        "01_clip_detector_attention",
        tmp_path,
        images=str(imgs),
        head_fusion="max",
        target_layers="-2,-1",
        aggregation="mean",
        layer_modes="last_layer,all_layers",
        faithfulness_samples=8,
        road_samples=2,
        interactive=False,
        output_dir=str(run_dir),
    )
    names = sorted(p.name for p in run_dir.iterdir())
    per_image = {
        f"face_{i}{x}"
        for i in range(3)
        for x in (".json", "_real_attention.png", "_fake_attention.png", "_comparison.png", "_layers.png")
    }
    assert set(names) == per_image | {"attention_report.md"}
    side = json.loads((run_dir / "face_1.json").read_text())
    assert side["head_fusion"] == "max" and side["aggregation"] == "mean"
    assert side["layers"] == ["backbone.encoder.layers.2", "backbone.encoder.layers.3"]
    report = (run_dir / "attention_report.md").read_text()
    assert "| head_fusion | 'max' |" in report and "the plain per-layer mean" in report
    assert "| max | all_layers | relevance |" in report and "last_4_layers" not in report.split("Faithfulness")[1]
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "target layers: ['backbone.encoder.layers.2', 'backbone.encoder.layers.3']" in outputs
    assert "DetectorAttentionExplorer" not in outputs and "VBox" not in outputs
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before
