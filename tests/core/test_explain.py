"""vizkit.explain, the entry points: inputs checked, inference mode and no_grad handled, maps
normalised; attention maps' helpers; attention_gradients (several targets from one forward, both
aggregations by hand)."""

from __future__ import annotations

import pytest
import torch
from models import all_hooks, hf_vit, resnet18, timm_vit
from torch import nn

import vizkit
from vizkit import attention_math as am
from vizkit.errors import TargetError, VizkitError
from vizkit.explain import AttentionGradients, _minmax, attention_gradients


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))


# ----------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.randn(3, 64, 64), r"4-D batch \[B, C, H, W\], got shape \(3, 64, 64\) \(add a batch dimension"),
        (torch.randn(1, 1, 3, 64, 64), r"4-D batch \[B, C, H, W\], got shape \(1, 1, 3, 64, 64\)$"),  # no hint
        (torch.randn(0, 3, 64, 64), r"^inputs is an empty batch$"),
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


def test_input_requiring_grad_is_not_touched():
    model = resnet18()
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    vizkit.cam(model, x, 0, layers="layer4")
    assert x.grad is None


# ----------------------------------------------------------------------------- inference mode and no_grad


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "scorecam", "eigencam"])
def test_cam_inside_inference_mode_equals_outside(x, method):
    model = resnet18()
    outside = vizkit.cam(model, x, [1, 2], layers="layer3", method=method)
    with torch.inference_mode():
        x_inf = x.clone()  # an inference tensor, as a user's pipeline would make it
        inside = vizkit.cam(model, x_inf, [1, 2], layers="layer3", method=method)
        assert torch.is_inference_mode_enabled()  # the caller's mode is unchanged afterwards
    torch.testing.assert_close(inside.heatmap, outside.heatmap)
    assert all(p.requires_grad for p in model.parameters())  # state restored


def test_attention_entry_points_inside_inference_mode(x):
    vit = timm_vit(depth=2)
    ref_att = vizkit.attention(vit, x)
    ref_rel = vizkit.gradient_attention(vit, x, targets=[0, 1])
    with torch.inference_mode():
        att = vizkit.attention(vit, x.clone())
        rel = vizkit.gradient_attention(vit, x.clone(), targets=[0, 1])
        rolled = vizkit.rollout(att)
        assert torch.is_inference_mode_enabled()
    for name in ref_att.layers:
        torch.testing.assert_close(att.maps[name], ref_att.maps[name])
    torch.testing.assert_close(rel.heatmap, ref_rel.heatmap)
    torch.testing.assert_close(rolled, vizkit.rollout(ref_att))


def test_a_model_created_inside_inference_mode_says_so(x):
    with torch.inference_mode():
        torch.manual_seed(0)
        model = resnet18()
        with pytest.raises(
            vizkit.InputError,
            match=r"^the parameters of ResNet are inference tensors \(the model "
            r"was created or loaded inside torch.inference_mode\(\)\)",
        ):
            vizkit.cam(model, x.clone(), 1, layers="layer4")
        # gradient-free methods need no autograd and still run
        eig = vizkit.cam(model, x.clone(), 1, layers="layer4", method="eigencam")
    torch.manual_seed(0)
    normal = resnet18()  # the same weights, created normally
    torch.testing.assert_close(eig.heatmap, vizkit.cam(normal, x, 1, layers="layer4", method="eigencam").heatmap)


def test_works_inside_no_grad_and_matches_outside():
    model = resnet18()
    x = torch.randn(2, 3, 64, 64)
    vit, y = timm_vit(depth=2), torch.randn(1, 3, 32, 32)
    outside = vizkit.cam(model, x, [1, 2], layers="layer4")
    with torch.no_grad():
        inside = vizkit.cam(model, x, [1, 2], layers="layer4")
        rel_inside = vizkit.gradient_attention(vit, y, 0)
    rel_outside = vizkit.gradient_attention(vit, y, 0)
    torch.testing.assert_close(inside.heatmap, outside.heatmap)
    torch.testing.assert_close(rel_inside.heatmap, rel_outside.heatmap)
    assert rel_inside.heatmap.std() > 0.01


# ------------------------------------------------------------- attention implementation, attention maps


