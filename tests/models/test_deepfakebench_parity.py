"""Scenarios 1 and 3 on a user's own DeepfakeBench files: the probabilities that
``vizkit detector-attention``, ``vizkit detector-gradcam`` and ``vizkit evaluate`` report equal a
DeepfakeBench-style forward (OpenCV read, ``INTER_CUBIC`` to the YAML's resolution, ToTensor,
the YAML's Normalize, then its detector) within 1e-4, on 224 px and 256 px frames.

The configs are DeepfakeBench's ``training/config/detector/clip.yaml`` / ``xception.yaml`` as
published (one key changed where a test needs it, said so); the state dicts are laid out as its
``CLIPDetector`` / ``XceptionDetector`` save them (``backbone.*`` + ``head.*`` /
``backbone.*``, with and without DataParallel's ``module.``), random weights.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vizkit.cli import main

# DeepfakeBench's training/config/detector/clip.yaml and xception.yaml, verbatim
CONFIGS = Path(__file__).resolve().parent / "deepfakebench_configs"
CLIP_YAML = (CONFIGS / "clip.yaml").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- DeepfakeBench's side
def clip_backbone(hidden: int, heads: int, layers: int = 1, patch: int = 16, image: int = 224) -> torch.nn.Module:
    """DeepfakeBench's backbone: ``CLIPModel(...).vision_model`` (its get_clip_visual), random."""
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        vision_config=dict(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            image_size=image,
            patch_size=patch,
        ),
        text_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64
        ),
        projection_dim=16,
    )
    return CLIPModel(cfg).vision_model.eval()


class DFBClipDetector(torch.nn.Module):
    """The module layout DeepfakeBench's CLIPDetector saves: ``backbone`` + ``head = Linear(hidden, 2)``."""

    def __init__(self, backbone: torch.nn.Module, hidden: int):
        super().__init__()
        self.backbone, self.head = backbone, torch.nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)["pooler_output"])


def dfb_inputs(paths, resolution: int, mean=(0.5,) * 3, std=(0.5,) * 3) -> torch.Tensor:
    """DeepfakeBench's test transform: cv2.imread, BGR->RGB, cv2.resize INTER_CUBIC, ToTensor, Normalize."""
    xs = []
    for p in paths:
        img = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        img = cv2.resize(img, (resolution, resolution), interpolation=cv2.INTER_CUBIC)
        x = torch.from_numpy(img.transpose(2, 0, 1).copy()).float().div(255)
        xs.append((x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])
    return torch.stack(xs)


@torch.no_grad()
def dfb_fake_probs(model: torch.nn.Module, paths, resolution: int) -> dict[str, float]:
    probs = torch.softmax(model(dfb_inputs(paths, resolution)), 1)[:, 1]
    return {Path(p).stem: float(v) for p, v in zip(paths, probs)}


