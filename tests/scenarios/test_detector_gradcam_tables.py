"""Scenario 3's tables as a reader sees them: the detection metrics beside their chance levels (AP's
is the share of fakes), the localisation table's chance row and flags (hand-computed), the layer a
figure shows chosen by the table's own best score, the layer key and the metric-winners sentence."""

from __future__ import annotations

import pandas as pd
import pytest

from vizkit.models.detector_layers import LayerInfo
from vizkit.scenarios.detector_gradcam_tables import (
    METRIC_DEFINITIONS,
    errors_at_threshold,
    faithfulness_sentence,
    layer_key,
    layer_scores,
    metrics_with_chance,
    score_table,
    shown_layer,
)


def _loc():
    # the numbers of the notebook's run on the zoo detector (gradcam rows), two gradcam++ rows
    return pd.DataFrame(
        {
            "layer": [f"encoder.layers.{i}.layer_norm1" for i in range(4)] + ["all layers"] * 2,
            "method": ["gradcam"] * 5 + ["gradcam++"],
            "fakes": [100] * 6,
            "pointing_game": [0.18, 0.18, 0.00, 0.93, 0.36, 0.37],
            "energy_in_mask": [0.073, 0.063, 0.014, 0.634, 0.091, 0.125],
        }
    )


def test_metrics_beside_their_chance_levels():
    m = {"auc": 0.9767, "accuracy": 0.92, "eer": 0.1, "ap": 0.9808, "video_auc": None, "samples": 40, "fake": 10}
    t = metrics_with_chance(m).set_index("metric")
    assert t.loc["AUC", "chance"] == 0.5 and t.loc["EER", "chance"] == 0.5
    assert t.loc["AP", "chance"] == 0.25  # 10 fakes of 40
    assert t.loc["accuracy", "chance"] == 0.75  # the larger class: 30 reals of 40
    assert t.loc["video AUC", "value"] == "n/a" and t.loc["video AUC", "vs chance"] == ""
    assert (t["vs chance"] == "").all()
    bad = metrics_with_chance({**m, "auc": 0.505, "eer": 0.495, "ap": 0.2}).set_index("metric")["vs chance"]
    assert bad.to_dict() == {"AUC": "≤ chance", "accuracy": "", "EER": "≤ chance", "AP": "≤ chance", "video AUC": ""}
    text = " ".join(METRIC_DEFINITIONS)
    for term in ("**AUC**", "**EER**", "**AP**", "**threshold**", "**accuracy**"):
        assert term in text


def test_score_table_chance_row_and_flags():
    chance = {"pointing_game": 0.066, "energy_in_mask": 0.066}
    t = score_table(_loc(), chance, randomisation={"gradcam|encoder.layers.3.layer_norm1": 0.04})
    assert t["layer"].tolist()[:-1] == [
        "layer 0",
        "layer 1",
        "layer 2",
        "layer 3",
        "layers combined",
        "layers combined",
    ]
    last = t.iloc[-1]
    assert (last["layer"], last["method"], last["fakes"]) == ("random map", "chance", "")
    assert last["pointing_game"] == 0.066 and last["energy_in_mask"] == 0.066 and last["randomisation_spearman"] == 0
    # energy 0.073 and 0.063 are within 0.01 of the mask's 6.6 %: at chance; layer 2 is below it on both
    assert t["at or below chance"].tolist()[:5] == [
        "energy_in_mask",
        "energy_in_mask",
        "pointing_game, energy_in_mask",
        "",
        "",
    ]
    assert t.loc[3, "randomisation_spearman"] == 0.04 and pd.isna(t.loc[0, "randomisation_spearman"])
    assert t["fakes"].tolist()[:2] == [100, 100]
    assert "at or below chance" not in score_table(_loc())  # no chance levels known: no flag, no chance row


def test_the_shown_layer_is_the_best_by_the_runs_pointing_game():
    assert shown_layer(_loc(), "gradcam") == ("encoder.layers.3.layer_norm1", 0.93)
    assert shown_layer(_loc(), "gradcam++") == ("all layers", 0.37)
    assert shown_layer(None, "gradcam") is None and shown_layer(_loc(), "xgradcam") is None
    assert layer_scores(_loc(), "gradcam")["all layers"] == 0.36


def test_layer_key_and_sentence():
    key = layer_key([LayerInfo("encoder.layers.3.layer_norm1", "backbone.encoder.layers.3.layer_norm1", "input")])
    assert key.to_dict("records") == [
        {
            "layer": "layer 3",
            "name": "encoder.layers.3.layer_norm1",
            "module": "backbone.encoder.layers.3.layer_norm1",
            "reads": "input",
        }
    ]
    t = score_table(_loc(), {"pointing_game": 0.066, "energy_in_mask": 0.066})
    t["road_morf"] = [0.1, 0.2, 0.3, 0.4, -0.5, 0.0, -9.0]  # the random map's would win: it never does
    sentence = faithfulness_sentence(t)
    assert sentence.startswith("Higher is better for pointing_game, energy_in_mask; lower for road_morf.")
    assert "pointing_game (higher is better) picks **gradcam @ layer 3** (0.93)" in sentence
    assert "road_morf (lower is better) picks **gradcam @ layers combined** (-0.5)" in sentence
    assert sentence.endswith("the metrics disagree: 2 different winners among 3 metrics.")


@pytest.mark.parametrize("missing", ["fake", "samples"])
def test_metrics_without_counts_do_not_divide_by_zero(missing):
    m = {"auc": 0.9, "accuracy": 0.9, "eer": 0.1, "ap": 0.9, "samples": 10, "fake": 5}
    del m[missing]
    assert len(metrics_with_chance(m)) == 5


def test_errors_at_threshold_by_hand():
    preds = pd.DataFrame({"label": [1, 1, 1, 0, 0], "prob": [0.9, 0.4, 0.2, 0.35, 0.6]})
    assert errors_at_threshold(preds) == {"fakes missed": 2, "reals called fake": 1}
    assert errors_at_threshold(preds, 0.3) == {"fakes missed": 1, "reals called fake": 2}
    assert errors_at_threshold(preds, 0.0) == {"fakes missed": 0, "reals called fake": 2}
    with pytest.raises(ValueError, match="threshold must be in"):
        errors_at_threshold(preds, 1.5)
