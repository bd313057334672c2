""":mod:`vizkit.stats` on the cases a mutation run found untested: map entropy of maps whose mass is
below 1, attention distance of integer maps and on another device, which argument an error names,
the frame's index and the summary's layer order when the rows come shuffled, row entropy of plain
matrices and of stacks of non-square rows, warnings, the chance levels in float64 and ``query`` checks."""

from __future__ import annotations

import math
import warnings

import pandas as pd
import pytest
import torch
from torch.overrides import TorchFunctionMode

from vizkit.stats import (
    attention_statistics,
    cls_attention_distance,
    map_entropy,
    mean_attention_distance,
    row_entropy,
    summarize,
    uniform_statistics,
)


def test_map_entropy_of_a_map_whose_mass_is_below_one():
    # [0.1, 0.3, 0, 0]: p = [1/4, 3/4] -> -(1/4 ln 1/4 + 3/4 ln 3/4); the all-zero map has no distribution
    maps = torch.tensor([[[0.1, 0.3], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    ent = map_entropy(maps)
    assert ent[0].item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), abs=1e-6)
    assert math.isnan(ent[1].item())


def test_distance_of_an_integer_map_is_float():
    # one-hot integer attention on a 2x2 grid, no prefix: every patch attends to the diagonal opposite
    attn = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]])[None, None]
    d = mean_attention_distance(attn, (2, 2), 0)
    assert d.dtype == torch.float32
    assert d.item() == pytest.approx(math.sqrt(2), abs=1e-6)


def test_distance_stays_on_the_maps_device():
    attn = torch.full((1, 2, 5, 5), 0.2)
    d = mean_attention_distance(attn, (2, 2), 1)
    # uniform over the 4 patches of a 2x2 grid: each query's mean distance is (0 + 1 + 1 + sqrt 2) / 4
    assert torch.allclose(d, torch.full((1, 2), (2 + math.sqrt(2)) / 4))
    # the meta device stands in for a GPU: the distance table is built where the maps are
    assert mean_attention_distance(attn.to("meta"), (2, 2), 1).device.type == "meta"


def test_errors_name_the_argument_and_the_grid():
    with pytest.raises(ValueError, match=r"^attn must have shape"):
        mean_attention_distance(torch.zeros(5, 5), (2, 2), 1)
    with pytest.raises(ValueError, match=r"^grid must be \(h, w\) with positive entries"):
        mean_attention_distance(torch.zeros(1, 1, 1, 1), (0, 3), 1)  # N = 1 + 0 * 3 would match
    good, bad = torch.full((1, 1, 5, 5), 0.2), torch.full((1, 1, 4, 4), 0.25)
    with pytest.raises(ValueError, match=r"^maps\['second'\] has N=4 tokens"):
        attention_statistics({"first": good, "second": bad}, (2, 2), 1)


def _frame() -> pd.DataFrame:
    g = torch.Generator().manual_seed(0)
    maps = {name: torch.rand(2, 2, 5, 5, generator=g).softmax(-1) for name in ("z.first", "a.second")}
    return attention_statistics(maps, (2, 2), 1)


def test_the_frame_has_one_index_over_all_layers():
    df = _frame()
    assert len(df) == 8 and df.index.equals(pd.RangeIndex(8))


def test_summary_is_in_layer_order_whatever_the_row_order():
    df = _frame()
    shuffled = df.iloc[::-1]  # the second layer's rows come first
    out = summarize(shuffled)
    assert list(out.index) == ["z.first", "a.second"]
    first = df[df.layer == "z.first"]
    assert out.loc["z.first", ("entropy", "mean")] == pytest.approx(first.entropy.mean())
    assert out.loc["z.first", ("max", "std")] == pytest.approx(first["max"].std(ddof=1))


