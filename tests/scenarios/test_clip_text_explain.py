"""Scenario 4's maps toward every text on one shared scale, the per-text masks of a scene, the
readable overlay file (vizkit.scenarios.clip_text_explain), with hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import vizkit
from vizkit import zoo
from vizkit.errors import InputError
from vizkit.scenarios.clip_text_explain import (
    shared_scale,
    text_map_spread,
    text_maps,
    text_maps_table,
    text_masks,
)
from vizkit.targets import ImageTextSimilarity


def test_shared_scale_by_hand():
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 0.0]]])  # two texts, one layer
    out = shared_scale({"l": a}, (2, 2))
    torch.testing.assert_close(out, a / 4)  # the largest value of ANY text is 1; text 1's peak is 0.25
    b = torch.tensor([[[0.0, 0.0], [0.0, 2.0]], [[1.0, 0.0], [0.0, 0.0]]])
    two = shared_scale({"l": a, "m": b}, (2, 2))  # each layer over its own max, the mean, over its max
    mean = (a / 4 + b / 2) / 2
    torch.testing.assert_close(two, mean / mean.max())
    assert float(two.max()) == 1.0
    torch.testing.assert_close(shared_scale({"l": torch.zeros(2, 3, 3)}, (6, 6)), torch.zeros(2, 6, 6))


@pytest.fixture(scope="module")
def clip():
    from vizkit.scenarios.clip_text_gradcam import load_clip_model

    scene = [s for s in zoo.dataset("shapes_clip", "test") if len(s.masks) > 1][0]
    return load_clip_model("shapes_clip"), scene, zoo.load("shapes_clip").class_names


def test_text_maps_panel_maxima_are_the_global_max_normalisation(clip):
    adapter, scene, texts = clip
    image, chosen = Image.fromarray(scene.image), texts[:6]
    maps, probs, used = text_maps(adapter, image, chosen)
    x = adapter.preprocess(image)[None].repeat(6, 1, 1, 1)
    text = adapter.text_features(chosen)
    exp = vizkit.cam(
        adapter.model,
        x,
        ImageTextSimilarity(text, torch.arange(6), adapter.logit_scale),
        forward=adapter.encode_image,
    )
    raw = F.interpolate(exp.layer_maps[used[0]][:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[
        :, 0
    ].clamp(min=0)
    np.testing.assert_allclose(maps, (raw / raw.max()).numpy(), atol=1e-6)
    peaks = maps.reshape(6, -1).max(1)
    np.testing.assert_allclose(peaks, (raw.flatten(1).amax(1) / raw.max()).numpy(), atol=1e-6)
    assert peaks.max() == pytest.approx(1.0) and peaks.min() < 0.99  # one panel reaches 1, not every panel
    per_text, probs2, _ = text_maps(adapter, image, chosen, scale="per_text")
    np.testing.assert_allclose(per_text.reshape(6, -1).max(1), 1.0, atol=1e-6)  # what the old figure showed
    np.testing.assert_allclose(probs, probs2)
    with torch.no_grad():
        sims = adapter.logit_scale * F.normalize(adapter.encode_image(x[:1]), dim=-1) @ text.T
    np.testing.assert_allclose(probs, sims.softmax(-1)[0].numpy(), atol=1e-6)
    with pytest.raises(InputError, match="scale"):
        text_maps(adapter, image, chosen, scale="own")


def test_probability_maps_fade_with_p_and_eigencam_ignores_the_text(clip):
    adapter, scene, texts = clip
    image = Image.fromarray(scene.image)
    table = text_maps_table(texts, *text_maps(adapter, image, texts, probability=True)[:2])
    assert list(table["p"]) == sorted(table["p"], reverse=True) and table["peak"].iloc[0] == pytest.approx(1.0)
    assert table["p"].iloc[-1] < 1e-3 and table["peak"].iloc[-1] < 1e-2  # measured: 0.000 (p 0.000)
    similarity = text_maps_table(texts, *text_maps(adapter, image, texts)[:2])
    assert similarity["peak"].iloc[-1] > 0.5  # the similarity of a rejected text still lights the image up
    assert text_map_spread(text_maps(adapter, image, texts, "eigencam")[0]) == 0.0
    assert text_map_spread(text_maps(adapter, image, texts)[0]) > 0.5


def test_text_map_spread_and_table_by_hand():
    maps = np.zeros((3, 2, 2), np.float32)
    maps[0, 0, 0], maps[1, 0, 0], maps[2, 1, 1] = 1.0, 0.25, 0.5
    assert text_map_spread(maps) == 1.0
    assert text_map_spread(np.ones((2, 2, 2))) == 0.0
    table = text_maps_table(["a", "b", "c"], maps, [0.2, 0.5, 0.3])
    assert list(table["text"]) == ["b", "c", "a"] and list(table["peak"]) == [0.25, 0.5, 1.0]
    with pytest.raises(InputError):
        text_map_spread(maps[:1])
    with pytest.raises(InputError):
        text_maps_table(["a"], maps, [1.0])


def test_text_masks_of_a_scene(clip):
    _, scene, texts = clip
    masks = text_masks(scene, texts)
    named = [t for t, m in zip(texts, masks) if m is not None]
    assert scene.meta["text"] in named and len(named) == len({(o["color"], o["shape"]) for o in scene.meta["objects"]})
    np.testing.assert_array_equal(masks[texts.index(scene.meta["text"])], scene.mask)
