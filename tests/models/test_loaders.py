"""Loaders for real on-disk checkpoints: tiny random-weight models of the real classes, saved in
their real formats, loaded back with identical outputs; every bad case has its message checked."""

import argparse
import json
import os
import pickle
import time
import warnings

import numpy as np
import pytest
import torch
from models import byte_vocab, hf_clip_dir
from safetensors.torch import save_file
from torch import nn

from vizkit.errors import VizkitError
from vizkit.models import ClipDetector, SimpleViT
from vizkit.models.loaders import (
    CheckpointError,
    infer_clip_vision_config,
    load_checkpoint,
    load_deepfakebench_clip,
    load_hf,
    load_open_clip,
    load_timm,
    load_torchvision,
    load_vit_checkpoint,
)

torch.set_num_threads(1)


@pytest.fixture
def image():
    return (np.random.RandomState(0).rand(32, 32, 3) * 255).astype(np.uint8)


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path / "hf-cache"


def _snapshot_dir(cache, repo_id):
    """A snapshot folder laid out as the Hugging Face cache does (models--org--name/...)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots").mkdir()
    return repo / "snapshots" / commit


def _qwen_tokenizer(specials):
    from transformers import Qwen2Tokenizer

    tok = Qwen2Tokenizer(vocab=byte_vocab(), merges=[])
    tok.add_special_tokens({"additional_special_tokens": list(specials)})
    return tok


# --------------------------------------------------------------------------- safe reader


def test_load_checkpoint_formats_and_wrappers(tmp_path):
    sd = nn.Linear(3, 2).state_dict()
    cases = {
        "a.safetensors": None,
        "b.pt": sd,
        "c.pth": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "d.bin": {"model": sd, "args": argparse.Namespace(lr=0.1), "best": np.float64(0.9), "epoch": 3},
        "e.ckpt": {"model_state_dict": sd, "config": {"x": 1}},
        "f.bin": None,  # safetensors content under a torch-ish name: recognised by its header
    }
    for name, obj in cases.items():
        path = tmp_path / name
        save_file(sd, str(path)) if obj is None else torch.save(obj, path)
        got = load_checkpoint(path)
        assert set(got) == {"weight", "bias"}, name
        torch.testing.assert_close(got["weight"], sd["weight"])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/vizkit_pwned_by_test",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_code_is_refused_never_run(tmp_path):
    torch.save(nn.Linear(2, 2), tmp_path / "full.pt")
    with pytest.raises(CheckpointError, match=r"pickled Python objects \(torch.nn.modules.linear.Linear") as e:
        load_checkpoint(tmp_path / "full.pt")
    assert "will not execute" in str(e.value) and "state_dict()" in str(e.value) and "full.pt" in str(e.value)
    if os.path.exists("/tmp/vizkit_pwned_by_test"):
        os.remove("/tmp/vizkit_pwned_by_test")
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"w": _Evil()}, f)
    with pytest.raises(CheckpointError, match="evil.pth is not a PyTorch checkpoint"):
        load_checkpoint(tmp_path / "evil.pth")
    assert not os.path.exists("/tmp/vizkit_pwned_by_test")


def test_bad_files(tmp_path):
    (tmp_path / "notes.pth").write_text("these are my notes\n" * 5)
    with pytest.raises(CheckpointError, match=r"notes.pth is not a PyTorch checkpoint \(it looks like text"):
        load_checkpoint(tmp_path / "notes.pth")
    (tmp_path / "bad.safetensors").write_text("hello")
    with pytest.raises(CheckpointError, match="bad.safetensors is not a valid safetensors file"):
        load_checkpoint(tmp_path / "bad.safetensors")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt is empty"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="checkpoint file not found: .*nope.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="but it is a directory"):
        load_checkpoint(tmp_path)
    torch.save({"epoch": 3, "name": "x"}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match=r"holds no state dict: its top-level keys are \[epoch, name\]"):
        load_checkpoint(tmp_path / "meta.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(nn.Linear(2, 2)).save(str(tmp_path / "jit.pt"))
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        load_checkpoint(tmp_path / "jit.pt")
    assert issubclass(CheckpointError, VizkitError)


# --------------------------------------------------------------------------- SimpleViT (seed 001)

VIT_CFG = dict(
    img_size=32,
    patch_size=8,
    in_channels=1,
    num_classes=10,
    embed_dim=32,
    num_heads=2,
    num_layers=2,
    mlp_dim=64,
    dropout=0.1,
)


def test_vit_checkpoint_round_trips(tmp_path, image):
    model = SimpleViT(VIT_CFG).eval()
    x = torch.randn(2, 1, 32, 32)
    ref = model(x)
    save_file(model.state_dict(), str(tmp_path / "vit.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({**VIT_CFG, "lr": 1e-3}))
    torch.save({"model_state_dict": model.state_dict(), "config": VIT_CFG, "epoch": 5}, tmp_path / "ckpt.pt")
    for loaded in (
        load_vit_checkpoint(VIT_CFG, tmp_path / "vit.safetensors"),
        load_vit_checkpoint(tmp_path / "config.json", tmp_path / "vit.safetensors"),
        load_vit_checkpoint(None, tmp_path / "ckpt.pt"),
        load_vit_checkpoint(VIT_CFG, model.state_dict()),
    ):
        assert not loaded.model.training
        torch.testing.assert_close(loaded.model(x), ref)
        px = loaded.preprocess(image)
        assert px.shape == (1, 32, 32)
        luma = image @ np.array([0.299, 0.587, 0.114])  # PIL's "L" conversion
        torch.testing.assert_close(px[0], torch.tensor((luma / 255 - 0.1307) / 0.3081).float(), atol=0.02, rtol=0)
    loaded = load_vit_checkpoint(tmp_path / "config.json", tmp_path / "vit.safetensors")
    assert loaded.meta["extra_config"] == {"lr": 1e-3}


def test_vit_checkpoint_errors(tmp_path):
    model = SimpleViT(VIT_CFG)
    save_file(model.state_dict(), str(tmp_path / "vit.safetensors"))
    with pytest.raises(CheckpointError, match="missing num_heads, num_layers"):
        load_vit_checkpoint(
            {"img_size": 32, "patch_size": 8, "in_channels": 1, "num_classes": 10, "embed_dim": 32, "mlp_dim": 64},
            tmp_path / "vit.safetensors",
        )
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="bad.json is not valid JSON"):
        load_vit_checkpoint(tmp_path / "bad.json", tmp_path / "vit.safetensors")
    (tmp_path / "other.json").write_text(json.dumps({"learning_rate": 0.1}))
    with pytest.raises(CheckpointError, match="other.json is not a complete SimpleViT config: missing img_size"):
        load_vit_checkpoint(tmp_path / "other.json", tmp_path / "vit.safetensors")
    with pytest.raises(CheckpointError, match=r"12 missing key\(s\) \(blocks.2.norm1.weight, .*and 7 more\)"):
        load_vit_checkpoint({**VIT_CFG, "num_layers": 3}, tmp_path / "vit.safetensors")
    with pytest.raises(CheckpointError, match=r"12 unexpected key\(s\) \(blocks.1.attn.in_proj_bias"):
        load_vit_checkpoint({**VIT_CFG, "num_layers": 1}, tmp_path / "vit.safetensors")
    with pytest.raises(
        CheckpointError,
        match=r"shape mismatch\(es\) \(pos_embed: checkpoint \(1, 17, 32\) vs model "
        r"\(1, 50, 32\)",
    ):
        load_vit_checkpoint({**VIT_CFG, "img_size": 56}, tmp_path / "vit.safetensors")
    with pytest.raises(CheckpointError, match="carries no 'config' entry"):
        load_vit_checkpoint(None, tmp_path / "vit.safetensors")


# --------------------------------------------------------------------------- DeepfakeBench CLIP


def _detector(hidden, layers, image, patch, inter=None):
    from transformers import CLIPVisionConfig

    return ClipDetector(
        CLIPVisionConfig(
            hidden_size=hidden,
            intermediate_size=inter or 4 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=max(1, hidden // 64),
            image_size=image,
            patch_size=patch,
        )
    ).eval()


def _dfb_layout(sd):
    """DeepfakeBench's own key layout: backbone = CLIPModel.vision_model (no 'vision_model.')."""
    return {k.replace("backbone.vision_model.", "backbone."): v for k, v in sd.items()}


