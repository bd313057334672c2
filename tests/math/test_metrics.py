import math

import numpy as np
import pytest
import torch
from models import tiny_cnn
from torch import nn

from vizkit.metrics import (
    deletion_auc,
    energy_pointing_game,
    insertion_auc,
    pointing_game,
    randomization_sanity_check,
)

# ------------------------------------------------------------------------- pointing game


def _peak_5x5():
    heat = torch.zeros(1, 5, 5)
    heat[0, 2, 2] = 1.0  # maximum in the centre
    return heat


def _mask_5x5(*pixels):
    mask = torch.zeros(1, 5, 5, dtype=torch.bool)
    for r, c in pixels:
        mask[0, r, c] = True
    return mask


def test_pointing_game_hit_miss_and_tolerance():
    heat = _peak_5x5()
    assert pointing_game(heat, _mask_5x5((2, 2))).tolist() == [True]
    top_left = _mask_5x5((0, 0), (0, 1), (1, 0), (1, 1))
    assert pointing_game(heat, top_left).tolist() == [False]
    assert pointing_game(heat, top_left, tolerance=1).tolist() == [True]  # (1,1) dilated covers (2,2)
    corner = _mask_5x5((4, 4))
    assert pointing_game(heat, corner, tolerance=1).tolist() == [False]
    assert pointing_game(heat, corner, tolerance=2).tolist() == [True]


def test_pointing_game_batch_and_ties():
    heat = torch.zeros(2, 5, 5)
    heat[:, 0, 4] = 3.0
    heat[:, 4, 0] = 3.0  # two equal maxima
    masks = torch.zeros(2, 5, 5)
    masks[0, 4, 0] = 1  # contains one of the maxima -> hit
    masks[1, 2, 2] = 1  # contains neither -> miss
    out = pointing_game(heat, masks)
    assert out.dtype == torch.bool
    assert out.tolist() == [True, False]


def test_pointing_game_errors():
    with pytest.raises(ValueError, match="does not match"):
        pointing_game(torch.rand(2, 5, 5), torch.ones(2, 4, 5, dtype=torch.bool))
    masks = torch.ones(3, 5, 5, dtype=torch.bool)
    masks[1] = False
    with pytest.raises(ValueError, match=r"sample\(s\) \[1\]"):
        pointing_game(torch.rand(3, 5, 5), masks)
    with pytest.raises(ValueError, match="tolerance"):
        pointing_game(torch.rand(1, 5, 5), _mask_5x5((0, 0)), tolerance=-1)


def test_energy_pointing_game_exact_fraction():
    heat = torch.tensor([[[1.0, 1.0], [2.0, -5.0]], [[0.0, 0.0], [0.0, -1.0]]])
    masks = torch.tensor([[[0, 1], [1, 0]], [[1, 0], [0, 0]]], dtype=torch.bool)
    out = energy_pointing_game(heat, masks)
    # sample 0: clamp -> 1, 1, 2, 0; inside = 1 + 2 = 3 of 4 -> 0.75; sample 1: all <= 0 -> 0
    torch.testing.assert_close(out, torch.tensor([0.75, 0.0]))
    with pytest.raises(ValueError, match="does not match"):
        energy_pointing_game(heat, masks[:1])


# ----------------------------------------------------------------- deletion / insertion

# image pixels [[1, 2], [3, 4]] (sum 10); heatmap order: (0,1)=2, (1,0)=3, (1,1)=4, (0,0)=1
IMAGE = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
HEAT = torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])


def _sum_score(images):
    assert not torch.is_grad_enabled()
    return images.sum(dim=(1, 2, 3))


def test_deletion_auc_hand_computed():
    auc, curves = deletion_auc(_sum_score, IMAGE, HEAT, steps=4, return_curves=True)
    # remove 2, then 3, then 4, then 1: 10, 8, 5, 1, 0
    torch.testing.assert_close(curves, torch.tensor([[10.0, 8.0, 5.0, 1.0, 0.0]]))
    # trapezoid, dx = 0.25: 0.25 * (10/2 + 8 + 5 + 1 + 0/2) = 4.75
    torch.testing.assert_close(auc, torch.tensor([4.75]))
    assert deletion_auc(_sum_score, IMAGE, HEAT, steps=4).shape == (1,)


