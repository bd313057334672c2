"""The ``face_forgery_detector`` zoo model: shipped checkpoint, data, rebuild, explanations."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import vizkit
from vizkit.metrics import pointing_game
from vizkit.models import ClipDetector
from vizkit.zoo import dataset, faces, load, zoo_dir
from vizkit.zoo import face_forgery as ff
from vizkit.zoo.__main__ import build_function

NAME = "face_forgery_detector"
N_EVAL = 400  # held-out test samples for the AUC (balanced: 200 fakes)
TOLERANCE = 1  # pixels of slack for the pointing game (masks dilated by 1 px)


@pytest.fixture(scope="module")
def bundle():
    # the one-time import of transformers' CLIP code (seconds on a busy machine) is not part
    # of loading the checkpoint
    from transformers import CLIPVisionConfig, CLIPVisionModel  # noqa: F401

    start = time.perf_counter()
    b = load(NAME)
    b.load_seconds = time.perf_counter() - start
    return b


@pytest.fixture(scope="module")
def held_out():
    return dataset(NAME, "test")[:N_EVAL]


@pytest.fixture(scope="module")
def held_out_batch(bundle, held_out):
    return ff.stack(held_out, bundle.preprocess)


def test_checkpoint_loads_fast_and_is_small(bundle):
    assert bundle.load_seconds < 5
    assert isinstance(bundle.model, ClipDetector) and not bundle.model.training
    assert bundle.class_names == ["real", "fake"]
    folder = zoo_dir(NAME)
    size = (folder / "model.safetensors").stat().st_size
    assert size <= 8 * 1024 * 1024
    keys = bundle.model.state_dict().keys()
    assert all(k.startswith(("backbone.", "head.")) for k in keys)
    config = json.loads((folder / "config.json").read_text())
    assert config["vision_config"]["image_size"] == 64 and config["vision_config"]["num_hidden_layers"] == 4
    assert len(config["preprocess"]["mean"]) == 3 and len(config["preprocess"]["std"]) == 3
    assert config["build_seconds"] > 0 and "metrics" in config
    assert bundle.model.backbone.config._attn_implementation == "sdpa"


def test_preprocess(bundle):
    img = dataset(NAME, "val")[0].image
    x = bundle.preprocess(img)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    mean = torch.tensor(bundle.meta["preprocess"]["mean"])[:, None, None]
    std = torch.tensor(bundle.meta["preprocess"]["std"])[:, None, None]
    expected = (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(x, expected)
    # a grey image of another size is accepted too
    assert bundle.preprocess(np.full((100, 80), 128, np.uint8)).shape == (3, 64, 64)


def test_held_out_auc(bundle, held_out, held_out_batch):
    x, y, _ = held_out_batch
    assert len(held_out) >= 400 and int(y.sum()) == len(held_out) // 2
    p = ff.fake_probabilities(bundle.model, x)
    auc = roc_auc_score(y.numpy(), p.numpy())
    accuracy = float(((p > 0.5).long() == y).float().mean())
    assert auc >= 0.95, auc
    assert accuracy >= 0.85, accuracy


def test_splits_are_disjoint_and_deterministic():
    ids = {s: {f.id for f in faces.split_faces(s)} for s in faces.SPLITS}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    assert len(ids["train"]) == 71 and len(ids["val"]) == 15 and len(ids["test"]) == 16
    # LFW images 100-199 are non-faces: never used
    lfw = [int(i[4:]) for s in ids.values() for i in s if i.startswith("lfw-")]
    assert max(lfw) < 100
    a, b = faces.make_samples("val", 40, seed=3), faces.make_samples("val", 40, seed=3)
    for s, t in zip(a, b):
        assert np.array_equal(s.image, t.image) and np.array_equal(s.mask, t.mask) and s.meta == t.meta
    assert not np.array_equal(a[0].image, faces.make_samples("val", 1, seed=4)[0].image)
    # held-out samples (targets and swap donors) only use held-out faces
    for s in faces.make_samples("test", 60):
        assert s.meta["face_id"] in ids["test"]
        assert s.meta.get("source_face_id", next(iter(ids["test"]))) in ids["test"]


def test_samples_and_masks():
    samples = faces.make_samples("train", 60)
    assert sum(s.label for s in samples) == 30
    kinds = {s.meta["manipulation"] for s in samples if s.label}
    assert kinds == set(faces.MANIPULATIONS)
    for s in samples:
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert s.mask.shape == (64, 64) and s.mask.dtype == bool
        if s.label:
            assert 20 < s.mask.sum() < 0.25 * 64 * 64, s.meta
            assert s.meta["region"] in faces.REGIONS
            if s.meta["manipulation"] == "swap":
                assert s.meta["source_face_id"] != s.meta["face_id"]
        else:
            assert not s.mask.any() and s.meta["manipulation"] == "none"


def test_manipulation_is_local():
    """Outside its (slightly dilated) mask a fake equals the untouched face."""
    rng = np.random.default_rng(0)
    face = faces.split_faces("train")[0]
    img = faces.add_grain(rng, faces.render_face(rng, face))
    donor = faces.add_grain(rng, faces.render_face(rng, faces.split_faces("train")[1]))
    for kind in faces.MANIPULATIONS:
        for region in faces.REGIONS:
            out, mask, _ = faces.manipulate(np.random.default_rng(1), img, kind, region, donor)
            changed = np.abs(out - img).max(-1) > 4
            near = torch.nn.functional.max_pool2d(torch.from_numpy(mask)[None, None].float(), 9, 1, 4)[0, 0] > 0
            assert mask.any() and changed[mask].mean() > 0.3, (kind, region)
            assert not (changed & ~near.numpy()).any(), (kind, region)


def test_explanations_point_at_the_manipulation(bundle, held_out, held_out_batch):
    x, y, masks = held_out_batch
    fake = y == 1
    xf, mf = x[fake], masks[fake]
    assert len(xf) >= 100
    cam = vizkit.cam(bundle.model, xf, 1, layers="auto")
    assert cam.layers == ["backbone.encoder.layers.3.layer_norm1"]
    assert cam.heatmap.shape == (len(xf), 64, 64)
    hits = pointing_game(cam.heatmap, mf, tolerance=TOLERANCE).float().mean().item()
    assert hits >= 0.8, hits
    ga = vizkit.gradient_attention(bundle.model, xf, 1)
    ga_hits = pointing_game(ga.heatmap, mf, tolerance=TOLERANCE).float().mean().item()
    assert ga_hits >= 0.7, ga_hits
    print(
        f"pointing game (tolerance {TOLERANCE} px) on {len(xf)} held-out fakes: "
        f"Grad-CAM {hits:.3f}, gradient attention {ga_hits:.3f}"
    )


def test_quick_build_end_to_end(tmp_path):
    metrics = build_function(NAME)(tmp_path, quick=True)
    folder = tmp_path / NAME
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    assert not list(folder.glob(".*.tmp"))
    assert metrics["quick"] is True and 0 <= metrics["auc"] <= 1 and metrics["build_seconds"] > 0
    b = load(NAME, root=tmp_path)
    assert isinstance(b.model, ClipDetector) and not b.model.training
    out = b.model(b.preprocess(dataset(NAME, "val")[1].image)[None])
    assert out.shape == (1, 2) and torch.isfinite(out).all()
    config = json.loads((folder / "config.json").read_text())
    assert config["metrics"]["auc"] == metrics["auc"]


def test_missing_checkpoint_raises(tmp_path):
    with pytest.raises(vizkit.VizkitError, match="python -m vizkit.zoo build face_forgery_detector"):
        load(NAME, root=tmp_path)
