"""vizkit.models.vit_gradcam: the options checked on the model, the layer modes, and every class's
maps from one cached pass equal to gradient attention computed directly."""

from __future__ import annotations

import pytest
import torch
from models import resnet18, timm_vit

import vizkit
from vizkit.errors import CaptureError, VizkitError
from vizkit.explain import _to_input_size
from vizkit.models.vit_gradcam import LAYER_MODES, CLIPViTGradCAM, check_attention_options


def _blocks(depth: int) -> list[str]:
    return [f"blocks.{i}" for i in range(depth)]


def test_check_attention_options_default_layers_and_note():
    six = timm_vit(depth=6, num_classes=2)
    assert check_attention_options(six) == (_blocks(6), _blocks(6)[2:], None)
    names, targets, note = check_attention_options(timm_vit(depth=3, num_classes=2))
    assert names == targets == _blocks(3)
    assert note == (
        "the detector has 3 transformer block(s), fewer than the default's 4 (-4 -3 -2 -1): the maps combine all 3"
    )
    assert check_attention_options(six, "last_2")[1] == ["blocks.4", "blocks.5"]
    assert check_attention_options(six, "LAST_9")[1] == _blocks(6)  # more than there are: all of them
    assert check_attention_options(six, [0, -1])[1] == ["blocks.0", "blocks.5"]
    assert check_attention_options(six, ["blocks.2"])[1] == ["blocks.2"]


def test_check_attention_options_names_what_is_wrong():
    model = timm_vit(depth=2, num_classes=2)
    with pytest.raises(VizkitError, match="head_fusion must be one of mean, max, min, got 'median'"):
        check_attention_options(model, head_fusion="median")
    with pytest.raises(VizkitError, match="aggregation must be one of relevance, mean, got 'sum'"):
        check_attention_options(model, aggregation="sum")
    with pytest.raises(
        VizkitError, match="are not transformer blocks of VisionTransformer; blocks: blocks.0 .. blocks.1"
    ):
        check_attention_options(model, ["norm"])
    with pytest.raises(CaptureError, match="No attention weights found: ResNet"):
        check_attention_options(resnet18())


def test_layer_modes_and_layer_maps_equal_direct_gradient_attention():
    model = timm_vit(depth=6, num_classes=3)
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32)
    res = CLIPViTGradCAM(model, [-2, -1], "max", "mean").explain(x)
    assert res.class_names == ["class 0", "class 1", "class 2"] and res.target_layers == ["blocks.4", "blocks.5"]
    assert [res.layers_for(m) for m in LAYER_MODES] == [["blocks.5"], _blocks(6)[2:], _blocks(6)]
    assert res.layers_for(None) == ["blocks.4", "blocks.5"] and res.layers_for(["blocks.1"]) == ["blocks.1"]
    with pytest.raises(VizkitError, match="unknown layer mode 'first'"):
        res.layers_for("first")
    # the plain per-layer mean: the mean of the two layers' CLS rows of Ā, normalised and resized
    direct = vizkit.gradient_attention(model, x, 2, head_fusion="max", layers=["blocks.4", "blocks.5"])
    mean_map = (direct.layer_maps["blocks.4"] + direct.layer_maps["blocks.5"]) / 2
    torch.testing.assert_close(res.heatmap(2), _to_input_size(mean_map, (32, 32)), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(res.heatmap(2, aggregation="relevance"), direct.heatmap, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(res.raw(2), res.cache.relevance(2, "max", ["blocks.4", "blocks.5"], "mean"))
    assert res.raw(2) is res.raw(2)  # memoised: the second call computes nothing
    one = vizkit.gradient_attention(model, x, 0, head_fusion="min", layers=["blocks.3"])
    torch.testing.assert_close(
        res.layer_heatmap(0, "blocks.3", "min"), one.layer_heatmaps["blocks.3"], atol=1e-6, rtol=1e-5
    )
    with torch.no_grad():
        torch.testing.assert_close(res.probs, model(x).softmax(-1))
    torch.testing.assert_close(res.preds, model(x).argmax(-1))


def test_explain_some_classes_indexes_the_cache_by_class():
    model = timm_vit(depth=2, num_classes=4)
    x = torch.rand(1, 3, 32, 32)
    g = CLIPViTGradCAM(model, "all")
    res = g.explain(x, [3, 1])
    assert [gr is None for gr in res.cache.gradients] == [True, False, True, False]
    for k in (1, 3):
        torch.testing.assert_close(res.heatmap(k), vizkit.gradient_attention(model, x, k).heatmap, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g(x, 1), res.heatmap(1))
