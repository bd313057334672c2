"""The flags of ``vizkit detector-attention`` checked against a direct computation (issue 28):
``--head`` (a linear head file beside a Hugging Face CLIPVisionModel folder), ``--aggregation``,
``--head-fusion min``, ``--debug`` and ``--overwrite``. The reference runs the same folder with
eager attention (``output_attentions``), takes each layer's gradient by autograd, and writes the
definitions out: ``Ā = fuse_heads((∇A ⊙ A)⁺)``, the plain mean over layers or Chefer's
``R ← R + Ā R``, the CLS row at the patch grid, min-max normalised, bilinearly resized. The
sidecar's probabilities and its real-vs-fake numbers must equal the reference's
(:mod:`eager_attention`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from deepfakebench import cv2_reference as _cv2_reference
from deepfakebench import write_yaml as _yaml
from eager_attention import class_maps, to_input_size
from PIL import Image

from vizkit.cli import main

SIZE, PATCH, LAYERS, HEADS = 64, 8, 4, 4  # the zoo detector's
MEAN, STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """The zoo face_forgery_detector's CLIP tower saved as an HF CLIPVisionModel folder, its YAML, two
    head files and two zoo test faces (a real and a fake one, at the input size). The second head is
    the trained one times -1000: the logits negate (the predictions swap) and the attention
    gradients grow until Chefer's products ``Ā R`` count (with the trained head's small gradients
    relevance and the plain mean give maps within 4e-4 of each other)."""
    from vizkit import zoo

    root = tmp_path_factory.mktemp("hf_detector")
    det = zoo.load("face_forgery_detector").model
    det.backbone.save_pretrained(root / "hf")
    torch.save({"weight": det.head.weight.detach(), "bias": det.head.bias.detach()}, root / "head.pth")
    torch.save(
        {"weight": -1000 * det.head.weight.detach(), "bias": -1000 * det.head.bias.detach()}, root / "amplified.pth"
    )
    _yaml(root / "det.yaml", resolution=SIZE, mean=MEAN, std=STD)
    (root / "images").mkdir()
    for i, s in enumerate(zoo.dataset("face_forgery_detector", "test")[:2]):
        assert s.image.shape == (SIZE, SIZE, 3) and s.label == i
        Image.fromarray(s.image).save(root / "images" / f"im{i}.png")
    return root


def reference(root: Path, head_file: str, fusion: str, aggregation: str) -> dict[str, np.ndarray]:
    """Probabilities ``[B, 2]`` and the real / fake maps ``[B, SIZE, SIZE]``: the raw maps of
    :func:`eager_attention.class_maps`, min-max normalised, bilinearly resized to the input."""
    from transformers import CLIPVisionModel

    vision = CLIPVisionModel.from_pretrained(root / "hf").eval()
    state = torch.load(root / head_file, weights_only=True)
    head = torch.nn.Linear(*state["weight"].shape[::-1])
    head.load_state_dict(state)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((root / "images").glob("*.png"))]
    x = torch.stack([_cv2_reference(im, SIZE, MEAN, STD) for im in images])
    logits, raw = class_maps(vision, head, x, [0, 1], fusion, aggregation)
    real, fake = to_input_size(raw[0], SIZE), to_input_size(raw[1], SIZE)
    return {"probs": logits.softmax(-1).numpy(), "real": real.numpy(), "fake": fake.numpy()}


def _run(root: Path, out: Path, head_file: str, *extra: str) -> int:
    with pytest.warns(UserWarning, match="has no image processor"):  # the YAML gives the preprocessing
        return main(
            [
                "detector-attention",
                "--model-config",
                str(root / "det.yaml"),
                "--weights",
                str(root / "hf"),
                "--head",
                str(root / head_file),
                "--image-path",
                str(root / "images"),
                "--output-dir",
                str(out),
                "--cpu",
                *extra,
            ]
        )


def numbers(ref: dict[str, np.ndarray]) -> np.ndarray:
    """``[B, 2]``: the sidecar's difference_mean and overlap_mean of the reference maps."""
    real, fake = ref["real"], ref["fake"]
    return np.stack([(fake - real).mean((1, 2)), np.minimum(real, fake).mean((1, 2))], 1)


def _check(out: Path, ref: dict[str, np.ndarray], aggregation: str, fusion: str) -> None:
    for b in range(2):
        side = json.loads((out / f"im{b}.json").read_text())
        assert side["aggregation"] == aggregation and side["head_fusion"] == fusion
        np.testing.assert_allclose(side["probabilities"], ref["probs"][b], atol=1e-5)
        written = [side["comparison"]["difference_mean"], side["comparison"]["overlap_mean"]]
        np.testing.assert_allclose(written, numbers(ref)[b], atol=1e-4)


def test_head_aggregation_head_fusion_debug_and_overwrite(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(folder, out, "head.pth", "--aggregation", "mean", "--head-fusion", "min", "--debug") == 0
    printed = capsys.readouterr().out
    mean_min = reference(folder, "head.pth", "min", "mean")
    _check(out, mean_min, "mean", "min")
    # --debug: the captured blocks, the patch grid, the prefix tokens and the head count, as built here
    blocks = [f"backbone.encoder.layers.{i}" for i in range(LAYERS)]
    assert f"Target layers: {blocks}" in printed and f"Attention weights keys: {blocks}" in printed
    assert f"grid ({SIZE // PATCH}, {SIZE // PATCH}), prefix tokens 1, heads {HEADS}" in printed

    assert (mean_min["probs"].argmax(1) == [0, 1]).all() and mean_min["probs"].min() > 1e-4  # not saturated

    # the same folder, the amplified negated head and Chefer relevance: refused without --overwrite
    assert _run(folder, out, "amplified.pth", "--head-fusion", "min") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _run(folder, out, "amplified.pth", "--head-fusion", "min", "--overwrite") == 0
    assert "Target layers" not in capsys.readouterr().out  # no --debug, no listing
    relevance_min = reference(folder, "amplified.pth", "min", "relevance")
    _check(out, relevance_min, "relevance", "min")
    assert (relevance_min["probs"].argmax(1) == [1, 0]).all()  # the head file is the one used
    # the numbers tell the options apart: with the other aggregation, or the other head fusion, they move
    assert np.abs(numbers(reference(folder, "amplified.pth", "min", "mean")) - numbers(relevance_min)).max() > 1e-3
    assert np.abs(numbers(reference(folder, "head.pth", "mean", "mean")) - numbers(mean_min)).max() > 1e-3
