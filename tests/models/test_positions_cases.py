""":mod:`vizkit.positions` by hand: every array of a :class:`PositionMap` (empty, an image with tiles and
a thumbnail, special positions, extension, labels, grids) and of a :class:`Trace` -- the heads fused
(mean / max / one head), the attention sinks found by the Q3 + 3 IQR rule on received attention
(datasets built so the threshold falls exactly on a value), the rows renormalised without the sinks,
the top positions and the ``attention.npz`` arrays. Cases a mutation run found untested."""

from __future__ import annotations

import numpy as np
import pytest

from vizkit.positions import GENERATED, IMAGE, MOSAIC, SPECIAL, TEXT, THUMBNAIL, PositionMap, Trace


def _assert_arrays(got: np.ndarray, want, dtype) -> None:
    assert got.dtype == dtype and np.array_equal(got, np.asarray(want)), (got, want)


def test_empty_map():
    pm = PositionMap.empty(5, 3)
    _assert_arrays(pm.kind, [TEXT, TEXT, TEXT, GENERATED, GENERATED], np.int8)
    for a in (pm.image, pm.tile, pm.row, pm.col):
        _assert_arrays(a, [-1] * 5, np.int32)
    _assert_arrays(pm.view, [-1] * 5, np.int8)
    assert (pm.grids, pm.image_positions, pm.prompt_len, len(pm), pm.num_images) == ([], [], 3, 5, 0)
    _assert_arrays(pm.text_mask(), [True, True, True, False, False], np.bool_)


def _map() -> PositionMap:
    """12 positions, prompt of 10: text 0, a 2 x 2 mosaic of two tiles at 1..4, its 1 x 2 thumbnail at 5, 6,
    special 7, an untiled 1 x 1 image at 8, text 9, generated 10, 11."""
    pm = PositionMap.empty(12, 10)
    k0 = pm.add_image([[1, 2], [3, 4]], tiles=[[0, 1], [0, 1]], thumbnail=[[5, 6]])
    k1 = pm.add_image(np.array([[8]]))
    pm.mark_special([7, 10, 11])  # generated positions are never special
    assert (k0, k1) == (0, 1)
    return pm


def test_an_image_with_tiles_and_a_thumbnail():
    pm = _map()
    _assert_arrays(pm.kind, [0, 1, 1, 1, 1, 1, 1, SPECIAL, 1, 0, GENERATED, GENERATED], np.int8)
    _assert_arrays(pm.image, [-1, 0, 0, 0, 0, 0, 0, -1, 1, -1, -1, -1], np.int32)
    _assert_arrays(pm.tile, [-1, 0, 1, 0, 1, -1, -1, -1, 0, -1, -1, -1], np.int32)
    _assert_arrays(pm.view, [-1, MOSAIC, 0, 0, 0, THUMBNAIL, 1, -1, 0, -1, -1, -1], np.int8)
    _assert_arrays(pm.row, [-1, 0, 0, 1, 1, 0, 0, -1, 0, -1, -1, -1], np.int32)
    _assert_arrays(pm.col, [-1, 0, 1, 0, 1, 0, 1, -1, 0, -1, -1, -1], np.int32)
    assert pm.grids == [(2, 2), (1, 1)] and pm.thumbnail_grids == [(1, 2), None]
    _assert_arrays(pm.image_positions[0], [1, 2, 3, 4], np.int64)
    _assert_arrays(pm.thumbnail_positions[0], [5, 6], np.int64)
    _assert_arrays(pm.thumbnail_positions[1], [], np.int64)
    assert [pm.label(t) for t in (0, 1, 2, 5, 6, 7, 8, 11)] == [
        "text",
        "image 0 (0, 0)",
        "image 0 tile 1 (0, 1)",
        "image 0 thumbnail (0, 0)",
        "image 0 thumbnail (0, 1)",
        "special",
        "image 1 (0, 0)",
        "generated",
    ]