def _nested_layout(sd):
    """CLIPVisionModel keys as transformers 4.x writes them: backbone.vision_model.*"""
    return {
        (k.replace("backbone.", "backbone.vision_model.", 1) if k.startswith("backbone.") else k): v
        for k, v in _dfb_layout(sd).items()
    }


def test_deepfakebench_round_trips_all_layouts(tmp_path, image):
    model = _detector(128, 2, 32, 8)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    sd = model.state_dict()
    pos_ids = torch.arange(17)[None]
    layouts = {
        "plain.pth": sd,
        "dfb.pth": {**_dfb_layout(sd), "backbone.embeddings.position_ids": pos_ids},
        "hf4.pth": {**_nested_layout(sd), "backbone.vision_model.embeddings.position_ids": pos_ids},
        "dp.pth": {"state_dict": {f"module.{k}": v for k, v in _dfb_layout(sd).items()}},
        "wrapped.pth": {"model": _nested_layout(sd)},
    }
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
        loaded = load_deepfakebench_clip(tmp_path / name, num_heads=2)  # width 128: no CLIP tower, so say it
        assert loaded.meta["config"] == {
            "hidden_size": 128,
            "intermediate_size": 512,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_channels": 3,
            "patch_size": 8,
            "image_size": 32,
        }, name
        with torch.no_grad():
            torch.testing.assert_close(loaded.model(x), ref)
        assert loaded.preprocess(image).shape == (3, 32, 32)
        assert float(loaded.preprocess(np.full((40, 40, 3), 255, np.uint8)).min()) == pytest.approx(1.0)