def test_hf_flash_implementation_is_switched_for_the_call_and_restored():
    model = hf_vit()
    model.config._attn_implementation = "flex_attention"  # a fused kernel vizkit cannot see into
    seen = []
    original = model.set_attn_implementation

    def spy(impl):
        seen.append(impl)
        model.config._attn_implementation = impl

    model.set_attn_implementation = spy
    vizkit.attention(model, torch.randn(1, 3, 32, 32))
    assert seen == ["eager", "flex_attention"] and model.config._attn_implementation == "flex_attention"
    attention_gradients(model, torch.randn(1, 3, 32, 32), [0])
    assert seen == ["eager", "flex_attention"] * 2 and model.config._attn_implementation == "flex_attention"
    model.set_attn_implementation = original


def test_cls_attention_helpers():
    model = timm_vit(depth=2)
    attn = vizkit.attention(model, torch.randn(2, 3, 32, 32), layers=[-1])
    per_head = attn.cls_attention(-1, head_fusion=None)
    assert per_head.shape == (2, 2, 4, 4)
    torch.testing.assert_close(attn.cls_attention("blocks.1"), per_head.mean(1))
    assert attn.stacked().shape == (1, 2, 2, 17, 17)


# ----------------------------------------------------------------------------- normalisation


def test_tiny_maps_keep_their_shape_and_constant_maps_are_zero():
    shape = torch.tensor([[0.0, 0.25], [0.5, 1.0]])
    tiny = _minmax((shape * 1e-9)[None])
    torch.testing.assert_close(tiny[0], shape, atol=2e-4, rtol=0)
    assert tiny.max() >= 0.9999
    # ranges >= 1e-3: exactly pytorch-grad-cam's (x - min) / (max + 1e-7)
    big = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(0)) * 4 + 1
    shifted = big - big.flatten(1).amin(1)[:, None, None]
    torch.testing.assert_close(_minmax(big), shifted / (shifted.flatten(1).amax(1)[:, None, None] + 1e-7))
    for value in (0.0, 3.0, 1e-12, -2.5):
        assert torch.equal(_minmax(torch.full((1, 4, 4), value)), torch.zeros(1, 4, 4))
    assert torch.equal(_minmax(torch.tensor([[[1.0, float("nan")]]])), torch.zeros(1, 1, 2))


def test_a_model_with_tiny_scores_gives_the_same_map(x):
    """Grad-CAM is linear in the classifier's scale: shrinking the last layer by 1e-12 (scores
    and gradients ~1e-12, raw maps below 1e-9) must leave the normalised heatmap unchanged."""
    model = resnet18()
    full = vizkit.cam(model, x, [1, 2], layers="layer3")
    with torch.no_grad():
        model.fc.weight.mul_(1e-12)
        model.fc.bias.mul_(1e-12)
    tiny = vizkit.cam(model, x, [1, 2], layers="layer3")
    assert tiny.layer_maps["layer3"].max() < 1e-9
    torch.testing.assert_close(tiny.heatmap, full.heatmap, atol=1e-3, rtol=0)


def test_a_constant_activation_gives_a_zero_map(x):
    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            f = self.features(x) * 0 + 1.0  # the same value everywhere
            return self.fc(f.mean((2, 3)))

    ours = vizkit.cam(Flat().eval(), x, 0, layers="features")
    assert torch.equal(ours.heatmap, torch.zeros(2, 32, 32))


# ----------------------------------------------------------------------------- attention_gradients
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


def test_by_class_moves_each_target_to_its_class_index():
    c = _cache(["l1"])
    c2 = AttentionGradients(
        c.attentions,
        [c.gradients[0], {"l1": G2[None, None]}],
        [torch.tensor([1.0]), torch.tensor([2.0])],
        [torch.tensor([4]), torch.tensor([0])],
        c.layers,
        c.grid,
        c.prefix_tokens,
        c.image_size,
    )
    moved = c2.by_class([4, 0])  # target 0 explains class 4, target 1 class 0
    assert len(moved.gradients) == 5 and moved.gradients[1:4] == [None, None, None]
    assert moved.gradients[4] is c2.gradients[0] and moved.gradients[0] is c2.gradients[1]
    assert [float(s) for s in (moved.scores[0], moved.scores[4])] == [2.0, 1.0] and moved.classes[2] is None
    assert moved.attentions is c2.attentions and moved.grid == (1, 2) and moved.image_size == (4, 8)
    # class 4's map is the one target 0 gave: (G1*A1)+ CLS row over the patches [0, 1]
    torch.testing.assert_close(moved.relevance(4), torch.tensor([[[0.0, 1.0]]]))
    torch.testing.assert_close(moved.relevance(0), c2.relevance(1))
