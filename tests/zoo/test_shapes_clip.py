"""Zoo models ``shapes_clip`` (ViT) and ``shapes_clip_cnn`` (ModifiedResNet): open_clip CLIPs
trained on synthetic shape scenes. Real computations on held-out scenes, no skips."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vizkit
from vizkit import zoo
from vizkit.metrics import pointing_game
from vizkit.targets import ImageTextSimilarity
from vizkit.zoo import shapes
from vizkit.zoo import shapes_clip as sc
from vizkit.zoo.__main__ import build_function
from vizkit.zoo.train import shapes_clip as train_sc

NAMES = ("shapes_clip", "shapes_clip_cnn")
AUTO_LAYER = {"shapes_clip": "visual.trunk.blocks.2", "shapes_clip_cnn": "visual.trunk.layer4"}


@pytest.fixture(scope="module", params=NAMES)
def bundle(request):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    start = time.perf_counter()
    b = zoo.load(request.param)
    b.meta["load_seconds"] = time.perf_counter() - start
    return b


def test_registered_with_open_clip_and_bundled_tokenizer():
    import open_clip
    from open_clip.tokenizer import SimpleTokenizer

    assert {"shapes_clip", "shapes_clip_cnn"} <= set(zoo.names())
    for name in (sc.VIT_MODEL, sc.RN_MODEL):
        assert name in open_clip.list_models()
        model = open_clip.create_model(name)
        assert isinstance(model, open_clip.model.CLIP)
        tok = open_clip.get_tokenizer(name)
        assert isinstance(tok, SimpleTokenizer)  # BPE vocab ships inside open_clip: no download
        ids = tok(["a red circle", "an orange star and a blue square"])
        assert ids.shape == (2, 16) and ids[0, 0] == tok.sot_token_id
    import timm
    from timm.models.vision_transformer import VisionTransformer

    from vizkit.zoo.shapes_towers import ShapesResNet

    vit, rn = open_clip.create_model(sc.VIT_MODEL).visual, open_clip.create_model(sc.RN_MODEL).visual
    assert type(vit).__name__ == type(rn).__name__ == "TimmModel"  # open_clip's timm tower: max pool + linear
    assert isinstance(vit.trunk, VisionTransformer) and vit.trunk.patch_embed.grid_size == (8, 8)
    assert vit.trunk.num_prefix_tokens == 0 and len(vit.trunk.blocks) == 3
    assert isinstance(rn.trunk, ShapesResNet)
    assert isinstance(timm.create_model("vizkit_shapes_resnet"), ShapesResNet)
    with pytest.raises(ValueError, match="no downloadable weights"):
        timm.create_model("vizkit_shapes_vit", pretrained=True)


def test_tower_outputs_match_encode_image_and_dense_targets():
    """The training's per-position embeddings come from the same pass as ``encode_image``."""
    for name, grid in ((sc.VIT_MODEL, 8), (sc.RN_MODEL, 8)):
        torch.manual_seed(0)
        model = sc._create(name).eval()
        x = torch.randn(3, 3, 64, 64)
        image, positions = train_sc.tower_outputs(model, x)
        assert positions.shape == (3, grid * grid, 64)
        torch.testing.assert_close(image, model.encode_image(x), rtol=0, atol=0)
    mask = np.zeros((64, 64), bool)
    mask[0:8, 0:4] = True  # half of cell (0, 0)
    mask[60:64, 56:64] = True  # half of the last cell
    cover = train_sc._coverage([mask], 8)
    assert cover.shape == (1, 64) and cover[0, 0] == 0.5 and cover[0, 63] == 0.5 and cover[0, 1:63].sum() == 0


def test_bundle_loads_fast_and_is_complete(bundle):
    assert bundle.meta["load_seconds"] < 5
    assert not bundle.model.training
    assert bundle.class_names == shapes.prompts() and len(bundle.class_names) == 24
    assert bundle.meta["open_clip_model"] in (sc.VIT_MODEL, sc.RN_MODEL)
    files = zoo.zoo_dir(bundle.name)
    size = sum(p.stat().st_size for p in files.iterdir())
    assert size <= 8 * 1024 * 1024, size
    x = bundle.preprocess(zoo.dataset(bundle.name, "test")[0].image)
    size_px = bundle.meta["preprocess"]["image_size"]
    assert x.shape == (3, size_px, size_px) and x.dtype == torch.float32
    assert abs(float(x.mean())) < 1.5
    ids = bundle.tokenizer(["a red circle"])
    assert ids.shape == (1, 16)
    for key in ("zero_shot_accuracy", "pointing_game", "pointing_game_red_circle", "build_seconds"):
        assert key in bundle.meta["metrics"]


