import math

import pandas as pd
import pytest
import torch

from vizkit.metrics.chance import uniform_attention_distance
from vizkit.stats import (
    attention_statistics,
    cls_attention_distance,
    mean_attention_distance,
    row_entropy,
    summarize,
    uniform_statistics,
)

SQRT2 = math.sqrt(2.0)


# --------------------------------------------------------------------------- row_entropy


def test_entropy_uniform_rows_is_log_n():
    attn = torch.full((2, 3, 5, 4), 0.25)
    ent = row_entropy(attn)
    assert ent.shape == (2, 3, 5)
    torch.testing.assert_close(ent, torch.full((2, 3, 5), math.log(4)))


def test_entropy_one_hot_rows_is_zero():
    attn = torch.eye(4).expand(2, 4, 4)
    ent = row_entropy(attn)
    assert ent.shape == (2, 4)
    assert torch.isfinite(ent).all()
    torch.testing.assert_close(ent, torch.zeros(2, 4))


def test_entropy_two_entry_row():
    # -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.5623351446...
    ent = row_entropy(torch.tensor([[0.25, 0.75]], dtype=torch.float64))
    assert ent.item() == pytest.approx(0.5623351446, abs=1e-9)


def test_entropy_rejects_vector():
    with pytest.raises(ValueError, match="Nq, Nk"):
        row_entropy(torch.tensor([0.5, 0.5]))


# --------------------------------------------------------------------- attention distance


def _with_prefix(patch_attn: torch.Tensor, prefix: int, prefix_mass: float) -> torch.Tensor:
    """Embed a [P, P] patch block into a [1, 1, N, N] map; each patch row gives
    ``prefix_mass`` to the prefix keys (spread evenly), the rest to the patch block."""
    p = patch_attn.shape[0]
    n = prefix + p
    attn = torch.zeros(n, n, dtype=torch.float64)
    attn[:prefix] = 1.0 / n
    if prefix:
        attn[prefix:, :prefix] = prefix_mass / prefix
    attn[prefix:, prefix:] = (1 - prefix_mass) * patch_attn.double()
    return attn[None, None]


# 2x2 grid, row-major: 0=(0,0) 1=(0,1) 2=(1,0) 3=(1,1)
def test_distance_neighbour_is_one_and_prefix_excluded():
    # every patch attends only to its horizontal neighbour (0<->1, 2<->3)
    block = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.float64)
    attn = _with_prefix(block, prefix=1, prefix_mass=0.5)  # half of each row on CLS
    assert attn[0, 0].sum(-1).allclose(torch.ones(5, dtype=torch.float64))
    out = mean_attention_distance(attn, (2, 2), prefix_tokens=1)
    assert out.shape == (1, 1)
    assert out.item() == pytest.approx(1.0)
    assert mean_attention_distance(attn, (2, 2), 1, patch_size=16).item() == pytest.approx(16.0)


def test_distance_diagonal_and_mixed_2x2():
    diagonal = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float64)
    mixed = torch.tensor(
        [
            [0.5, 0, 0, 0.5],  # 0.5 * 0 + 0.5 * sqrt2
            [0.25, 0.25, 0.25, 0.25],  # (1 + 0 + sqrt2 + 1) / 4
            [1, 0, 0, 0],  # 1
            [0, 0, 0, 1],  # 0
        ],
        dtype=torch.float64,
    )
    attn = torch.cat([_with_prefix(diagonal, 2, 0.3), _with_prefix(mixed, 2, 0.0)], dim=1)  # [1, 2, 6, 6]
    out = mean_attention_distance(attn, (2, 2), prefix_tokens=2)
    # mixed: (0.5*sqrt2 + (2 + sqrt2)/4 + 1 + 0) / 4 = 0.640165043
    torch.testing.assert_close(out, torch.tensor([[SQRT2, 0.6401650429]], dtype=torch.float64))


def test_distance_3x3_all_attend_top_left_corner():
    block = torch.zeros(9, 9)
    block[:, 0] = 1.0
    attn = block[None, None].expand(2, 3, 9, 9)
    out = mean_attention_distance(attn, (3, 3), prefix_tokens=0, patch_size=2.0)
    # distances to (0,0): 0,1,2, 1,sqrt2,sqrt5, 2,sqrt5,sqrt8 -> sum 14.7148 / 9 = 1.6349752
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, torch.full((2, 3), 2 * 1.6349751825))


def test_distance_non_square_grid_row_major():
    # grid (h=1, w=3): patches at columns 0, 1, 2; all attend to column 2
    block = torch.zeros(3, 3)
    block[:, 2] = 1.0
    out = mean_attention_distance(block[None, None], (1, 3), prefix_tokens=0)
    assert out.item() == pytest.approx((2 + 1 + 0) / 3)


