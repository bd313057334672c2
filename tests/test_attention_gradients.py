"""attention_gradients: several targets from one forward; both aggregations by hand."""

from __future__ import annotations

import pytest
import torch
from models import all_hooks, timm_vit

import vizkit
from vizkit import attention_math as am
from vizkit.errors import TargetError, VizkitError
from vizkit.explain import AttentionGradients, attention_gradients

# one head, N = 3 tokens (CLS + a 1 x 2 patch grid)
A1 = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]])
G1 = torch.tensor([[2.0, -4.0, 4.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # (G1*A1)+ = [[1,0,1],[0,.6,0],[.1,.1,.8]]
A2 = torch.tensor([[0.4, 0.4, 0.2], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25]])
G2 = torch.tensor([[1.0, 1.0, -1.0], [2.0, 2.0, 2.0], [0.0, 4.0, 0.0]])  # (G2*A2)+ = [[.4,.4,0],[.6,.6,.8],[0,1,0]]


def _cache(layers):
    attn = {"l1": A1[None, None], "l2": A2[None, None]}
    grad = {"l1": G1[None, None], "l2": G2[None, None]}
    return AttentionGradients(
        attentions={n: attn[n] for n in layers},
        gradients=[{n: grad[n] for n in layers}],
        scores=[torch.zeros(1)],
        classes=[None],
        layers=list(layers),
        grid=(1, 2),
        prefix_tokens=1,
        image_size=(4, 8),
    )


def test_both_aggregations_by_hand_one_layer():
    c = _cache(["l1"])
    # relevance: R = I + Ā1 -> CLS row [2, 0, 1] -> patches [0, 1]; mean: Ā1 CLS row -> [0, 1]
    torch.testing.assert_close(c.relevance(0, aggregation="relevance"), torch.tensor([[[0.0, 1.0]]]))
    torch.testing.assert_close(c.relevance(0, aggregation="mean"), torch.tensor([[[0.0, 1.0]]]))


def test_both_aggregations_by_hand_two_layers():
    c = _cache(["l1", "l2"])
    # R1 = I + Ā1; R2 = R1 + Ā2 R1: CLS row [2, 0, 1] + .4 [2, 0, 1] + .4 [0, 1.6, 0] = [2.8, .64, 1.4]
    torch.testing.assert_close(c.relevance(0, aggregation="relevance"), torch.tensor([[[0.64, 1.4]]]))
    # mean of the CLS rows of Ā1 and Ā2: ([1, 0, 1] + [.4, .4, 0]) / 2 = [.7, .2, .5]
    torch.testing.assert_close(c.relevance(0, aggregation="mean"), torch.tensor([[[0.2, 0.5]]]))
    # a layer subset in any order is taken in forward order; one layer of two equals the 1-layer case
    torch.testing.assert_close(c.relevance(0, layers=["l1"]), torch.tensor([[[0.0, 1.0]]]))
    torch.testing.assert_close(c.layer_map(0, "l2"), torch.tensor([[[0.4, 0.0]]]))
    e = c.explanation(0, aggregation="mean")
    assert e.heatmap.shape == (1, 4, 8) and e.method == "gradient_attention[mean, mean]" and e.layers == ["l1", "l2"]
    with pytest.raises(VizkitError, match="aggregation must be one of relevance, mean"):
        c.relevance(0, aggregation="sum")
    with pytest.raises(VizkitError, match="were not captured"):
        c.relevance(0, layers=["l3"])


def test_head_fusion_by_hand():
    attn = torch.stack([A1, A2])[None]  # [1, 2 heads, 3, 3]
    grad = torch.stack([G1, G2])[None]
    w1 = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.6, 0.0], [0.1, 0.1, 0.8]])
    w2 = torch.tensor([[0.4, 0.4, 0.0], [0.6, 0.6, 0.8], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(am.gradient_weighted(attn, grad, "max")[0], torch.maximum(w1, w2))
    torch.testing.assert_close(am.gradient_weighted(attn, grad, "min")[0], torch.minimum(w1, w2))
    torch.testing.assert_close(am.gradient_weighted(attn, grad, "mean")[0], (w1 + w2) / 2)


def test_two_targets_one_forward_equal_separate_calls():
    model = timm_vit(depth=3, num_classes=4)
    x = torch.rand(2, 3, 32, 32)
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    try:
        ag = attention_gradients(model, x, [1, 3])
        assert len(calls) == 1  # both targets' gradients come from ONE forward pass
    finally:
        handle.remove()
    for i, t in enumerate((1, 3)):
        for fusion in am.HEAD_FUSIONS:
            ref = vizkit.gradient_attention(model, x, targets=t, head_fusion=fusion)
            got = ag.explanation(i, fusion)
            torch.testing.assert_close(got.heatmap, ref.heatmap)
            torch.testing.assert_close(got.scores, ref.scores)
            assert got.targets.tolist() == [t, t]
    last = ag.layers[-1:]
    ref = vizkit.gradient_attention(model, x, targets=3, layers=last)
    torch.testing.assert_close(ag.explanation(1, layers=last).heatmap, ref.heatmap)


def test_bad_targets_and_state_restored():
    model = timm_vit(depth=2).train()
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(TargetError, match="non-empty list"):
        attention_gradients(model, x, 1)
    with pytest.raises(TargetError, match="target class 99 is out of range: the model has 5 classes"):
        attention_gradients(model, x, [0, 99])
    assert model.training and all(p.requires_grad for p in model.parameters()) and all_hooks(model) == 0