def test_insertion_auc_hand_computed_zero_and_tensor_baseline():
    auc, curves = insertion_auc(_sum_score, IMAGE, HEAT, steps=4, return_curves=True)
    torch.testing.assert_close(curves, torch.tensor([[0.0, 2.0, 5.0, 9.0, 10.0]]))
    torch.testing.assert_close(auc, torch.tensor([5.25]))  # 0.25 * (0 + 2 + 5 + 9 + 10/2)
    # baseline: constant image of ones (sum 4) -> 4, 5, 7, 10, 10; 0.25 * (2 + 5 + 7 + 10 + 5) = 7.25
    auc, curves = insertion_auc(_sum_score, IMAGE, HEAT, steps=4, baseline=torch.ones(1, 2, 2), return_curves=True)
    torch.testing.assert_close(curves, torch.tensor([[4.0, 5.0, 7.0, 10.0, 10.0]]))
    torch.testing.assert_close(auc, torch.tensor([7.25]))


def test_rounding_of_pixel_counts_and_stable_ties():
    # steps = 3, H*W = 4: counts round(0, 1.33, 2.67, 4) = 0, 1, 3, 4
    _, curves = deletion_auc(_sum_score, IMAGE, HEAT, steps=3, return_curves=True)
    torch.testing.assert_close(curves, torch.tensor([[10.0, 8.0, 1.0, 0.0]]))
    # all-equal heatmap: stable order = raster order 1, 2, 3, 4
    _, curves = deletion_auc(_sum_score, IMAGE, torch.zeros(1, 2, 2), steps=4, return_curves=True)
    torch.testing.assert_close(curves, torch.tensor([[10.0, 9.0, 7.0, 4.0, 0.0]]))


def test_batched_score_calls_multichannel():
    images = torch.cat([IMAGE, 2 * IMAGE], dim=1).expand(2, 2, 2, 2).clone()  # [B=2, C=2, 2, 2], sum 30
    images[1] *= -1
    heat = HEAT.expand(2, 2, 2)
    sizes = []

    def score(x):
        sizes.append(len(x))
        return _sum_score(x)

    auc, curves = deletion_auc(score, images, heat, steps=4, batch_size=3, return_curves=True)
    total = 2 * (4 + 1)
    assert len(sizes) == math.ceil(total / 3) == 4
    assert sizes == [3, 3, 3, 1]
    expected = torch.tensor([30.0, 24.0, 15.0, 3.0, 0.0])  # all channels deleted together
    torch.testing.assert_close(curves, torch.stack([expected, -expected]))
    torch.testing.assert_close(auc, torch.tensor([14.25, -14.25]))

    sizes.clear()
    insertion_auc(score, images, heat, steps=4)
    assert sizes == [10]  # default batch_size=64: a single call


def test_perturbation_errors():
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        deletion_auc(_sum_score, IMAGE, torch.zeros(1, 3, 2), steps=4)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        insertion_auc(_sum_score, IMAGE[0], HEAT)
    with pytest.raises(ValueError, match="steps"):
        deletion_auc(_sum_score, IMAGE, HEAT, steps=0)
    with pytest.raises(ValueError, match="one score per image"):
        deletion_auc(lambda x: x.sum(dim=(2, 3)).repeat(1, 2), IMAGE, HEAT, steps=2)
    with pytest.raises(ValueError, match="broadcastable"):
        deletion_auc(_sum_score, IMAGE, HEAT, baseline=torch.zeros(3, 3))


# ----------------------------------------------------------------------- sanity check


def _tiny_cnn():
    return tiny_cnn(3, in_channels=1, widths=(4, 4), act=nn.Tanh)


INPUTS = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(1)) + 0.1


def _grad_x_input(model):
    x = INPUTS.clone().requires_grad_(True)
    model(x)[:, 0].sum().backward()
    return (x.grad * x).sum(dim=1)  # [B, H, W]


