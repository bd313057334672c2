"""Metric cards (:mod:`vizkit.metrics.card`) on a tiny CNN: every score of a card row equals the metric
function called directly with the same settings, for the defaults and for settings that change every
field of :class:`CardSettings`; the record, the Markdown table and its formatting on hand-built rows.

(The zoo's ``card`` command is compared with direct calls in ``tests/zoo/test_cards.py``, a slow test;
these cases are fast, so ``make mutation`` runs them against every change of ``card.py``.)"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from card_reference import per_class
from models import tiny_cnn
from torch import nn

from vizkit.errors import InputError
from vizkit.metrics import (
    confidence_change,
    deletion_auc,
    energy_pointing_game,
    insertion_auc,
    parameter_randomisation,
    pointing_game,
    road_curves,
)
from vizkit.metrics.card import (
    CARD_METRICS,
    CARD_READING,
    CardSettings,
    MethodCard,
    card_markdown,
    card_record,
    map_scores,
    method_card,
    normalise_maps,
    random_card,
    randomisation_scores,
)
from vizkit.metrics.randomisation import map_similarity
from vizkit.targets import as_target

# every field away from its default
OTHER = CardSettings(
    percentiles=(30.0, 70.0),
    noise=0.05,
    seed=3,
    deletion_steps=5,
    randomisation_samples=2,
    similarity="spearman_signed",
    batch_size=3,
)


def _model() -> nn.Module:
    return tiny_cnn(3, in_channels=1, widths=(3, 3), pool=2)


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 1, 8, 8, generator=g)
    masks = torch.rand(3, 8, 8, generator=g) > 0.6
    return x, torch.tensor([0, 2, 0]), masks


def _explain(model: nn.Module, inputs: torch.Tensor, targets) -> torch.Tensor:
    """Gradient x input of each image's class, summed over channels: ``[B, H, W]``, signed."""
    x = inputs.clone().requires_grad_(True)
    out = model(x)
    as_target(targets, len(inputs), out)(out).sum().backward()
    return (x.grad * x).sum(1).detach()


def _direct(model, x, maps, targets, masks, s: CardSettings) -> dict[str, torch.Tensor]:
    """The card's per-image scores computed by hand from the metric functions."""
    kw = dict(percentiles=s.percentiles, noise=s.noise, seed=s.seed)
    with torch.no_grad():
        curves = road_curves(model, x, maps, targets, **kw)
        change = confidence_change(model, x, maps, targets)
        out = {
            "deletion_auc": per_class(deletion_auc, model, x, maps, targets, s.deletion_steps),
            "insertion_auc": per_class(insertion_auc, model, x, maps, targets, s.deletion_steps),
            "road_morf": curves["morf"].mean(1),
            "road_lerf": curves["lerf"].mean(1),
            "road_combined": (curves["lerf"].mean(1) - curves["morf"].mean(1)) / 2,
            "confidence_drop": change.drop,
            "confidence_increase": change.increase,
        }
    if masks is not None:
        out["pointing_game"] = pointing_game(maps, masks).float()
        out["energy_in_mask"] = energy_pointing_game(maps, masks).float()
    return out


def test_normalise_maps_by_hand():
    maps = torch.tensor([[[0.0, 2.0], [4.0, 1.0]], [[5.0, 5.0], [5.0, 5.0]], [[-2.0, 0.0], [2.0, -1.0]]])
    expected = torch.tensor([[[0.0, 0.5], [1.0, 0.25]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.5], [1.0, 0.25]]])
    got = normalise_maps(maps.double())
    assert got.dtype == torch.float32 and torch.equal(got, expected)
    narrow = torch.tensor([[[0.25, 0.5], [0.375, 0.25]]])  # a range under 1 is stretched to [0, 1] too
    assert normalise_maps(narrow).tolist() == [[[0.0, 1.0], [0.5, 0.0]]]
    with pytest.raises(InputError, match=r"maps must be \[B, H, W\], got \(2, 2\)"):
        normalise_maps(maps[0])


@pytest.mark.parametrize("settings", [CardSettings(), OTHER], ids=["defaults", "every-setting-changed"])
def test_map_scores_equal_the_metric_functions(settings):
    model = _model()
    x, targets, masks = _data()
    raw = _explain(model, x, targets)
    got = map_scores(model, x, raw, targets, masks=masks, settings=settings)
    want = _direct(model, x, normalise_maps(raw), targets, masks, settings)
    assert set(got) == set(want)
    for key, value in want.items():
        assert got[key].dtype == torch.float32 and got[key].shape == (3,)
        torch.testing.assert_close(got[key], value.float(), atol=1e-5, rtol=0, msg=key)
    # normalise=False scores the maps as given; without masks there is no pointing / energy
    plain = map_scores(model, x, raw, targets, settings=settings, normalise=False)
    assert "pointing_game" not in plain and "energy_in_mask" not in plain
    want = _direct(model, x, raw, targets, None, settings)
    for key, value in want.items():
        torch.testing.assert_close(plain[key], value.float(), atol=1e-5, rtol=0, msg=key)


