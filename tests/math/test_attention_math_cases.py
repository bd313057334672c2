""":mod:`vizkit.attention_math` on hand-computed cases a mutation run found untested: the discard ratio's
bounds and counts (one entry, a 5-token map), batches, head fusion inside rollout and the mean
aggregation, the default fusion, and the device of the tensors made inside."""

from __future__ import annotations

import re

import pytest
import torch

from vizkit import attention_math as am
from vizkit.errors import VizkitError


def _grid(n: int) -> torch.Tensor:
    """``[1, n, n]`` with distinct entries 1 .. n*n (row-major)."""
    return torch.arange(1.0, n * n + 1).view(1, n, n)


@pytest.mark.parametrize("ratio", [1.0, 1.5, -0.1])
def test_discard_ratio_must_be_below_one(ratio):
    with pytest.raises(VizkitError, match=r"discard_ratio must be in \[0, 1\)"):
        am.discard_lowest(_grid(3), ratio)


def test_discard_one_entry():
    # n = 3: the ratio counts the 4 entries outside row 0 and column 0; 0.25 -> the lowest one, (1, 1) = 5
    out = am.discard_lowest(_grid(3), 0.25)
    expected = _grid(3)
    expected[0, 1, 1] = 0
    assert torch.equal(out, expected)


def test_discard_half_of_a_five_token_map_in_a_batch():
    # n = 5: (5 - 1)^2 = 16 entries outside the CLS row / column; 0.5 -> the 8 lowest of them
    a = torch.cat([_grid(5), _grid(5).flip(-1)])  # [2, 5, 5], the second image mirrored
    out = am.discard_lowest(a, 0.5)
    for b in range(2):
        free = torch.ones(5, 5, dtype=torch.bool)
        free[0, :] = free[:, 0] = False
        values = a[b][free].sort().values
        zeroed = free & (a[b] <= values[7])
        assert int(zeroed.sum()) == 8
        assert torch.equal(out[b], torch.where(zeroed, torch.zeros(()), a[b]))


def test_rollout_with_max_fusion_by_hand():
    # two heads, N = 2: max over heads, + I, rows renormalised
    attn = torch.tensor([[[[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5], [0.6, 0.4]]]])
    fused = torch.tensor([[0.9, 0.5], [0.6, 0.8]])
    a = fused + torch.eye(2)
    expected = a / a.sum(-1, keepdim=True)
    assert torch.allclose(am.rollout_matrix([attn], head_fusion="max")[0], expected)
    assert torch.allclose(am.rollout_matrix([attn], head_fusion="min")[0], _rownorm(attn[0].amin(0)))


def _rownorm(fused: torch.Tensor) -> torch.Tensor:
    a = fused + torch.eye(fused.shape[-1])
    return a / a.sum(-1, keepdim=True)


def test_mean_aggregation_fuses_heads_as_asked():
    # one layer, two heads: A * grad, clamped at 0, fused over heads
    attn = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]], [[0.2, 0.8], [0.3, 0.7]]]])
    grad = torch.tensor([[[[1.0, -1.0], [2.0, 1.0]], [[3.0, 1.0], [-1.0, 1.0]]]])
    per_head = (attn * grad).clamp(min=0)[0]  # [[0.5, 0], [2, 0]] and [[0.6, 0.8], [0, 0.7]]
    two = [attn, attn]  # the mean over two equal layers is the layer itself
    assert torch.allclose(am.mean_relevance_matrix(two, [grad, grad], "max")[0], per_head.amax(0))
    assert torch.allclose(am.mean_relevance_matrix(two, [grad, grad])[0], per_head.mean(0))  # default: mean
    assert torch.allclose(am.mean_relevance_matrix([attn], [grad])[0], torch.tensor([[0.55, 0.4], [1.0, 0.35]]))


def test_tensors_made_inside_stay_on_the_maps_device():
    # the meta device stands in for a GPU: identity matrices and masks are made where the maps are
    attn = torch.rand(2, 2, 4, 4).softmax(-1).to("meta")
    assert am.rollout_matrix([attn, attn], discard_ratio=0.5).device.type == "meta"
    assert am.relevance_matrix([attn], [attn]).device.type == "meta"


def test_rollout_is_float32_whatever_the_default_dtype():
    attn = torch.rand(1, 2, 3, 3, generator=torch.Generator().manual_seed(0)).softmax(-1)
    reference = am.rollout_matrix([attn, attn])
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        out = am.rollout_matrix([attn, attn])
    finally:
        torch.set_default_dtype(default)
    assert out.dtype == torch.float32 and torch.equal(out, reference)