def test_row_entropy_of_a_plain_matrix():
    # a 2-D [Nq, Nk] matrix is a valid input; rows: ln 2, ln 4, 0 (0 ln 0 = 0)
    attn = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    ent = row_entropy(attn)
    assert ent.shape == (3,)
    assert ent.tolist() == pytest.approx([math.log(2), math.log(4), 0.0], abs=1e-6)


def test_row_entropy_sums_over_the_keys_of_each_stack():
    # [2, 2, 3]: two stacks of two rows over three keys; the last axis is the distribution
    attn = torch.tensor(
        [
            [[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]],  # ln 3, 0
            [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]],  # ln 2, ln 2
        ],
        dtype=torch.float64,
    )
    expected = torch.tensor([[math.log(3), 0.0], [math.log(2), math.log(2)]], dtype=torch.float64)
    torch.testing.assert_close(row_entropy(attn), expected)


def test_distances_raise_no_warning():
    # torch.meshgrid warns when it is not told the indexing; torch warns once per process unless set_warn_always
    attn = torch.full((1, 1, 5, 5), 0.2)
    previous = torch.is_warn_always_enabled()
    torch.set_warn_always(True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mean_attention_distance(attn, (2, 2), 1)
            cls_attention_distance(attn, (2, 2), 1)
    finally:
        torch.set_warn_always(previous)
    assert [str(w.message) for w in caught] == []


class _EinsumDevices(TorchFunctionMode):
    """Records the set of devices of the tensor operands of every ``torch.einsum`` call inside the block."""

    def __init__(self):
        super().__init__()
        self.devices = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.einsum:
            self.devices.append({a.device.type for a in args if isinstance(a, torch.Tensor)})
        return func(*args, **(kwargs or {}))


def test_cls_distance_stays_on_the_maps_device():
    attn = torch.full((1, 2, 5, 5), 0.2)
    # uniform CLS row over the 4 patches of a 2x2 grid: (0 + 1 + 1 + sqrt 2) / 4 for two independent draws
    assert torch.allclose(cls_attention_distance(attn, (2, 2), 1), torch.full((1, 2), (2 + math.sqrt(2)) / 4).double())
    # the meta device stands in for a GPU: the distance table is built where the maps are (meta einsum does not
    # check devices, so the test records the operands' devices; on a GPU a CPU table fails)
    with _EinsumDevices() as log:
        assert cls_attention_distance(attn.to("meta"), (2, 2), 1).device.type == "meta"
    assert log.devices == [{"meta"}]


def test_uniform_statistics_are_exact_in_float64():
    # N = 1 + 2*2 = 5: 1/5 and ln 5 are not float32 numbers; a float32 map would be off by ~1e-8
    ref = uniform_statistics((2, 2), prefix_tokens=1)
    assert ref["max"] == pytest.approx(0.2, rel=0, abs=1e-15)
    assert ref["mean"] == pytest.approx(0.2, rel=0, abs=1e-15)
    assert ref["entropy"] == pytest.approx(math.log(5), rel=0, abs=1e-14)
    assert ref["distance"] == pytest.approx((2 + math.sqrt(2)) / 4, rel=0, abs=1e-14)


def test_query_all_needs_no_prefix_token():
    # grid (1, 2), no prefix: patch 0 reads itself, patch 1 reads both patches evenly
    attn = torch.tensor([[1.0, 0.0], [0.5, 0.5]])[None, None]
    row = attention_statistics({"l0": attn}, (1, 2), 0, query="all").iloc[0]
    assert row["max"] == pytest.approx((1 + 0.5) / 2)
    assert row["mean"] == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
    assert row["entropy"] == pytest.approx((0 + math.log(2)) / 2)
    assert row["distance"] == pytest.approx((0 + 0.5 * 1) / 2)


def test_query_cls_without_prefix_says_to_use_query_all():
    attn = torch.full((1, 1, 4, 4), 0.25)
    with pytest.raises(ValueError, match=r"^query='cls' needs a prefix \(CLS\) token.*use query='all'$"):
        attention_statistics({"l0": attn}, (2, 2), 0)
