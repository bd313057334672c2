"""Chance levels (vizkit.metrics.chance) against exhaustive enumeration with the metrics themselves and
hand-computed cases."""

from __future__ import annotations

import itertools

import pytest
import torch

from vizkit.metrics import pointing_game, top_region_iou
from vizkit.metrics.chance import (
    at_or_below_chance,
    pointing_chance,
    top_region_iou_chance,
    uniform_attention_distance,
)
from vizkit.stats import mean_attention_distance


def test_pointing_chance_by_hand():
    mask = torch.zeros(2, 5, 5, dtype=torch.bool)
    mask[0, 2, 2] = True
    mask[1, 0, 0] = True
    assert pointing_chance(mask).tolist() == [1 / 25, 1 / 25]
    assert pointing_chance(mask, tolerance=1).tolist() == [9 / 25, 4 / 25]
    assert pointing_chance(mask.int(), tolerance=2).tolist() == [1.0, 9 / 25]


@pytest.mark.parametrize("tolerance", [0, 1])
def test_pointing_chance_is_the_mean_hit_over_every_peak_position(tolerance):
    torch.manual_seed(0)
    mask = torch.rand(1, 4, 6) > 0.7
    peaks = torch.eye(24).reshape(24, 4, 6)  # one map per pixel, its maximum there
    hits = pointing_game(peaks, mask.expand(24, 4, 6), tolerance=tolerance).double().mean()
    assert float(pointing_chance(mask, tolerance)[0]) == pytest.approx(float(hits), abs=1e-15)


@pytest.mark.parametrize("fraction", [0.2, 0.34, 0.5, 1.0])
def test_top_region_iou_chance_is_the_mean_over_every_random_top_region(fraction):
    mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    mask[0, 0, :2] = True
    mask[0, 2, 2] = True
    n = 9
    # every top region of a map with distinct random values is equally likely: enumerate them all, each as
    # the map whose chosen pixels hold the largest values, scored by the metric itself
    for size in range(1, n + 1):
        ious = []
        for subset in itertools.combinations(range(n), size):
            rest = [i for i in range(n) if i not in subset]
            values = torch.zeros(n)
            values[rest] = torch.arange(len(rest), dtype=torch.float32)
            values[list(subset)] = torch.arange(len(rest), n, dtype=torch.float32)
            ious.append(float(top_region_iou(values.reshape(1, 3, 3), mask.float(), fraction)[0]))
        # the metric's top region has a fixed size: only that size reproduces every subset exactly
        flat = torch.arange(n, dtype=torch.float32)
        q = torch.quantile(flat, 1.0 - fraction)
        if size == int((flat > q).sum() if q <= flat.min() else (flat >= q).sum()):  # top_region_iou's rule
            expected = sum(ious) / len(ious)
            break
    assert float(top_region_iou_chance(mask, fraction)[0]) == pytest.approx(expected, abs=1e-6)  # float32 metric


def test_top_region_iou_chance_by_hand():
    # 2 x 2 image, one mask pixel, fraction 0.5: k = 4 - ceil(0.5 * 3) = 2 random pixels;
    # P(I = 1) = 1/2 (IoU 1/2), P(I = 0) = 1/2 (IoU 0)
    mask = torch.tensor([[[1, 0], [0, 0]]])
    assert top_region_iou_chance(mask, 0.5).tolist() == [pytest.approx(0.25, abs=1e-15)]
    # the default fraction is 0.2, as top_region_iou's: k = 4 - ceil(0.8 * 3) = 1; P(I = 1) = 1/4 (IoU 1)
    assert top_region_iou_chance(mask).tolist() == [pytest.approx(0.25, abs=1e-15)]
    assert top_region_iou_chance(torch.eye(3)[None] * (torch.arange(3) == 0)).tolist() == [
        pytest.approx(1 / 9, abs=1e-15)
    ]
    # fraction 1: the quantile is the minimum, so the top region is the 3 pixels above it; P(I = 1) = 3/4 (IoU 1/3)
    assert top_region_iou_chance(mask, 1.0).tolist() == [pytest.approx(0.25, abs=1e-15)]
    # 3 x 3, one mask pixel, fraction 0.2: k = 9 - ceil(0.8 * 8) = 2; P(I = 1) = 2/9 (IoU 1/2)
    assert top_region_iou_chance(torch.eye(3)[None] * (torch.arange(3) == 0), 0.2).tolist() == [
        pytest.approx(1 / 9, abs=1e-15)
    ]


def test_uniform_attention_distance_matches_the_statistic_of_uniform_attention():
    assert uniform_attention_distance((1, 2)) == pytest.approx(0.5)
    assert uniform_attention_distance((1, 2), patch_size=16) == pytest.approx(8.0)
    for grid in [(4, 4), (2, 3), (7, 7)]:
        p = grid[0] * grid[1]
        attn = torch.full((1, 1, p + 1, p + 1), 1.0 / (p + 1))
        stat = float(mean_attention_distance(attn, grid, prefix_tokens=1)[0, 0])
        assert uniform_attention_distance(grid) == pytest.approx(stat, abs=1e-6)
    assert uniform_attention_distance((4, 4)) == pytest.approx(2.0080, abs=1e-4)


def test_edge_sizes():
    # one pixel: its top region is the pixel itself (the quantile rule keeps a constant map whole)
    one = torch.ones(1, 1, 1)
    assert top_region_iou(one, one, 0.2).tolist() == [1.0]
    assert top_region_iou_chance(one, 0.2).tolist() == [1.0]
    assert pointing_chance(one).tolist() == [1.0]
    # a one-column grid: distances along the rows only
    assert uniform_attention_distance((3, 1)) == pytest.approx((0 + 1 + 2 + 1 + 0 + 1 + 2 + 1 + 0) / 9)
    assert uniform_attention_distance((1, 1)) == 0.0


def test_at_or_below_chance():
    assert at_or_below_chance(0.5, 0.5, higher_is_better=False)  # equal counts as "no better" both ways
    assert at_or_below_chance(0.45, 0.5, higher_is_better=False, margin=0.1)
    assert not at_or_below_chance(0.35, 0.5, higher_is_better=False, margin=0.1)
    assert at_or_below_chance(0.05, 0.066)
    assert at_or_below_chance(0.066, 0.066)
    assert not at_or_below_chance(0.07, 0.066)
    assert at_or_below_chance(0.07, 0.066, margin=0.01)
    assert at_or_below_chance(0.6, 0.5, higher_is_better=False)
    assert not at_or_below_chance(0.4, 0.5, higher_is_better=False)


def test_bad_input():
    with pytest.raises(ValueError, match=r"mask of sample\(s\) \[1\] is empty"):
        pointing_chance(torch.tensor([[[1]], [[0]]]))
    with pytest.raises(ValueError, match="shape"):
        pointing_chance(torch.ones(4, 4))
    with pytest.raises(ValueError, match="tolerance"):
        pointing_chance(torch.ones(1, 2, 2), tolerance=-1)
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            top_region_iou_chance(torch.ones(1, 2, 2), fraction)
    with pytest.raises(ValueError, match="grid"):
        uniform_attention_distance((0, 3))
    with pytest.raises(ValueError, match="margin"):
        at_or_below_chance(0.1, 0.2, margin=-1)
