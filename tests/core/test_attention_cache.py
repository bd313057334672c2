"""vizkit.attention_cache: one forward (and one backward) of a ViT classifier, read back by hand from the
captured maps, the model's own output and the explain functions it stands for."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vizkit.attention_cache import cache_attention
from vizkit.explain import attention, gradient_attention, rollout
from vizkit.models.vit import SimpleViT, ViTConfig


@pytest.fixture(scope="module")
def vit_and_inputs():
    torch.manual_seed(0)
    # 28 px / patch 7: a 4 x 4 grid + CLS = 17 tokens; 4 heads, 3 blocks, 10 classes
    model = SimpleViT(ViTConfig(num_layers=3)).eval()
    images = (torch.rand(3, 28, 28) * 255).to(torch.uint8).numpy()
    x = torch.from_numpy(images).float()[:, None] / 255.0
    return model, x, images


def test_the_cache_holds_the_forward_pass(vit_and_inputs):
    model, x, images = vit_and_inputs
    cache = cache_attention(model, x, images, [3, -1, 7], relevance=False)
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(cache.probs, logits.softmax(-1), atol=1e-6, rtol=1e-5)
    assert cache.preds.tolist() == logits.argmax(-1).tolist() and cache.labels.tolist() == [3, -1, 7]
    assert np.array_equal(cache.images, images) and torch.equal(cache.inputs, x) and cache.relevance is None
    ref = attention(model, x)
    assert cache.layers == ref.layers == ["blocks.0", "blocks.1", "blocks.2"] and cache.num_heads == 4
    a = ref.maps["blocks.1"]  # [3, 4, 17, 17]
    torch.testing.assert_close(cache.attn.maps["blocks.1"], a)
    # CLS row (query 0) over the 16 patch keys, as the 4 x 4 grid
    np.testing.assert_allclose(cache.cls_map(2, 1, head=3), a[2, 3, 0, 1:].reshape(4, 4).numpy(), atol=1e-7)
    np.testing.assert_allclose(cache.cls_map(2, "blocks.1"), a[2, :, 0, 1:].mean(0).reshape(4, 4).numpy(), atol=1e-7)
    last_min = ref.maps["blocks.2"][0, :, 0, 1:].amin(0).reshape(4, 4).numpy()
    np.testing.assert_allclose(cache.cls_map(0, -1, head_fusion="min"), last_min)


def test_rollout_is_cached_per_fusion_and_captions(vit_and_inputs):
    model, x, images = vit_and_inputs
    cache = cache_attention(model, x, images, [3, -1, 7], relevance=False)
    ref = attention(model, x)
    for fusion in ("mean", "max"):
        np.testing.assert_allclose(cache.rollout_map(1, fusion), rollout(ref, head_fusion=fusion)[1].numpy(), atol=1e-6)
    assert sorted(cache._rollouts) == ["max", "mean"]
    conf = [float(p.max()) for p in cache.probs]
    assert cache.caption(0) == f"label 3, predicted {int(cache.preds[0])} ({conf[0]:.1%})"
    assert cache.caption(1) == f"predicted {int(cache.preds[1])} ({conf[1]:.1%})"  # label -1: unknown


def test_relevance_is_the_predicted_class_gradient_attention_pooled_to_the_grid(vit_and_inputs):
    model, x, images = vit_and_inputs
    cache = cache_attention(model, x, images, [0, 1, 2], head_fusion="max")
    ref = gradient_attention(model, x, cache.preds.tolist(), head_fusion="max").heatmap  # [3, 28, 28]
    pooled = ref.reshape(3, 4, 7, 4, 7).mean((2, 4))  # area pooling: the mean of each 7 x 7 patch
    assert cache.relevance.shape == (3, 4, 4)
    torch.testing.assert_close(cache.relevance, pooled, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(cache.relevance, F.interpolate(ref[:, None], size=(4, 4), mode="area")[:, 0])
    assert not model.training and all(p.grad is None for p in model.parameters())
