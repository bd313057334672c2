"""Scenario 5's head choices against the model's own eager ``output_attentions``: ``--heads mean``,
``max`` and a head index ``k`` (fused after capture, :meth:`Trace.head_rows`, and selected at capture,
``RowAttentionCapture(heads=k)``), on a teacher-forced answer of a GQA model (Qwen2-VL) whose query
heads share key/value heads -- a head index that is ignored, or a fusion that is swapped, shows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import vlm_folders as VF
from PIL import Image

from vizkit.models.vlm import load_vlm
from vizkit.models.vlm.trace import build_inputs, extend_inputs, trace_sample

PROBLEM = "What colour is the star?"
SOLUTION = "The star is red and small."


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    vlm = load_vlm(VF.save_random_qwen2_vl(tmp_path_factory.mktemp("heads") / "q", layers=2, heads=4, kv_heads=2))
    image = Image.fromarray(np.random.default_rng(3).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    trace = trace_sample(vlm, PROBLEM, [image], [0, 1], mode="solution", solution=SOLUTION, start_phrase=None)
    inputs, _ = build_inputs(vlm, PROBLEM, [image])
    inputs.pop("original_sizes")
    L = trace.prompt_len
    full = extend_inputs(inputs, trace.input_ids[L:].tolist())
    vlm.model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            att = vlm.model(**full, output_attentions=True, use_cache=False).attentions
    finally:
        vlm.model.set_attn_implementation("sdpa")
    N = trace.num_answer_tokens
    # eager rows of the steps that produced the answer tokens: queries L-1 .. L-2+N, keys 0 .. L-2+N
    eager = {i: att[i][0, :, L - 1 : L - 1 + N, : L - 1 + N].numpy() for i in (0, 1)}  # [H, N, K]
    return vlm, image, trace, eager


@pytest.mark.parametrize("layer", [0, 1])
def test_mean_max_and_each_head_equal_eager(setup, layer):
    vlm, _, trace, eager = setup
    e = eager[layer]
    assert trace.rows[layer].shape[1] == 4  # every head captured
    np.testing.assert_allclose(trace.head_rows(layer, "mean"), e.mean(0), atol=1e-5)
    np.testing.assert_allclose(trace.head_rows(layer, "max"), e.max(0), atol=1e-5)
    for k in range(4):
        np.testing.assert_allclose(trace.head_rows(layer, k), e[k], atol=1e-5)
    # the heads differ, so a wrong index or fusion cannot pass the checks above
    assert min(np.abs(e[a] - e[b]).max() for a in range(4) for b in range(a + 1, 4)) > 1e-3
    assert np.abs(e.max(0) - e.mean(0)).max() > 1e-3


@pytest.mark.parametrize("head", [1, 3])
def test_a_head_selected_at_capture_equals_eager(setup, head):
    vlm, image, trace, eager = setup
    one = trace_sample(vlm, PROBLEM, [image], [0, 1], mode="solution", solution=SOLUTION, start_phrase=None, heads=head)
    for layer in (0, 1):
        assert one.rows[layer].shape[1] == 1
        np.testing.assert_allclose(one.head_rows(layer, head), eager[layer][head], atol=1e-5)
        np.testing.assert_allclose(one.rows[layer][:, 0], trace.rows[layer][:, head], atol=1e-6)
