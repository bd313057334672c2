"""The flags of ``vizkit detector-gradcam`` and ``vizkit evaluate`` that choose what is explained,
each checked against a direct computation (issue 28): the class each ``--target`` names is worked
out here from the logits, the labels and the class names; its Grad-CAM / Grad-CAM++ map is computed
from tensors hooked outside vizkit, weighted by pytorch-grad-cam's own weight functions
(tests/cam_references.py). The CLI's overlays (detector-gradcam) and raw chunk maps (evaluate) must
equal it -- and differ from the map of the other class, so the comparison can fail. Model: the zoo's
face_forgery_detector (4 blocks, 64 px)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cam_references import hooked_vit_cam as hand_cam
from PIL import Image

from vizkit import render
from vizkit.cli import main
from vizkit.runs import chunk_paths
from vizkit.scenarios.detector_gradcam_eval import load_eval_detector

LAYERS = ["encoder.layers.1.layer_norm1", "encoder.layers.3.layer_norm1"]


@pytest.fixture(scope="module")
def det():
    return load_eval_detector()


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """Four zoo test faces (two real, two fake) as PNG files."""
    from vizkit import zoo

    folder = tmp_path_factory.mktemp("faces")
    for i, s in enumerate(zoo.dataset("face_forgery_detector", "test")[:4]):
        Image.fromarray(s.image).save(folder / f"f{i}.png")
    return folder


def logits_of(det, images: list[np.ndarray]) -> torch.Tensor:
    with torch.no_grad():
        return det.model(torch.stack([det.preprocess(im) for im in images]))


def expected_class(target: str, logits: torch.Tensor, label: int, class_names: list[str]) -> int:
    """The class ``--target`` names, from the definitions: the argmax, the class called fake / real,
    or the sample's own label (1 = fake)."""
    if target == "predicted":
        return int(logits.argmax())
    if target == "label":
        return class_names.index("fake" if label == 1 else "real")
    return class_names.index(target)


def overlay_of(det, image: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """The overlay the CLI writes for a raw map, as 8-bit pixels."""
    display = render.display_image(image, det.size)
    return (np.clip(render.overlay(display, raw), 0, 1) * 255).round().astype(np.int16)


def _detector_gradcam(faces: Path, out: Path, *extra: str) -> int:
    return main(["detector-gradcam", "--input", str(faces), "--output", str(out), "--layers", *LAYERS, "--cpu", *extra])


@pytest.mark.parametrize(
    "target, method, layout",
    [("predicted", "gradcam", None), ("fake", "gradcam++", None), ("real", "gradcam", "tokens")],
)
def test_detector_gradcam_target_method_and_layout(det, faces, tmp_path, capsys, target, method, layout):
    """Each image's overlay per layer is the hand map toward the class ``--target`` names, by the
    ``--method``'s weights (``--layout tokens``: the ViT's tokens, as decided without it)."""
    extra = ["--target", target, "--method", method] + (["--layout", layout] if layout else [])
    assert _detector_gradcam(faces, tmp_path / "out", *extra) == 0, capsys.readouterr().err
    files = sorted(faces.glob("*.png"))
    images = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    logits = logits_of(det, images)
    x = torch.stack([det.preprocess(im) for im in images])
    classes = [expected_class(target, logits[b], -1, det.class_names) for b in range(len(files))]
    others = [1 - c for c in classes]
    assert len(set(classes)) == (2 if target == "predicted" else 1)  # the predictions differ: both classes occur
    for layer in LAYERS:
        module = "backbone." + layer
        ours, other = hand_cam(det.model, module, x, classes, method), hand_cam(det.model, module, x, others, method)
        for b, f in enumerate(files):
            written = np.asarray(Image.open(tmp_path / "out" / f"gradcam_{layer}_{f.stem}.png"), np.int16)
            assert np.abs(written - overlay_of(det, images[b], ours[b])).max() <= 3, (layer, f.name)
            assert np.abs(written - overlay_of(det, images[b], other[b])).max() > 40, (layer, f.name)
    for b, f in enumerate(files):
        side = json.loads((tmp_path / "out" / f"{f.stem}.json").read_text())
        p_fake = torch.softmax(logits[b], -1)[det.class_names.index("fake")]
        assert side["target"] == target and side["method"] == method
        assert side["fake_probability"] == pytest.approx(float(p_fake), abs=1e-5)


def test_detector_gradcam_overwrite_replaces_a_run_with_other_options(det, faces, tmp_path, capsys):
    out = tmp_path / "out"
    assert _detector_gradcam(faces, out, "--target", "fake") == 0
    assert _detector_gradcam(faces, out, "--target", "real") == 2
    assert "holds a different run" in capsys.readouterr().err
    assert _detector_gradcam(faces, out, "--target", "real", "--overwrite") == 0
    image = np.asarray(Image.open(faces / "f0.png").convert("RGB"))
    x = det.preprocess(image)[None]
    real = hand_cam(det.model, "backbone." + LAYERS[1], x, [det.class_names.index("real")], "gradcam")[0]
    written = np.asarray(Image.open(out / f"gradcam_{LAYERS[1]}_f0.png"), np.int16)
    assert np.abs(written - overlay_of(det, image, real)).max() <= 3  # the files are the new run's
    assert json.loads((out / "f0.json").read_text())["target"] == "real"


@pytest.mark.parametrize("target, layout", [("fake", None), ("predicted", None), ("real", None), ("label", "tokens")])
def test_evaluate_target_raw_chunk_maps(det, tmp_path, capsys, target, layout):
    """The raw per-layer maps evaluate writes into its chunks are the hand maps toward the class
    ``--target`` names for each sample (``label``: the sample's own label, so both classes occur)."""
    from vizkit import zoo

    out = tmp_path / "run"
    argv = ["evaluate", "--output-dir", str(out), "--max-samples", "6", "--batch-size", "3", "--gradcam-enabled"]
    argv += ["--gradcam-samples", "1", "--table-methods", "gradcam", "--layers", LAYERS[1], "--target", target, "--cpu"]
    assert main(argv + (["--layout", layout] if layout else [])) == 0, capsys.readouterr().err
    samples = zoo.dataset("face_forgery_detector", "test")[:6]
    images, labels = [s.image for s in samples], [int(s.label) for s in samples]
    logits = logits_of(det, images)
    classes = [expected_class(target, logits[i], labels[i], det.class_names) for i in range(6)]
    assert len(set(classes)) == (2 if target in ("label", "predicted") else 1)  # per-sample targets: both occur
    x = torch.stack([det.preprocess(im) for im in images])
    ours = hand_cam(det.model, "backbone." + LAYERS[1], x, classes, "gradcam")
    other = hand_cam(det.model, "backbone." + LAYERS[1], x, [1 - c for c in classes], "gradcam")
    maps, index = [], []
    for k in range(2):
        with np.load(chunk_paths(out, k)[1]) as z:
            maps.append(z[f"gradcam|{LAYERS[1]}"])
            index += z["index"].tolist()
    written = np.concatenate(maps)
    assert index == list(range(6)) and written.shape == ours.shape == (6, 8, 8)
    np.testing.assert_allclose(written, ours, atol=1e-5 * ours.max())
    assert all(np.abs(written[i] - other[i]).max() > 0.1 * ours[i].max() for i in range(6))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["target"] == target and metrics["samples"] == 6