def test_special_marks_stop_at_the_prompt():
    pm = PositionMap.empty(4, 2)
    pm.mark_special([1, 2])
    _assert_arrays(pm.kind, [TEXT, SPECIAL, GENERATED, GENERATED], np.int8)


def test_extend_pads_every_array_and_copies_the_lists():
    pm = _map()
    ext = pm.extend(14)
    _assert_arrays(ext.kind, list(pm.kind) + [GENERATED] * 2, np.int8)
    for name in ("image", "tile", "row", "col"):
        _assert_arrays(getattr(ext, name), list(getattr(pm, name)) + [-1, -1], np.int32)
    _assert_arrays(ext.view, list(pm.view) + [-1, -1], np.int8)
    assert ext.prompt_len == 10 and ext.grids == pm.grids and ext.thumbnail_grids == pm.thumbnail_grids
    assert ext.grids is not pm.grids and ext.thumbnail_positions is not pm.thumbnail_positions
    assert len(ext.image_positions) == 2 and len(ext.thumbnail_positions) == 2
    same = pm.extend(12)  # nothing to add
    assert len(same) == 12 and np.array_equal(same.kind, pm.kind)
    with pytest.raises(ValueError, match="cannot shrink a position map of 12 positions to 11"):
        pm.extend(11)


def test_image_grid():
    pm = _map()
    values = np.arange(12) * 10
    assert np.array_equal(pm.image_grid(values, 0), [[10, 20], [30, 40]])
    assert np.array_equal(pm.image_grid(values, 0, thumbnail=True), [[50, 60]])
    assert np.array_equal(pm.image_grid(values[:9], 1), [[80]])  # 9 values reach position 8
    with pytest.raises(ValueError, match="8 values do not reach image 1's last position 8"):
        pm.image_grid(values[:8], 1)
    with pytest.raises(ValueError, match="image 1 has no thumbnail view"):
        pm.image_grid(values, 1, thumbnail=True)
    # an image without positions (an empty mosaic) lays out as an empty grid, whatever the values
    empty = PositionMap.empty(3, 3)
    empty.add_image(np.zeros((0, 2), np.int64))
    assert empty.image_grid(np.zeros(1), 0).shape == (0, 2)
    assert empty.image_grid(np.zeros(0), 0).shape == (0, 2)


def test_map_arrays():
    pm = _map()
    out = pm.arrays()
    assert list(out) == ["kind", "image", "tile", "view", "row", "col", "grids", "thumbnail_grids"]
    for name in ("kind", "image", "tile", "view", "row", "col"):
        assert out[name] is getattr(pm, name)
    _assert_arrays(out["grids"], [[2, 2], [1, 1]], np.int64)
    _assert_arrays(out["thumbnail_grids"], [[1, 2], [0, 0]], np.int64)  # no thumbnail: (0, 0)
    none = PositionMap.empty(2, 2).arrays()
    assert none["grids"].shape == (0, 2) and none["thumbnail_grids"].shape == (0, 2)


# ------------------------------------------------------------------ Trace
U = 1 / 256  # every value below is a multiple of 1/256: exact in binary, so thresholds fall exactly


def _trace(received_units: list[int], heads: str | int = "all", rows=None) -> Trace:
    """A trace with one answer token whose row (both heads alike) is ``received_units * U``."""
    L = len(received_units)
    if rows is None:
        row = np.array(received_units, np.float64) * U
        rows = np.stack([row, row])[None]  # [N = 1, H = 2, K = L]
    pm = PositionMap.empty(L + 1, L)
    return Trace(np.arange(L + 1), L, [f"t{i}" for i in range(L + 1)], pm, {3: rows}, "a", "generate", heads, [])


#: sorted: 4 4 4 8 8 8 8 8 8 12 X 128: Q1 = 4 + 0.75 * 4 = 7, Q3 = 8 + 0.25 * 4 = 9, IQR 2, threshold 15
B = [4, 128, 4, 8, 8, 12, 8, 16, 8, 8, 4, 8]  # X = 16 at position 7: above the threshold
A = [4, 128, 4, 8, 8, 12, 8, 15, 8, 8, 4, 8]  # X = 15: exactly on it, not an outlier


