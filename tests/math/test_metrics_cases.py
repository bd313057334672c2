"""The localisation metrics (:mod:`vizkit.metrics.maps`) and the deletion / insertion curves
(:mod:`vizkit.metrics.perturbation`) on hand-computed cases a mutation run found untested: batches whose
images differ in scale (every reduction is per image), maps with little mass, plateaus and constant
maps in ``top_region_iou``, the bounds of ``fraction`` and the curves' default steps and batches, where the
masks are sent, a float 0.0 tolerance and ``comparison_numbers`` with its default and another ``top``."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from vizkit.metrics import (
    comparison_numbers,
    deletion_auc,
    energy_pointing_game,
    insertion_auc,
    pointing_game,
    top_region_iou,
)


def test_pointing_game_takes_each_images_own_maximum():
    heat = torch.zeros(2, 3, 3)
    heat[0, 0, 0] = 10.0
    heat[1, 2, 2] = 1.0  # image 1's maximum is far below image 0's
    masks = torch.zeros(2, 3, 3, dtype=torch.bool)
    masks[0, 0, 0] = masks[1, 2, 2] = True
    assert pointing_game(heat, masks).tolist() == [True, True]


def test_energy_pointing_game_of_a_map_with_little_mass():
    heat = torch.tensor([[[0.1, 0.3], [0.0, -0.5]]])  # mass 0.4 (negative values clamped), 0.3 inside
    mask = torch.tensor([[[False, True], [True, True]]])
    assert energy_pointing_game(heat, mask).item() == pytest.approx(0.75)
    assert energy_pointing_game(torch.zeros(1, 2, 2), mask).item() == 0.0


def test_top_region_iou_one_pixel_regions():
    a = torch.arange(16.0).view(1, 4, 4)
    # fraction 1/16: the top region of each map is its single maximum; the same pixel -> IoU 1, else 0
    assert top_region_iou(a, a.clone(), fraction=1 / 16).tolist() == [1.0]
    assert top_region_iou(a, a.flip(-1), fraction=1 / 16).tolist() == [0.0]


def test_top_region_iou_fraction_bounds():
    a, b = torch.tensor([[[0.0, 1.0, 2.0, 3.0]]]), torch.tensor([[[3.0, 2.0, 1.0, 0.0]]])
    # fraction 1: the quantile is each map's minimum, so the top region is the pixels above it
    assert top_region_iou(a, b, fraction=1.0).tolist() == [pytest.approx(2 / 4)]
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
            top_region_iou(a, b, fraction=bad)


def test_top_region_iou_is_per_image_with_plateaus_and_constant_maps():
    # image 0: a ramp 0..15; image 1: a plateau at 5 (its minimum) with two brighter pixels;
    # image 2: constant. Top 1/8 (quantile 0.875) per image.
    a = torch.stack([torch.arange(16.0), torch.full((16,), 5.0), torch.full((16,), 7.0)]).view(3, 4, 4)
    a[1, 0, 0], a[1, 3, 3] = 9.0, 8.0
    b = a.clone()
    b[0] = b[0].flip(-1)  # top pixels 14, 15 vs 12, 13 (row 3 flipped): disjoint
    b[1, 3, 3] = 5.0  # image 1 keeps only (0, 0) above its plateau
    iou = top_region_iou(a, b, fraction=1 / 8)
    # image 0: {14, 15} vs {12, 13} -> 0; image 1: the quantile is the plateau: {(0,0), (3,3)} vs {(0,0)} -> 1/2;
    # image 2: the whole constant map is its top region in both -> 1
    assert iou.tolist() == [0.0, 0.5, 1.0]


def test_curves_default_to_20_steps_in_batches_of_64():
    images = torch.rand(4, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    heat = torch.rand(4, 5, 5, generator=torch.Generator().manual_seed(1))
    for metric in (deletion_auc, insertion_auc):
        calls = []

        def score(x, calls=calls):
            calls.append(len(x))
            return x.mean((1, 2, 3))

        auc = metric(score, images, heat)
        assert isinstance(auc, torch.Tensor) and auc.shape == (4,)
        assert calls == [64, 20]  # 4 images x 21 points (steps 0..20)
        again, curves = metric(score, images, heat, return_curves=True)
        assert curves.shape == (4, 21) and torch.equal(again, auc)
        assert torch.allclose(auc, torch.trapezoid(curves, dx=1 / 20, dim=1))


class _MoveLog(TorchFunctionMode):
    """Records the arguments of every ``Tensor.to`` call made inside the block."""

    def __init__(self):
        super().__init__()
        self.moves = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to:
            self.moves.append((args[1:], kwargs))
        return func(*args, **kwargs)


def test_masks_are_sent_to_the_heatmaps_device():
    # CPU masks with GPU heatmaps must be moved to the heatmaps' device (this machine has no second device
    # to compare, so the test records where the masks are sent)
    heat, masks = torch.rand(1, 2, 2), torch.ones(1, 2, 2)
    with _MoveLog() as log:
        assert pointing_game(heat, masks).tolist() == [True]
    devices = [args[0] if args else kwargs.get("device") for args, kwargs in log.moves]
    assert devices == [heat.device]


def _comparison_maps() -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.zeros(3, 3)
    a[0, 0], a[0, 1] = 1.0, 0.5
    b = torch.zeros(3, 3)
    b[0, 0], b[2, 2] = 1.0, 0.5
    return a, b


def test_comparison_numbers_default_top_is_twenty_percent():
    a, b = _comparison_maps()
    n = comparison_numbers(a, b)
    # 9 pixels, 0.8 quantile at sorted index 6.4: 0 + 0.4 * 0.5 = 0.2 in both maps; top a = {(0,0), (0,1)},
    # top b = {(0,0), (2,2)} -> IoU 1/3
    assert n["top20_iou"] == pytest.approx(1 / 3)
    assert n["overlap_mean"] == pytest.approx(1 / 9)  # min(a, b) is 1 at (0, 0) only
    assert n["difference_mean"] == pytest.approx(0.0)  # -0.5 at (0, 1), +0.5 at (2, 2)
    # a 3 x 3 map on a 3 x 3 grid of regions: one pixel per cell
    assert n["difference_by_region"] == [[0.0, -0.5, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.5]]


def test_comparison_numbers_passes_top_on():
    a, b = _comparison_maps()
    # top 0.1: 0.9 quantile at sorted index 7.2: 0.5 + 0.2 * 0.5 = 0.6; both top regions are {(0, 0)} -> IoU 1
    assert comparison_numbers(a, b, top=0.1)["top20_iou"] == pytest.approx(1.0)


def test_pointing_game_float_zero_tolerance_means_no_dilation():
    # a tolerance read from a config may come as 0.0: no dilation (a max-pool would need an int kernel)
    heat = torch.tensor([[[0.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[[True, False], [False, False]]])  # the maximum at (0, 1) is next to the mask
    assert pointing_game(heat, mask, tolerance=0.0).tolist() == [False]
    assert pointing_game(heat, mask, tolerance=1).tolist() == [True]
