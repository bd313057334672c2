"""vizkit.models.detector_layers: the seed's layer names on a 24-block CLIP detector, what each reads
(layer_table), the default layers by depth, a CNN's automatic layer, and the bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vizkit.errors import ParameterError
from vizkit.models import ClipDetector
from vizkit.models.detector_layers import LayerInfo, default_layers, layer_table, resolve_gradcam_layers


def _clip(layers: int) -> ClipDetector:
    from transformers import CLIPVisionConfig

    torch.manual_seed(0)
    return ClipDetector(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=32,
            num_hidden_layers=layers,
            num_attention_heads=1,
            image_size=16,
            patch_size=8,
        )
    ).eval()


class _CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 6, 3, padding=1)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(torch.relu(self.stem(x)))).mean((2, 3)))


def test_layer_table_of_the_seed_names_on_24_blocks():
    model = _clip(24)
    prefix = next(n for n, _ in model.named_modules() if n.endswith("encoder.layers"))
    infos = resolve_gradcam_layers(model, ["encoder.layers.-1", "encoder.layers.23.mlp", "5", 10])
    table = layer_table(infos)
    assert list(table.columns) == ["layer", "module", "reads"]
    assert table.to_dict("records") == [
        {
            "layer": "encoder.layers.23",
            "module": f"{prefix}.23",
            "reads": "output of the last block (23): zero for a CLS-pooled classifier, no patch token of it reaches "
            "the score; read encoder.layers.23.layer_norm1 instead",
        },
        {"layer": "encoder.layers.23.mlp", "module": f"{prefix}.23.mlp", "reads": "mlp inside block 23"},
        {"layer": "encoder.layers.5", "module": f"{prefix}.5", "reads": "output of block 5 = input of block 6"},
        {"layer": "encoder.layers.10", "module": f"{prefix}.10", "reads": "output of block 10 = input of block 11"},
    ]
    assert layer_table([LayerInfo("x", "m.x", "module m.x")]).values.tolist() == [["x", "m.x", "module m.x"]]


def test_default_layers_by_depth():
    assert default_layers(_clip(24)) == [f"encoder.layers.{i}.layer_norm1" for i in (10, 15, 20, 23)]
    assert default_layers(_clip(3)) == [f"encoder.layers.{i}.layer_norm1" for i in (0, 1, 2)]  # fewer than 4: all
    assert default_layers(_CNN()) == ["auto"]


def test_cnn_auto_layer_is_the_last_convolution():
    infos = resolve_gradcam_layers(_CNN().eval(), ["auto", "stem"], 16)
    assert [(i.name, i.module, i.note) for i in infos] == [
        ("body", "body", "last convolutional block (auto): module body"),
        ("stem", "stem", "module stem"),
    ]


def test_bad_layer_lists():
    model = _clip(6)
    with pytest.raises(ParameterError, match="give at least one layer"):
        resolve_gradcam_layers(model, [])
    with pytest.raises(ParameterError, match="encoder.layers.5, encoder.layers.5 name the same module twice"):
        resolve_gradcam_layers(model, ["encoder.layers.5", 5])
    assert [i.name for i in resolve_gradcam_layers(model, "encoder.layers.-2.layer_norm1")] == [
        "encoder.layers.4.layer_norm1"
    ]  # one name alone