def test_sinks_by_the_outlier_rule():
    assert _trace(B).sinks(3).tolist() == [0, 1, 7]  # position 0, then the outliers strongest first
    assert _trace(A).sinks(3).tolist() == [0, 1]
    assert _trace(B).sinks(3, max_sinks=2).tolist() == [0, 1]
    assert _trace(B).sinks(3, max_sinks=1).tolist() == [0]
    assert _trace(B).sinks(3, max_sinks=0).tolist() == [0]  # position 0 is always kept
    assert _trace(B).sinks(3).dtype == np.int64
    # at most 5 by default; ties in position order
    many = [4] * 40
    for p, v in zip(range(3, 10), (200, 190, 180, 170, 160, 150, 140)):
        many[p] = v
    assert _trace(many).sinks(3).tolist() == [0, 3, 4, 5, 6]
    tied = [4] * 100  # 20 tied outliers: more than numpy's small-array sort handles
    for p in range(5, 25):
        tied[p] = 100
    assert _trace(tied).sinks(3, max_sinks=25).tolist() == [0, *range(5, 25)]
    # position 0 an outlier itself is listed once
    assert _trace([128, 4, 4, 4, 4, 4, 4, 4]).sinks(3).tolist() == [0]


def test_received_averages_over_the_rows_that_see_a_position():
    # prompt 4, two answer rows over positions 0..4 (row 0 sees 0..3, row 1 sees 0..4), two heads
    rows = np.array(
        [
            [[0.5, 0.1, 0.2, 0.2, 0.0], [0.7, 0.1, 0.1, 0.1, 0.0]],
            [[0.4, 0.1, 0.1, 0.2, 0.2], [0.6, 0.1, 0.1, 0.1, 0.1]],
        ]
    )
    pm = PositionMap.empty(6, 4)
    t = Trace(np.arange(6), 4, list("abcdef"), pm, {0: rows}, "ef", "solution", "all", [])
    # head means: [0.6, 0.1, 0.15, 0.15, 0] and [0.5, 0.1, 0.1, 0.15, 0.15]; seen by 2, 2, 2, 2, 1 rows
    assert t.received(0).tolist() == pytest.approx([0.55, 0.1, 0.125, 0.15, 0.15])
    np.testing.assert_allclose(t.head_rows(0, "mean"), [[0.6, 0.1, 0.15, 0.15, 0], [0.5, 0.1, 0.1, 0.15, 0.15]])
    np.testing.assert_allclose(t.head_rows(0, "max"), [[0.7, 0.1, 0.2, 0.2, 0], [0.6, 0.1, 0.1, 0.2, 0.2]])
    np.testing.assert_allclose(t.head_rows(0, 1), rows[:, 1])
    assert (t.num_answer_tokens, list(t.frame_tokens)) == (2, [0, 1])
    t.start = 1
    assert list(t.frame_tokens) == [1]
    # a trace captured with one head: its only head, whatever index was asked for
    one = Trace(np.arange(6), 4, list("abcdef"), pm, {0: rows[:, 1:]}, "ef", "solution", 1, [])
    np.testing.assert_allclose(one.head_rows(0, 1), rows[:, 1])
    # nothing visible at all: 0, not a division by zero
    blind = Trace(np.arange(2), 1, ["a", "b"], PositionMap.empty(2, 1), {0: np.zeros((1, 1, 3))}, "b", "g", "all", [])
    assert blind.received(0).tolist() == [0.0, 0.0, 0.0]