@pytest.mark.parametrize("hidden, patch, heads", [(768, 16, 12), (1024, 14, 16)])
def test_deepfakebench_real_widths_one_layer(tmp_path, hidden, patch, heads):
    model = _detector(hidden, 1, 224, patch)
    torch.save(_dfb_layout(model.state_dict()), tmp_path / "det.pth")
    loaded = load_deepfakebench_clip(tmp_path / "det.pth")
    assert loaded.meta["config"] == {
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": 1,
        "num_attention_heads": heads,
        "num_channels": 3,
        "patch_size": patch,
        "image_size": 224,
    }
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x))


@pytest.mark.parametrize(
    "name, hidden, layers, heads, patch, inter",
    [("ViT-B/16", 768, 12, 12, 16, 3072), ("ViT-L/14", 1024, 24, 16, 14, 4096)],
)
def test_infer_full_size_configs_on_meta_tensors(name, hidden, layers, heads, patch, inter):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    with torch.device("meta"):
        backbone = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=hidden,
                intermediate_size=inter,
                num_hidden_layers=layers,
                num_attention_heads=heads,
                image_size=224,
                patch_size=patch,
            )
        )
    sd = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    sd.update({"head.weight": torch.empty(2, hidden, device="meta"), "head.bias": torch.empty(2, device="meta")})
    want = {
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_channels": 3,
        "patch_size": patch,
        "image_size": 224,
    }
    assert infer_clip_vision_config(_dfb_layout(sd)) == want, name
    assert infer_clip_vision_config(_nested_layout(sd)) == want, name


