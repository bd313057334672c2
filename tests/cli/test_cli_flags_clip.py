"""``vizkit clip-gradcam``'s ``--method`` (every CAM method), ``--target-layer``, ``--layout`` and
``--overwrite`` against pytorch-grad-cam (issue 28): the reference explains the zoo CLIP's image
encoder at the named layer toward ``logit_scale * cos(image, text)`` of the most similar text
(tests/cam_references.py); the CLI's overlay must be that heatmap's overlay, and not the overlay of the
automatic layer (or, for ``--layout nhwc``, of the channels-first reading), so the check can fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cam_references import channels_last, clip_reference, tokens_on
from PIL import Image

from vizkit import render
from vizkit.cli import main

TEXTS = ["a red circle", "a blue square", "a green star"]
AUTO = {"shapes_clip_cnn": "visual.trunk.layer4", "shapes_clip": "visual.trunk.blocks.2"}


def reference(model: str, image: np.ndarray, layer: str, method: str, reshape=None) -> tuple[np.ndarray, int]:
    """pytorch-grad-cam's heatmap toward the most similar of TEXTS, and its index."""
    return clip_reference(model, image, TEXTS, layer, method, reshape)


def overlay_pixels(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    display = render.display_crop(Image.fromarray(image), heat.shape[-1])
    return (np.clip(render.overlay_to_save(display, heat), 0, 1) * 255).round().astype(np.int16)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> tuple[Path, np.ndarray]:
    from vizkit.zoo.shapes_clip import scenes_with

    image = scenes_with("test", 1, "red circle")[0].image
    path = tmp_path_factory.mktemp("scene") / "scene.png"
    Image.fromarray(image).save(path)
    return path, image


def _clip_gradcam(path: Path, out: Path, *extra: str) -> int:
    return main(["clip-gradcam", "--image-path", str(path), "--class-texts", *TEXTS, "--output-dir", str(out), *extra])


@pytest.mark.parametrize(
    "model, method, layer, layout",
    [
        ("shapes_clip_cnn", "gradcam++", "visual.trunk.layer3", "nchw"),
        ("shapes_clip_cnn", "xgradcam", "visual.trunk.layer3", None),
        ("shapes_clip_cnn", "hirescam", "visual.trunk.layer2", None),
        ("shapes_clip_cnn", "eigencam", "visual.trunk.layer3", None),
        ("shapes_clip_cnn", "scorecam", "visual.trunk.layer3", None),
        ("shapes_clip_cnn", "gradcam", "visual.trunk.layer3", "nhwc"),
        ("shapes_clip", "layercam", "visual.trunk.blocks.1", "tokens"),
    ],
)
def test_method_target_layer_and_layout_against_pytorch_grad_cam(scene, tmp_path, capsys, model, method, layer, layout):
    path, image = scene
    extra = ["--model", model, "--method", method, "--target-layer", layer, "--cpu"]
    assert _clip_gradcam(path, tmp_path / "out", *extra, *(["--layout", layout] if layout else [])) == 0
    assert f"layer: {layer}" in capsys.readouterr().out
    reshape = channels_last if layout == "nhwc" else tokens_on((8, 8)) if model == "shapes_clip" else None
    heat, target = reference(model, image, layer, method, reshape)
    side = json.loads((tmp_path / "out" / "clip_gradcam_scene.json").read_text())
    assert side["layers"] == [layer] and side["method"] == method and side["target"] == target == 0
    written = np.asarray(Image.open(tmp_path / "out" / "clip_gradcam_scene_overlay.png"), np.int16)
    assert np.abs(written - overlay_pixels(image, heat)).max() <= 2
    # what the flags changed: the automatic layer's map (nhwc: the channels-first reading) is another
    other = (
        reference(model, image, layer, method)[0]
        if layout == "nhwc"
        else reference(model, image, AUTO[model], method, reshape)[0]
    )
    # (the same map is within 2 levels; the overlay's opacity follows the map, so low values differ little)
    assert np.abs(written - overlay_pixels(image, other)).max() > 20


def test_overwrite_replaces_a_run_with_another_method(scene, tmp_path, capsys):
    path, image = scene
    out = tmp_path / "out"
    assert _clip_gradcam(path, out, "--model", "shapes_clip_cnn", "--cpu") == 0
    assert _clip_gradcam(path, out, "--model", "shapes_clip_cnn", "--method", "layercam", "--cpu") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _clip_gradcam(path, out, "--model", "shapes_clip_cnn", "--method", "layercam", "--cpu", "--overwrite") == 0
    heat, _ = reference("shapes_clip_cnn", image, AUTO["shapes_clip_cnn"], "layercam")
    written = np.asarray(Image.open(out / "clip_gradcam_scene_overlay.png"), np.int16)
    assert np.abs(written - overlay_pixels(image, heat)).max() <= 2
    assert json.loads((out / "clip_gradcam_scene.json").read_text())["method"] == "layercam"