def test_rows_without_their_sinks_renormalised():
    t = _trace(B)
    row = np.array(B, np.float64) * U
    kept = row.copy()
    kept[[0, 1, 7]] = 0.0
    assert t.head_rows(3, "mean", sinks="mask")[0].tolist() == pytest.approx((kept / kept.sum()).tolist())
    assert t.head_rows(3, "mean", sinks="keep")[0].tolist() == pytest.approx(row.tolist())
    assert t.rows[3][0, 0, 1] == 128 * U  # the trace's own rows are untouched
    assert t.sink_share(3).tolist() == pytest.approx([(4 + 128 + 16) * U])
    assert t.sink_share(3, 0).tolist() == pytest.approx([(4 + 128 + 16) * U])
    with pytest.raises(ValueError, match="sinks='drop': use keep or mask"):
        t.head_rows(3, sinks="drop")
    # a row whose mass is all on the sinks stays zero; rows with little mass are still renormalised to 1
    rows = np.zeros((2, 2, 12))
    rows[0, :, 0] = 1.0
    rows[1, :, 1:] = 0.01
    rows[1, :, 0] = 0.005
    t2 = _trace(B, rows=rows)
    masked = t2.head_rows(3, "mean", sinks="mask")
    assert masked[0].tolist() == [0.0] * 12
    assert masked[1].sum() == pytest.approx(1.0)


def test_top_positions():
    pm = _map()
    t = Trace(np.arange(12), 10, [f"p{i}" for i in range(12)], pm, {}, "", "generate", "all", [])
    values = np.array([0.1, 0.3, 0.05, 0.3, 0.0, 0.2, 0.0, 0.0, 0.15, 0.0, 0.9], np.float32)
    top = t.top_positions(values)  # the last value (the query itself) is left out
    assert top == [
        (1, "image 0 (0, 0)", "p1", pytest.approx(0.3)),
        (3, "image 0 (1, 0)", "p3", pytest.approx(0.3)),
        (5, "image 0 thumbnail (0, 0)", "p5", pytest.approx(0.2)),
        (8, "image 1 (0, 0)", "p8", pytest.approx(0.15)),
        (0, "text", "p0", pytest.approx(0.1)),
    ]
    assert all(isinstance(v, float) for *_, v in top)
    assert [p for p, *_ in t.top_positions(values, k=2)] == [1, 3]


def test_trace_arrays():
    t = _trace(B)
    t.start = 0
    out = t.arrays()
    assert out["rows_layer3"] is t.rows[3]
    _assert_arrays(out["layers"], [3], np.int64)
    _assert_arrays(out["input_ids"], np.arange(13), out["input_ids"].dtype)
    assert out["prompt_len"] == 12 and out["prompt_len"].dtype == np.int64
    assert out["start"] == 0 and out["start"].dtype == np.int64
    _assert_arrays(out["query_positions"], [11], np.int64)  # the query of answer token j is prompt_len - 1 + j
    assert out["pieces"].tolist() == [f"t{i}" for i in range(13)] and out["pieces"].dtype.kind == "U"
    assert out["heads"].item() == "all"
    _assert_arrays(out["sinks_layer3"], [0, 1, 7], np.int64)
    _assert_arrays(out["kind"], [TEXT] * 12 + [GENERATED], np.int8)
    two = Trace(
        np.arange(8),
        5,
        list("abcdefgh"),
        PositionMap.empty(8, 5),
        {7: np.zeros((3, 1, 7)), 2: np.zeros((3, 1, 7))},
        "",
        "g",
        0,
        [],
    )
    two.start = 2
    out2 = two.arrays()
    _assert_arrays(out2["layers"], [2, 7], np.int64)
    _assert_arrays(out2["query_positions"], [4, 5, 6], np.int64)
    assert out2["start"] == 2 and out2["heads"].item() == "0"


def test_kinds_are_the_documented_codes():
    assert (TEXT, IMAGE, GENERATED, SPECIAL, MOSAIC, THUMBNAIL) == (0, 1, 2, 3, 0, 1)


