"""The CAM functions of :mod:`vizkit.methods` on small hand-computed cases (and pytorch-grad-cam's own
weight formulas), including the corner cases a mutation run found untested: method aliases, Eigen-CAM's
per-image sign correction and its tie, a gradient of exactly 1 in Grad-CAM++, a channel whose activations
sum to 0 in XGrad-CAM, nearly constant Score-CAM channels, Score-CAM's batching, dtype and device."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAMPlusPlus, XGradCAM

from vizkit.methods import channel_masks, eigencam, get_method, gradcam_pp, scorecam, xgradcam


@pytest.mark.parametrize(
    "name, expected",
    [("Grad-CAM++", "gradcam++"), ("GRADCAMPP", "gradcam++"), ("gradcam_pp", "gradcam++"), ("Grad-CAM", "gradcam")],
)
def test_aliases_are_case_insensitive(name, expected):
    assert get_method(name).name == expected


def test_eigencam_of_one_active_channel_is_the_centred_channel():
    # one non-zero channel: the first principal component is that channel's axis, so the projection is
    # the centred channel [0, 0, 0, 4] - 1 = [-1, -1, -1, 3] up to the sign, which the correction fixes
    a = torch.zeros(1, 2, 2, 2)
    a[0, 0, 1, 1] = 4.0
    expected = torch.tensor([[[-1.0, -1.0], [-1.0, 3.0]]])
    assert torch.allclose(eigencam(a, sign_correction=True), expected, atol=1e-6)
    # -a: centred [1, 1, 1, -3], whose largest magnitude is negative: corrected to the same map
    assert torch.allclose(eigencam(-a, sign_correction=True), expected, atol=1e-6)


def test_eigencam_sign_correction_leaves_a_tie_alone():
    # two positions: the centred values are exact opposites (1 - 2, 3 - 2), so |min| == |max| and the
    # map's largest magnitude is not negative: no flip
    a = torch.tensor([[[[1.0, 3.0]], [[2.0, 6.0]]]])  # [1, 2, 1, 2]
    plain = eigencam(a)
    assert plain.abs().flatten().tolist() == pytest.approx([5**0.5, 5**0.5], abs=1e-5)
    assert torch.equal(eigencam(a, sign_correction=True), plain)


@pytest.mark.parametrize("loud", [0, 1])
def test_eigencam_sign_correction_is_per_image(loud):
    a = torch.randn(2, 5, 3, 3, generator=torch.Generator().manual_seed(0))
    a[loud] *= 10  # one image's magnitudes exceed all of the other's: a batch-wide extreme would show
    plain = eigencam(a)
    negative = plain.flatten(1).amin(1).abs() > plain.flatten(1).amax(1).abs()
    assert negative.tolist() == [False, True]  # one image of each kind in the batch
    assert plain[loud].abs().max() > 5 * plain[1 - loud].abs().max()
    corrected = eigencam(a, sign_correction=True)
    assert torch.equal(corrected, torch.where(negative[:, None, None], -plain, plain))
    assert (corrected.flatten(1).amax(1) >= corrected.flatten(1).amin(1).abs()).all()


def _pgc_weights(cls, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's own channel weights ``[B, C]`` for activations / gradients ``[B, C, h, w]``."""
    return torch.from_numpy(cls.get_cam_weights(None, None, None, None, a.double().numpy(), g.double().numpy()))


def test_gradcam_pp_with_a_gradient_of_exactly_one():
    # A = [1, 2], g = [1, 0.5]: sum(A) = 3, alpha = 1 / (2 + 3) and 0.25 / (0.5 + 3 * 0.125) = 2 / 7,
    # weight = 1 * 1/5 + 0.5 * 2/7 = 0.342857..., map = weight * A
    a = torch.tensor([[[[1.0, 2.0]]]], dtype=torch.float64)
    g = torch.tensor([[[[1.0, 0.5]]]], dtype=torch.float64)
    w = 1 / 5 + 0.5 * 2 / 7
    assert gradcam_pp(a, g).flatten().tolist() == pytest.approx([w, 2 * w], rel=1e-6)
    ref = (_pgc_weights(GradCAMPlusPlus, a, g)[..., None, None] * a).sum(1)
    assert torch.allclose(gradcam_pp(a, g), ref, rtol=1e-9)


def test_gradcam_pp_zero_gradients_give_zero_weight():
    a = torch.tensor([[[[1.0, 2.0]], [[3.0, -1.0]]]], dtype=torch.float64)
    g = torch.tensor([[[[0.0, 0.0]], [[0.0, 2.0]]]], dtype=torch.float64)
    # channel 0 has no gradient; channel 1: sum(A) = 2, alpha(2) = 4 / (8 + 2 * 8) = 1/6, weight 2 / 6
    assert gradcam_pp(a, g).flatten().tolist() == pytest.approx([1.0, -1 / 3], rel=1e-6)


