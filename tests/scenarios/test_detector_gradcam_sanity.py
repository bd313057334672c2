"""Scenario 3's randomisation check on the zoo detector: every layer's number equals a direct
:func:`vizkit.metrics.parameter_randomisation` of that layer's map alone (the maps of all layers
are stacked into one call), and the detector's weights are restored afterwards."""

from __future__ import annotations

import math

import pytest
import torch

from vizkit.explain import cam
from vizkit.metrics import parameter_randomisation
from vizkit.scenarios import detector_gradcam_eval as dge
from vizkit.scenarios.detector_gradcam_sanity import randomisation_scores


def test_each_layer_equals_a_direct_randomisation_and_the_weights_are_restored():
    args = dge.EvalArgs(max_samples=4, batch_size=4, method="gradcam", table_methods=("gradcam",))
    ctx = dge.evaluation_context(args, "cpu")
    before = {k: v.clone() for k, v in ctx.detector.model.state_dict().items()}
    scores = randomisation_scores(ctx, count=2)
    after = ctx.detector.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert set(scores) == {f"gradcam|{i.name}" for i in ctx.layers} | {"gradcam|all layers"}
    # NaN where the randomised map is constant (no ranks): layer 3's, whose gradient dies with random weights
    assert all(-1.0 <= v <= 1.0 or math.isnan(v) for v in scores.values())

    images, ok, _ = ctx.dataset.read_images(range(2), ctx.detector.read)
    x = torch.stack([ctx.detector.preprocess(im) for im in images])
    layer = ctx.layers[-2]

    def explain(model, inputs):
        return cam(model, inputs, 1, layers=[i.module for i in ctx.layers], method="gradcam").layer_heatmaps[
            layer.module
        ]

    direct = parameter_randomisation(ctx.detector.model, x, explain, cascade=True, seed=0)
    assert scores[f"gradcam|{layer.name}"] == pytest.approx(float(direct[-1][1].mean()), abs=1e-5)
