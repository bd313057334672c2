"""Attention mass on a ground-truth mask (vizkit.metrics.attention_mass): hand-computed cases and the chance
level equal to what uniform attention scores and to the pointing game's chance."""

from __future__ import annotations

import pytest
import torch

from vizkit.metrics.attention_mass import mass_on_mask, patch_coverage, uniform_mass_on_mask
from vizkit.metrics.chance import pointing_chance


def test_patch_coverage_by_hand():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 0, 1] = mask[0, 1, 0] = True  # 3 of the 4 pixels of patch (0, 0)
    mask[0, 3, 3] = True  # 1 of 4 pixels of patch (1, 1)
    assert patch_coverage(mask, (2, 2)).tolist() == [[0.75, 0.0, 0.0, 0.25]]
    with pytest.raises(ValueError, match="does not split into a 3x3 patch grid"):
        patch_coverage(mask, (3, 3))


def test_mass_on_mask_by_hand_is_a_share():
    cov = torch.tensor([[0.75, 0.0, 0.0, 0.25]], dtype=torch.float64)
    rows = torch.tensor([[0.2, 0.1, 0.1, 0.0]])  # 0.4 of the row on the image: renormalised to 0.5, .25, .25, 0
    assert mass_on_mask(rows, cov).item() == pytest.approx(0.5 * 0.75)
    max_fused = torch.tensor([[1.5, 0.2, 0.2, 0.1]])  # a max over heads does not sum to 1: still a share
    assert mass_on_mask(max_fused, cov).item() == pytest.approx((1.5 * 0.75 + 0.1 * 0.25) / 2.0)
    assert mass_on_mask(torch.zeros(1, 4), cov).item() == 0.0
    full = torch.ones(1, 4, dtype=torch.float64)
    assert mass_on_mask(torch.rand(3, 4), full.expand(3, 4)).tolist() == pytest.approx([1.0] * 3)
    with pytest.raises(ValueError, match="non-negative"):
        mass_on_mask(-rows, cov)


def test_uniform_attention_scores_the_chance_level():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 48, 48, generator=g) > 0.9
    cov = patch_coverage(masks, (6, 6))
    chance = uniform_mass_on_mask(cov)
    torch.testing.assert_close(mass_on_mask(torch.full((5, 36), 1 / 36), cov), chance)
    torch.testing.assert_close(chance, pointing_chance(masks))  # 8x8 patches tile the image: the area fraction


def test_patch_coverage_grid_bounds_each_side():
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[0, :2, :3] = True
    # a one-row or one-column grid is valid
    assert patch_coverage(mask, (1, 2)).tolist() == [[0.5, 0.0]]
    assert patch_coverage(mask, (2, 1)).tolist() == [[0.5, 0.0]]
    assert patch_coverage(mask, (1, 1)).tolist() == [[0.25]]
    # each condition alone is an error: an empty side, or one side that does not divide
    for grid in ((0, 2), (2, 0), (3, 2), (2, 4)):
        with pytest.raises(ValueError, match=rf"a 4x6 mask does not split into a {grid[0]}x{grid[1]} patch grid"):
            patch_coverage(mask, grid)


def test_mass_on_mask_needs_two_dimensional_rows():
    rows = torch.ones(2, 3, 4)
    with pytest.raises(ValueError, match=r"must both be \[B, P\]"):
        mass_on_mask(rows, rows)
