"""vizkit.layers: layer specs, automatic layers, the errors that name valid layers (or say there is no
attention), and the probe cache."""

import pytest
import timm
import torch
import torchvision
from models import hf_clip, open_clip_resnet, open_clip_vit, resnet18, timm_vit

import vizkit
from vizkit.layers import probe, resolve_layers


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))


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


def test_attention_on_a_cnn_names_the_class_and_says_there_is_none(x):
    with pytest.raises(
        vizkit.CaptureError,
        match=r"ResNet has no attention module at all .* for a CNN use "
        r"vizkit.cam",
    ):
        vizkit.attention(resnet18(), x)


def test_attention_on_a_module_without_attention_lists_those_with_it(x):
    vit = timm_vit(depth=2)
    with pytest.raises(
        vizkit.CaptureError,
        match=r"'head' is a Linear, not an attention module or a block holding "
        r"one; modules of VisionTransformer that hold attention: "
        r"'blocks.0', 'blocks.1'; pass one of them or 'all'",
    ):
        vizkit.attention(vit, x, layers="head")
    deep = timm_vit(depth=7)
    with pytest.raises(vizkit.CaptureError, match=r"\(first 5 of 7\): 'blocks.0', .*'blocks.4';"):
        vizkit.attention(deep, x, layers="patch_embed")


def test_probe_cache_does_not_keep_the_model_alive():
    import gc
    import weakref

    from models import open_clip_resnet

    model = open_clip_resnet()
    ref = weakref.ref(model)
    # a target on the image embedding: the similarity to a fixed random text feature
    text = torch.randn(3, 16)
    vizkit.cam(
        model,
        torch.randn(1, 3, 64, 64),
        vizkit.targets.ImageTextSimilarity(text, 1),
        layers="auto",
        forward=model.encode_image,
    )
    del model
    gc.collect()
    assert ref() is None
