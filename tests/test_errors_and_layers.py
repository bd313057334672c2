"""Layer specs, automatic layers and bad input: one clear error each."""

import pytest
import timm
import torch
import torchvision
from models import hf_clip, open_clip_resnet, open_clip_vit, resnet18, timm_vit

import vizkit
from vizkit.layers import probe, resolve_layers


def auto(model, x, forward=None):
    run = forward or model
    return [n for n, _ in resolve_layers(model, "auto", probe_fn=lambda: probe(model, run, x))]


@pytest.mark.parametrize(
    "ctor, expected",
    [
        (lambda: torchvision.models.resnet18(), ["layer4"]),
        (lambda: torchvision.models.convnext_tiny(), ["features.7"]),
        (lambda: torchvision.models.efficientnet_b0(), ["features.8"]),
        (lambda: timm.create_model("resnet18"), ["layer4"]),
        (lambda: timm.create_model("convnext_atto"), ["stages.3"]),
    ],
)
def test_auto_layer_cnn(ctor, expected):
    assert auto(ctor().eval(), torch.randn(1, 3, 96, 96)) == expected


def test_auto_layer_transformers_and_clip_towers():
    assert auto(timm_vit(depth=3), torch.randn(1, 3, 32, 32)) == ["blocks.2.norm1"]
    clip = hf_clip()
    x = torch.randn(1, 3, 32, 32)
    assert auto(clip, x, lambda t: clip.get_image_features(pixel_values=t)) == [
        "vision_model.encoder.layers.2.layer_norm1"
    ]
    oc = open_clip_vit()
    assert auto(oc, x, oc.encode_image) == ["visual.transformer.resblocks.1.ln_1"]
    ocr = open_clip_resnet()
    assert auto(ocr, torch.randn(1, 3, 64, 64), ocr.encode_image) == ["visual.layer4"]


def test_auto_layer_vit_without_prefix_tokens_reads_the_last_block_output():
    """No CLS token, pooled patch tokens: the last block's output reaches the score, so it is
    the auto layer, and its patch-token gradients are not zero there (they are with a CLS head)."""
    x = torch.randn(2, 3, 32, 32)
    pooled = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3, class_token=False, global_pool="avg", num_classes=5
    ).eval()
    assert pooled.num_prefix_tokens == 0
    assert auto(pooled, x) == ["blocks.2"]
    exp = vizkit.cam(pooled, x, [1, 3])
    assert exp.layers == ["blocks.2"] and exp.layer_maps["blocks.2"].shape == (2, 4, 4)
    assert float(exp.layer_maps["blocks.2"].abs().sum()) > 0
    cls = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=3, num_classes=5).eval()
    assert auto(cls, x) == ["blocks.2.norm1"]
    # why a CLS model keeps the block input: at the block output no patch token reaches the score
    assert float(vizkit.cam(cls, x, [1, 3], layers="blocks.2").layer_maps["blocks.2"].abs().sum()) == 0.0


def test_block_specs():
    model = timm_vit(depth=6)

    def names(spec):
        return [n for n, _ in resolve_layers(model, spec)]

    assert names("last") == ["blocks.5"]
    assert names("last_4") == ["blocks.2", "blocks.3", "blocks.4", "blocks.5"]
    assert names("all") == [f"blocks.{i}" for i in range(6)]
    assert names(-2) == ["blocks.4"] and names([0, "blocks.-1.norm1"]) == ["blocks.0", "blocks.5.norm1"]
    assert names(model.blocks[1].attn) == ["blocks.1.attn"]


def test_wrong_layer_name_lists_close_names():
    model = timm_vit(depth=2)
    with pytest.raises(vizkit.LayerNotFoundError) as err:
        vizkit.cam(model, torch.randn(1, 3, 32, 32), 0, layers="blocks.1.norm")
    msg = str(err.value)
    assert "no layer named 'blocks.1.norm'" in msg and "'blocks.1.norm1'" in msg and "'blocks.1.norm2'" in msg


def test_hf_style_name_on_a_different_model():
    model = resnet18()
    with pytest.raises(vizkit.LayerNotFoundError, match="Closest valid names: 'layer4'"):
        resolve_layers(model, "layer44")


