"""vizkit.models.clip.candidate_layers: the layer choices of a CLIP's image encoder, on the zoo's ViT and
ResNet CLIPs (their module names are known: tests/zoo/test_shapes_clip.py)."""

from __future__ import annotations

import pytest
from models import all_hooks
from PIL import Image

from vizkit import zoo
from vizkit.models.clip import candidate_layers
from vizkit.zoo.load_clip import zoo_clip_adapter


@pytest.fixture(scope="module")
def scene():
    return Image.fromarray(zoo.dataset("shapes_clip", "test")[0].image)


def test_vit_tower_offers_its_last_blocks(scene):
    adapter = zoo_clip_adapter("shapes_clip")  # 3 transformer blocks
    blocks = [f"visual.trunk.blocks.{i}" for i in range(3)]
    assert candidate_layers(adapter, scene) == ["auto", *blocks]  # fewer blocks than count: all of them
    assert candidate_layers(adapter, scene, count=2) == ["auto", *blocks[1:]]
    assert all_hooks(adapter.model) == 0


def test_cnn_tower_offers_its_last_spatial_modules_in_forward_order(scene):
    adapter = zoo_clip_adapter("shapes_clip_cnn")  # no transformer blocks
    # the spatial modules at most one level below the shallowest one, last ones first, deduplicated, in
    # forward order: layer4's own convolution, norm and shortcut, then layer4
    expected = ["visual.trunk.layer4.conv2", "visual.trunk.layer4.bn2", "visual.trunk.layer4.downsample"]
    assert candidate_layers(adapter, scene) == ["auto", *expected, "visual.trunk.layer4"]
    assert candidate_layers(adapter, scene, count=1) == ["auto", "visual.trunk.layer4"]