def test_map_scores_bad_shapes():
    model = _model()
    x, targets, _ = _data()
    maps = torch.rand(3, 8, 8)
    for args in ((x[0], maps, targets), (x, maps[:, :4], targets), (x, maps, targets[:2])):
        with pytest.raises(InputError, match=r"expected inputs \[B, C, H, W\], maps \[B, H, W\] and targets \[B\]"):
            map_scores(model, *args)


@pytest.mark.parametrize("settings", [CardSettings(), OTHER], ids=["defaults", "every-setting-changed"])
def test_method_card_row(settings):
    model = _model()
    x, targets, masks = _data()
    card = method_card(model, x, _explain, targets, method="grad x input", masks=masks, settings=settings)
    assert card.method == "grad x input"
    want = _direct(model, x, normalise_maps(_explain(model, x, targets)), targets, masks, settings)
    for key, value in want.items():
        assert card.scores[key] == pytest.approx(float(value.mean()), abs=1e-5), key
        assert card.per_sample[key] == pytest.approx(value.tolist(), abs=1e-5), key
    k = min(settings.randomisation_samples, 3)
    steps = parameter_randomisation(
        model, x[:k], _explain, targets[:k], cascade=True, similarity=settings.similarity, seed=settings.seed
    )
    sims = torch.stack([s.float() for _, s in steps])
    assert sims.shape == (len(steps), k)
    assert card.randomisation_layers == [name for name, _ in steps] == ["6", "2", "0"]
    torch.testing.assert_close(torch.tensor(card.randomisation_similarity), sims, atol=1e-6, rtol=0)
    assert card.scores["randomisation_final"] == pytest.approx(float(sims[-1].nanmean()), abs=1e-6)
    assert card.scores["randomisation_mean"] == pytest.approx(float(sims.nanmean(1).nanmean()), abs=1e-6)
    assert card.seconds_per_image == card.scores["seconds_per_image"] and 0 < card.seconds_per_image < 5
    # the cascade put the trained weights back
    fresh = _model()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))


def test_seconds_per_image_time_the_explainer_only(monkeypatch):
    # a clock that only moves when told: the explainer takes 0.3 s, every model forward 1 s. Timing the explainer
    # alone over 3 images gives 0.1 s per image exactly; timing the scores too would add whole seconds.
    import vizkit.metrics.card as card_module

    clock = [100.0]
    monkeypatch.setattr(card_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    model = _model()
    model.register_forward_hook(lambda *_: clock.__setitem__(0, clock[0] + 1.0))
    x, targets, _ = _data()
    maps = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2))

    def slow(m, i, t):
        clock[0] += 0.3
        return maps

    card = method_card(model, x, slow, targets, method="slow", randomisation=False)
    assert card.seconds_per_image == pytest.approx(0.1, abs=1e-9)
    assert clock[0] > 101.3  # the scores did run the model


def test_method_card_without_randomisation_and_a_bad_explainer():
    model = _model()
    x, targets, _ = _data()
    card = method_card(model, x, _explain, targets, method="m", randomisation=False)
    assert card.randomisation_layers == [] and card.randomisation_similarity == []
    assert "randomisation_final" not in card.scores and "randomisation_mean" not in card.scores
    assert "pointing_game" not in card.scores and card.scores["seconds_per_image"] == card.seconds_per_image
    with pytest.raises(InputError, match=r"'flat' must return maps \[B, H, W\], got torch.Size\(\[3, 64\]\)"):
        method_card(model, x, lambda m, i, t: torch.zeros(3, 64), targets, method="flat")
    with pytest.raises(InputError, match="explain for 'none' must return maps"):
        method_card(model, x, lambda m, i, t: None, targets, method="none")


def test_randomisation_scores_take_the_first_samples():
    model = _model()
    x, targets, _ = _data()
    layers, sims = randomisation_scores(model, x, _explain, targets, settings=OTHER)
    steps = parameter_randomisation(model, x[:2], _explain, targets[:2], similarity="spearman_signed", seed=3)
    assert layers == [n for n, _ in steps] and sims.dtype == torch.float32 and sims.shape == (3, 2)
    torch.testing.assert_close(sims, torch.stack([s.float() for _, s in steps]))
    # more samples asked than given: all of them
    _, sims = randomisation_scores(model, x, _explain, targets, settings=CardSettings(randomisation_samples=10))
    assert sims.shape == (3, 3)


@pytest.mark.parametrize(
    "settings",
    [CardSettings(), OTHER, CardSettings(similarity="ssim")],
    ids=["defaults", "every-setting-changed", "ssim"],
)
def test_random_card_is_the_score_of_seeded_uniform_maps(settings):
    model = _model()
    x, targets, masks = _data()
    torch.manual_seed(99)  # the global RNG plays no part
    card = random_card(model, x, targets, masks=masks, settings=settings)
    g = torch.Generator().manual_seed(settings.seed)
    maps = torch.rand(3, 8, 8, generator=g)
    other = torch.rand(3, 8, 8, generator=g)
    want = _direct(model, x, maps, targets, masks, settings)
    assert card.method == "random maps"
    for key, value in want.items():
        assert card.scores[key] == pytest.approx(float(value.mean()), abs=1e-5), key
        assert card.per_sample[key] == pytest.approx(value.tolist(), abs=1e-5), key
    k = min(settings.randomisation_samples, 3)
    sim = float(map_similarity(maps[:k], other[:k], settings.similarity).nanmean())
    assert card.scores["randomisation_final"] == card.scores["randomisation_mean"] == pytest.approx(sim, abs=1e-9)
    assert card.seconds_per_image is None and "seconds_per_image" not in card.scores


