""":mod:`vizkit.stats` on the cases a mutation run found untested: map entropy of maps whose mass is
below 1, attention distance of integer maps and on another device, which argument an error names,
the frame's index and the summary's layer order when the rows come shuffled."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from vizkit.stats import attention_statistics, map_entropy, mean_attention_distance, summarize


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
