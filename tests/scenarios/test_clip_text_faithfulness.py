"""Scenario 4's faithfulness table (vizkit.scenarios.clip_text_faithfulness): every row equals the
direct call of the metric it reports, the chance row equals the chance functions, the flags follow
from them, and the sentences read off the table say which method wins by which score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import vizkit
from vizkit import zoo
from vizkit.errors import InputError
from vizkit.metrics import (
    at_or_below_chance,
    energy_pointing_game,
    parameter_randomisation,
    pointing_chance,
    pointing_game,
    random_map_baseline,
    road,
    road_curves,
    top_region_iou,
    top_region_iou_chance,
)
from vizkit.scenarios.clip_text_faithfulness import (
    CHANCE_METRICS,
    CHANCE_ROW,
    TABLE_METRICS,
    TextScores,
    faithfulness_table,
    layer_label,
    scene_batch,
    table_reading,
)
from vizkit.targets import ImageTextSimilarity


@pytest.fixture(scope="module")
def shapes():
    from vizkit.scenarios.clip_text_gradcam import load_clip_model

    adapter = load_clip_model("shapes_clip")
    return adapter, zoo.dataset("shapes_clip", "test")[:6], zoo.load("shapes_clip").class_names


def test_rows_equal_direct_calls_and_the_chance_row_equals_the_chance_functions(shapes, tmp_path):
    adapter, scenes, texts = shapes
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    table = faithfulness_table(
        adapter, scenes, texts, ["gradcam", "eigencam"], road_scenes=4, randomisation_scenes=2, batch_size=4
    )
    assert list(table["method"]) == ["gradcam", "eigencam", CHANCE_ROW]
    assert list(table["module"][:2]) == ["visual.trunk.blocks.2"] * 2 and list(table["scenes"]) == [6, 6, 6]
    # the model is restored after the randomisation cascade, bit for bit
    for k, v in adapter.model.state_dict().items():
        assert torch.equal(v, before[k]), k

    text = adapter.text_features(texts)
    batch = scene_batch(adapter, scenes, texts)
    assert batch.targets.tolist() == [s.label for s in scenes]
    model = TextScores(adapter, text).eval()
    with torch.no_grad():  # the classifier is the similarity the scenario explains
        sims = adapter.logit_scale * torch.nn.functional.normalize(adapter.encode_image(batch.inputs), dim=-1) @ text.T
    torch.testing.assert_close(model(batch.inputs), sims, atol=1e-4, rtol=1e-5)

    def explain(method, x, t):
        target = ImageTextSimilarity(text, t, adapter.logit_scale)
        return vizkit.cam(adapter.model, x, target, method=method, forward=adapter.encode_image).heatmap

    def explainer(method, t):
        return lambda m, xs: explain(method, xs, t)

    for method, row in zip(("gradcam", "eigencam"), table.itertuples()):
        maps = explain(method, batch.inputs, batch.targets)
        assert row.pointing_game == pytest.approx(float(pointing_game(maps, batch.masks).float().mean()))
        assert row.energy_in_mask == pytest.approx(float(energy_pointing_game(maps, batch.masks).mean()), abs=1e-5)
        assert row.top20_iou == pytest.approx(float(top_region_iou(maps, batch.masks.float()).mean()), abs=1e-5)
        x, t = batch.inputs[:4], batch.targets[:4]
        curves = road_curves(model, x, maps[:4], t)  # both orders imputed in one pass, as the table does
        assert row.road_morf == pytest.approx(float(curves["morf"].mean()), abs=1e-5)
        assert row.road_lerf == pytest.approx(float(curves["lerf"].mean()), abs=1e-5)
        assert row.road_combined == pytest.approx(float(road(model, x, maps[:4], t, order="combined").mean()), abs=1e-4)
        steps = parameter_randomisation(model, batch.inputs[:2], explainer(method, batch.targets[:2]))
        assert row.randomisation == pytest.approx(float(steps[-1][1].nanmean()), abs=1e-5)
        assert len(steps) == 25  # every parameterised layer of the image tower, top-down

    chance = table.iloc[-1]
    masks = batch.masks.cpu()
    assert chance["pointing_game"] == pytest.approx(float(pointing_chance(masks).mean()))
    assert chance["energy_in_mask"] == pytest.approx(float(pointing_chance(masks).mean()))
    assert chance["top20_iou"] == pytest.approx(float(top_region_iou_chance(masks, 0.2).mean()))
    assert 0.03 < chance["pointing_game"] < 0.08  # the named shapes cover about 5 % of a scene
    base = random_map_baseline(road, model, batch.inputs[:4], batch.targets[:4], order="combined")
    assert chance["road_combined"] == pytest.approx(float(base.mean()), abs=1e-3)
    assert chance["randomisation"] == 0.0 and chance["below_chance"] == ""
    # the flags follow from the chance row; EigenCAM (blind to the text) misses the object
    for _, row in table.iloc[:2].iterrows():
        expected = [k for k in CHANCE_METRICS if at_or_below_chance(row[k], chance[k], TABLE_METRICS[k] == "higher")]
        assert row["below_chance"] == ", ".join(expected)
    assert "pointing_game" in table.iloc[1]["below_chance"] and "pointing_game" not in table.iloc[0]["below_chance"]

    from vizkit.scenarios.clip_text_gradcam import explain_clip, write_clip_report

    res = explain_clip(adapter, [Image.fromarray(scenes[0].image)], texts, texts)
    text_md = write_clip_report(tmp_path, {"model": "shapes_clip"}, adapter, res, [], table).read_text()
    assert "| eigencam |" in text_md and "| chance |" in text_md and "ROAD" in text_md
    assert "road_combined (higher is better) picks **gradcam**" in text_md
    assert "At or below chance: **eigencam**" in text_md and "not class-discriminative" in text_md


def test_bad_scenes_and_counts(shapes):
    adapter, scenes, texts = shapes
    with pytest.raises(InputError, match="not among the texts"):
        faithfulness_table(adapter, scenes, ["a red circle"], ["gradcam"])
    with pytest.raises(InputError, match="road_scenes"):
        faithfulness_table(adapter, scenes, texts, ["gradcam"], road_scenes=0)
    with pytest.raises(InputError, match="at least one scene"):
        faithfulness_table(adapter, [], texts, ["gradcam"])


def _table(eigencam_pointing: float) -> pd.DataFrame:
    rows = {
        "gradcam": [0.98, 0.56, 0.31, -8.2, 0.3, 4.2, 1.2, 0.21, -0.14],
        "eigencam": [eigencam_pointing, 0.01, 0.01, -1.0, -7.7, -3.3, 8.2, 0.0, 0.59],
        "scorecam": [0.95, 0.5, 0.3, -8.8, -0.1, 4.3, 1.3, 0.23, float("nan")],
        CHANCE_ROW: [0.05, 0.05, 0.04, -0.54, -0.6, -0.03, 7.8, 0.0, 0.0],
    }
    table = pd.DataFrame([{"method": m, **dict(zip(TABLE_METRICS, v))} for m, v in rows.items()])
    chance = table.iloc[-1]
    table["below_chance"] = [
        ", ".join(k for k in CHANCE_METRICS if at_or_below_chance(r[k], chance[k], TABLE_METRICS[k] == "higher"))
        if r["method"] != CHANCE_ROW
        else ""
        for _, r in table.iterrows()
    ]
    return table


def test_table_reading_names_winners_per_score_flags_and_the_eigencam_reason():
    table = _table(0.01)
    columns, winners, flagged, eigen, skipped = table_reading(table)
    assert "chance row" in columns and "0 = the map changed completely" in columns
    # each score names its own winner, and they differ; the chance row never wins
    assert "pointing_game (higher is better) picks **gradcam** (0.98)" in winners
    assert "road_morf (lower is better) picks **scorecam** (-8.8)" in winners
    assert "randomisation (lower is better) picks **gradcam** (-0.14)" in winners
    assert "the metrics disagree" in winners and "chance" not in winners
    assert flagged.startswith("At or below chance: **eigencam** (pointing_game, energy_in_mask, top20_iou, road_lerf")
    assert "1% of the scenes, against 5% for a random pixel" in eigen and "not class-discriminative" in eigen
    assert skipped.startswith("Randomisation not run for scorecam")
    # nothing flagged: no chance sentence, no EigenCAM sentence
    clean = table[table["method"] != "eigencam"].reset_index(drop=True)
    assert len(table_reading(clean)) == 3


def test_layer_label_is_zero_based_for_blocks():
    assert layer_label("visual.trunk.blocks.2") == "layer 2"
    assert layer_label("visual.trunk.blocks.0", with_module=True) == "layer 0 (visual.trunk.blocks.0)"
    assert layer_label("visual.trunk.layer4") == "layer visual.trunk.layer4"
    assert layer_label("visual.trunk.layer4", with_module=True) == "layer visual.trunk.layer4"


def test_text_scores_is_a_classifier_over_the_texts(shapes):
    adapter, scenes, texts = shapes
    model = TextScores(adapter, adapter.text_features(texts[:3]))
    x = scene_batch(adapter, scenes[:2], texts).inputs
    assert model(x).shape == (2, 3)
    assert np.isclose(model.logit_scale, adapter.logit_scale)