def write_frames(folder: Path, seed: int = 0) -> list[Path]:
    """Face-crop-like PNG frames as DeepfakeBench stores them: 256 px (resized to 224 by CLIP),
    224 px (as is), a grey PNG and an RGBA PNG (cv2.imread makes both 3 channels)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, shape in (
        ("frame256", (256, 256, 3)),
        ("frame224", (224, 224, 3)),
        ("grey256", (256, 256)),
        ("rgba256", (256, 256, 4)),
    ):
        base = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (0, 0), 3)
        img = np.clip(base.astype(np.int16) * 2 - 128 + rng.integers(-20, 21, shape), 0, 255).astype(np.uint8)
        if len(shape) == 3 and shape[2] == 4:
            img[..., 3] = rng.integers(0, 256, shape[:2], dtype=np.uint8)  # alpha must be ignored, not composited
        path = folder / f"{name}.png"
        cv2.imwrite(str(path), img)
        out.append(path)
    return out


def save_dfb_clip(
    tmp_path: Path, hidden: int, heads: int, prefix: str = "", patch: int = 16, seed: int = 0
) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(seed)
    det = DFBClipDetector(clip_backbone(hidden, heads, patch=patch), hidden).eval()
    sd = {f"{prefix}{k}": v for k, v in det.state_dict().items()}
    assert any(k.startswith(f"{prefix}backbone.embeddings.") for k in sd)  # DeepfakeBench's own key layout
    path = tmp_path / f"ckpt_best_{hidden}{prefix.strip('.')}.pth"
    torch.save(sd, path)
    return det, path


# --------------------------------------------------------------------------- vizkit's side
def run(argv: list[str]) -> None:
    rc = main(argv)
    assert rc == 0, argv


def attention_probs(out: Path, stems) -> dict[str, float]:
    return {s: json.loads((out / f"{s}.json").read_text())["probabilities"][1] for s in stems}


def gradcam_probs(out: Path, stems) -> dict[str, float]:
    return {s: json.loads((out / f"{s}.json").read_text())["fake_probability"] for s in stems}


def evaluate_probs(out: Path) -> dict[str, float]:
    with open(out / "predictions.csv", newline="") as f:
        return {Path(r["path"]).stem: float(r["fake_probability"]) for r in csv.DictReader(f)}


def assert_close(got: dict[str, float], want: dict[str, float], tol: float = 1e-4) -> None:
    assert set(got) == set(want)
    diffs = {k: abs(got[k] - want[k]) for k in want}
    assert max(diffs.values()) <= tol, diffs


def dataset_folder(tmp_path: Path, frames: list[Path]) -> Path:
    root = tmp_path / "testset"
    for i, f in enumerate(frames):
        sub = root / ("real" if i % 2 == 0 else "fake")
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f.name).write_bytes(f.read_bytes())
    return root


@pytest.mark.parametrize("prefix", ["", "module."])
def test_clip_b16_verbatim_yaml_three_clis(tmp_path, prefix):
    """clip.yaml verbatim (resolution 224, mean = std = 0.5), a ViT-B width (768: 12 heads, told by
    no one) one-block detector; frames of 256 px and 224 px, grey and RGBA."""
    det, weights = save_dfb_clip(tmp_path, 768, 12, prefix)
    yaml_path = tmp_path / "clip.yaml"
    yaml_path.write_text(CLIP_YAML)
    frames = write_frames(tmp_path / "frames")
    want = dfb_fake_probs(det, frames, 224)
    assert max(want.values()) - min(want.values()) > 1e-3  # the frames are told apart: the check can fail
    stems = [f.stem for f in frames]

    run(
        [
            "detector-attention",
            "--model-config",
            str(yaml_path),
            "--weights",
            str(weights),
            "--image-path",
            str(tmp_path / "frames"),
            "--output-dir",
            str(tmp_path / "att"),
            "--cpu",
        ]
    )
    assert_close(attention_probs(tmp_path / "att", stems), want)
    run(
        [
            "detector-gradcam",
            "--config",
            str(yaml_path),
            "--weights",
            str(weights),
            "--input",
            str(tmp_path / "frames"),
            "--output",
            str(tmp_path / "gc"),
            "--cpu",
        ]
    )
    assert_close(gradcam_probs(tmp_path / "gc", stems), want)
    run(
        [
            "evaluate",
            "--detector_path",
            str(yaml_path),
            "--weights_path",
            str(weights),
            "--test_dataset",
            str(dataset_folder(tmp_path, frames)),
            "--gradcam_enabled",
            "--gradcam_samples",
            "2",
            "--gradcam_output_dir",
            str(tmp_path / "eval"),
            "--cpu",
        ]
    )
    assert_close(evaluate_probs(tmp_path / "eval"), want)


def test_clip_non_64_head_size_needs_and_takes_the_count(tmp_path, capsys):
    """Width 96 with 3 heads of 32: the weights cannot tell; without a count every CLI stops with
    one message, with --num-heads (or the YAML's num_heads) the probabilities match."""
    det, weights = save_dfb_clip(tmp_path, 96, 3, "module.", patch=32)
    yaml_path = tmp_path / "clip.yaml"
    yaml_path.write_text(CLIP_YAML)
    frames = write_frames(tmp_path / "frames", seed=1)
    want = dfb_fake_probs(det, frames, 224)
    stems = [f.stem for f in frames]
    rc = main(
        [
            "detector-gradcam",
            "--config",
            str(yaml_path),
            "--weights",
            str(weights),
            "--input",
            str(frames[0]),
            "--output",
            str(tmp_path / "no"),
            "--cpu",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "cannot tell the number of attention heads: hidden size 96" in err and "--num-heads" in err
    assert not (tmp_path / "no").exists()
    run(
        [
            "detector-gradcam",
            "--config",
            str(yaml_path),
            "--weights",
            str(weights),
            "--num-heads",
            "3",
            "--input",
            str(tmp_path / "frames"),
            "--output",
            str(tmp_path / "gc"),
            "--cpu",
        ]
    )
    assert_close(gradcam_probs(tmp_path / "gc", stems), want)
    run(
        [
            "detector-attention",
            "--model-config",
            str(yaml_path),
            "--weights",
            str(weights),
            "--num-heads",
            "3",
            "--image-path",
            str(tmp_path / "frames"),
            "--output-dir",
            str(tmp_path / "att"),
            "--cpu",
        ]
    )
    assert_close(attention_probs(tmp_path / "att", stems), want)
    (tmp_path / "clip3.yaml").write_text(CLIP_YAML + "num_heads: 3\n")
    run(
        [
            "evaluate",
            "--detector_path",
            str(tmp_path / "clip3.yaml"),
            "--weights_path",
            str(weights),
            "--test_dataset",
            str(dataset_folder(tmp_path, frames)),
            "--gradcam_output_dir",
            str(tmp_path / "eval"),
            "--cpu",
        ]
    )
    assert_close(evaluate_probs(tmp_path / "eval"), want)


def test_clip_vit_h_width_gets_16_heads(tmp_path):
    """ViT-H/14's width (1280 = 16 heads of 80): hidden / 64 would give 20 heads and wrong numbers."""
    det, weights = save_dfb_clip(tmp_path, 1280, 16, patch=32)
    yaml_path = tmp_path / "clip.yaml"
    yaml_path.write_text(CLIP_YAML)
    frames = write_frames(tmp_path / "frames", seed=2)[:2]
    for f in write_frames(tmp_path / "frames", seed=2)[2:]:
        f.unlink()
    run(
        [
            "detector-gradcam",
            "--config",
            str(yaml_path),
            "--weights",
            str(weights),
            "--input",
            str(tmp_path / "frames"),
            "--output",
            str(tmp_path / "gc"),
            "--cpu",
        ]
    )
    assert_close(gradcam_probs(tmp_path / "gc", [f.stem for f in frames]), dfb_fake_probs(det, frames, 224))


def test_shallow_detector_default_layers_use_the_blocks_that_exist(tmp_path, capsys):
    """The seed's default (the last 4 blocks) on a one-block detector: all its blocks, said in the
    output, not refused; an explicit layer beyond the model is still an error."""
    det, weights = save_dfb_clip(tmp_path, 768, 12)
    yaml_path = tmp_path / "clip.yaml"
    yaml_path.write_text(CLIP_YAML)
    frames = write_frames(tmp_path / "frames", seed=3)[:1]
    run(
        [
            "detector-attention",
            "--model-config",
            str(yaml_path),
            "--weights",
            str(weights),
            "--image-path",
            str(frames[0]),
            "--output-dir",
            str(tmp_path / "att"),
            "--cpu",
        ]
    )
    assert "has 1 transformer block(s), fewer than the default's 4" in capsys.readouterr().err
    side = json.loads((tmp_path / "att" / f"{frames[0].stem}.json").read_text())
    assert side["layers"] == ["backbone.encoder.layers.0"] and "fewer than the default's 4" in side["layers_note"]
    assert "fewer than the default's 4" in (tmp_path / "att" / "attention_report.md").read_text()
    rc = main(
        [
            "detector-attention",
            "--model-config",
            str(yaml_path),
            "--weights",
            str(weights),
            "--image-path",
            str(frames[0]),
            "--output-dir",
            str(tmp_path / "att2"),
            "--target-layers",
            "-2",
            "--cpu",
        ]
    )
    assert rc == 2


XCEPTION_YAML = (CONFIGS / "xception.yaml").read_text(encoding="utf-8")


def test_xception_verbatim_yaml_detector_gradcam_and_evaluate(tmp_path):
    """xception.yaml verbatim (resolution 256) and an XceptionDetector state dict saved under
    DataParallel; the reference is an independent functional forward of DeepfakeBench's Xception
    (tests/test_deepfakebench_cnn.py). Grad-CAM's default layer is the last convolutional block."""
    from test_deepfakebench_cnn import random_deepfakebench_xception, reference_logits

    sd = random_deepfakebench_xception(seed=3)
    weights = tmp_path / "ckpt_best.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, weights)
    yaml_path = tmp_path / "xception.yaml"
    yaml_path.write_text(XCEPTION_YAML)
    frames = write_frames(tmp_path / "frames", seed=4)
    with torch.no_grad():
        probs = torch.softmax(reference_logits(sd, dfb_inputs(frames, 256)), 1)[:, 1]
    want = {f.stem: float(p) for f, p in zip(frames, probs)}
    assert max(want.values()) - min(want.values()) > 1e-3
    stems = [f.stem for f in frames]
    run(
        [
            "detector-gradcam",
            "--config",
            str(yaml_path),
            "--weights",
            str(weights),
            "--input",
            str(tmp_path / "frames"),
            "--output",
            str(tmp_path / "gc"),
            "--cpu",
        ]
    )
    assert_close(gradcam_probs(tmp_path / "gc", stems), want)
    side = json.loads((tmp_path / "gc" / f"{stems[0]}.json").read_text())
    assert side["layers"] == {"bn4": "bn4"}
    run(
        [
            "evaluate",
            "--detector_path",
            str(yaml_path),
            "--weights_path",
            str(weights),
            "--test_dataset",
            str(dataset_folder(tmp_path, frames)),
            "--gradcam_enabled",
            "--gradcam_samples",
            "1",
            "--gradcam_output_dir",
            str(tmp_path / "eval"),
            "--cpu",
        ]
    )
    assert_close(evaluate_probs(tmp_path / "eval"), want)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["layers"] == ["bn4"]