def test_positions_of_any_integer_dtype_are_stored_as_int64():
    pm = PositionMap.empty(6, 6)
    pm.add_image(np.array([[1, 2]], np.int32), thumbnail=np.array([[3]], np.int32))
    _assert_arrays(pm.image_positions[0], [1, 2], np.int64)
    _assert_arrays(pm.thumbnail_positions[0], [3], np.int64)
    pm.mark_special([])  # nothing to mark
    pm.mark_special(np.array([5], np.int16))
    _assert_arrays(pm.kind, [TEXT, IMAGE, IMAGE, IMAGE, TEXT, SPECIAL], np.int8)
    empty = PositionMap.empty(2, 2).arrays()
    assert empty["grids"].dtype == np.int64 and empty["thumbnail_grids"].dtype == np.int64


def test_each_row_is_renormalised_on_its_own():
    rows = np.zeros((2, 2, 12))
    rows[0, :, [0, 2, 3]] = [[0.5], [0.2], [0.6]]  # position 0 masked: 0.2 and 0.6 -> 0.25, 0.75
    rows[1, :, [1, 4]] = [[0.3], [0.1]]  # nothing masked: 0.75, 0.25
    t = _trace(B, rows=rows)
    assert t.sinks(3).tolist() == [0]  # received 0.25 0.15 0.1 0.3 0.05 0 ...: no outlier
    masked = t.head_rows(3, "mean", sinks="mask")
    assert masked[0, [2, 3]].tolist() == pytest.approx([0.25, 0.75])
    assert masked[1, [1, 4]].tolist() == pytest.approx([0.75, 0.25])


def test_sink_share_of_one_head():
    rows = np.zeros((1, 2, 12))
    rows[0, 0] = np.array(B) * U
    rows[0, 1] = np.array(B) * U / 2  # head 1 gives the sinks half as much
    t = _trace(B, rows=rows)
    assert t.sinks(3).tolist() == [0, 1, 7]
    assert t.sink_share(3, 1).tolist() == pytest.approx([(4 + 128 + 16) * U / 2])
    assert t.sink_share(3).tolist() == pytest.approx([(4 + 128 + 16) * U * 3 / 4])


def test_top_positions_of_unsigned_counts_and_the_last_but_one():
    pm = PositionMap.empty(5, 5)
    t = Trace(np.arange(5), 5, list("abcde"), pm, {}, "", "generate", "all", [])
    counts = np.array([0, 5, 3, 9, 1], np.uint8)  # a 0 (negated, still 0) first; position 3, the last but one, kept
    assert [p for p, *_ in t.top_positions(counts, k=3)] == [3, 1, 2]


def test_arrays_of_an_empty_trace():
    t = Trace(np.zeros(0, np.int64), 0, [], PositionMap.empty(0, 0), {}, "", "generate", "all", [])
    out = t.arrays()
    assert out["layers"].dtype == np.int64 and out["layers"].shape == (0,)
    assert out["pieces"].dtype.kind == "U" and out["query_positions"].dtype == np.int64


def test_top_positions_break_ties_by_position():
    """Many tied values (numpy's default sort would order ties arbitrarily beyond 16 elements)."""
    n = 41
    pm = PositionMap.empty(n, n)
    t = Trace(np.arange(n), n, [f"p{i}" for i in range(n)], pm, {}, "", "generate", "all", [])
    values = np.random.default_rng(0).integers(0, 3, n).astype(np.float32)
    top = [p for p, *_ in t.top_positions(values, k=n)]
    want = sorted(range(n - 1), key=lambda i: (-values[i], i))
    assert top == want


def test_sinks_of_equal_strength_keep_their_order():
    """40 outliers of two equal strengths among 260 quiet positions: strongest first, ties by position
    (numpy's default sort orders ties arbitrarily beyond 16 elements)."""
    units = [1] * 300
    strong = list(range(3, 300, 7))[:20]
    medium = [p for p in range(5, 300, 3) if p not in strong][:20]
    for p in strong:
        units[p] = 200
    for p in medium:
        units[p] = 100
    assert _trace(units).sinks(3, max_sinks=41).tolist() == [0, *strong, *sorted(medium)]