def test_deepfakebench_errors(tmp_path):
    sd = _detector(64, 1, 32, 8).state_dict()
    torch.save({**sd, "head.weight": torch.zeros(5, 64), "head.bias": torch.zeros(5)}, tmp_path / "h.pth")
    with pytest.raises(CheckpointError, match=r"head.weight of shape \(2, 64\) .*found head.weight of shape \(5, 64\)"):
        load_deepfakebench_clip(tmp_path / "h.pth", num_heads=1)
    torch.save(nn.Linear(2, 2).state_dict(), tmp_path / "lin.pth")
    with pytest.raises(
        CheckpointError,
        match="lin.pth is not a DeepfakeBench CLIP detector: expected keys "
        "'backbone.embeddings.patch_embedding.weight'",
    ):
        load_deepfakebench_clip(tmp_path / "lin.pth")
    bad = _dfb_layout(sd)
    bad.pop("backbone.post_layernorm.weight")
    bad["backbone.extra"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(
        CheckpointError,
        match=r"1 missing key\(s\) \(backbone.(vision_model.)?post_layernorm.weight\); "
        r"1 unexpected key\(s\) \(backbone.(vision_model.)?extra\)",
    ):
        load_deepfakebench_clip(tmp_path / "bad.pth", num_heads=1)
    with pytest.raises(CheckpointError, match="DeepfakeBench checkpoint not found"):
        load_deepfakebench_clip(tmp_path / "missing.pth")


# --------------------------------------------------------------------------- timm / torchvision

TIMM_KW = dict(img_size=32, patch_size=8, depth=2, num_classes=5)


def test_timm_round_trip_and_errors(tmp_path, image):
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TIMM_KW).eval()
    save_file(model.state_dict(), str(tmp_path / "vit.safetensors"))
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, tmp_path / "vit.pth")
    x = torch.randn(2, 3, 32, 32)
    for f in ("vit.safetensors", "vit.pth"):
        loaded = load_timm("vit_tiny_patch16_224", tmp_path / f, **TIMM_KW)
        torch.testing.assert_close(loaded.model(x), model(x))
        assert loaded.preprocess(image).shape == (3, 32, 32)
    with pytest.raises(CheckpointError, match=r"timm model 'vit_tiny_patch16_224'.*: 12 missing key\(s\) \(blocks.2"):
        load_timm("vit_tiny_patch16_224", tmp_path / "vit.safetensors", **{**TIMM_KW, "depth": 3})
    with pytest.raises(CheckpointError, match="unknown timm model 'vit_tiny_patch16_244'; close names: vit_tiny_p"):
        load_timm("vit_tiny_patch16_244", tmp_path / "vit.safetensors")
    with pytest.raises(CheckpointError, match="never downloads"):
        load_timm("vit_tiny_patch16_224", pretrained=True)
    with pytest.warns(UserWarning, match="RANDOMLY initialised"):
        assert load_timm("vit_tiny_patch16_224", **TIMM_KW).meta["random_init"]


def test_torchvision_round_trip_and_errors(tmp_path, image):
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    torch.save(model.state_dict(), tmp_path / "r18.pth")
    loaded = load_torchvision("resnet18", tmp_path / "r18.pth", num_classes=3)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded.model(x), model(x))
    assert loaded.preprocess(image).shape == (3, 224, 224)
    with pytest.raises(
        CheckpointError,
        match=r"2 shape mismatch\(es\) \(fc.weight: checkpoint \(3, 512\) vs model "
        r"\(1000, 512\)",
    ):
        load_torchvision("resnet18", tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match="unknown torchvision model 'resnet19'; close names: resnet18"):
        load_torchvision("resnet19", tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match="weights for torchvision model 'resnet18' not found"):
        load_torchvision("resnet18", tmp_path / "nope.pth")


# --------------------------------------------------------------------------- open_clip


def _register_open_clip(tmp_path, name, text_extra=None):
    import open_clip

    cfg = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 2,
            **(text_extra or {}),
        },
    }
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    return cfg


