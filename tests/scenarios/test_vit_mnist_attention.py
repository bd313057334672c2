"""Scenario 2 plumbing: parameters, run folders, report, the visualizer and the widget explorer."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from vizkit.metrics.chance import uniform_attention_distance
from vizkit.models import SimpleViT
from vizkit.notebook import ParameterError, baseline
from vizkit.report import Report, markdown_table
from vizkit.runs import run_folder
from vizkit.scenarios.vit_mnist_attention import (
    AttentionVisualizer,
    check_notebook_parameters,
    head_table,
    layer_summary,
    observations,
    parse_index_list,
    rollout_agreement,
    top_patch,
)

DEFAULTS = dict(
    model="mnist_vit",
    model_config="",
    num_samples=8,
    statistics_images=1000,
    selection="one_per_class",
    indices=[],
    layers="all",
    heads="all",
    head_layer=-1,
    head_fusion="mean",
    output_dir="",
    overwrite=False,
    interactive=True,
    seed=0,
    device="cpu",
)


def namespace(**overrides):
    ns = {"torch": torch, "vizkit": object()}
    before = baseline(ns)
    ns.update(DEFAULTS)
    ns.update(overrides)
    return ns, before


def test_parameters_accept_the_defaults():
    ns, before = namespace()
    assert check_notebook_parameters(ns, before) == DEFAULTS


def test_unknown_parameter_is_named_with_a_suggestion():
    ns, before = namespace(num_sample=3)
    with pytest.raises(ParameterError, match=r"unknown parameter 'num_sample' \(did you mean num_samples\?\)"):
        check_notebook_parameters(ns, before)


@pytest.mark.parametrize(
    "override, message",
    [
        ({"num_samples": 0}, "num_samples=0: must be positive"),
        ({"num_samples": "3"}, "num_samples='3': expected int, got str"),
        ({"statistics_images": 0}, "statistics_images=0: must be in 1..10000"),
        ({"head_fusion": "median"}, "head_fusion='median': choose one of 'mean', 'max', 'min'"),
        ({"interactive": 1}, "interactive=1: expected bool, got int"),
        ({"layers": "first"}, "layers='first': use 'all'"),
        ({"selection": "indices"}, "needs a non-empty indices list"),
        ({"model": "/tmp/my.pth"}, "also set model_config"),
    ],
)
def test_invalid_values(override, message):
    ns, before = namespace(**override)
    with pytest.raises(ParameterError, match=re.escape(message)):
        check_notebook_parameters(ns, before)


def test_every_problem_is_listed_at_once():
    ns, before = namespace(num_samples=-1, head_fusion="sum", colour="red")
    with pytest.raises(ParameterError) as err:
        check_notebook_parameters(ns, before)
    assert str(err.value).count("\n  - ") == 3


def test_parse_index_list():
    assert parse_index_list("0, 2,5") == [0, 2, 5]
    assert parse_index_list("all") == "all" and parse_index_list("last_4") == "last_4"
    assert parse_index_list([1, 3]) == [1, 3]


def test_run_folder(tmp_path):
    a = run_folder(None, "nb", root=tmp_path)
    b = run_folder("", "nb", root=tmp_path)
    assert a != b and a.parent == tmp_path and a.name.endswith("-nb") and a.is_dir()
    (a / "x.png").write_text("x")
    with pytest.raises(ParameterError, match=r"is not empty \(it holds an earlier run\)"):
        run_folder(a, "nb")
    assert run_folder(a, "nb", overwrite=True) == a and (a / "x.png").exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(ParameterError, match="is a file"):
        run_folder(tmp_path / "file", "nb")


def test_report_markdown(tmp_path):
    df = pd.DataFrame({"max": [0.5, 0.25], "entropy": [1.0, 2.0]}, index=pd.Index([1, 2], name="layer"))
    assert markdown_table(df) == (
        "| layer | max | entropy |\n|---|---|---|\n| 1 | 0.5000 | 1.0000 |\n| 2 | 0.2500 | 2.0000 |"
    )
    rep = (
        Report("T")
        .heading("Params")
        .parameters({"seed": 0})
        .figure(tmp_path / "figs" / "a.png", "a", relative_to=tmp_path)
    )
    path = rep.write(tmp_path / "r.md")
    text = path.read_text()
    assert text.startswith("# T\n") and "| seed | 0 |" in text and "![a](figs/a.png)" in text
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.fixture(scope="module")
def visualizer(tmp_path_factory):
    torch.manual_seed(0)
    v = AttentionVisualizer(SimpleViT().eval(), device="cpu", output_dir=tmp_path_factory.mktemp("run"))
    v.analyze(v.get_test_samples(4))
    return v


def test_one_per_class_selection(visualizer):
    from vizkit.zoo.mnist import load_mnist

    _, labels = load_mnist("test")
    assert [int(labels[i]) for i in visualizer.sample_indices] == [0, 1, 2, 3]
    assert visualizer.sample_indices == [int(np.flatnonzero(labels == d)[0]) for d in range(4)]


def test_cache_matches_attention_maps(visualizer):
    c = visualizer.cache
    attn = c.attn.maps["blocks.2"]  # [S, heads, 17, 17]
    np.testing.assert_allclose(c.cls_map(1, 2, head=3), attn[1, 3, 0, 1:].reshape(4, 4).numpy())
    np.testing.assert_allclose(c.cls_map(1, 2, head_fusion="max"), attn[1, :, 0, 1:].amax(0).reshape(4, 4).numpy())
    assert c.relevance.shape == (4, 4, 4)


def test_observations_are_computed_from_the_numbers(visualizer):
    df = visualizer.statistics()
    per_layer = layer_summary(df)
    notes = observations(df, visualizer.cache)
    lo = int(per_layer["entropy"].idxmin())
    assert f"most concentrated in layer {lo} (mean entropy {per_layer.loc[lo, 'entropy']:.3f}" in notes[0]
    assert "uniform attention over the 17 tokens would have 2.833" in notes[0]  # log 17
    (patch,) = [n for n in notes if "patch queries" in n]
    per_head = df.groupby(["layer_index", "head"])["distance"].mean()  # blocks.k is layer k: 0-based both
    li, h = per_head.idxmin()
    assert f"{per_head.min():.2f} patches (layer {li}, head {h}, the most local)" in patch
    assert "against 2.008 for uniform attention" in patch
    (spread,) = [n for n in notes if "spreads over" in n]
    per_head_cls = df.groupby(["layer_index", "head"])["cls_distance"].mean()
    li, h = per_head_cls.idxmin()
    assert f"spreads over {per_head_cls.min():.2f} patches (layer {li}, head {h})" in spread
    assert notes[-1].endswith(f"{rollout_agreement(visualizer.cache):.2f} over the 4 images.")


def test_layers_are_labelled_0_based_by_block_number(visualizer):
    df = visualizer.statistics()
    table = layer_summary(df)
    assert table.index.name == "layer" and list(table.index) == [0, 1, 2, 3, 4, 5]
    assert list(table["module"]) == [f"blocks.{k}" for k in range(6)]  # layer k is blocks.k
    np.testing.assert_allclose(table.loc[4, "entropy"], df.query("layer == 'blocks.4'")["entropy"].mean())
    sub = df[df["layer"].isin(["blocks.1", "blocks.4"])].assign(
        layer_index=lambda d: d["layer_index"].map({1: 0, 4: 1})
    )
    assert list(layer_summary(sub).index) == [1, 4]  # a subset keeps the block numbers, not its positions
    assert list(head_table(sub, visualizer.reference()).index[:5]) == [(1, 0), (1, 1), (1, 2), (1, 3), (4, 0)]


def test_chance_reference_is_uniform_attention(visualizer):
    ref = visualizer.reference()
    for key in ("distance", "cls_distance"):
        assert ref[key] == pytest.approx(uniform_attention_distance((4, 4)), abs=1e-12)
    assert ref["entropy"] == pytest.approx(np.log(17)) and ref["max"] == pytest.approx(1 / 17)
    table = layer_summary(visualizer.statistics(), ref)
    assert table.index[-1] == "uniform (chance)"
    assert table.iloc[-1][["max", "entropy", "cls_distance", "distance"]].tolist() == pytest.approx(
        [1 / 17, np.log(17), 2.0080, 2.0080], abs=1e-4
    )


def test_cls_distance_of_the_cache_by_hand(visualizer):
    """The statistics' CLS-row distance is the distance between two patches drawn from the cached CLS map."""
    df = visualizer.statistics()
    cls_map = visualizer.cache.cls_map(2, 3, head=1).astype(np.float64)  # [4, 4] CLS row of sample 2, blocks.3
    p = cls_map.ravel() / cls_map.sum()
    pos = np.array([(r, c) for r in range(4) for c in range(4)], float)
    d = np.sqrt(((pos[:, None] - pos[None]) ** 2).sum(-1))
    row = df.query("sample == 2 and layer == 'blocks.3' and head == 1").iloc[0]
    assert row["cls_distance"] == pytest.approx(float(p @ d @ p), abs=1e-6)


