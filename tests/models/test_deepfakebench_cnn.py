"""DeepfakeBench Xception checkpoints on timm legacy_xception: key mapping, exact probabilities
against an independent functional forward written from DeepfakeBench's key names, refusals
(EfficientNet-B4, unsupported modes, YAML mismatches) and the Grad-CAM auto layer."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import vizkit
from vizkit.models.deepfakebench_cnn import build_deepfakebench_cnn, deepfakebench_cnn_kind
from vizkit.models.load_common import CheckpointError

# DeepfakeBench Xception blocks: (in, out, reps, stride, start_with_relu, grow_first)
BLOCKS = (
    [(64, 128, 2, 2, False, True), (128, 256, 2, 2, True, True), (256, 728, 2, 2, True, True)]
    + [(728, 728, 3, 1, True, True)] * 8
    + [(728, 1024, 2, 2, True, False)]
)


def rep_ops(cin: int, cout: int, reps: int, start_with_relu: bool, grow_first: bool) -> list[tuple]:
    """DeepfakeBench's ``rep`` list: ('relu',) / ('sep', cin, cout) / ('bn', c), index = key index."""
    ops: list[tuple] = []
    filters = cin
    if grow_first:
        ops += [("relu",), ("sep", cin, cout), ("bn", cout)]
        filters = cout
    for _ in range(reps - 1):
        ops += [("relu",), ("sep", filters, filters), ("bn", filters)]
    if not grow_first:
        ops += [("relu",), ("sep", cin, cout), ("bn", cout)]
    return ops if start_with_relu else ops[1:]


def random_deepfakebench_xception(dropout: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """A DeepfakeBench XceptionDetector state dict (``backbone.*``, adjust_channel included) with
    random weights and BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, cout: int, cin: int, k: int, bias: bool = False) -> None:
        sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * math.sqrt(2.0 / (cin * k * k))
        if bias:
            sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.1

    def bn(name: str, c: int) -> None:  # running statistics: see calibrate() below
        sd[f"{name}.weight"] = 0.5 + torch.rand(c, generator=g)
        sd[f"{name}.bias"] = torch.randn(c, generator=g) * 0.2
        sd[f"{name}.num_batches_tracked"] = torch.tensor(1234)

    def sep(name: str, cin: int, cout: int) -> None:
        conv(f"{name}.conv1", cin, 1, 3)
        conv(f"{name}.pointwise", cout, cin, 1)

    conv("backbone.conv1", 32, 3, 3)
    bn("backbone.bn1", 32)
    conv("backbone.conv2", 64, 32, 3)
    bn("backbone.bn2", 64)
    for i, (cin, cout, reps, stride, start, grow) in enumerate(BLOCKS, 1):
        p = f"backbone.block{i}"
        if cin != cout or stride != 1:
            conv(f"{p}.skip", cout, cin, 1)
            bn(f"{p}.skipbn", cout)
        for j, op in enumerate(rep_ops(cin, cout, reps, start, grow)):
            if op[0] == "sep":
                sep(f"{p}.rep.{j}", op[1], op[2])
            elif op[0] == "bn":
                bn(f"{p}.rep.{j}", op[1])
    sep("backbone.conv3", 1024, 1536)
    bn("backbone.bn3", 1536)
    sep("backbone.conv4", 1536, 2048)
    bn("backbone.bn4", 2048)
    head = "backbone.last_linear.1" if dropout else "backbone.last_linear"
    sd[f"{head}.weight"] = torch.randn(2, 2048, generator=g) * 0.02
    sd[f"{head}.bias"] = torch.randn(2, generator=g) * 0.1
    conv("backbone.adjust_channel.0", 512, 2048, 1, bias=True)
    bn("backbone.adjust_channel.1", 512)
    sd["backbone.adjust_channel.1.running_mean"] = torch.randn(512, generator=g)
    sd["backbone.adjust_channel.1.running_var"] = 0.5 + torch.rand(512, generator=g)

    def calibrate(p: str, t: torch.Tensor) -> None:
        """Random running statistics near those of a random batch, so that activations keep a
        sensible scale through 36 layers and the probabilities do not saturate."""
        c = t.shape[1]
        mean, var = t.mean((0, 2, 3)), t.var((0, 2, 3))
        sd[f"backbone.{p}.running_mean"] = mean + 0.2 * var.sqrt() * torch.randn(c, generator=g)
        sd[f"backbone.{p}.running_var"] = var * (0.7 + 0.6 * torch.rand(c, generator=g)) + 1e-3

    with torch.no_grad():
        reference_logits(sd, torch.randn(4, 3, 160, 160, generator=g), fill_stats=calibrate)
    return sd


def reference_logits(
    sd: dict[str, torch.Tensor],
    x: torch.Tensor,
    final_relu: bool = True,
    fill_stats: Callable[[str, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """DeepfakeBench's Xception (mode original) written functionally from its key names:
    ``[B, 3, H, W] -> [B, num_classes]``. ``fill_stats(name, input)`` (used while building
    random weights) sets a BatchNorm's running statistics before it is applied."""
    strip = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}
    w = {k[len("backbone.") :]: v for k, v in strip.items()}

    def bn(t: torch.Tensor, p: str) -> torch.Tensor:
        if fill_stats is not None:
            fill_stats(p, t)
            w[f"{p}.running_mean"], w[f"{p}.running_var"] = (
                sd[f"backbone.{p}.running_mean"],
                sd[f"backbone.{p}.running_var"],
            )
        return F.batch_norm(
            t, w[f"{p}.running_mean"], w[f"{p}.running_var"], w[f"{p}.weight"], w[f"{p}.bias"], training=False, eps=1e-5
        )

    def sep(t: torch.Tensor, p: str) -> torch.Tensor:
        t = F.conv2d(t, w[f"{p}.conv1.weight"], stride=1, padding=1, groups=t.shape[1])
        return F.conv2d(t, w[f"{p}.pointwise.weight"])

    t = F.relu(bn(F.conv2d(x, w["conv1.weight"], stride=2, padding=0), "bn1"))
    t = F.relu(bn(F.conv2d(t, w["conv2.weight"], stride=1, padding=0), "bn2"))
    for i, (cin, cout, reps, stride, start, grow) in enumerate(BLOCKS, 1):
        p = f"block{i}"
        y = t
        for j, op in enumerate(rep_ops(cin, cout, reps, start, grow)):
            y = F.relu(y) if op[0] == "relu" else sep(y, f"{p}.rep.{j}") if op[0] == "sep" else bn(y, f"{p}.rep.{j}")
        if stride != 1:
            y = F.max_pool2d(y, 3, stride, 1)
        skip = (
            bn(F.conv2d(t, w[f"{p}.skip.weight"], stride=stride), f"{p}.skipbn") if (cin != cout or stride != 1) else t
        )
        t = y + skip
    t = F.relu(bn(sep(t, "conv3"), "bn3"))
    t = bn(sep(t, "conv4"), "bn4")  # DeepfakeBench's "features"
    if final_relu:  # classifier: relu, pool, linear
        t = F.relu(t)
    t = F.adaptive_avg_pool2d(t, 1).flatten(1)
    head = "last_linear.1" if "last_linear.1.weight" in w else "last_linear"
    return F.linear(t, w[f"{head}.weight"], w[f"{head}.bias"])


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
