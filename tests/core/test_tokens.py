"""vizkit.tokens: which reading of a feature map's shape (NCHW, NHWC) a module's output gets."""

import pytest
from torch import nn

import vizkit


def test_feature_layout_rules():
    from vizkit.tokens import feature_layout

    conv = nn.Conv2d(3, 8, 3)
    assert feature_layout((1, 8, 16, 16), (64, 64), "c", conv) == "nchw"
    assert feature_layout((1, 16, 16, 8), (64, 64), "n", nn.LayerNorm(8)) == "nhwc"
    assert feature_layout((1, 16, 16, 8), (64, 64), "l", nn.Linear(4, 8)) == "nhwc"
    # shapes alone: only one reading divides the input by a common stride
    assert feature_layout((1, 256, 7, 7), (224, 224), "s") == "nchw"
    assert feature_layout((1, 7, 7, 256), (224, 224), "s") == "nhwc"
    # a known channels-last family decides what the shapes cannot
    assert feature_layout((1, 8, 8, 8), (64, 64), "b", nn.Identity(), ["SwinTransformer", "Sequential"]) == "nhwc"
    with pytest.raises(vizkit.InputError, match="its module type says NHWC but its spatial dims only fit"):
        feature_layout((1, 8, 16, 16), (64, 64), "bad", nn.LayerNorm(16))