def _rows() -> tuple[list[MethodCard], MethodCard]:
    a = MethodCard(
        "a",
        {
            "pointing_game": 0.5,
            "deletion_auc": 0.2,
            "insertion_auc": 0.001,
            "road_morf": float("nan"),
            "seconds_per_image": 0.01,
        },
        {"pointing_game": [0.0, 1.0]},
        ["4", "0"],
        [[0.5, 0.25], [0.1, 0.0]],
        0.01,
    )
    b = MethodCard(
        "b",
        {
            "pointing_game": 0.5,
            "deletion_auc": 0.00005,
            "insertion_auc": 0.9,
            "road_morf": -0.25,
            "seconds_per_image": 0.0002,
        },
        {},
        seconds_per_image=0.0002,
    )
    return [a, b], MethodCard("random maps", {"pointing_game": 0.25, "deletion_auc": 0.0}, {})


def test_card_markdown_table_winners_and_formats():
    cards, baseline = _rows()
    text = card_markdown("toy", cards, baseline, intro=["First.", "Second."])
    lines = text.splitlines()
    assert lines[:6] == ["# Metric card: toy", "", "First.", "", "Second.", ""]
    # columns in CARD_METRICS order, those some row has; arrows for the better direction
    assert lines[6] == "| method | pointing ↑ | deletion AUC ↓ | insertion AUC ↑ | ROAD MoRF ↓ | s / image ↓ |"
    assert lines[7] == "|---|---:|---:|---:|---:|---:|"
    assert lines[8] == "| a | 0.500 | 0.200 | 0.001 | — | 0.010 |"  # NaN is a dash; 1e-3 itself is not scientific
    assert lines[9] == "| b | 0.500 | 5.0e-05 | 0.900 | -0.250 | 2.0e-04 |"  # under 1e-3: scientific
    assert lines[10] == "| random maps | 0.250 | 0.000 | — | — | — |"  # 0 and missing
    assert lines[11] == "" and lines[13] == "" and lines[15] == ""
    # ties are all named, lower-is-better picks the smallest, NaN never wins, timing is not a contest,
    # the random row is not a candidate
    assert lines[12] == (
        "Best method per metric (the metrics do not agree; none of them is the truth): "
        "pointing: a, b; deletion AUC: b; insertion AUC: b; ROAD MoRF: b."
    )
    assert lines[14] == "## How to read this"
    assert lines[16] == CARD_READING
    assert lines[17] == ""
    readings = [line for line in lines if line.startswith("- **")]
    assert readings == [
        f"- **{CARD_METRICS[k].header}**: {CARD_METRICS[k].reading}"
        for k in ("pointing_game", "deletion_auc", "insertion_auc", "road_morf", "seconds_per_image")
    ]
    assert text.endswith(readings[-1] + "\n")


def test_card_markdown_with_no_winner():
    only = MethodCard("x", {"road_lerf": float("nan")}, {})
    text = card_markdown("t", [only], MethodCard("random maps", {"road_lerf": 0.1}, {}))
    lines = text.splitlines()
    assert lines[:2] == ["# Metric card: t", ""] and lines[2] == "| method | ROAD LeRF ↑ |"
    assert "Best method" not in text and lines[7] == "## How to read this"


def test_card_record_fields():
    cards, baseline = _rows()
    record = card_record("toy", cards, baseline, settings=OTHER, meta={"samples": 2})
    assert record["model"] == "toy" and record["meta"] == {"samples": 2}
    assert record["settings"] == {
        "percentiles": [30.0, 70.0],
        "noise": 0.05,
        "seed": 3,
        "deletion_steps": 5,
        "randomisation_samples": 2,
        "similarity": "spearman_signed",
        "batch_size": 3,
    }
    assert list(record["metrics"]) == list(CARD_METRICS)
    assert record["metrics"]["deletion_auc"] == {
        "header": "deletion AUC",
        "better": "lower",
        "reading": CARD_METRICS["deletion_auc"].reading,
    }
    assert list(record["methods"]) == ["a", "b"]
    assert record["methods"]["a"] == {
        "scores": cards[0].scores,
        "per_sample": {"pointing_game": [0.0, 1.0]},
        "randomisation": {"layers": ["4", "0"], "similarity": [[0.5, 0.25], [0.1, 0.0]]},
        "seconds_per_image": 0.01,
    }
    assert record["random_maps"]["scores"] == baseline.scores
    assert record["random_maps"]["seconds_per_image"] is None
    assert math.isnan(record["methods"]["a"]["scores"]["road_morf"])
