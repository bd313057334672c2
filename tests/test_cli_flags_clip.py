"""``vizkit clip-gradcam``'s ``--method`` (every CAM method), ``--target-layer``, ``--layout`` and
``--overwrite`` against pytorch-grad-cam (issue 28): the reference explains the zoo CLIP's image
encoder at the named layer toward ``logit_scale * cos(image, text)`` of the most similar text,
written out here; the CLI's overlay must be that heatmap's overlay, and not the overlay of the
automatic layer (or, for ``--layout nhwc``, of the channels-first reading), so the check can fail."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM

from vizkit import render, zoo
from vizkit.cli import main

REFERENCE = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
}
TEXTS = ["a red circle", "a blue square", "a green star"]
AUTO = {"shapes_clip_cnn": "visual.trunk.layer4", "shapes_clip": "visual.trunk.blocks.2"}


class ImageEncoder(torch.nn.Module):
    def __init__(self, clip: torch.nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(x)


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """What ``--layout nhwc`` reads: ``[B, h, w, C]`` -> ``[B, C, h, w]``."""
    return t.permute(0, 3, 1, 2)


def tokens_on(grid: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Patch tokens ``[B, h*w, C]`` (the zoo ViT pools by average: no CLS token) -> ``[B, C, h, w]``."""
    return lambda t: t.reshape(t.shape[0], *grid, t.shape[-1]).permute(0, 3, 1, 2)


def reference(model: str, image: np.ndarray, layer: str, method: str, reshape=None) -> tuple[np.ndarray, int]:
    """pytorch-grad-cam's heatmap ``[S, S]`` toward the most similar text, and that text's index."""
    bundle = zoo.load(model)
    clip = bundle.model.eval()
    x = bundle.preprocess(image)[None]
    with torch.no_grad():
        text = F.normalize(clip.encode_text(bundle.tokenizer(TEXTS)), dim=-1)
        scale = float(clip.logit_scale.exp())
        target = int((F.normalize(clip.encode_image(x), dim=-1) @ text.T).argmax())
    module = dict(clip.named_modules())[layer]
    with REFERENCE[method](model=ImageEncoder(clip), target_layers=[module], reshape_transform=reshape) as cam:
        cam.batch_size = 64
        heat = cam(input_tensor=x, targets=[lambda out: scale * F.normalize(out, dim=-1) @ text[target]])
    return heat[0], target


def overlay_pixels(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    display = render.display_crop(Image.fromarray(image), heat.shape[-1])
    return (np.clip(render.overlay(display, heat), 0, 1) * 255).round().astype(np.int16)


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
    assert np.abs(written - overlay_pixels(image, other)).max() > 40


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
