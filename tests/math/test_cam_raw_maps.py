"""The raw per-layer maps (``Explanation.layer_maps``: after the ReLU, before any normalisation, what
scenario 3's chunk files store) against pytorch-grad-cam's own unnormalised maps, for every method
that has them; and the probability targets (``ClassProbability``, ``ImageTextSimilarity(probability=
True)``, clip-gradcam's ``--probability``) against pytorch-grad-cam's softmax target.

A normalised heatmap hides a wrong scale (``mean`` -> ``sum`` in Grad-CAM's weights survives a heatmap
comparison); these comparisons do not.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gradcam_reference import REFERENCE as PARITY_REFERENCE
from models import resnet18, timm_vit
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget

import vizkit
from vizkit.targets import ClassLogit, ClassProbability, ImageTextSimilarity

# the methods compared: all but Eigen-CAM
REFERENCE = {method: cls for method, cls in PARITY_REFERENCE.items() if method != "eigencam"}


def raw_reference(model, layer, x, targets, method, reshape=None):
    """pytorch-grad-cam's per-layer map before its scaling: ``max(get_cam_image(...), 0)`` on the
    activations and gradients its own hooks recorded for the call."""
    with REFERENCE[method](model=model, target_layers=[layer], reshape_transform=reshape) as ref:
        ref.batch_size = 64
        heat = ref(input_tensor=x, targets=targets)
        acts = [a.cpu().numpy() for a in ref.activations_and_grads.activations][0]
        grads = next((g.cpu().numpy() for g in ref.activations_and_grads.gradients), None)  # none for Score-CAM
        raw = np.maximum(ref.get_cam_image(x, layer, targets, acts, grads, False), 0)
    return raw, heat


@pytest.fixture(scope="module")
def cnn():
    return resnet18()


@pytest.mark.parametrize("method", list(REFERENCE))
def test_raw_layer_maps_of_a_cnn(cnn, method):
    n = 1 if method == "scorecam" else 3  # Score-CAM: one forward per channel and image
    x = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    classes = [1, 5, 5][:n]
    ours = vizkit.cam(cnn, x, classes, layers="layer4", method=method, batch_size=64)
    raw, heat = raw_reference(cnn, cnn.layer4, x, [ClassifierOutputTarget(c) for c in classes], method)
    got = ours.layer_maps["layer4"].numpy()
    assert got.shape == raw.shape == (n, 2, 2)
    scale = float(np.abs(raw).max())
    assert scale > 0
    tol = 1e-3 if method == "scorecam" else 1e-5
    np.testing.assert_allclose(got, raw, atol=tol * scale, rtol=tol)
    np.testing.assert_allclose(ours.heatmap.numpy(), heat, atol=1e-3 if method == "scorecam" else 1e-4)


@pytest.mark.parametrize("method", [m for m in REFERENCE if m != "scorecam"])
def test_raw_layer_maps_of_vit_tokens(method):
    model = timm_vit(global_pool="avg", depth=3, img_size=48)
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(5))

    def reshape(t):
        return t[:, 1:, :].reshape(t.shape[0], 6, 6, t.shape[2]).permute(0, 3, 1, 2)

    ours = vizkit.cam(model, x, [0, 3], layers="last", method=method)
    raw, _ = raw_reference(model, model.blocks[-1], x, [ClassifierOutputTarget(c) for c in (0, 3)], method, reshape)
    got = ours.layer_maps["blocks.2"].numpy()
    assert got.shape == raw.shape == (2, 6, 6)
    np.testing.assert_allclose(got, raw, atol=1e-5 * float(np.abs(raw).max()), rtol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_class_probability_target_equals_the_softmax_target(cnn, method):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    ours = vizkit.cam(cnn, x, ClassProbability([2, 7]), layers="layer4", method=method)
    raw, heat = raw_reference(cnn, cnn.layer4, x, [ClassifierOutputSoftmaxTarget(c) for c in (2, 7)], method)
    np.testing.assert_allclose(
        ours.layer_maps["layer4"].numpy(), raw, atol=1e-6 * float(np.abs(raw).max()) + 1e-9, rtol=1e-5
    )
    np.testing.assert_allclose(ours.heatmap.numpy(), heat, atol=1e-4)
    probs = cnn(x).detach().softmax(-1)[[0, 1], [2, 7]]
    torch.testing.assert_close(ours.scores, probs)
    # the logit target gives other raw maps (the softmax is not a monotone rescaling of every gradient)
    logit = vizkit.cam(cnn, x, ClassLogit([2, 7]), layers="layer4", method=method)
    assert not np.allclose(logit.layer_maps["layer4"].numpy(), raw, rtol=1e-3)


class Similarity(torch.nn.Module):
    """pytorch-grad-cam's view of a CLIP score: the image tower's embedding against T fixed texts,
    ``scale * cos`` as class logits ``[B, T]``."""

    def __init__(self, tower, text, scale):
        super().__init__()
        self.tower, self.text, self.scale = tower, F.normalize(text, dim=-1), scale

    def forward(self, x):
        return self.scale * F.normalize(self.tower(x), dim=-1) @ self.text.T


@pytest.mark.parametrize("probability", [False, True])
def test_image_text_target_equals_pytorch_grad_cam(cnn, probability):
    """``--probability`` of clip-gradcam: the softmax over all class texts, as pytorch-grad-cam's
    ``ClassifierOutputSoftmaxTarget`` on the similarity logits; without it the similarity itself."""
    text = torch.randn(4, 10, generator=torch.Generator().manual_seed(7))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    target = ImageTextSimilarity(text, [1, 3], logit_scale=20.0, probability=probability)
    ours = vizkit.cam(cnn, x, target, layers="layer4", method="gradcam")
    wrapped = Similarity(cnn, text, 20.0)
    ref_cls = ClassifierOutputSoftmaxTarget if probability else ClassifierOutputTarget
    raw, heat = raw_reference(wrapped, cnn.layer4, x, [ref_cls(1), ref_cls(3)], "gradcam")
    np.testing.assert_allclose(
        ours.layer_maps["layer4"].numpy(), raw, atol=1e-6 * float(np.abs(raw).max()) + 1e-9, rtol=1e-5
    )
    np.testing.assert_allclose(ours.heatmap.numpy(), heat, atol=1e-4)
    logits = wrapped(x).detach()
    want = (logits.softmax(-1) if probability else logits)[[0, 1], [1, 3]]
    torch.testing.assert_close(ours.scores, want)
