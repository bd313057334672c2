"""``vizkit evaluate --faithfulness`` (issue 29) on the zoo face_forgery_detector: the per-chunk ROAD and
confidence-change scores equal direct :func:`vizkit.metrics.faithfulness_scores` calls on the same
images and maps, the table averages them, an interrupted run resumes to the same table, a run made
without the flag is refused (then recomputed with --overwrite), a LocalCluster of 2 workers gives
the local result; without the flag nothing changes."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import torch
from daskcluster import subprocess_env

from vizkit.cli import main
from vizkit.errors import ParameterError
from vizkit.evaluate import cam_in_parts, join_score_tables
from vizkit.metrics import FAITHFULNESS_SCORES, faithfulness_scores
from vizkit.scenarios import detector_gradcam_eval as dge
from vizkit.scenarios.detector_gradcam_params import EvalArgs

PERCENTILES = (30.0, 70.0)  # two percentiles keep the test quick; the default is 10 .. 90
KW = dict(max_samples=8, batch_size=4, gradcam_samples=1, table_methods=("gradcam",))
FAITH = dict(KW, faithfulness=True, road_percentiles=PERCENTILES)
CLI = ["--max-samples", "8", "--batch-size", "4", "--gradcam-samples", "1", "--table-methods", "gradcam"]


def _chunk(run, k):
    return json.loads((run / "chunks" / f"{k:05d}.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run with --faithfulness, in this process."""
    out = tmp_path_factory.mktemp("faith") / "run"
    dge.run_evaluation(out, **FAITH)
    return out


def test_chunk_scores_equal_direct_calls_and_the_table_averages_them(reference):
    ctx = dge.evaluation_context(EvalArgs(**FAITH))
    det = ctx.detector
    modules = [i.module for i in ctx.layers]
    parts = []
    for k in range(2):
        stored = _chunk(reference, k)["faithfulness"]
        images, ok, _ = ctx.dataset.read_images(range(4 * k, 4 * k + 4), det.read)
        x = torch.stack([det.preprocess(im) for im in images])
        exp = cam_in_parts(det.model, x, 1, layers=modules, method="gradcam", part_size=2)
        maps = {i.name: exp.layer_heatmaps[i.module] for i in ctx.layers} | {"all layers": exp.heatmap}
        assert list(stored) == ["gradcam"] and list(stored["gradcam"]) == list(maps)
        for layer, heat in maps.items():
            direct = faithfulness_scores(det.model, x, heat, 1, percentiles=PERCENTILES)
            record = stored["gradcam"][layer]
            assert record["index"] == ok == list(range(4 * k, 4 * k + 4))
            for key in FAITHFULNESS_SCORES:
                np.testing.assert_allclose(record[key], direct[key].numpy(), atol=1e-6, err_msg=f"{k} {layer} {key}")
            parts.append((layer, {key: direct[key].numpy() for key in FAITHFULNESS_SCORES}))
    table = pd.read_csv(reference / "localization.csv")
    assert list(table.columns) == [
        "layer",
        "method",
        "fakes",
        "pointing_game",
        "pointing_game_tol1",
        "energy_in_mask",
        "images",
        *FAITHFULNESS_SCORES,
    ]
    assert (table["images"] == 8).all() and len(table) == 5
    for layer, row in table.set_index("layer").iterrows():
        for key in FAITHFULNESS_SCORES:
            mean = np.concatenate([s[key] for name, s in parts if name == layer]).mean()
            assert row[key] == pytest.approx(mean, abs=2e-6), (layer, key)
    metrics = json.loads((reference / "metrics.json").read_text())
    assert set(metrics["faithfulness"]) == {f"gradcam|{layer}" for layer in table["layer"]}
    report = (reference / "report.md").read_text()
    assert "ROAD replaces the most (MoRF)" in report and "road_combined (higher is better) picks **gradcam @" in report