def test_out_of_range_index():
    model = timm_vit(depth=2)
    with pytest.raises(
        vizkit.LayerNotFoundError, match=r"layer index 5 is out of range.*2 transformer blocks \(valid indices -2..1\)"
    ):
        vizkit.cam(model, torch.randn(1, 3, 32, 32), 0, layers=5)
    with pytest.raises(vizkit.LayerNotFoundError, match="index -3 is out of range"):
        resolve_layers(model, "blocks.-3")


def test_block_spec_on_cnn_is_explained():
    with pytest.raises(vizkit.VizkitError, match="has none"):
        resolve_layers(resnet18(), "last_4")


def test_targets_length_mismatch_is_an_error_not_a_truncation():
    model = resnet18()
    with pytest.raises(vizkit.TargetError, match="2 targets for a batch of 3 images"):
        vizkit.cam(model, torch.randn(3, 3, 64, 64), [1, 2], layers="layer4")


def test_target_class_out_of_range():
    with pytest.raises(vizkit.TargetError, match="target class 10 is out of range: the model has 10 classes"):
        vizkit.cam(resnet18(), torch.randn(1, 3, 64, 64), 10, layers="layer4")


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.randn(3, 64, 64), r"4-D batch \[B, C, H, W\], got shape \(3, 64, 64\) \(add a batch dimension"),
        (torch.randn(1, 1, 3, 64, 64), "got shape"),
        ([[1.0]], "must be a torch.Tensor"),
    ],
)
def test_non_4d_input(bad, match):
    with pytest.raises(vizkit.InputError, match=match):
        vizkit.cam(resnet18(), bad, 0, layers="layer4")
    with pytest.raises(vizkit.InputError, match=match):
        vizkit.attention(timm_vit(), bad)


def test_unknown_method_and_bad_head_fusion():
    with pytest.raises(vizkit.VizkitError, match="unknown CAM method 'gradcamm': choose one of gradcam"):
        vizkit.cam(resnet18(), torch.randn(1, 3, 64, 64), 0, method="gradcamm")
    with pytest.raises(vizkit.VizkitError, match="head_fusion must be one of mean, max, min"):
        vizkit.gradient_attention(timm_vit(), torch.randn(1, 3, 32, 32), 0, head_fusion="sum")


def test_callable_target_with_wrong_shape():
    with pytest.raises(vizkit.TargetError, match=r"one score per image, a \[B\] tensor"):
        vizkit.cam(resnet18(), torch.randn(2, 3, 64, 64), lambda out: out.sum(), layers="layer4")


def small_cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 6, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 6),
    ).eval()


def test_callable_target_and_score_cam_fallback():
    model = small_cnn()
    x = torch.randn(2, 3, 16, 16)

    def fn(out):
        return out[:, 3] - out[:, 5]

    a = vizkit.cam(model, x, fn, layers="2", method="scorecam")
    logits = model(x).detach()
    torch.testing.assert_close(a.scores, logits[:, 3] - logits[:, 5])
    assert a.targets is None
    # the same contrast through a plain target gives a different but valid map
    b = vizkit.cam(model, x, 3, layers="2", method="scorecam")
    assert a.heatmap.shape == b.heatmap.shape and not torch.allclose(a.heatmap, b.heatmap)

    # the fallback (one channel of every image per pass) equals the batched path on a take-able target
    class Plain:
        def __call__(self, out):
            return out[:, 3]

    c = vizkit.cam(model, x, Plain(), layers="2", method="scorecam")
    torch.testing.assert_close(c.heatmap, b.heatmap, atol=1e-6, rtol=0)


def test_model_returning_a_tuple():
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = small_cnn()

        def forward(self, x):
            logits = self.body(x)
            return logits, logits.softmax(-1)

    model = TwoHeads().eval()
    x = torch.randn(2, 3, 16, 16)
    exp = vizkit.cam(model, x, [1, 2], layers="body.2")
    ref = vizkit.cam(model.body, x, [1, 2], layers="2")
    torch.testing.assert_close(exp.heatmap, ref.heatmap)
    torch.testing.assert_close(exp.scores, model.body(x)[torch.arange(2), torch.tensor([1, 2])].detach())
