"""vizkit.zoo.load_clip: a zoo CLIP as a ClipAdapter equals the zoo bundle's own model, preprocess and
tokenizer; other names fall through to vizkit.models.load_clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vizkit import zoo
from vizkit.errors import VizkitError
from vizkit.zoo import shapes_clip as sc
from vizkit.zoo.load_clip import ZOO_CLIPS, load_clip_model, zoo_clip_adapter


def test_the_zoo_clips_are_the_registered_ones():
    assert set(ZOO_CLIPS) == set(sc.SPECS) and set(ZOO_CLIPS) <= set(zoo.names())


@pytest.mark.parametrize("name", ZOO_CLIPS)
def test_zoo_adapter_encodes_like_the_bundle(name):
    bundle = zoo.load(name)
    adapter = zoo_clip_adapter(name)
    assert adapter.name == f"zoo:{name}" and adapter.image_size == bundle.meta["preprocess"]["image_size"]
    assert adapter.meta["class_names"] == bundle.class_names and not adapter.model.training
    assert adapter.logit_scale == pytest.approx(float(bundle.model.logit_scale.detach().exp()))
    scene = zoo.dataset(name, "test")[0].image  # uint8 [64, 64, 3]
    with torch.no_grad():
        expected = bundle.model.encode_image(bundle.preprocess(scene)[None])
        for image in (Image.fromarray(scene), scene):  # a PIL image or the array itself
            got = adapter.encode_image(adapter.preprocess(image)[None])
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    texts = ["a red circle", "a blue square"]
    torch.testing.assert_close(
        adapter.text_features(texts), sc.text_features(bundle.model, bundle.tokenizer, texts), atol=1e-6, rtol=1e-6
    )


def test_a_grey_pil_image_is_read_as_rgb():
    adapter = zoo_clip_adapter("shapes_clip")
    grey = np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    torch.testing.assert_close(adapter.preprocess(Image.fromarray(grey)), adapter.preprocess(rgb))


def test_load_clip_model_names():
    assert load_clip_model().name == "zoo:shapes_clip"  # the default
    assert load_clip_model("zoo:shapes_clip_cnn").name == "zoo:shapes_clip_cnn"
    with pytest.raises(VizkitError, match="zoo model with its own weights: drop --model-path"):
        load_clip_model("shapes_clip", "weights.pt")
    with pytest.raises(VizkitError, match=r"unknown model 'nope': use a zoo model \(shapes_clip, shapes_clip_cnn\)"):
        load_clip_model("nope")