def test_zero_shot_accuracy_on_held_out_single_object_scenes(bundle):
    samples = sc.single_object_scenes("test", 500)
    acc = train_sc.zero_shot_accuracy(bundle.model, bundle.preprocess, bundle.tokenizer, samples, bundle.class_names)
    print(f"{bundle.name}: zero-shot accuracy {acc:.3f} on {len(samples)} scenes")
    assert acc >= 0.90


def test_gradcam_points_at_the_red_circle(bundle):
    """Grad-CAM toward "a red circle" on held-out scenes with a red circle and other shapes."""
    samples = sc.scenes_with("test", 60, "red circle")
    assert all(len(s.meta["objects"]) >= 2 for s in samples)
    model, tok = bundle.model, bundle.tokenizer
    with torch.no_grad():
        text = model.encode_text(tok(bundle.class_names))
    index = bundle.class_names.index("a red circle")
    x = bundle.preprocess.batch(np.stack([s.image for s in samples]))
    target = ImageTextSimilarity(text, index, model.logit_scale.exp().item())
    exp = vizkit.cam(model, x, target, layers="auto", forward=model.encode_image)
    assert exp.layers == [AUTO_LAYER[bundle.name]] == [bundle.meta["cam_layer_auto"]]
    masks = torch.from_numpy(np.stack([s.mask for s in samples])).float()[:, None]
    masks = F.interpolate(masks, size=exp.heatmap.shape[-2:], mode="nearest")[:, 0] > 0  # 64 px -> input size
    hits = pointing_game(exp.heatmap, masks)
    print(f"{bundle.name}: red-circle pointing game {hits.float().mean():.3f} on {len(samples)} scenes")
    assert hits.float().mean() >= 0.80


def test_pointing_game_named_object_generic_scenes(bundle):
    samples = zoo.dataset(bundle.name, "test")[:300]  # the 300 scenes the build reports on
    hits, layers = train_sc.pointing(bundle.model, bundle.preprocess, bundle.tokenizer, samples, bundle.class_names)
    print(f"{bundle.name}: pointing game {hits.float().mean():.3f} on {len(samples)} generic scenes ({layers})")
    assert hits.float().mean() >= 0.80
    # the shipped checkpoint is the one the build measured (same scenes, same layer)
    assert abs(float(hits.float().mean()) - bundle.meta["metrics"]["pointing_game"]) <= 0.01


def test_dataset_deterministic_with_masks_and_disjoint_splits():
    a, b = zoo.dataset("shapes_clip", "val")[:20], zoo.dataset("shapes_clip_cnn", "val")[:20]
    for s, t in zip(a, b):
        assert np.array_equal(s.image, t.image) and s.caption == t.caption and s.label == t.label
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert s.mask.any() and all(m.any() for m in s.masks)
        assert len(s.masks) == len(s.meta["objects"]) in (1, 2, 3)
        assert np.array_equal(s.mask, s.masks[s.meta["named"]])
        assert s.meta["text"] in s.caption
        assert s.meta["text"] == shapes.prompts()[s.label]
    train = zoo.dataset("shapes_clip", "train")
    test = zoo.dataset("shapes_clip", "test")
    assert len(train) == 2000 and len(test) == 1000
    train_keys = {s.image.tobytes() for s in train}
    assert not any(s.image.tobytes() in train_keys for s in test)
    assert not any(s.image.tobytes() in train_keys for s in zoo.dataset("shapes_clip", "val"))
    singles = sc.single_object_scenes("test", 30)
    assert all(len(s.masks) == 1 for s in singles)
    assert len({s.label for s in singles}) > 10


def test_quick_build_writes_a_loadable_checkpoint(tmp_path):
    for name in NAMES:
        metrics = build_function(name)(tmp_path, quick=True)
        assert 0.0 <= metrics["zero_shot_accuracy"] <= 1.0 and metrics["quick"] is True
        assert (tmp_path / name / "model.safetensors").is_file() and (tmp_path / name / "config.json").is_file()
        assert not list((tmp_path / name).glob(".*tmp"))
        b = sc._load(sc.SPECS[name], root=tmp_path)
        with torch.no_grad():
            emb = b.model.encode_image(b.preprocess(zoo.dataset(name, "test")[0].image)[None])
        assert emb.shape == (1, 64) and torch.isfinite(emb).all()


def test_missing_checkpoint_raises(tmp_path):
    with pytest.raises(vizkit.VizkitError, match="rebuild"):
        sc._load(sc.SPECS["shapes_clip"], root=tmp_path)