def test_randomization_sanity_check_frame_and_original_untouched():
    model = _tiny_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def explain(m):
        seen.append({k: v.clone() for k, v in m.state_dict().items()})
        return _grad_x_input(m)

    df = randomization_sanity_check(explain, model, ["6", "2", "0"], seed=0)
    assert list(df.columns) == ["step", "layer", "sample", "spearman", "spearman_abs"]
    assert len(df) == 3 * 2
    assert df["step"].tolist() == [0, 0, 1, 1, 2, 2]
    assert df["layer"].tolist() == ["6", "6", "2", "2", "0", "0"]
    assert df["sample"].tolist() == [0, 1, 0, 1, 0, 1]
    assert np.isfinite(df[["spearman", "spearman_abs"]].to_numpy()).all()
    assert df[["spearman", "spearman_abs"]].abs().le(1).all().all()

    # original model bit-identical
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)

    # cascade: reference on the original, then layers randomised cumulatively top-down
    ref, s0, s1, s2 = seen
    assert all(torch.equal(ref[k], before[k]) for k in before)
    changed = lambda s: {k.split(".")[0] for k in before if not torch.equal(s[k], before[k])}  # noqa: E731
    assert changed(s0) == {"6"}
    assert changed(s1) == {"6", "2"}
    assert changed(s2) == {"6", "2", "0"}
    assert torch.equal(s1["6.weight"], s0["6.weight"])  # earlier steps are kept

    # reproducible for a fixed seed, and global RNG state untouched
    state = torch.get_rng_state()
    again = randomization_sanity_check(_grad_x_input, model, ["6", "2", "0"], seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    cols = ["spearman", "spearman_abs"]
    np.testing.assert_array_equal(again[cols].to_numpy(), df[cols].to_numpy())


class _Scale(nn.Module):
    """Module without reset_parameters: falls back to normal(0, 0.02) / zeros."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4, 1, 1))
        self.bias = nn.Parameter(torch.ones(4, 1, 1))

    def forward(self, x):
        return x * self.weight + self.bias


def test_randomization_fallback_init_for_modules_without_reset():
    model = _tiny_cnn()
    model.insert(1, _Scale())
    seen = []

    def explain(m):
        seen.append((m[1].weight.detach().clone(), m[1].bias.detach().clone()))
        return _grad_x_input(m)

    randomization_sanity_check(explain, model, ["1"])
    weight, bias = seen[1]
    assert torch.equal(bias, torch.zeros(4, 1, 1))
    assert not torch.equal(weight, torch.ones(4, 1, 1)) and weight.abs().max() < 0.2
    assert torch.equal(model[1].weight, torch.ones(4, 1, 1))


def test_randomization_sanity_check_errors():
    model = _tiny_cnn()
    with pytest.raises(ValueError, match="unknown layer"):
        randomization_sanity_check(_grad_x_input, model, ["6", "nope"])
    with pytest.raises(ValueError, match="non-empty"):
        randomization_sanity_check(_grad_x_input, model, [])
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        randomization_sanity_check(lambda m: _grad_x_input(m)[0], model, ["6"])


def test_top_region_iou_by_hand():
    from vizkit.metrics import top_region_iou

    a = torch.arange(10.0).reshape(1, 2, 5)  # top 20 % = the 2 largest: pixels 8, 9
    b = torch.tensor([[[0.0, 0, 0, 0, 0], [0, 0, 5, 9, 8]]])  # top 2: pixels 8 (9) and 9 (8)
    c = torch.tensor([[[9.0, 8, 0, 0, 0], [0, 0, 0, 0, 0]]])  # top 2: pixels 0, 1 (ties at 0 are below)
    assert top_region_iou(a, b).tolist() == [1.0]
    assert top_region_iou(a, c).tolist() == [0.0]
    d = torch.tensor([[[0.0, 0, 0, 0, 0], [0, 0, 0, 1, 9]]])  # top 2: pixels 8, 9 -> with a: 2 / 2
    e = torch.tensor([[[0.0, 0, 0, 0, 0], [0, 0, 7, 9, 0]]])  # top 2: pixels 7, 8 -> with a: 1 / 3
    assert top_region_iou(a, e).tolist() == pytest.approx([1 / 3])
    assert top_region_iou(torch.cat([a, a]), torch.cat([d, e])).tolist() == pytest.approx([1.0, 1 / 3])
    # a map that is 0 outside a small blob: its top region is the blob, not the zero plateau
    blob1, blob2 = torch.zeros(1, 6, 6), torch.zeros(1, 6, 6)
    blob1[0, :2, :2], blob2[0, 1:3, 1:3] = 1.0, 1.0  # 4 pixels each, 1 shared
    assert top_region_iou(blob1, blob2).tolist() == pytest.approx([1 / 7])
    assert top_region_iou(torch.ones(1, 3, 3), torch.ones(1, 3, 3)).tolist() == [1.0]
    with pytest.raises(ValueError, match="one shape"):
        top_region_iou(a, a[:, :1])


def test_region_means_by_hand():
    from vizkit.metrics import region_means

    m = torch.arange(36.0).reshape(1, 6, 6)
    out = region_means(m)
    # 2x2 blocks: top-left (0, 1, 6, 7) -> 3.5; centre (14, 15, 20, 21) -> 17.5; bottom-right -> 31.5
    assert out.shape == (1, 3, 3)
    assert out[0, 0, 0] == 3.5 and out[0, 1, 1] == 17.5 and out[0, 2, 2] == 31.5
