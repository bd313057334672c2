"""vizkit.evaluate: the shared loop over samples and localisation scoring, by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vizkit.errors import InputError
from vizkit.evaluate import batched, localization, masks_like
from vizkit.metrics import deletion_auc


def test_batched_chunks():
    items = list(range(7))
    assert [(s, list(c)) for s, c in batched(items, 3)] == [(0, [0, 1, 2]), (3, [3, 4, 5]), (6, [6])]
    assert [(s, list(c)) for s, c in batched(items, None)] == [(0, items)]
    assert [(s, list(c)) for s, c in batched(items, 100, progress="x")] == [(0, items)]
    assert list(batched([], 4)) == []


def test_masks_like_nearest_resize():
    m = np.zeros((4, 4), bool)
    m[:2, 2:] = True
    out = masks_like([m], (8, 8))
    assert out.shape == (1, 8, 8) and out.dtype == torch.bool
    assert out[0, :4, 4:].all() and out[0].sum() == 16
    assert torch.equal(masks_like(torch.from_numpy(m)[None], (4, 4))[0], torch.from_numpy(m))


def _sample(peak: tuple[int, int], mask_box: tuple[slice, slice]) -> SimpleNamespace:
    mask = np.zeros((4, 4), bool)
    mask[mask_box] = True
    return SimpleNamespace(peak=peak, mask=mask)


def test_localization_by_hand():
    # 3 samples, 4x4 maps: a single hot pixel at `peak` (value 3) over a floor of 1
    samples = [
        _sample((0, 0), (slice(0, 2), slice(0, 2))),  # hit
        _sample((3, 3), (slice(0, 1), slice(0, 1))),  # miss, 3 px (Chebyshev) away
        _sample((1, 2), (slice(1, 2), slice(0, 2))),
    ]  # miss by one pixel
    calls = []

    def inputs(chunk):
        return torch.zeros(len(chunk), 1, 4, 4)

    def explain(x, chunk):
        calls.append(len(chunk))
        heat = torch.ones(len(chunk), 4, 4)
        for i, s in enumerate(chunk):
            heat[i, s.peak[0], s.peak[1]] = 3.0
        return SimpleNamespace(heatmap=heat, layers=["blk"])

    res = localization(samples, inputs, explain, tolerances=(0, 1), batch_size=2)
    assert calls == [2, 1]
    assert res.hits[0].tolist() == [True, False, False]
    assert res.hits[1].tolist() == [True, False, True]
    assert res.pointing() == pytest.approx(1 / 3) and res.pointing(1) == pytest.approx(2 / 3)
    # energy: (mask sum) / (map sum); map sum = 15 * 1 + 3 = 18
    assert res.energy.tolist() == pytest.approx([(3 + 3) / 18, 1 / 18, 2 / 18])
    assert res.layers == ["blk"] and res.deletion is None
    assert res.summary() == pytest.approx(
        {"pointing": 1 / 3, "pointing_tol1": 2 / 3, "energy_in_mask": float(res.energy.mean())}
    )


def test_localization_deletion_matches_metrics():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 4, 4)
    heat = torch.rand(3, 4, 4)
    samples = [SimpleNamespace(i=i, mask=np.ones((4, 4), bool)) for i in range(3)]

    def score(images):
        return images.flatten(1).mean(1)

    res = localization(
        samples,
        lambda chunk: x[[s.i for s in chunk]],
        lambda xx, chunk: heat[[s.i for s in chunk]],
        score=score,
        deletion_steps=4,
        batch_size=2,
    )
    expected = deletion_auc(score, x, heat, steps=4)
    assert torch.allclose(res.deletion, expected)
    assert res.energy.tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_localization_needs_samples():
    with pytest.raises(InputError, match="at least one sample"):
        localization([], lambda c: None, lambda x, c: None)