def test_defaults_are_mean_fusion_and_relevance_aggregation():
    # two heads: the mean over heads is ([[0.9, 0.1], [0.2, 0.8]] + [[0.5, 0.5], [0.6, 0.4]]) / 2
    attn = torch.tensor([[[[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5], [0.6, 0.4]]]])
    torch.testing.assert_close(am.fuse_heads(attn)[0], torch.tensor([[0.7, 0.3], [0.4, 0.6]]))
    # (A * grad)+ per head: [[0.5, 0], [2, 0]] and [[0.6, 0.8], [0, 0.7]]; mean [[0.55, 0.4], [1.0, 0.35]]
    attn = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]], [[0.2, 0.8], [0.3, 0.7]]]])
    grad = torch.tensor([[[[1.0, -1.0], [2.0, 1.0]], [[3.0, 1.0], [-1.0, 1.0]]]])
    weighted = torch.tensor([[0.55, 0.4], [1.0, 0.35]])
    torch.testing.assert_close(am.gradient_weighted(attn, grad)[0], weighted)
    # default aggregation = relevance propagation: one layer, R = I + Ā I = I + Ā
    torch.testing.assert_close(am.aggregate([attn], [grad])[0], torch.eye(2) + weighted)


@pytest.mark.parametrize("n_attn, n_grad", [(2, 1), (1, 2)])
def test_relevance_needs_one_gradient_per_attention_map(n_attn, n_grad):
    # non-empty but unequal lists are rejected, not silently truncated by zip
    a = torch.full((1, 1, 2, 2), 0.5)
    for aggregation in am.AGGREGATIONS:
        with pytest.raises(VizkitError, match="one gradient per attention map"):
            am.aggregate([a] * n_attn, [a] * n_grad, aggregation=aggregation)


def test_rollout_residual_halving_is_exact_on_dyadic_maps():
    # (A + I) / 2 = [[1.75, 0.25], [0.5, 1.5]] / 2 = [[0.875, 0.125], [0.25, 0.75]], rows already sum to 1;
    # every value is dyadic, so float32 gets it exactly (a / 3 would leave 0.1250000149)
    attn = torch.tensor([[[[0.75, 0.25], [0.5, 0.5]]]])
    expected = torch.tensor([[0.875, 0.125], [0.25, 0.75]])
    torch.testing.assert_close(am.rollout_matrix([attn])[0], expected, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(1, 2, 3, 4), (2, 3, 3)])
def test_rollout_refuses_attention_that_is_not_b_h_n_n(shape):
    with pytest.raises(VizkitError, match=r"rollout needs attention maps \[B, H, N, N\].*got " + re.escape(str(shape))):
        am.rollout_matrix([torch.full(shape, 0.25)])


def test_select_heads_by_hand():
    """Rows of 3 heads over 2 queries and 2 keys: every head, their mean (in float32, also of bfloat16 rows) or max,
    or one head by index (negative from the end); an index outside -3 .. 2 is refused."""
    attn = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]], [[0.25, 0.75], [0.0, 1.0]], [[1.0, 0.0], [0.5, 0.5]]]])
    assert am.select_heads(attn) is attn and am.select_heads(attn, "all") is attn
    mean = torch.tensor([[[[1.75 / 3, 1.25 / 3], [0.5, 0.5]]]])
    torch.testing.assert_close(am.select_heads(attn, "mean"), mean, rtol=0, atol=1e-7)
    assert torch.equal(am.select_heads(attn, "max"), torch.tensor([[[[1.0, 0.75], [1.0, 1.0]]]]))
    half = am.select_heads(attn.bfloat16(), "mean")
    assert half.dtype == torch.float32 and torch.equal(half, attn.bfloat16().float().mean(1, keepdim=True))
    assert am.select_heads(attn.bfloat16(), "max").dtype == torch.bfloat16
    for k, want in ((0, 0), (2, 2), (-1, 2), (-3, 0)):
        assert torch.equal(am.select_heads(attn, k), attn[:, want : want + 1]), k
    for k in (3, -4):
        with pytest.raises(VizkitError, match=rf"^head {k} is out of range for 3 heads \(0\.\.2\)$"):
            am.select_heads(attn, k)
