"""vizkit.models.named_detector: the detector a notebook or a CLI names (zoo name, path, module)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import timm_vit

from vizkit.errors import InputError
from vizkit.models import load_detector
from vizkit.models.named_detector import load_detector_model, module_detector


def test_a_module_is_wrapped_without_a_pipeline():
    model = timm_vit(depth=2, num_classes=2).train()
    det = module_detector(model)
    assert det.model is model and not model.training
    assert (det.class_names, det.size, det.source, det.family, det.pipeline) == (
        ["real", "fake"],
        0,
        "VisionTransformer",
        "module",
        "none",
    )
    assert (det.real_index, det.fake_index) == (0, 1)
    with pytest.raises(InputError, match="preprocess the images yourself"):
        det.preprocess(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="passed as a module"):
        det.read("face.png")
    assert load_detector_model(model).model is model


def test_a_zoo_name_is_the_zoo_detector():
    direct = load_detector()  # nothing named: the zoo's face_forgery_detector
    det = load_detector_model("face_forgery_detector")
    assert det.source == direct.source and det.class_names == direct.class_names == ["real", "fake"]
    x = torch.rand(2, 3, direct.size, direct.size)
    with torch.no_grad():
        torch.testing.assert_close(det.model(x), direct.model(x))