def test_distance_row_with_no_patch_mass_counts_as_zero():
    attn = torch.zeros(1, 1, 3, 3)
    attn[..., 0] = 1.0  # everything on CLS
    attn[0, 0, 1] = torch.tensor([0.0, 0.0, 1.0])  # patch 0 -> patch 1 (distance 1)
    out = mean_attention_distance(attn, (1, 2), prefix_tokens=1)
    assert out.item() == pytest.approx(0.5)


# --------------------------------------------------------------------- cls_attention_distance


def test_cls_distance_by_hand_on_a_2x2_grid():
    """CLS rows over 1 CLS + 4 patches (grid positions (0,0), (0,1), (1,0), (1,1))."""
    rows = torch.tensor(
        [
            [0.0, 0.5, 0.0, 0.0, 0.5],  # two opposite corners: E d = 2 * 0.5 * 0.5 * sqrt 2
            [0.2, 0.0, 0.8, 0.0, 0.0],  # one patch (the CLS key is dropped): 0
            [0.2, 0.2, 0.2, 0.2, 0.2],  # uniform over the patches: (0 + 1 + 1 + sqrt 2) / 4
            [0.0, 0.5, 0.25, 0.25, 0.0],  # p = (.5, .25, .25, 0): 2 (.125 * 1 + .125 * 1 + .0625 * sqrt 2)
            [1.0, 0.0, 0.0, 0.0, 0.0],  # no mass on the patches: 0
        ],
        dtype=torch.float64,
    )
    attn = torch.zeros(1, 5, 5, 5, dtype=torch.float64)
    attn[0, :, 0] = rows  # the patch query rows do not enter
    attn[0, :, 1:] = 1.0 / 5
    out = cls_attention_distance(attn, (2, 2), prefix_tokens=1)
    expected = [SQRT2 / 2, 0.0, (2 + SQRT2) / 4, 0.5 + SQRT2 / 8, 0.0]
    assert out.shape == (1, 5) and out.dtype == torch.float64
    assert out[0].tolist() == pytest.approx(expected, abs=1e-12)
    assert cls_attention_distance(attn, (2, 2), 1, patch_size=16)[0, 0].item() == pytest.approx(16 * SQRT2 / 2)


def test_cls_distance_needs_a_cls_token():
    with pytest.raises(ValueError, match="prefix"):
        cls_attention_distance(torch.full((1, 1, 4, 4), 0.25), (2, 2), prefix_tokens=0)


def test_uniform_statistics_are_the_chance_levels():
    ref = uniform_statistics((4, 4), prefix_tokens=1)
    assert set(ref) == {"max", "mean", "entropy", "distance", "cls_distance"}
    assert ref["max"] == pytest.approx(1 / 17) and ref["mean"] == pytest.approx(1 / 17)
    assert ref["entropy"] == pytest.approx(math.log(17))  # 2.833 nats: CLS + 16 patches
    assert ref["distance"] == pytest.approx(uniform_attention_distance((4, 4)), abs=1e-12)
    assert ref["cls_distance"] == pytest.approx(uniform_attention_distance((4, 4)), abs=1e-12)
    assert ref["cls_distance"] == pytest.approx(2.0080, abs=1e-4)
    assert "cls_distance" not in uniform_statistics((2, 3), 1, query="all")


# --------------------------------------------------------------------- attention_statistics


def _tiny_maps():
    """grid (1, 2), 1 prefix token -> N = 3; B = 2, H = 2."""
    head0 = torch.tensor([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    head1 = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.2, 0.4, 0.4]])
    uniform = torch.full((3, 3), 1 / 3)
    a = torch.stack([torch.stack([head0, head1]), torch.stack([uniform, uniform])])  # [2, 2, 3, 3]
    return {"z_first": a, "a_second": a.flip(1)}


