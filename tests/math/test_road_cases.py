"""ROAD and the confidence change (:mod:`vizkit.metrics.road`) on hand-computed cases: the percentile
NumPy computes (ties and all), the pixels each order keeps, scores of a linear "model" whose output
is known for any imputed image, the defaults and the chunking. Cases a mutation run found untested."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vizkit.errors import InputError
from vizkit.metrics import confidence_change, random_map_baseline, road, road_curves
from vizkit.metrics.road import ROAD_PERCENTILES, _keep_masks, _percentile


@pytest.mark.parametrize("p", [0, 10, 12.5, 25, 49.9, 50, 62.5, 90, 99, 100])
def test_percentile_is_numpys(p):
    g = np.random.default_rng(0)
    values = np.round(g.random((3, 11)) * 4) / 4  # many ties
    values[2] = np.arange(11) ** 2
    got = _percentile(torch.from_numpy(np.sort(values, 1)), p)
    assert got.tolist() == [float(np.percentile(v, p)) for v in values]


def test_keep_masks_by_hand():
    maps = torch.tensor([[[0.0, 0.1], [0.5, 1.0]]])
    # MoRF at 50: remove values >= percentile 50 of [0, .1, .5, 1] = 0.3 -> keep 0 and 0.1
    assert _keep_masks(maps, "morf", [50]).tolist() == [[[[True, True], [False, False]]]]
    # LeRF removes the low ones: 1 - map = [1, .9, .5, 0], percentile 50 = 0.7 -> keep .5 and 1
    assert _keep_masks(maps, "lerf", [50]).tolist() == [[[[False, False], [True, True]]]]
    # p = 0 removes everything (>= the minimum), p = 100 keeps all but the maximum
    assert _keep_masks(maps, "morf", [0, 100]).tolist() == [
        [[[False, False], [False, False]]],
        [[[True, True], [True, False]]],
    ]


class Mean(nn.Module):
    """Logits [mean, -mean, 2 * mean] of each image: the score of any imputed image is known."""

    def forward(self, x):
        m = x.mean((1, 2, 3))
        return torch.stack([m, -m, 2 * m], 1)


class CountingMean(Mean):
    """``Mean`` that records the batch size of every forward pass in ``seen``."""

    def __init__(self):
        super().__init__()
        self.seen: list[int] = []

    def forward(self, x):
        self.seen.append(x.shape[0])
        return super().forward(x)


def _case():
    x = torch.zeros(2, 1, 4, 4)
    x[0, 0, :2] = 1.0  # image 0: top half 1, bottom half 0
    x[1] = 0.5
    maps = torch.zeros(2, 4, 4)
    maps[0, :2] = torch.arange(8.0).view(2, 4) + 1  # the top half is the most relevant
    maps[1] = torch.arange(16.0).view(4, 4)
    return x, maps


def test_road_curves_of_a_linear_model_by_hand():
    x, maps = _case()
    out = road_curves(Mean(), x, maps, 0, percentiles=[50], noise=0.0, tol=1e-8)
    # MoRF 50 on image 0 removes the top half (values >= 0.5 of the map), imputed from the bottom half's
    # zeros: the mean drops from 0.5 to 0; LeRF removes the zeros below, imputed from the ones: mean 1
    assert out["morf"][0].tolist() == [pytest.approx(-0.5, abs=1e-5)]
    assert out["lerf"][0].tolist() == [pytest.approx(0.5, abs=1e-5)]
    # a constant image stays constant under any imputation
    assert out["morf"][1].tolist() == [pytest.approx(0.0, abs=1e-5)]
    assert set(out) == {"morf", "lerf"} and out["morf"].shape == (2, 1)
    combined = road(Mean(), x, maps, 0, percentiles=[50], noise=0.0, tol=1e-8)
    assert combined.tolist() == [pytest.approx(0.5, abs=1e-5), pytest.approx(0.0, abs=1e-5)]  # (lerf - morf) / 2
    assert road(Mean(), x, maps, 2, percentiles=[50], order="morf", noise=0.0)[0].item() == pytest.approx(
        -1.0, abs=1e-4
    )
    assert road(Mean(), x, maps, 1, percentiles=[50], order="lerf", noise=0.0)[0].item() == pytest.approx(
        -0.5, abs=1e-4
    )


def test_road_defaults_and_chunks():
    x, maps = _case()
    model = CountingMean()
    a = road(model, x, maps, 0)  # default percentiles 10..90, noise 0.01 seeded with 0, chunks of 16
    # the unperturbed batch, then 2 orders x 9 percentiles x 2 images = 36 in chunks of 16 // 2 = 8 copies
    assert model.seen == [2, 16, 16, 4]
    model = CountingMean()
    b = road(model, x, maps, 0, percentiles=ROAD_PERCENTILES, noise=0.01, seed=0, batch_size=7)
    assert model.seen == [2] + [6] * 6  # 7 // 2 = 3 copies of the batch per chunk
    assert torch.allclose(a, b, atol=1e-4)
    assert ROAD_PERCENTILES == (10, 20, 30, 40, 50, 60, 70, 80, 90)
    c = road(Mean(), x, maps, 0, seed=1)
    assert not torch.allclose(a, c, atol=1e-6)  # the noise depends on the seed
    with pytest.raises(InputError, match="noise must be >= 0 and batch_size >= 1"):
        road(Mean(), x, maps, 0, batch_size=0)
    with pytest.raises(InputError, match="orders must be a non-empty subset"):
        road_curves(Mean(), x, maps, 0, orders=())
    with pytest.raises(InputError, match=r"percentiles must be a non-empty list of numbers in \[0, 100\]"):
        road(Mean(), x, maps, 0, percentiles=[101])


def test_confidence_change_by_hand():
    x, maps = _case()
    w = torch.zeros(2, 4, 4)
    w[0] = 0.5  # halves image 0: mean 0.5 -> 0.25; image 1 x 2: mean 0.5 -> 1
    w[1] = 2.0
    cc = confidence_change(Mean(), x, w, 0)
    assert cc.drop.tolist() == [pytest.approx(0.25), 0.0] and cc.increase.tolist() == [0.0, 1.0]
    # class 1 scores -mean: the changes flip
    cc1 = confidence_change(Mean(), x, w, 1)
    assert cc1.drop.tolist() == [0.0, pytest.approx(0.5)] and cc1.increase.tolist() == [1.0, 0.0]
    same = confidence_change(Mean(), x, torch.ones(2, 4, 4), 0)
    assert same.increase.tolist() == [0.0, 0.0] and same.drop.tolist() == [0.0, 0.0]


def test_random_map_baseline_averages_seeded_draws():
    x, _ = _case()
    got = random_map_baseline(confidence_change, Mean(), x, 0, seed=4, repeats=3)
    g = torch.Generator().manual_seed(4)
    draws = [confidence_change(Mean(), x, torch.rand(2, 4, 4, generator=g), 0) for _ in range(3)]
    assert torch.allclose(got.drop, torch.stack([d.drop for d in draws]).mean(0))
    assert torch.allclose(got.increase, torch.stack([d.increase for d in draws]).mean(0))
    one = random_map_baseline(confidence_change, Mean(), x, 0)
    first = confidence_change(Mean(), x, torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0)), 0)
    assert torch.allclose(one.drop, first.drop)
    with pytest.raises(InputError, match="repeats must be >= 1"):
        random_map_baseline(confidence_change, Mean(), x, 0, repeats=0)


def test_random_map_baseline_of_a_metric_returning_a_dict():
    x, _ = _case()

    def two(model, inputs, maps, targets):  # a dict of [B] per key, as faithfulness_scores returns
        return {"top": maps.flatten(1).amax(1), "sum": maps.flatten(1).sum(1)}

    got = random_map_baseline(two, Mean(), x, 0, seed=2, repeats=2)
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 4, 4, generator=g), torch.rand(2, 4, 4, generator=g)
    assert set(got) == {"top", "sum"}
    assert torch.allclose(got["top"], (a.flatten(1).amax(1) + b.flatten(1).amax(1)) / 2)
    assert torch.allclose(got["sum"], (a.flatten(1).sum(1) + b.flatten(1).sum(1)) / 2)


def test_road_argument_checks_and_defaults_a_mutation_run_found_untested():
    x, maps = _case()
    with pytest.raises(InputError, match="orders must be a non-empty subset"):
        road_curves(Mean(), x, maps, 0, orders=("morf", "mof"))
    # percentile 0 is allowed: it removes every pixel, and an image with no known pixel is imputed as 0, so
    # each image's mean (class 0's score) falls from 0.5 to 0 in both orders
    zero = road_curves(Mean(), x, maps, 0, percentiles=[0], noise=0.0)
    for order in ("morf", "lerf"):
        assert zero[order].flatten().tolist() == [pytest.approx(-0.5, abs=1e-6)] * 2
    # road_curves' defaults: noise 0.01, seed 0, batch_size 16 (a one-image batch: 18 images in chunks of 16)
    model = CountingMean()
    default = road_curves(model, x[:1], maps[:1], 0)
    assert model.seen == [1, 16, 2]
    explicit = road_curves(Mean(), x[:1], maps[:1], 0, noise=0.01, seed=0, batch_size=16)
    for order in ("morf", "lerf"):
        torch.testing.assert_close(default[order], explicit[order], rtol=0, atol=1e-6)
    model = CountingMean()
    road(model, x[:1], maps[:1], 0)  # road's own default batch_size is 16 too
    assert model.seen == [1, 16, 2]


def test_road_passes_tol_and_channels_last_on():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 24, 24, generator=g, dtype=torch.float64)
    maps = torch.rand(2, 24, 24, generator=g, dtype=torch.float64)
    formats = []

    class Recording(nn.Module):
        """Logit 0 = a fixed weighted sum of the pixels; records whether each batch came channels-last."""

        def __init__(self):
            super().__init__()
            self.w = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

        def forward(self, t):
            formats.append(t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous())
            s = (t * self.w).sum((1, 2, 3))
            return torch.stack([s, -s], 1)

    kw = dict(percentiles=[30, 70], noise=0.0)
    loose = road(Recording(), x, maps, 0, tol=0.5, **kw)
    curves = road_curves(Recording(), x, maps, 0, tol=0.5, **kw)
    torch.testing.assert_close(loose, ((curves["lerf"] - curves["morf"]) / 2).mean(1))
    tight = road(Recording(), x, maps, 0, tol=1e-10, **kw)
    # tol reaches the solver: a loose one stops early (24 x 24 images are iterated, not solved densely)
    assert (loose - tight).abs().max() > 1e-2
    assert not any(formats)
    formats.clear()
    cl = road(Recording(), x, maps, 0, channels_last=True, tol=1e-10, **kw)
    assert formats and all(formats)  # every forward, the unperturbed one included
    torch.testing.assert_close(cl, tight)


def test_confidence_change_list_targets_and_random_baseline_input_check():
    x, maps = _case()  # 2 images, 1 channel, 3 classes: a list of targets is one per image
    w = torch.full((2, 4, 4), 0.5)
    per_image = confidence_change(Mean(), x, w, [0, 1])
    assert per_image.drop.tolist() == [pytest.approx(0.25), 0.0]  # image 0 by class 0: 0.5 -> 0.25
    assert per_image.increase.tolist() == [0.0, 1.0]  # image 1 by class 1: -0.5 -> -0.25, an increase (0 or 1)
    with pytest.raises(InputError, match=r"inputs must be a tensor \[B, C, H, W\]"):
        random_map_baseline(confidence_change, Mean(), x[0], 0)


# --- cases a second mutation run found untested ---------------------------------------------------------------------


def test_percentile_is_numpys_to_the_last_bit():
    # NumPy's lerp: a + diff * gamma below gamma = 0.5, b - diff * (1 - gamma) from 0.5 on; on random floats the
    # two forms differ in the last bit for some rows (measured: at p = 1.5 and 33 for gamma < 0.5, at p = 3, 40,
    # 77 and 95 above), and only NumPy's own choice classifies pixels tied with its threshold alike
    values = np.sort(np.random.default_rng(1).random((50, 23)), 1)
    for p in (1.5, 3, 33, 40, 77, 95, 100):
        got = _percentile(torch.from_numpy(values), p).numpy()
        np.testing.assert_array_equal(got, np.percentile(values, p, axis=1))


def test_road_with_percentile_100_and_batch_size_1_by_hand():
    x, maps = _case()
    model = CountingMean()
    out = road_curves(model, x, maps, 0, percentiles=[100], noise=0.0, batch_size=1, tol=1e-8)
    assert model.seen == [2, 2, 2]  # batch_size 1 < 2 images: one copy of the batch per forward pass
    # MoRF at 100 removes the map's maximum only: image 0's pixel (1, 3), a 1 whose in-image neighbours are
    # (0, 3), (1, 2), (2, 3) (weight 1/6; values 1, 1, 0) and (0, 2), (2, 2) (1/12; values 1, 0): it becomes
    # (5 / 12) / (8 / 12) = 5 / 8 and the mean falls by (3 / 8) / 16
    assert out["morf"][0].tolist() == [pytest.approx(-3 / 128, abs=1e-6)]
    # LeRF at 100 removes the maximum of 1 - map: image 0's 8 zeros of the bottom half (all tied), whose only
    # known neighbours are the ones above them: they become 1, the mean rises from 0.5 to 1
    assert out["lerf"][0].tolist() == [pytest.approx(0.5, abs=1e-6)]
    assert out["morf"][1].tolist() == [pytest.approx(0.0, abs=1e-6)]  # image 1 is constant


def test_a_callable_target_gets_channels_last_batches_too():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 6, 6, generator=g)
    maps = torch.rand(2, 6, 6, generator=g)
    formats = []

    class Recording(Mean):
        def forward(self, t):
            formats.append(t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous())
            return super().forward(t)

    def first_logit(output):  # a plain callable: called per copy of the batch
        return output[:, 0]

    cl = road_curves(Recording(), x, maps, first_logit, percentiles=[30, 70], noise=0.0, channels_last=True)
    assert len(formats) == 5 and all(formats)  # the clean batch, then 2 orders x 2 percentiles
    plain = road_curves(Mean(), x, maps, 0, percentiles=[30, 70], noise=0.0)
    for order in ("morf", "lerf"):
        torch.testing.assert_close(cl[order], plain[order])