def test_top_patch_by_hand(visualizer):
    cache = visualizer.cache
    table = top_patch(cache)
    assert list(table.index[:5]) == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0)] and len(table) == 24
    tops = cache.attn.maps["blocks.3"][:, 2, 0, 1:].argmax(-1).tolist()  # [4] peak patch of each sample
    patch = max(sorted(set(tops)), key=tops.count)
    row = table.loc[(3, 2)]
    assert (row["row"], row["col"]) == divmod(patch, 4) and row["share"] == tops.count(patch) / 4


def test_head_table_flags_heads_at_chance():
    uniform = uniform_attention_distance((4, 4))
    df = pd.DataFrame(
        {
            "sample": [0, 0, 0],
            "layer": ["blocks.2"] * 3,
            "layer_index": [0, 0, 0],
            "head": [0, 1, 2],
            "max": [0.5, 0.5, 0.5],
            "entropy": [1.0, 1.0, 1.0],
            "cls_distance": [0.5, uniform - 0.05, 0.5],
            "distance": [uniform + 0.1, 1.5, uniform - 0.11],
        }
    )
    ref = {"max": 1 / 17, "entropy": np.log(17), "cls_distance": uniform, "distance": uniform}
    table = head_table(df, ref)
    assert list(table.index) == [(2, 0), (2, 1), (2, 2)]
    assert table["flag"].tolist() == ["patch queries at chance", "CLS row at chance", ""]
    assert head_table(df, ref, margin=0.2)["flag"].tolist()[2] == "patch queries at chance"


