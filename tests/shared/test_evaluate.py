"""vizkit.evaluate: the shared loop over samples and localisation scoring, by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vizkit.errors import InputError, VizkitError
from vizkit.evaluate import (
    batched,
    cam_in_parts,
    localization,
    localization_table,
    masks_like,
    pointing_by_method,
    predicted_classes,
    score_maps,
    select_indices,
)
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


def test_pointing_by_method_one_row_per_method_by_hand():
    # the three samples of test_localization_by_hand; method "peak" puts the hot pixel at each
    # sample's peak (1 hit of 3), method "corner" always at (0, 0) (a hit for sample 0 only, the
    # mask of sample 1 holds (0, 0) too: 2 hits of 3)
    samples = [
        _sample((0, 0), (slice(0, 2), slice(0, 2))),
        _sample((3, 3), (slice(0, 1), slice(0, 1))),
        _sample((1, 2), (slice(1, 2), slice(0, 2))),
    ]
    seen = []

    def explain(x, chunk, method):
        seen.append((method, len(chunk)))
        heat = torch.ones(len(chunk), 4, 4)
        for i, s in enumerate(chunk):
            r, c = s.peak if method == "peak" else (0, 0)
            heat[i, r, c] = 3.0
        return SimpleNamespace(heatmap=heat, layers=["a", "b"])

    table = pointing_by_method(samples, lambda c: torch.zeros(len(c), 1, 4, 4), explain, ["peak", "corner"], 2)
    assert seen == [("peak", 2), ("peak", 1), ("corner", 2), ("corner", 1)]
    assert list(table.columns) == ["method", "layer", "scenes", "hits", "pointing_accuracy", "energy_in_mask"]
    assert table["method"].tolist() == ["peak", "corner"] and table["layer"].tolist() == ["a, b", "a, b"]
    assert table["scenes"].tolist() == [3, 3] and table["hits"].tolist() == [1, 2]
    assert table["pointing_accuracy"].tolist() == pytest.approx([1 / 3, 2 / 3])
    # energy = mask sum / 18 (map sum 15 + 3): peak [6, 1, 2] / 18; corner [6, 3, 2] / 18
    assert table["energy_in_mask"].tolist() == pytest.approx([9 / 54, 11 / 54])


def test_predicted_classes_in_batches_equal_one_forward():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    images = [np.arange(4, dtype=np.float32).reshape(2, 2) * k - 5 for k in range(7)]

    def preprocess(image):
        return torch.from_numpy(image)[None]

    with torch.no_grad():
        logits = model(torch.stack([preprocess(im) for im in images]))
    expected = logits.argmax(-1)
    assert len(set(expected.tolist())) > 1  # the inputs are not all one class
    for size in (1, 3, 7, None):
        out = predicted_classes(model, images, preprocess, batch_size=size)
        assert out.dtype == torch.int64 and out.tolist() == expected.tolist()
    assert predicted_classes(model, [], preprocess).tolist() == []


def test_select_indices_by_hand():
    labels = np.array([2, 0, 1, 0, 2, 1, 0])  # firsts: class 0 at 1, class 1 at 2, class 2 at 0
    assert select_indices(labels, 3) == [1, 2, 0]
    assert select_indices(labels, 5) == [1, 2, 0, 3, 5]  # then the second of each class
    assert select_indices(labels, 9, "indices", [6, 0]) == [6, 0]
    calls = []

    def predictions():
        calls.append(1)
        return torch.tensor([2, 1, 1, 0, 0, 1, 2])  # wrong at 1, 4 and 6

    assert select_indices(labels, 5, "misclassified_first", predictions=predictions) == [1, 4, 6, 0, 2]
    assert select_indices(labels, 2, "misclassified_first", predictions=predictions) == [1, 4]
    assert select_indices(labels, 2, predictions=predictions) == [1, 2] and len(calls) == 2  # called when needed
    for args, message in [
        ((labels, 3, "random"), "selection must be one of one_per_class, indices, misclassified_first"),
        ((labels, 3, "indices", []), "needs a non-empty list"),
        ((labels, 3, "indices", [7, -1]), r"indices \[7, -1\] are out of range 0..6"),
        ((labels, 0), "num_samples must be positive, got 0"),
        ((labels, 2, "misclassified_first"), "needs the predictions"),
    ]:
        with pytest.raises(VizkitError, match=message):
            select_indices(*args)


# ------------------------------------------------------------------ maps already computed
def test_score_maps_by_hand_and_as_localization_scores_them():
    # the same three samples as test_localization_by_hand, scored from their maps directly
    peaks = [(0, 0), (3, 3), (1, 2)]
    boxes = [(slice(0, 2), slice(0, 2)), (slice(0, 1), slice(0, 1)), (slice(1, 2), slice(0, 2))]
    heat = torch.ones(3, 4, 4)
    masks = []
    for i, (peak, box) in enumerate(zip(peaks, boxes)):
        heat[i, peak[0], peak[1]] = 3.0
        m = np.zeros((4, 4), bool)
        m[box] = True
        masks.append(m)
    res = score_maps(heat, masks, tolerances=(0, 1))
    assert res.hits[0].tolist() == [True, False, False] and res.hits[1].tolist() == [True, False, True]
    assert res.energy.tolist() == pytest.approx([6 / 18, 1 / 18, 2 / 18])
    big = [np.kron(m, np.ones((2, 2), bool)) for m in masks]  # 8x8 masks: resized (nearest) to the maps
    assert score_maps(heat, big, tolerances=(0,)).energy.tolist() == pytest.approx(res.energy.tolist())
    assert res.record([7, 8, 9], digits=3) == {
        "index": [7, 8, 9],
        "hit": [True, False, False],
        "hit_tol1": [True, False, True],
        "energy": [0.333, 0.056, 0.111],
    }
    with pytest.raises(InputError, match="one mask per map"):
        score_maps(heat, masks[:2])


def test_localization_table_means_over_parts():
    part1 = {
        "gradcam": {
            "blk1": {"index": [0, 2], "hit": [True, False], "hit_tol1": [True, True], "energy": [0.5, 0.1]},
            "all layers": {"index": [0, 2], "hit": [False, False], "hit_tol1": [False, True], "energy": [0.2, 0.2]},
        }
    }
    part2 = {"gradcam": {"blk1": {"index": [5], "hit": [True], "hit_tol1": [True], "energy": [0.9]}}}
    table = localization_table([part1, {}, part2], count_name="fakes")
    assert table.to_dict("records") == [
        {
            "layer": "blk1",
            "method": "gradcam",
            "fakes": 3,
            "pointing_game": pytest.approx(2 / 3),
            "pointing_game_tol1": 1.0,
            "energy_in_mask": pytest.approx(0.5),
        },
        {
            "layer": "all layers",
            "method": "gradcam",
            "fakes": 2,
            "pointing_game": 0.0,
            "pointing_game_tol1": 0.5,
            "energy_in_mask": pytest.approx(0.2),
        },
    ]
    assert localization_table([{}, {}]) is None


# ------------------------------------------------------------------ cam in parts
def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 5, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(5, 2),
    ).eval()


@pytest.mark.parametrize("targets", [None, 1, [0, 1, 1, 0, 1], torch.tensor([1, 0, 0, 1, 1])])
@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_cam_in_parts_equals_one_call(targets, method):
    from vizkit.explain import cam

    model = _cnn()
    x = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    one = cam(model, x, targets, layers=["0", "2"], method=method)
    parts = cam_in_parts(model, x, targets, layers=["0", "2"], method=method, part_size=2)  # 2 + 2 + 1 images
    torch.testing.assert_close(parts.heatmap, one.heatmap)
    torch.testing.assert_close(parts.scores, one.scores)
    torch.testing.assert_close(parts.output, one.output)
    assert torch.equal(parts.targets, one.targets) and parts.layers == one.layers == ["0", "2"]
    for name in one.layers:
        torch.testing.assert_close(parts.layer_maps[name], one.layer_maps[name])
        torch.testing.assert_close(parts.layer_heatmaps[name], one.layer_heatmaps[name])
    assert parts.method == one.method and parts.heatmap.shape == (5, 8, 8)


def test_cam_in_parts_bad_part_size():
    with pytest.raises(InputError, match="part_size must be at least 1"):
        cam_in_parts(_cnn(), torch.rand(2, 3, 8, 8), part_size=0)