def test_xgradcam_channel_whose_activations_sum_to_zero():
    # A = [1, -1], g = [1, 2]: sum(A) = 0, weight = (1 - 2) / (0 + 1e-7) = -1e7, map = weight * A
    a = torch.tensor([[[[1.0, -1.0]]]], dtype=torch.float64)
    g = torch.tensor([[[[1.0, 2.0]]]], dtype=torch.float64)
    assert xgradcam(a, g).flatten().tolist() == pytest.approx([-1e7, 1e7], rel=1e-9)
    ref = (_pgc_weights(XGradCAM, a, g)[..., None, None] * a).sum(1)
    assert torch.allclose(xgradcam(a, g), ref, rtol=1e-9)


def test_channel_masks_of_nearly_constant_channels_stay_in_zero_one():
    a = torch.tensor([[[[0.0, 2e-8]], [[5.0, 5.0]]]])  # a range of 2e-8, and a constant channel
    masks = channel_masks(a, (1, 3))
    # bilinear with corners aligned: [0, 1e-8, 2e-8] / (2e-8 + 1e-8); a constant channel is all 0
    assert masks[0, 0, 0].tolist() == pytest.approx([0.0, 1 / 3, 2 / 3], rel=1e-5)
    assert masks[0, 1].abs().max() == 0
    assert masks.min() >= 0 and masks.max() <= 1


def test_scorecam_batches_of_32_rows_by_default():
    a = torch.rand(2, 20, 2, 2, generator=torch.Generator().manual_seed(0))
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    sizes = []

    def score(images, rows):
        sizes.append(len(rows))
        return images.sum((1, 2, 3))

    out = scorecam(a, x, score)
    assert sizes == [32, 8]  # 2 images x 20 channels
    assert torch.allclose(out, scorecam(a, x, lambda im, r: im.sum((1, 2, 3)), batch_size=7), atol=1e-6)


def test_scorecam_masked_images_keep_the_inputs_dtype_and_device():
    a = torch.rand(1, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    seen = []

    def score(images, rows):
        seen.append(images.dtype)
        return images.float().sum((1, 2, 3))

    scorecam(a, x, score)
    assert seen == [torch.bfloat16]
    # the meta device stands in for a GPU: every tensor stays on the activations' device
    out = scorecam(a.to("meta"), x.to("meta"), lambda im, r: im.float().sum((1, 2, 3)))
    assert out.device.type == "meta" and out.shape == (1, 2, 2)


def test_scorecam_hand_computed_two_channels():
    # masks: channel 0 [0, 2] -> [0, 1] keeps pixel 1 (3 x 2 = 6); channel 1 [3, 1] -> [1, 0] keeps pixel 0 (3)
    a = torch.tensor([[[[0.0, 2.0]], [[3.0, 1.0]]]])  # [1, 2, 1, 2]
    x = torch.tensor([[[[1.0, 2.0]]]]).expand(1, 3, 1, 2).clone()  # pixel sums 3 and 6
    out = scorecam(a, x, lambda im, r: im.sum((1, 2, 3)))
    w = torch.tensor([6.0, 3.0]).softmax(0)
    expected = w[0] * a[0, 0] + w[1] * a[0, 1]
    assert np.allclose(out[0].numpy(), expected.numpy(), atol=1e-6)


def test_eigencam_uses_the_reduced_svd(monkeypatch):
    # only the first right-singular vector is used: a full SVD would also build the [hw, hw] left matrix
    # (3136 x 3136 floats, 39 MB per image, for a 56 x 56 map); here hw = 64 positions and C = 3 channels
    svd, u_shapes = torch.linalg.svd, []

    def spy(x, *args, **kwargs):
        out = svd(x, *args, **kwargs)
        u_shapes.append(tuple(out[0].shape))
        return out

    monkeypatch.setattr(torch.linalg, "svd", spy)
    a = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = eigencam(a)
    assert u_shapes == [(2, 64, 3)]
    # and the map is the projection on numpy's first principal axis (up to its arbitrary sign)
    x = a.double().numpy().reshape(2, 3, 64).transpose(0, 2, 1)
    x = x - x.mean(1, keepdims=True)
    for b in range(2):
        proj = x[b] @ np.linalg.svd(x[b], full_matrices=False)[2][0]
        np.testing.assert_allclose(np.abs(out[b].flatten().numpy()), np.abs(proj), rtol=1e-4, atol=1e-5)