def test_attention_statistics_frame_cls():
    df = attention_statistics(_tiny_maps(), grid=(1, 2), prefix_tokens=1)
    assert list(df.columns) == [
        "sample",
        "layer",
        "layer_index",
        "head",
        "max",
        "mean",
        "entropy",
        "distance",
        "cls_distance",
    ]
    assert df.shape == (8, 9)
    assert df["sample"].dtype == "int64" and df["head"].dtype == "int64" and df["layer_index"].dtype == "int64"
    assert df.groupby("layer")["layer_index"].first().to_dict() == {"z_first": 0, "a_second": 1}
    assert len(df.drop_duplicates(["sample", "layer", "head"])) == 8

    row = df.query("layer == 'z_first' and sample == 0 and head == 0").iloc[0]
    assert row["max"] == pytest.approx(0.25)
    assert row["mean"] == pytest.approx(0.25)
    assert row["entropy"] == pytest.approx(1.0397207708)  # -(0.5 ln .5 + 2 * .25 ln .25)
    assert row["distance"] == pytest.approx(0.5)  # patch0 -> itself (0), patch1 -> patch0 (1)
    # the CLS row over the patches, renormalised: [0.5, 0.5]; two draws land on different patches with p 0.5
    assert row["cls_distance"] == pytest.approx(0.5)

    row = df.query("layer == 'z_first' and sample == 0 and head == 1").iloc[0]
    assert (row["max"], row["mean"], row["entropy"]) == pytest.approx((1.0, 0.5, 0.0))
    assert row["distance"] == pytest.approx(0.75)  # (1 + 0.5) / 2
    assert row["cls_distance"] == 0.0  # the CLS row reads patch 0 alone: its spread is 0, unlike the patch rows

    row = df.query("layer == 'a_second' and sample == 0 and head == 0").iloc[0]  # flipped heads
    assert row["distance"] == pytest.approx(0.75)

    row = df.query("layer == 'z_first' and sample == 1 and head == 1").iloc[0]
    assert (row["max"], row["mean"], row["entropy"], row["distance"]) == pytest.approx((1 / 3, 1 / 3, math.log(3), 0.5))


def test_attention_statistics_query_all():
    df = attention_statistics(_tiny_maps(), grid=(1, 2), prefix_tokens=1, query="all")
    assert "cls_distance" not in df.columns  # a statistic of the CLS row alone
    row = df.query("layer == 'z_first' and sample == 0 and head == 0").iloc[0]
    assert row["max"] == pytest.approx((0.25 + 1 + 1) / 3)
    assert row["mean"] == pytest.approx(2.5 / 6)
    assert row["entropy"] == pytest.approx(1.0397207708 / 3)
    assert row["distance"] == pytest.approx(0.5)


def test_summarize_layer_order_and_values():
    df = attention_statistics(_tiny_maps(), grid=(1, 2), prefix_tokens=1)
    summary = summarize(df)
    assert list(summary.index) == ["z_first", "a_second"]
    assert set(summary.columns.get_level_values(0)) == {"max", "mean", "entropy", "distance"}
    # distances for layer z_first: 0.5, 0.75, 0.5, 0.5
    assert summary.loc["z_first", ("distance", "mean")] == pytest.approx(0.5625)
    assert summary.loc["z_first", ("distance", "std")] == pytest.approx(0.125)
    assert summary.loc["a_second", ("max", "mean")] == pytest.approx((0.25 + 1 + 2 / 3) / 4)


@pytest.mark.parametrize(
    "attn, grid, prefix, query, match",
    [
        (torch.rand(2, 5, 5), (2, 2), 1, "cls", "ndim=3"),
        (torch.rand(1, 2, 5, 4), (2, 2), 1, "cls", "square"),
        (torch.rand(1, 2, 6, 6), (2, 2), 1, "cls", "N=6"),
        (torch.rand(1, 2, 5, 5), (2, 2), 1, "patch", "query"),
        (torch.rand(1, 2, 4, 4), (2, 2), 0, "cls", "prefix"),
    ],
)
def test_attention_statistics_errors(attn, grid, prefix, query, match):
    with pytest.raises(ValueError, match=match):
        attention_statistics({"l0": attn}, grid, prefix, query=query)


def test_errors_empty_maps_and_distance_mismatch():
    with pytest.raises(ValueError, match="empty"):
        attention_statistics({}, (2, 2), 1)
    with pytest.raises(ValueError, match="prefix_tokens \\+ h\\*w"):
        mean_attention_distance(torch.rand(1, 1, 5, 5), (2, 2), prefix_tokens=0)
    with pytest.raises(ValueError, match="missing"):
        summarize(pd.DataFrame({"layer": ["a"]}))


def test_map_entropy_by_hand():
    import math

    from vizkit.stats import map_entropy

    maps = torch.stack(
        [
            torch.ones(2, 2),
            torch.tensor([[4.0, 0.0], [0.0, 0.0]]),
            torch.tensor([[1.0, 1.0], [0.0, 0.0]]),
            torch.zeros(2, 2),
        ]
    )
    out = map_entropy(maps)
    assert out[:3].tolist() == pytest.approx([math.log(4), 0.0, math.log(2)])
    assert math.isnan(out[3])