def test_open_clip_round_trip(tmp_path, image):
    import open_clip

    cfg = _register_open_clip(tmp_path, "vizkit-test-tiny-clip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model("vizkit-test-tiny-clip", pretrained=None).eval()
    save_file(model.state_dict(), str(tmp_path / "clip.safetensors"))
    x = torch.randn(2, 3, 32, 32)
    tokens = open_clip.get_tokenizer("vizkit-test-tiny-clip")(["a photo of a dog", "a cat"])
    with torch.no_grad():
        ref_img, ref_txt = model.encode_image(x), model.encode_text(tokens)
    local = tmp_path / "repo"
    local.mkdir()
    (local / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    torch.save(model.state_dict(), local / "open_clip_pytorch_model.bin")
    for loaded in (
        load_open_clip("vizkit-test-tiny-clip", tmp_path / "clip.safetensors"),
        load_open_clip("vizkit-test-tiny-clip", str(local)),
        load_open_clip(f"local-dir:{local}"),
    ):
        toks = loaded.tokenizer(["a photo of a dog", "a cat"])
        torch.testing.assert_close(toks, tokens)
        with torch.no_grad():
            torch.testing.assert_close(loaded.model.encode_image(x), ref_img)
            torch.testing.assert_close(loaded.model.encode_text(toks), ref_txt)
        px = loaded.preprocess(image)
        assert px.shape == (3, 32, 32)
        assert abs(float(px.mean()) - float(((image / 255 - 0.46) / 0.27).mean())) < 0.1


def test_open_clip_pretrained_tag(tmp_path, empty_hf_cache, monkeypatch, image):
    import open_clip
    from open_clip.transformer import QuickGELU

    _register_open_clip(tmp_path, "vizkit-test-tiny-clip4")
    tag = {
        "url": "",
        "hf_hub": "vizkit-test/tiny-openclip/",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "quick_gelu": True,
    }
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "vizkit-test-tiny-clip4", {"mytag": tag})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model("vizkit-test-tiny-clip4", pretrained=None, force_quick_gelu=True).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model.encode_image(x)
    with pytest.raises(
        CheckpointError,
        match="'mytag' is an open_clip pretrained tag .*hf download vizkit-test/tiny-openclip --local-dir DIR",
    ):
        load_open_clip("vizkit-test-tiny-clip4", "mytag")
    snap = _snapshot_dir(empty_hf_cache, "vizkit-test/tiny-openclip")
    snap.mkdir()
    save_file(model.state_dict(), str(snap / "open_clip_model.safetensors"))
    for loaded in (
        load_open_clip("vizkit-test-tiny-clip4", "mytag"),
        load_open_clip("vizkit-test-tiny-clip4", snap / "open_clip_model.safetensors", tag="MyTag"),
    ):
        assert any(isinstance(m, QuickGELU) for m in loaded.model.modules())
        assert loaded.meta["preprocess_cfg"]["std"] == (0.25, 0.25, 0.25)
        with torch.no_grad():
            torch.testing.assert_close(loaded.model.encode_image(x), ref)
        torch.testing.assert_close(loaded.preprocess(np.full((32, 32, 3), 255, np.uint8)), torch.full((3, 32, 32), 2.0))
    with pytest.raises(CheckpointError, match="'other' is not a pretrained tag of 'vizkit-test-tiny-clip4'; known: my"):
        load_open_clip("vizkit-test-tiny-clip4", snap / "open_clip_model.safetensors", tag="other")


def test_open_clip_errors(tmp_path, empty_hf_cache):
    import open_clip

    _register_open_clip(tmp_path, "vizkit-test-tiny-clip2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model("vizkit-test-tiny-clip2", pretrained=None)
    sd = model.state_dict()
    sd.pop("visual.proj")
    save_file(sd, str(tmp_path / "short.safetensors"))
    with pytest.raises(
        CheckpointError,
        match=r"do not fit open_clip 'vizkit-test-tiny-clip2': 1 missing key\(s\) "
        r"\(visual.proj\)",
    ):
        load_open_clip("vizkit-test-tiny-clip2", tmp_path / "short.safetensors")
    t0 = time.perf_counter()
    with pytest.raises(
        CheckpointError,
        match="'laion2b_s34b_b79k' is an open_clip pretrained tag of 'ViT-B-32'.*"
        "loads weights from local files only.*hf download "
        "laion/CLIP-ViT-B-32-laion2B-s34B-b79K --local-dir DIR",
    ):
        load_open_clip("ViT-B-32", "laion2b_s34b_b79k")
    with pytest.raises(CheckpointError, match="names a hub repo; vizkit loads from disk only.*local-dir:DIR"):
        load_open_clip("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    assert time.perf_counter() - t0 < 5
    with pytest.raises(CheckpointError, match="unknown open_clip model 'ViT-B-33'; close names: ViT-B-32"):
        load_open_clip("ViT-B-33", tmp_path / "short.safetensors")
    with pytest.raises(CheckpointError, match="open_clip weights for 'ViT-B-32' not found: .*nope.pt does not exist"):
        load_open_clip("ViT-B-32", tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="needs weights_path"):
        load_open_clip("ViT-B-32")


def test_open_clip_hf_tokenizer_needs_local_files(tmp_path, empty_hf_cache):
    import open_clip

    _register_open_clip(tmp_path, "vizkit-test-tiny-clip3", {"hf_tokenizer_name": "nobody-vizkit/no-tokenizer"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = open_clip.create_model("vizkit-test-tiny-clip3", pretrained=None)
    save_file(model.state_dict(), str(tmp_path / "c.safetensors"))
    t0 = time.perf_counter()
    with pytest.raises(
        CheckpointError,
        match="tokenizer of open_clip 'vizkit-test-tiny-clip3' is a Hugging Face "
        "tokenizer that is not on disk.*tokenizer=<local directory",
    ):
        load_open_clip("vizkit-test-tiny-clip3", tmp_path / "c.safetensors")
    assert time.perf_counter() - t0 < 5
    assert load_open_clip("vizkit-test-tiny-clip3", tmp_path / "c.safetensors", tokenizer=False).tokenizer is None
    _qwen_tokenizer(["<|im_start|>"]).save_pretrained(tmp_path / "tok")
    loaded = load_open_clip("vizkit-test-tiny-clip3", tmp_path / "c.safetensors", tokenizer=tmp_path / "tok")
    assert loaded.tokenizer(["ab"]).shape == (1, 16)


# --------------------------------------------------------------------------- Hugging Face


def test_hf_clip_round_trip_and_hub_cache(tmp_path, image, empty_hf_cache):
    model, proc = hf_clip_dir(tmp_path / "clip")
    inp = proc(images=image, text=["a photo", "a dog"], return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = model(**inp).logits_per_image
    loaded = load_hf(tmp_path / "clip")
    assert loaded.meta["architecture"] == "CLIPModel" and not loaded.model.training
    inp2 = loaded.processor(images=image, text=["a photo", "a dog"], return_tensors="pt", padding=True)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**inp2).logits_per_image, ref)
    torch.testing.assert_close(loaded.preprocess(image), inp["pixel_values"][0])
    assert loaded.tokenizer is not None
    # the vision tower alone, picked explicitly (the text weights are then expected extras)
    vision = load_hf(tmp_path / "clip", architecture="CLIPVisionModel")
    assert vision.meta["unexpected_keys"]
    with torch.no_grad():
        torch.testing.assert_close(
            vision.model(pixel_values=inp["pixel_values"]).pooler_output,
            model.vision_model(pixel_values=inp["pixel_values"]).pooler_output,
        )
    # a hub name that is already in the local HF cache (no network involved)
    (tmp_path / "clip").rename(_snapshot_dir(empty_hf_cache, "vizkit-test/tiny-clip"))
    cached = load_hf("vizkit-test/tiny-clip")
    assert cached.meta["hub_name"] == "vizkit-test/tiny-clip"
    with torch.no_grad():
        torch.testing.assert_close(cached.model(**inp2).logits_per_image, ref)


def test_hf_vision_models_without_and_with_processor(tmp_path, image):
    from transformers import CLIPVisionConfig, CLIPVisionModel, ViTConfig, ViTForImageClassification, ViTImageProcessor

    vis = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    ).eval()
    vis.save_pretrained(tmp_path / "vis")
    with pytest.warns(UserWarning, match="has no image processor"):
        loaded = load_hf(tmp_path / "vis")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(pixel_values=x).pooler_output, vis(pixel_values=x).pooler_output)
    assert loaded.processor is None
    with pytest.raises(CheckpointError, match="vis has no image processor.*save_pretrained"):
        loaded.preprocess(image)

    vit = ViTForImageClassification(
        ViTConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            num_labels=4,
        )
    ).eval()
    vit.save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    loaded = load_hf(tmp_path / "vit")
    px = loaded.preprocess(image)
    assert px.shape == (3, 32, 32) and loaded.tokenizer is None
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(pixel_values=px[None]).logits, vit(pixel_values=px[None]).logits)


