"""Issue 16, items 2-4 and 6: inference mode, targets on outputs without logits, attention on
models / modules without attention, normalisation of tiny and constant maps."""

import numpy as np
import pytest
import torch
from models import hf_vit, resnet18, timm_vit
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import vizkit
from vizkit.explain import _minmax


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))


# ----------------------------------------------------------------------------- inference mode


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


# ----------------------------------------------------------------------------- targets=None


class Embeds(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.proj = nn.Linear(8, 6)

    def forward(self, x):
        f = self.features(x)
        e = self.proj(f.mean((2, 3)))
        if self.kind == "embeddings":
            return e[:, :, None]  # [B, 6, 1]: not class logits
        if self.kind == "tuple":
            return e, f
        return {"score": e[:, 2], "embedding": e}


@pytest.mark.parametrize(
    "kind, shown",
    [
        ("embeddings", r"Tensor\[2, 6, 1\]"),
        ("tuple", r"tuple of 2 \(Tensor\[2, 6\], Tensor\[2, 8, 32, 32\]\)"),
        ("dict", r"dict\(score: Tensor\[2\], embedding: Tensor\[2, 6\]\)"),
    ],
)
def test_targets_none_without_logits_says_what_the_model_returned(x, kind, shown):
    torch.manual_seed(0)
    model = Embeds(kind).eval()
    with pytest.raises(
        vizkit.TargetError,
        match=rf"the model returned {shown}; pass a callable target .*"
        r"targets=lambda out: out\[\"score\"\]",
    ):
        vizkit.cam(model, x, None, layers="features")


def test_the_suggested_callable_target_works(x):
    torch.manual_seed(0)
    model = Embeds("dict").eval()
    ours = vizkit.cam(model, x, lambda out: out["score"], layers="features")
    torch.testing.assert_close(ours.scores, model(x)["score"].detach())

    class Score(nn.Module):  # the same score as a plain output, for the reference
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)["score"][:, None]

    with GradCAM(model=Score(model), target_layers=[model.features]) as ref:
        r = ref(input_tensor=x, targets=[ClassifierOutputTarget(0)] * 2)
    assert np.abs(ours.heatmap.numpy() - r).max() <= 1e-4


def test_hf_model_output_with_logits_is_accepted(x):
    model = hf_vit()
    ours = vizkit.cam(model, x, None, layers="auto")
    logits = model(pixel_values=x).logits
    assert ours.targets.tolist() == logits.argmax(-1).tolist()


# ----------------------------------------------------------------------------- attention errors


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