def test_interrupted_run_resumes_to_the_same_table_and_a_run_without_the_flag_is_refused(
    tmp_path, reference, monkeypatch
):
    real, calls = dge.evaluate_chunk, []

    def flaky(ctx, k):
        if calls:
            raise KeyboardInterrupt  # after the first chunk, as Ctrl-C would
        calls.append(k)
        return real(ctx, k)

    monkeypatch.setattr(dge, "evaluate_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        dge.run_evaluation(tmp_path / "resumed", **FAITH)
    assert sorted(p.name for p in (tmp_path / "resumed" / "chunks").iterdir()) == ["00000.json", "00000.npz"]
    monkeypatch.setattr(dge, "evaluate_chunk", lambda ctx, k: calls.append(k) or real(ctx, k))
    dge.run_evaluation(tmp_path / "resumed", **FAITH)
    assert calls == [0, 1]  # only the missing chunk was computed
    for name in ("localization.csv", "metrics.json"):
        assert (tmp_path / "resumed" / name).read_text() == (reference / name).read_text(), name

    # a run made without --faithfulness: unchanged outputs, then refused with the flag, recomputed with --overwrite
    plain = dge.run_evaluation(tmp_path / "plain", **KW)
    assert "faithfulness" not in json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert "faithfulness" not in _chunk(tmp_path / "plain", 0)
    assert "road_morf" not in plain.localization and "faithfulness" not in plain.metrics
    with pytest.raises(ParameterError, match="evaluated without --faithfulness.*pass --overwrite"):
        dge.run_evaluation(tmp_path / "plain", **FAITH)
    dge.run_evaluation(tmp_path / "plain", **FAITH, overwrite=True)
    assert (tmp_path / "plain" / "localization.csv").read_text() == (reference / "localization.csv").read_text()


def test_the_cli_on_a_local_cluster_of_two_workers_equals_the_local_run(tmp_path, reference, monkeypatch):
    for key, value in subprocess_env().items():  # the spawned workers import this checkout's vizkit
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    argv = ["evaluate", "--output-dir", str(tmp_path / "run"), *CLI, "--faithfulness", "--road-percentiles", "30", "70"]
    assert main([*argv, "--workers", "2"]) == 0
    for k in range(2):
        assert _chunk(tmp_path / "run", k) == _chunk(reference, k)
    for name in ("localization.csv", "metrics.json"):
        assert (tmp_path / "run" / name).read_text() == (reference / name).read_text(), name


def test_join_score_tables_keeps_the_left_order_and_adds_the_right_rows():
    left = pd.DataFrame({"layer": ["b", "a"], "method": ["m", "m"], "hit": [1.0, 0.0]})
    right = pd.DataFrame({"layer": ["a", "c"], "method": ["m", "m"], "road": [0.5, 0.25]})
    joined = join_score_tables(left, right)
    assert joined["layer"].tolist() == ["b", "a", "c"]
    assert joined["road"].tolist()[1:] == [0.5, 0.25] and np.isnan(joined["road"][0]) and np.isnan(joined["hit"][2])
    assert join_score_tables(None, right) is right and join_score_tables(None, None) is None


def test_bad_faithfulness_arguments_fail_before_any_work(tmp_path):
    with pytest.raises(ParameterError, match="road-percentiles"):
        dge.run_evaluation(tmp_path / "a", **dict(FAITH, road_percentiles=(0, 50)))
    with pytest.raises(ParameterError, match="needs --gradcam_enabled"):
        dge.run_evaluation(tmp_path / "b", **FAITH, gradcam_enabled=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert "faithfulness" not in EvalArgs().manifest(dge.resolve_test_set("zoo:face_forgery", {}, 4), [])


def test_metric_winners_reads_the_sentence_off_a_hand_made_table():
    from vizkit.errors import InputError
    from vizkit.report import metric_winners

    table = pd.DataFrame(
        {
            "method": ["gradcam", "gradcam++", "random map"],
            "layer": ["3", "all layers", "-"],
            "pointing_game": [0.6, 0.4, 0.9],
            "road_morf": [0.2, 0.1, -1.0],
            "road_combined": [0.3, float("nan"), 5.0],
        }
    )
    scores = {"pointing_game": "higher", "road_morf": "lower", "road_combined": "higher", "absent": "higher"}
    text = metric_winners(table, ["method", "layer"], scores, exclude=("random map @ -",))
    assert text == (
        "By pointing_game (higher is better) picks **gradcam @ 3** (0.6); road_morf (lower is better) picks "
        "**gradcam++ @ all layers** (0.1); road_combined (higher is better) picks **gradcam @ 3** (0.3)"
        " — the metrics disagree: 2 different winners among 3 metrics."
    )
    agree = metric_winners(table.iloc[:1], "method", {"pointing_game": "higher", "road_combined": "higher"})
    assert agree.endswith("all 2 metric(s) agree on **gradcam**.")
    assert metric_winners(table, "method", {"absent": "lower"}) == ""
    with pytest.raises(InputError, match="direction"):
        metric_winners(table, "method", {"road_morf": "smaller"})
