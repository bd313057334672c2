"""Metric cards: ``python -m vizkit.zoo card`` on a small model writes numbers equal to direct calls of
the metric functions on the same samples; the card's pure parts on a hand-built case."""

from __future__ import annotations

import json

import pytest
import torch
from card_reference import per_class
from torch import nn

from vizkit.metrics import (
    confidence_change,
    deletion_auc,
    energy_pointing_game,
    insertion_auc,
    parameter_randomisation,
    pointing_game,
    random_map_baseline,
    road,
    road_curves,
)
from vizkit.metrics.card import (
    CARD_METRICS,
    CardSettings,
    MethodCard,
    card_markdown,
    map_scores,
    normalise_maps,
)
from vizkit.zoo import __main__ as cli
from vizkit.zoo.cards import card_task


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_card_command_numbers_equal_direct_metric_calls(tmp_path):
    assert cli.main(["card", "--model", "mnist_vit", "--out", str(tmp_path), "--samples", "4"]) == 0
    record = json.loads((tmp_path / "mnist_vit.json").read_text())
    text = (tmp_path / "mnist_vit.md").read_text()
    assert text.startswith("# Metric card: mnist_vit") and "## How to read this" in text
    task = card_task("mnist_vit", 4)
    model, x, targets, masks = task.model, task.inputs, task.targets, task.masks
    assert record["meta"]["samples"] == 4 and list(record["methods"]) == list(task.methods)
    s = CardSettings()
    kw = dict(percentiles=s.percentiles, noise=s.noise, seed=s.seed)

    def expected(maps):
        with torch.no_grad():
            curves = road_curves(model, x, maps, targets, **kw)
            change = confidence_change(model, x, maps, targets)
            return {
                "pointing_game": pointing_game(maps, masks).float().mean(),
                "energy_in_mask": energy_pointing_game(maps, masks).mean(),
                "deletion_auc": per_class(deletion_auc, model, x, maps, targets, s.deletion_steps).mean(),
                "insertion_auc": per_class(insertion_auc, model, x, maps, targets, s.deletion_steps).mean(),
                "road_morf": curves["morf"].mean(1).mean(),
                "road_lerf": curves["lerf"].mean(1).mean(),
                "road_combined": road(model, x, maps, targets, **kw).mean(),
                "confidence_drop": change.drop.mean(),
                "confidence_increase": change.increase.mean(),
            }

    for method, explain in task.methods.items():
        got = record["methods"][method]["scores"]
        maps = normalise_maps(explain(model, x, targets))
        for key, value in expected(maps).items():
            assert got[key] == pytest.approx(float(value), abs=1e-5), (method, key)
        steps = parameter_randomisation(model, x, explain, targets, similarity=s.similarity, seed=s.seed)
        sims = torch.stack([v for _, v in steps])
        assert got["randomisation_final"] == pytest.approx(float(sims[-1].nanmean()), abs=1e-6)
        assert got["randomisation_mean"] == pytest.approx(float(sims.nanmean(1).nanmean()), abs=1e-6)
        assert record["methods"][method]["randomisation"]["layers"] == [n for n, _ in steps]
        assert got["seconds_per_image"] > 0
    # the random-map row is vizkit.metrics.random_map_baseline's chance level
    rand = record["random_maps"]["scores"]
    torch.manual_seed(123)  # the baseline must not depend on the global RNG
    assert rand["road_combined"] == pytest.approx(
        float(random_map_baseline(road, model, x, targets, **kw).mean()), abs=1e-5
    )
    change = random_map_baseline(confidence_change, model, x, targets, seed=s.seed)
    assert rand["confidence_drop"] == pytest.approx(float(change.drop.mean()), abs=1e-5)
    maps = torch.rand(4, 28, 28, generator=torch.Generator().manual_seed(s.seed))
    assert rand["energy_in_mask"] == pytest.approx(float(energy_pointing_game(maps, masks).mean()), abs=1e-6)
    # every method's row and the random row are in the table
    for name in [*task.methods, "random maps"]:
        assert f"| {name} |" in text


def test_card_command_errors(capsys):
    assert cli.main(["card", "--model", "tiny_vlm"]) == 2
    assert "no metric card for tiny_vlm" in capsys.readouterr().err
    assert cli.main(["card", "--model", "mnist_vit", "--samples", "0"]) == 2


class _Linear(nn.Module):
    """Two classes; class 1's logit is the mean of the top-left 2x2 pixels, class 0's is 0."""

    def forward(self, x):
        score = x[:, 0, :2, :2].mean((1, 2))
        return torch.stack([torch.zeros_like(score), score], 1)


def test_map_scores_and_markdown_on_a_hand_built_case():
    x = torch.zeros(2, 1, 4, 4)
    x[:, :, :2, :2] = 1.0
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, :2, :2] = True
    good = masks.float() * 3 + 1  # the evidence first
    bad = 1 - masks.float()
    targets = torch.tensor([1, 1])
    settings = CardSettings(percentiles=(50,), noise=0.0, deletion_steps=4)
    g = map_scores(_Linear(), x, good, targets, masks=masks, settings=settings)
    b = map_scores(_Linear(), x, bad, targets, masks=masks, settings=settings)
    assert g["pointing_game"].tolist() == [1.0, 1.0] and b["pointing_game"].tolist() == [0.0, 0.0]
    assert g["energy_in_mask"].tolist() == [1.0, 1.0]  # normalised: 0 outside the mask
    # deletion of the top 4 pixels first (1/4 of the image) kills class 1 at step 1: curve [p, 0.5, 0.5, ...]
    assert (g["deletion_auc"] < b["deletion_auc"]).all() and (g["insertion_auc"] > b["insertion_auc"]).all()
    # confidence: x * map keeps the evidence (score 1 -> 1): no drop; the bad map zeroes it: drop 1
    assert g["confidence_drop"].tolist() == [0.0, 0.0] and b["confidence_drop"].tolist() == [1.0, 1.0]
    cards = [
        MethodCard("good", {k: float(v.mean()) for k, v in g.items()}, {}),
        MethodCard("bad", {k: float(v.mean()) for k, v in b.items()}, {}),
    ]
    text = card_markdown("toy", cards, MethodCard("random maps", {"pointing_game": 0.25}, {}), intro=["A toy."])
    assert "| good | 1.000 |" in text and "| random maps | 0.250 | — |" in text
    assert "pointing: good;" in text and f"**{CARD_METRICS['road_lerf'].header}**" in text
