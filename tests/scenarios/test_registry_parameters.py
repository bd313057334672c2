"""The notebook-parameter helpers of vizkit.scenarios.registry: a layers parameter checked and
parsed, a comma-separated list of choices checked."""

from __future__ import annotations

import pytest

from vizkit.scenarios.registry import choices_ok, layers_ok, parse_layers

LAYERS_HINT = "use last, last_4, all, block indices such as -4,-3,-2,-1, or module names"


@pytest.mark.parametrize(
    "value, problem",
    [
        ("last", None),
        (" ALL ", None),
        ("last_4", None),
        ("-4,-3,-2,-1", None),
        ("0, 11", None),
        ("encoder.layers.3,backbone.x", None),
        ("blocks.2", None),
        ([-2, -1], None),
        (["blocks.1", 3], None),
        ("first", LAYERS_HINT),
        ("-4,head", LAYERS_HINT),
        ([], "a non-empty list of block indices or names"),
        ([True], "a non-empty list of block indices or names"),
        ([1.5], "a non-empty list of block indices or names"),
    ],
)
def test_layers_ok(value, problem):
    assert layers_ok(value) == problem


def test_parse_layers():
    assert parse_layers("-4,-3, -2") == [-4, -3, -2]
    assert parse_layers(" Last_4 ") == "last_4" and parse_layers("ALL") == "all" and parse_layers("last") == "last"
    assert parse_layers("encoder.layers.1, -1") == ["encoder.layers.1", -1]
    layers = (-2, "blocks.1")
    assert parse_layers(layers) == [-2, "blocks.1"] and parse_layers([0]) == [0]


def test_choices_ok():
    check = choices_ok(("last_layer", "all_layers"), "layer mode")
    assert check("last_layer, all_layers") is None and check("") is None and check("last_layer,") is None
    assert check("first,last_layer,x") == "unknown layer mode(s) first, x: choose from last_layer, all_layers"
