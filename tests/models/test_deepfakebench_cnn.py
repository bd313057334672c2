"""DeepfakeBench Xception checkpoints on timm legacy_xception: key mapping, exact probabilities
against an independent functional forward written from DeepfakeBench's key names, refusals
(EfficientNet-B4, unsupported modes, YAML mismatches) and the Grad-CAM auto layer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from deepfakebench import random_deepfakebench_xception, reference_logits

import vizkit
from vizkit.models.deepfakebench_cnn import build_deepfakebench_cnn, deepfakebench_cnn_kind
from vizkit.models.load_common import CheckpointError


def fake_prob(logits: torch.Tensor) -> torch.Tensor:
    return logits.softmax(-1)[:, 1]


def save_and_load(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    torch.save(sd, path)  # DeepfakeBench: torch.save(model.state_dict(), ckpt_path)
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def dfb_sd() -> dict[str, torch.Tensor]:
    return random_deepfakebench_xception(dropout=False, seed=1)


@pytest.fixture(scope="module")
def inputs() -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {size: torch.randn(2, 3, size, size, generator=g) for size in (224, 256)}


def _assert_matches(model: torch.nn.Module, sd: dict[str, torch.Tensor], inputs: dict[int, torch.Tensor]) -> None:
    with torch.no_grad():
        for size, x in inputs.items():
            ref = fake_prob(reference_logits(sd, x))
            got = fake_prob(model(x))
            assert got.shape == (2,)
            assert ((ref > 0.02) & (ref < 0.98)).all(), f"saturated reference at {size}px: {ref}"  # a test with teeth
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_xception_matches_deepfakebench_forward(tmp_path, dfb_sd, inputs, prefix):
    sd = save_and_load({prefix + k: v for k, v in dfb_sd.items()}, tmp_path / "ckpt_best.pth")
    assert deepfakebench_cnn_kind(sd) == "xception"
    model = build_deepfakebench_cnn(
        sd,
        model_name="xception",
        source=tmp_path / "ckpt_best.pth",
        backbone_config={"mode": "original", "num_classes": 2, "inc": 3, "dropout": False},
    )
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == sum(
        v.numel()
        for k, v in dfb_sd.items()
        if "adjust_channel" not in k and not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    _assert_matches(model, sd, inputs)


def test_xception_with_dropout_head(tmp_path, inputs):
    raw = random_deepfakebench_xception(dropout=True, seed=2)
    assert "backbone.last_linear.1.weight" in raw and "backbone.last_linear.weight" not in raw
    sd = save_and_load({"module." + k: v for k, v in raw.items()}, tmp_path / "dropout.pth")
    model = build_deepfakebench_cnn(sd, backbone_config={"mode": "original", "dropout": 0.5})
    _assert_matches(model, sd, inputs)


def test_reference_catches_one_line_mapping_mistakes(dfb_sd, inputs):
    """The comparison above would fail for a swapped pair of blocks or a dropped final ReLU."""
    x = inputs[256]
    with torch.no_grad():
        ref = fake_prob(reference_logits(dfb_sd, x))
        swapped = dict(dfb_sd)
        for k in [k for k in dfb_sd if k.startswith("backbone.block5.")]:
            other = k.replace("block5.", "block6.")
            swapped[k], swapped[other] = dfb_sd[other], dfb_sd[k]
        model = build_deepfakebench_cnn(swapped)
        assert (fake_prob(model(x)) - ref).abs().max() > 1e-3
        assert (fake_prob(reference_logits(dfb_sd, x, final_relu=False)) - ref).abs().max() > 1e-3


def test_model_name_mismatch(dfb_sd):
    with pytest.raises(CheckpointError, match=r"model_name 'efficientnetb4'.*DeepfakeBench xception checkpoint"):
        build_deepfakebench_cnn(dfb_sd, model_name="efficientnetb4", source="x.pth")
    with pytest.raises(CheckpointError, match=r"model_name 'ucf'.*supported model_name: xception"):
        build_deepfakebench_cnn(dfb_sd, model_name="ucf")


@pytest.mark.parametrize("mode", ["adjust_channel", "shallow_xception"])
def test_unsupported_mode(dfb_sd, mode):
    with pytest.raises(CheckpointError, match=rf"mode '{mode}' is not supported.*supported mode: 'original'"):
        build_deepfakebench_cnn(dfb_sd, model_name="xception", backbone_config={"mode": mode})


def test_config_disagreeing_with_weights(dfb_sd):
    with pytest.raises(CheckpointError, match=r"backbone_config.inc is 4 but the weights have 3"):
        build_deepfakebench_cnn(dfb_sd, backbone_config={"mode": "original", "inc": 4})


def test_other_detector_on_xception_backbone(dfb_sd):
    sd = {**dfb_sd, "head.weight": torch.zeros(2, 2048)}
    assert deepfakebench_cnn_kind(sd) == "xception"
    with pytest.raises(CheckpointError, match=r"outside 'backbone.' \(head.weight\)"):
        build_deepfakebench_cnn(sd)


def test_efficientnet_b4_is_recognised_and_refused():
    sd = {
        "module.backbone.efficientnet._conv_stem.weight": torch.zeros(48, 3, 3, 3),
        "module.backbone.efficientnet._bn0.weight": torch.ones(48),
        "module.backbone.efficientnet._blocks.0._depthwise_conv.weight": torch.zeros(48, 1, 3, 3),
        "module.backbone.last_layer.weight": torch.zeros(2, 1792),
        "module.backbone.last_layer.bias": torch.zeros(2),
    }
    assert deepfakebench_cnn_kind(sd) == "efficientnetb4"
    with pytest.raises(CheckpointError) as err:
        build_deepfakebench_cnn(sd, model_name="efficientnetb4", source="effnb4.pth")
    text = str(err.value)
    for part in (
        "effnb4.pth",
        "EfficientNet-B4",
        "unpadded nn.Conv2d(3, 48, 3, stride=2)",
        "380-px",
        "tf_efficientnet_b4",
        "torchvision",
        "127/63/32/16/8",
        "Supported DeepfakeBench CNN detector: xception",
    ):
        assert part in text


def test_clip_detector_keys_are_not_a_cnn():
    sd = {
        "backbone.embeddings.patch_embedding.weight": torch.zeros(768, 3, 16, 16),
        "backbone.embeddings.position_embedding.weight": torch.zeros(197, 768),
        "head.weight": torch.zeros(2, 768),
        "head.bias": torch.zeros(2),
    }
    assert deepfakebench_cnn_kind(sd) is None
    with pytest.raises(CheckpointError, match=r"not a DeepfakeBench Xception detector.*found backbone.embeddings"):
        build_deepfakebench_cnn(sd)


def test_gradcam_auto_layer_is_last_conv_stage(dfb_sd, inputs):
    """auto = bn4, DeepfakeBench's "features" (the final 2048-channel map, before the classifier's
    ReLU and pooling); its in-place act4 shares bn4's output tensor, and bn4 is the one with parameters."""
    model = build_deepfakebench_cnn(dfb_sd)
    expl = vizkit.cam(model, inputs[256], targets=1, layers="auto")
    assert expl.layers == ["bn4"] and model.bn4.num_features == 2048
    assert expl.layer_maps["bn4"].shape == (2, 8, 8)  # 256 px / stride 32
    assert expl.heatmap.shape == (2, 256, 256) and torch.isfinite(expl.heatmap).all()