def test_hf_llava_round_trip(tmp_path, image):
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = _qwen_tokenizer(["<image>"])
    cfg = LlavaConfig(
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        text_config=dict(
            model_type="llama",
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            max_position_embeddings=128,
        ),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    model = LlavaForConditionalGeneration(cfg).eval()
    proc = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    model.save_pretrained(tmp_path / "llava")
    proc.save_pretrained(tmp_path / "llava")
    loaded = load_hf(tmp_path / "llava")
    assert loaded.meta["architecture"] == "LlavaForConditionalGeneration"
    inp = loaded.processor(images=image, text="<image> what is this", return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**inp).logits, model(**inp).logits)
    torch.testing.assert_close(loaded.preprocess(image), inp["pixel_values"][0])


def _qwen_dir(path, version):
    import transformers

    specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = _qwen_tokenizer(specials)
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    text = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
    )
    vision = dict(depth=2, hidden_size=32, num_heads=2, patch_size=8, spatial_merge_size=2, temporal_patch_size=2)
    vision.update(
        dict(embed_dim=32, mlp_ratio=2)
        if version == 2
        else dict(intermediate_size=64, out_hidden_size=32, window_size=16, fullatt_block_indexes=[1])
    )
    prefix = "Qwen2VL" if version == 2 else "Qwen2_5_VL"
    cfg = getattr(transformers, f"{prefix}Config")(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    model = getattr(transformers, f"{prefix}ForConditionalGeneration")(cfg).eval()
    pix = dict(patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32, max_pixels=32 * 32)
    proc = getattr(transformers, f"{prefix}Processor")(
        image_processor=transformers.Qwen2VLImageProcessor(**pix),
        tokenizer=tok,
        video_processor=transformers.Qwen2VLVideoProcessor(**pix),
    )
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return model


@pytest.mark.parametrize("version", [2, 2.5])
def test_hf_qwen_vl_round_trip(tmp_path, image, version):
    model = _qwen_dir(tmp_path / "qwen", version)
    loaded = load_hf(tmp_path / "qwen")
    assert loaded.meta["architecture"] == (
        "Qwen2VLForConditionalGeneration" if version == 2 else "Qwen2_5_VLForConditionalGeneration"
    )
    prompt = "<|vision_start|><|image_pad|><|vision_end|>what is it"
    inp = loaded.processor(images=[image], text=[prompt], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**inp).logits, model(**inp).logits)
    px = loaded.preprocess(image)
    assert px.shape == (3, 32, 32)
    ip = loaded.processor.image_processor
    want = (torch.tensor(image).permute(2, 0, 1) / 255 - torch.tensor(ip.image_mean)[:, None, None]) / torch.tensor(
        ip.image_std
    )[:, None, None]
    torch.testing.assert_close(px, want.float(), atol=1e-4, rtol=0)


