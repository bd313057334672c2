"""vizkit.targets: what is explained. real_fake_targets per choice; class targets checked against the
batch and the model's classes; callable targets (their shape, the Score-CAM fallback); outputs
without logits (one message saying what the model returned), tuples and Hugging Face outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import hf_vit, resnet18
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import vizkit
from vizkit.errors import TargetError
from vizkit.explain import cam
from vizkit.targets import REAL_FAKE_TARGETS, real_fake_targets


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def test_each_choice_for_fake_index_1_and_0():
    labels = torch.tensor([1, 0, 0, 1])
    assert real_fake_targets("predicted", labels) is None
    assert real_fake_targets("fake", labels) == 1 and real_fake_targets("real", labels) == 0
    assert real_fake_targets("label", labels).tolist() == [1, 0, 0, 1]
    # a detector whose class 0 is the fake one
    assert real_fake_targets("fake", labels, fake_index=0) == 0 and real_fake_targets("real", labels, 0) == 1
    assert real_fake_targets("label", labels, fake_index=0).tolist() == [0, 1, 1, 0]
    assert REAL_FAKE_TARGETS == ("predicted", "fake", "real", "label")
    with pytest.raises(TargetError, match="target 'fakes': choose one of predicted, fake, real, label"):
        real_fake_targets("fakes", labels)


def test_label_targets_explain_each_images_true_class():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(2, 2)
    ).eval()
    x = torch.rand(3, 3, 6, 6)
    exp = cam(model, x, real_fake_targets("label", torch.tensor([0, 1, 1])), layers=["0"])
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(exp.scores, logits[[0, 1, 2], [0, 1, 1]])  # the true class's logit each


def test_targets_length_mismatch_is_an_error_not_a_truncation():
    model = resnet18()
    with pytest.raises(vizkit.TargetError, match="2 targets for a batch of 3 images"):
        vizkit.cam(model, torch.randn(3, 3, 64, 64), [1, 2], layers="layer4")


def test_target_class_out_of_range():
    with pytest.raises(vizkit.TargetError, match="target class 10 is out of range: the model has 10 classes"):
        vizkit.cam(resnet18(), torch.randn(1, 3, 64, 64), 10, layers="layer4")


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