def test_statistics_over_more_images(visualizer):
    from vizkit.zoo.mnist import load_mnist

    _, labels = load_mnist("test")
    cache = visualizer.analyze_statistics(64)
    try:
        assert cache.relevance is None and cache.labels.tolist() == [int(v) for v in labels[:64]]
        df = visualizer.statistics()
        assert df["sample"].nunique() == 64 and len(df) == 64 * 6 * 4
        with pytest.raises(Exception, match=r"num_images must be in 1..10000, got 0"):
            visualizer.analyze_statistics(0)
    finally:
        visualizer.statistics_cache = None


def test_seed_api_files(visualizer):
    image, label = visualizer.get_test_samples(4)[2]
    visualizer.analyze(visualizer.get_test_samples(4))
    out = visualizer.output_dir
    paths = [
        visualizer.visualize_attention_patterns(image, label, 2),
        visualizer.analyze_attention_heads(image, label, 2, heads=[0, 1]),
        visualizer.create_layer_comparison(image, label, 2),
        visualizer.create_attention_statistics(),
    ]
    assert [p.name for p in paths] == [
        "attention_pattern_sample_2.png",
        "attention_heads_sample_2.png",
        "layer_comparison_sample_2.png",
        "attention_statistics.png",
    ]
    assert all(p.parent == out and p.stat().st_size > 5000 for p in paths)


def test_widget_explorer_redraws_from_cache_without_forward(visualizer):
    from vizkit.scenarios.vit_mnist_attention import AttentionExplorer

    calls = []
    handle = visualizer.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        ex = AttentionExplorer(visualizer.cache)
        from vizkit.widgets import describe_controls

        assert describe_controls(ex.controls) == list(ex.CONTROLS)
        assert ex.head.label == "fused"  # shown as "fused", not as an empty box
        first = ex.drawn.copy()
        # the drawn maps by hand from the captured attention [S, heads, 17, 17] (CLS row over a 4 x 4 grid)
        attn = [visualizer.cache.attn.maps[n] for n in visualizer.cache.layers]
        assert ex.layer.value == 5 and "layer 5, mean of heads" in ex.title()  # 0-based: the last of blocks.0..5
        ex.layer.value = 1
        assert not np.allclose(ex.drawn, first)
        np.testing.assert_allclose(ex.drawn, attn[1][0, :, 0, 1:].mean(0).reshape(4, 4).numpy(), rtol=1e-6)
        ex.head.value = 3
        np.testing.assert_allclose(ex.drawn, attn[1][0, 3, 0, 1:].reshape(4, 4).numpy())
        assert ex.title().endswith("layer 1, head 3") and ex.head.label == "head 3"
        ex.sample.value = 3
        np.testing.assert_allclose(ex.drawn, attn[1][3, 3, 0, 1:].reshape(4, 4).numpy())
        ex.view.value = "rollout"
        ex.fusion.value = "min"
        r = torch.eye(17)  # rollout: heads' min, (A + I) / 2 renormalised per row, R = A_l R
        for a in attn:
            a = (a[3].amin(0) + torch.eye(17)) / 2
            r = (a / a.sum(-1, keepdim=True)) @ r
        np.testing.assert_allclose(ex.drawn, r[0, 1:].reshape(4, 4).numpy(), rtol=1e-5)
        assert "sample 3" in ex.title() and ex.draws == 6
    finally:
        handle.remove()
    assert calls == []
