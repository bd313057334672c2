"""``faithfulness_scores`` (:mod:`vizkit.metrics.faithfulness`) on cases a mutation run found untested: its
defaults (noise, seed, batch_size) against the separate ``road_curves`` call with them written out, the
channels-last format of every forward, maps of another dtype than the inputs, and a score change of exactly 0."""

from __future__ import annotations

import pytest
import torch
from models import tiny_cnn
from torch import nn

from vizkit.metrics import confidence_change, faithfulness_scores, road, road_curves


class Mean(nn.Module):
    """Logits [mean, -mean] of each image (float32 whatever the input dtype); records every batch it sees."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append((x.shape[0], x.dtype, x.is_contiguous(memory_format=torch.channels_last)))
        m = x.float().mean((1, 2, 3))
        return torch.stack([m, -m], 1)


def _case(b=2, size=8):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 3, size, size, generator=g)
    maps = torch.rand(b, size, size, generator=g)
    return x, maps


def test_faithfulness_scores_default_noise_and_seed_are_roads():
    model = tiny_cnn()
    x, maps = _case()
    got = faithfulness_scores(model, x, maps, [1, 3], percentiles=[30, 70])
    # the documented defaults written out: noise 0.01 drawn from a generator seeded with 0
    ref = road_curves(model, x, maps, [1, 3], percentiles=[30, 70], noise=0.01, seed=0)
    torch.testing.assert_close(got["road_morf"], ref["morf"].mean(1), rtol=0, atol=0)
    torch.testing.assert_close(got["road_lerf"], ref["lerf"].mean(1), rtol=0, atol=0)
    combined = road(model, x, maps, [1, 3], percentiles=[30, 70], noise=0.01, seed=0)
    torch.testing.assert_close(got["road_combined"], combined, rtol=0, atol=0)
    # the test can tell the noise and the seed apart
    other_seed = road_curves(model, x, maps, [1, 3], percentiles=[30, 70], noise=0.01, seed=1)
    assert not torch.equal(other_seed["morf"], ref["morf"])


def test_faithfulness_scores_default_batch_size_is_16():
    model = Mean()
    x, maps = _case(b=1)
    faithfulness_scores(model, x, maps, 0)  # default percentiles 10..90: 2 orders x 9 = 18 imputed images
    # the clean image, chunks of 16 // 1 = 16 copies and the remaining 2, then the map-weighted image
    assert [s[0] for s in model.seen] == [1, 16, 2, 1]


def test_faithfulness_scores_channels_last_reaches_every_forward():
    model = Mean()
    x, maps = _case(b=2)
    faithfulness_scores(model, x, maps, 0, percentiles=[50], noise=0.0, channels_last=True)
    # clean batch, one chunk of 2 orders x 1 percentile x 2 images, the weighted batch: all channels-last
    assert [(n, cl) for n, _, cl in model.seen] == [(2, True), (4, True), (2, True)]
    model.seen.clear()
    faithfulness_scores(model, x, maps, 0, percentiles=[50], noise=0.0)
    assert [(n, cl) for n, _, cl in model.seen] == [(2, False), (4, False), (2, False)]


def test_faithfulness_scores_casts_float64_maps_to_the_inputs_dtype():
    model = tiny_cnn()
    x, maps = _case(b=2)
    maps64 = maps.double()
    got = faithfulness_scores(model, x, maps64, None, percentiles=[40], noise=0.0)
    # the float32 model sees a float32 weighted image: the same numbers as confidence_change (which casts too)
    change = confidence_change(model, x, maps, None)
    torch.testing.assert_close(got["confidence_drop"], change.drop, rtol=0, atol=0)
    torch.testing.assert_close(got["confidence_increase"], change.increase, rtol=0, atol=0)
    recording = Mean()
    faithfulness_scores(recording, x, maps64, 0, percentiles=[40], noise=0.0)
    assert [d for _, d, _ in recording.seen] == [torch.float32] * 3


def test_faithfulness_scores_of_an_unchanged_score_is_no_increase():
    x = torch.empty(3, 1, 4, 4)
    x[0], x[1], x[2] = 0.5, 1.0, -1.0
    maps = torch.empty(3, 4, 4)
    maps[0], maps[1], maps[2] = 1.0, 0.5, 0.5
    got = faithfulness_scores(Mean(), x, maps, 0, percentiles=[50], noise=0.0)
    # class 0 = mean: image 0 * 1 is unchanged (change exactly 0: neither drop nor increase);
    # image 1: 1 -> 0.5 (drop 0.5); image 2: -1 -> -0.5 (increase, drop 0)
    assert got["confidence_drop"].tolist() == [0.0, 0.5, 0.0]
    assert got["confidence_increase"].tolist() == [0.0, 0.0, 1.0]
    # constant maps: every pixel is >= the percentile, so both orders remove all and impute 0: change = -mean
    assert got["road_morf"].tolist() == [pytest.approx(-0.5), pytest.approx(-1.0), pytest.approx(1.0)]
    assert got["road_lerf"].tolist() == got["road_morf"].tolist()
    assert got["road_combined"].tolist() == [0.0, 0.0, 0.0]
