"""Several map configurations scored together: vizkit.evaluate.config_maps / config_scores and
vizkit.metrics sanity_by_config / deletion_references / comparison_numbers, by hand."""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from vizkit.evaluate import config_maps, config_scores
from vizkit.metrics import comparison_numbers, deletion_references, randomization_sanity_check, sanity_by_config


def test_config_maps_batch_by_batch():
    x = torch.arange(5 * 2 * 3 * 3, dtype=torch.float32).reshape(5, 2, 3, 3)
    sizes = []

    def explain(batch):
        sizes.append(len(batch))
        return {"sum": batch.sum(1), "max": batch.amax(1)}

    out = config_maps(explain, x, batch_size=2)
    assert sizes == [2, 2, 1] and list(out) == ["sum", "max"]
    torch.testing.assert_close(out["sum"], x.sum(1))
    torch.testing.assert_close(out["max"], x[:, 1])
    assert list(config_maps(explain, x, batch_size=None)) == ["sum", "max"] and sizes[-1] == 5


def test_config_scores_by_hand():
    masks = [np.zeros((4, 4), bool) for _ in range(3)]
    for m in masks:
        m[:2, :2] = True
    samples = [{"mask": m} for m in masks]
    hit = torch.zeros(3, 4, 4)
    hit[:, 0, 0] = 1.0  # one hot pixel inside every mask
    mixed = hit.clone()
    mixed[2] = 0.0
    mixed[2, 2:, 2:] = 1.0  # the third map: four equal pixels outside its mask
    x = torch.ones(3, 1, 4, 4)
    out = config_scores(
        samples,
        x,
        {"hit": hit, "mixed": mixed},
        lambda images: images.mean((1, 2, 3)),
        mask=lambda s: s["mask"],
        deletion_steps=4,
        batch_size=2,
    )
    assert out["hit"] == {"pointing": 1.0, "energy_in_mask": 1.0, "deletion_auc": 0.5, "entropy": 0.0}
    # deleting 0, 4, 8, 12, 16 of 16 pixels of an all-ones image: scores 1, .75, .5, .25, 0 -> AUC 0.5, any order
    assert out["mixed"]["pointing"] == pytest.approx(2 / 3) and out["mixed"]["energy_in_mask"] == pytest.approx(2 / 3)
    assert out["mixed"]["deletion_auc"] == pytest.approx(0.5)
    assert out["mixed"]["entropy"] == pytest.approx(math.log(4) / 3, abs=1e-6)  # 0, 0 and log 4
    assert "deletion_auc" not in config_scores(samples, x, {"hit": hit}, mask=lambda s: s["mask"])["hit"]


def test_deletion_references_by_hand():
    images = torch.ones(1, 1, 4, 4)
    mask = torch.zeros(1, 4, 4)
    mask[0, :2, :2] = 1.0

    def score(batch):
        return batch[:, 0, 0, 0]  # the image's corner pixel, inside the mask

    mask_order, random_order = deletion_references(score, images, mask, steps=4, seed=0)
    # mask order: the 4 mask pixels go at step 1 -> curve 1, 0, 0, 0, 0 -> AUC 0.125
    assert mask_order == pytest.approx(0.125)
    # random order: the corner's rank r in the seeded noise; it goes at step k = r // 4 + 1 -> AUC (k - 0.5) / 4
    noise = torch.rand((1, 4, 4), generator=torch.Generator().manual_seed(0))
    r = int((noise.flatten() > noise[0, 0, 0]).sum())
    assert random_order == pytest.approx((r // 4 + 1 - 0.5) / 4)


def _two_linear():
    """Two linear layers, three inputs and the model's output as a 3 x 2 x 2 'map' per input."""
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(a=nn.Linear(4, 4), b=nn.Linear(4, 4)))
    x = torch.randn(3, 4)
    return model, x, lambda m: m(x).detach().reshape(3, 2, 2)


def test_sanity_by_config_matches_the_check_config_by_config():
    model, x, weighted = _two_linear()

    def maps(m):
        return {"input": x.reshape(3, 2, 2), "output": weighted(m), "flat": torch.ones(3, 2, 2)}

    out = sanity_by_config(maps, model, ["b", "a"], seed=0)
    assert list(out) == ["input", "output", "flat"]
    assert out["input"] == 1.0 and math.isnan(out["flat"])  # independent of the weights; constant maps
    df = randomization_sanity_check(weighted, model, ["b", "a"], seed=0)
    assert out["output"] == pytest.approx(df[df["step"] == 1]["spearman"].mean())
    assert -1.0 <= out["output"] < 1.0


def test_comparison_numbers_of_two_maps():
    a = torch.zeros(6, 6)
    b = torch.zeros(6, 6)
    a[:3, :] = 1.0  # upper half
    b[:, :3] = 0.5  # left half, at 0.5
    n = comparison_numbers(a, b, top=0.5)
    assert n["top20_iou"] == pytest.approx(9 / 27)  # the top halves share the upper-left quarter
    assert n["overlap_mean"] == pytest.approx(0.5 * 9 / 36)
    assert n["difference_mean"] == pytest.approx((18 * 0.5 - 18) / 36)
    # 2 x 2 cells of b - a (rows 0-2: -0.5 left, -1 right; rows 3-5: 0.5 left, 0 right)
    assert n["difference_by_region"] == [[-0.5, -0.75, -1.0], [0.0, -0.25, -0.5], [0.5, 0.25, 0.0]]


def test_sanity_by_config_seed_reaches_the_cascade():
    model, _, weighted = _two_linear()

    def last_step(seed):
        df = randomization_sanity_check(weighted, model, ["b", "a"], seed=seed)
        return df[df["step"] == 1]["spearman"].mean()

    assert last_step(7) != pytest.approx(last_step(0))
    assert sanity_by_config(lambda m: {"w": weighted(m)}, model, ["b", "a"], seed=7)["w"] == pytest.approx(last_step(7))
    # the default seed is 0
    assert sanity_by_config(lambda m: {"w": weighted(m)}, model, ["b", "a"])["w"] == pytest.approx(last_step(0))
