"""Scenario 3's report and figures on the zoo detector (issue 30): the worst mistakes and the sample
comparisons show the layer this run's own pointing game ranks best; every title's p(fake) is the
number samples.csv lists; the chance levels equal :mod:`vizkit.metrics.chance` on the run's masks
and a random map's ROAD; report.md defines AUC, EER, AP and the threshold, keys "layer k" to the
modules, and names which method x layer wins by which score (issue 29)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from vizkit.evaluate import faithfulness_record
from vizkit.metrics import pointing_chance
from vizkit.scenarios import detector_gradcam_eval as dge
from vizkit.scenarios import detector_gradcam_report as report_module

PERCENTILES = (30.0, 70.0)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run on 20 zoo faces with faithfulness on the first 4, its figure calls recorded (and drawn as usual)."""
    calls: dict[str, list] = {"comparison": [], "worst": []}
    real_comparison, real_worst = report_module.comparison_figure, report_module.worst_mistakes_figure

    def comparison(*args, **kwargs):
        calls["comparison"].append((args, kwargs))
        return real_comparison(*args, **kwargs)

    def worst(*args, **kwargs):
        calls["worst"].append((args, kwargs))
        return real_worst(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report_module, "comparison_figure", comparison)
        mp.setattr(report_module, "worst_mistakes_figure", worst)
        summary = dge.run_evaluation(
            tmp_path_factory.mktemp("n3") / "run",
            max_samples=20,
            batch_size=10,
            gradcam_samples=3,
            faithfulness=True,
            road_percentiles=PERCENTILES,
            faithfulness_samples=4,
        )
    return summary, calls


def test_figures_show_the_layer_the_run_ranks_best(run):
    summary, calls = run
    loc = summary.localization
    rows = loc[loc["method"] == "gradcam"]
    best = rows.loc[rows["pointing_game"].idxmax(), "layer"]
    ((args, kwargs),) = calls["worst"]
    assert kwargs["shown"] == best and args[4] == "gradcam"
    assert kwargs["why"] == f"the best pointing game of this run: {rows['pointing_game'].max():.0%} of the fakes"
    for _, kwargs in calls["comparison"]:
        assert kwargs["scores"] == dict(zip(rows["layer"], rows["pointing_game"]))
    text = summary.report.read_text()
    assert (
        f"chosen because it has this run's best pointing game ({rows['pointing_game'].max():.0%} of the fakes)" in text
    )


def test_titles_and_metadata_show_p_fake_as_samples_csv_lists_it(run):
    summary, calls = run
    samples = pd.read_csv(summary.run_dir / "samples.csv")
    assert len(calls["comparison"]) == len(samples) >= 1  # the wrong predictions among the 20, up to 3
    for (args, kwargs), (_, s) in zip(calls["comparison"], samples.iterrows()):
        title = args[2]
        assert title.startswith(f"{s['sample']} (#{s['index']}): ") and f"p(fake) = {s['prob']:.3f}" in title
        meta = (summary.run_dir / s["sample"] / f"{s['sample']}_metadata.txt").read_text().splitlines()
        assert meta[-1] == f"Fake probability p(fake): {s['prob']:.4f}"
        has_mask = kwargs["mask"] is not None
        assert has_mask == bool(s["label"])  # the fakes of the zoo set have masks, the reals none


def test_chance_levels_equal_the_chance_functions(run):
    summary, _ = run
    ds = dge.run_dataset(summary.run_dir)
    size = (summary.metrics["input_size"],) * 2
    fakes = [i for i in range(len(ds)) if ds.items[i].label == 1 and ds.mask(i, size) is not None]
    masks = torch.from_numpy(np.stack([ds.mask(i, size) for i in fakes]))
    chance = summary.metrics["chance"]
    assert chance["pointing_game"] == pytest.approx(float(pointing_chance(masks).mean()), abs=1e-6)
    assert chance["energy_in_mask"] == chance["pointing_game"]
    assert chance["pointing_game_tol1"] == pytest.approx(float(pointing_chance(masks, 1).mean()), abs=1e-6)
    # ROAD of a uniform random map per image, the chunk index seeding it: chunk 0's 4 scored images by a direct call
    ctx = dge.evaluation_context(dge.EvalArgs(max_samples=20, batch_size=10), "cpu")
    images, ok, _ = ds.read_images(range(4), ctx.detector.read)
    x = torch.stack([ctx.detector.preprocess(im) for im in images])
    maps = torch.rand(4, *x.shape[-2:], generator=torch.Generator().manual_seed(0))
    direct = faithfulness_record(ctx.detector.model, x, maps, ok, 1, percentiles=PERCENTILES)
    stored = json.loads((summary.run_dir / "chunks" / "00000.json").read_text())["faithfulness_chance"]
    assert stored == direct
    assert "faithfulness_chance" not in json.loads((summary.run_dir / "chunks" / "00001.json").read_text())
    assert (summary.localization["images"] == 4).all()  # faithfulness_samples: the first 4 images only


def test_report_defines_the_metrics_and_flags_chance(run):
    summary, _ = run
    text = summary.report.read_text()
    for term in ("**AUC** (area under the ROC curve)", "**EER** (equal error rate)", "**AP** (average precision)"):
        assert term in text
    assert "**threshold**" in text and "| metric | value | chance | vs chance |" in text
    assert f"| AP | {summary.metrics['ap']:.4f} | {summary.metrics['fake'] / summary.metrics['samples']:.4f} |" in text
    assert "| layer 3 | encoder.layers.3.layer_norm1 | backbone.encoder.layers.3.layer_norm1 |" in text
    assert "| random map | chance |" in text and "at or below chance" in text
    assert "randomisation_spearman" in text and "road_combined (higher is better) picks **" in text
    assert summary.metrics["randomisation_images"] == 4
    assert set(summary.metrics["randomisation"]) == {
        f"{m}|{layer}" for m in ("gradcam", "gradcam++") for layer in [*summary.metrics["layers"], "all layers"]
    }


def test_run_pointing_chance_reads_the_masks_again(run):
    summary, _ = run
    chance = summary.metrics["chance"]
    assert dge.run_pointing_chance(summary.run_dir) == pytest.approx(chance["pointing_game"], abs=1e-6)
    assert dge.run_pointing_chance(summary.run_dir, 1) == pytest.approx(chance["pointing_game_tol1"], abs=1e-6)
    assert dge.run_pointing_chance(summary.run_dir, 2) > chance["pointing_game_tol1"]  # a wider mask is hit more
