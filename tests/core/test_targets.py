"""vizkit.targets.real_fake_targets: what a real/fake detector's explanation explains, per choice."""

from __future__ import annotations

import pytest
import torch

from vizkit.errors import TargetError
from vizkit.explain import cam
from vizkit.targets import REAL_FAKE_TARGETS, real_fake_targets


def test_each_choice_for_fake_index_1_and_0():
    labels = torch.tensor([1, 0, 0, 1])
    assert real_fake_targets("predicted", labels) is None
    assert real_fake_targets("fake", labels) == 1 and real_fake_targets("real", labels) == 0
    assert real_fake_targets("label", labels).tolist() == [1, 0, 0, 1]
    # a detector whose class 0 is the fake one
    assert real_fake_targets("fake", labels, fake_index=0) == 0 and real_fake_targets("real", labels, 0) == 1
    assert real_fake_targets("label", labels, fake_index=0).tolist() == [0, 1, 1, 0]
    assert REAL_FAKE_TARGETS == ("predicted", "fake", "real", "label")
    with pytest.raises(TargetError, match="target 'fakes': choose one of predicted, fake, real, label"):
        real_fake_targets("fakes", labels)


def test_label_targets_explain_each_images_true_class():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(2, 2)
    ).eval()
    x = torch.rand(3, 3, 6, 6)
    exp = cam(model, x, real_fake_targets("label", torch.tensor([0, 1, 1])), layers=["0"])
    with torch.no_grad():
        logits = model(x)
    torch.testing.assert_close(exp.scores, logits[[0, 1, 2], [0, 1, 1]])  # the true class's logit each