def test_hf_errors(tmp_path, empty_hf_cache):
    t0 = time.perf_counter()
    with pytest.raises(
        CheckpointError,
        match="no local directory 'openai/clip-vit-base-patch32'.*disk only.*"
        "hf download openai/clip-vit-base-patch32 --local-dir DIR",
    ):
        load_hf("openai/clip-vit-base-patch32")
    assert time.perf_counter() - t0 < 5
    with pytest.raises(CheckpointError, match="directory not found: .*nowhere does not exist"):
        load_hf(tmp_path / "nowhere")
    d = tmp_path / "d"
    d.mkdir()
    (d / "weights.bin").write_bytes(b"x")
    with pytest.raises(
        CheckpointError,
        match=r"d is not a Hugging Face model directory: no config.json \(found "
        r"weights.bin\)",
    ):
        load_hf(d)
    (d / "config.json").write_text("not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_hf(d)
    (d / "config.json").write_text(json.dumps({"learning_rate": 0.1}))
    with pytest.raises(CheckpointError, match="is not a Hugging Face model config: it has neither 'model_type'"):
        load_hf(d)
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(CheckpointError, match="architecture 'BertModel' is not supported; load_hf handles CLIPModel"):
        load_hf(d)
    (d / "config.json").write_text(
        json.dumps({"model_type": "custom", "architectures": ["MyNet"], "auto_map": {"AutoModel": "modeling.MyNet"}})
    )
    with pytest.raises(CheckpointError, match="never sets trust_remote_code"):
        load_hf(d)
    with pytest.raises(CheckpointError, match="trust_remote_code=True refused"):
        load_hf(d, trust_remote_code=True)
    hf_clip_dir(tmp_path / "clip", with_processor=False)
    os.remove(tmp_path / "clip" / "model.safetensors")
    with pytest.raises(CheckpointError, match="has a config.json but no weights"):
        load_hf(tmp_path / "clip")
    model, _ = hf_clip_dir(tmp_path / "clip2", with_processor=False)
    sd = model.state_dict()
    sd.pop("vision_model.post_layernorm.weight")
    sd["vision_model.pre_layrnorm.bias"] = torch.zeros(7)
    save_file(sd, str(tmp_path / "clip2" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(
        CheckpointError,
        match=r"do not fit CLIPModel built from its config.json: 1 missing key\(s\) "
        r"\(vision_model.post_layernorm.weight\); 1 shape mismatch\(es\) "
        r"\(vision_model.pre_layrnorm.bias: checkpoint \(7,\) vs model \(32,\)",
    ):
        load_hf(tmp_path / "clip2")
