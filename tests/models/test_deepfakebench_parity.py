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

import pytest
import torch
from deepfakebench import (
    CLIP_YAML,
    XCEPTION_YAML,
    dfb_fake_probs,
    dfb_inputs,
    random_deepfakebench_xception,
    reference_logits,
    save_dfb_clip,
    write_frames,
)

from vizkit.cli import main


# --------------------------------------------------------------------------- vizkit's side
def run(argv: list[str]) -> None:
    rc = main(argv)
    assert rc == 0, argv


# each command's own flag names for: the DeepfakeBench YAML, the weights, the input, the output folder
CLI_FLAGS = {
    "detector-attention": ("--model-config", "--weights", "--image-path", "--output-dir"),
    "detector-gradcam": ("--config", "--weights", "--input", "--output"),
    "evaluate": ("--detector_path", "--weights_path", "--test_dataset", "--gradcam_output_dir"),
}


def cli(command: str, config: Path, weights: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """``vizkit COMMAND`` on ``data`` (an image, a folder, or evaluate's real/fake folder), on the CPU."""
    flags = [x for flag, value in zip(CLI_FLAGS[command], (config, weights, data, out)) for x in (flag, str(value))]
    return [command, *flags, *extra, "--cpu"]


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


def clip_yaml(tmp_path: Path) -> Path:
    yaml_path = tmp_path / "clip.yaml"
    yaml_path.write_text(CLIP_YAML)
    return yaml_path


@pytest.mark.parametrize("prefix", ["", "module."])
def test_clip_b16_verbatim_yaml_three_clis(tmp_path, prefix):
    """clip.yaml verbatim (resolution 224, mean = std = 0.5), a ViT-B width (768: 12 heads, told by
    no one) one-block detector; frames of 256 px and 224 px, grey and RGBA."""
    det, weights = save_dfb_clip(tmp_path, 768, 12, prefix)
    yaml_path = clip_yaml(tmp_path)
    frames = write_frames(tmp_path / "frames")
    want = dfb_fake_probs(det, frames, 224)
    assert max(want.values()) - min(want.values()) > 1e-3  # the frames are told apart: the check can fail
    stems = [f.stem for f in frames]

    run(cli("detector-attention", yaml_path, weights, tmp_path / "frames", tmp_path / "att"))
    assert_close(attention_probs(tmp_path / "att", stems), want)
    run(cli("detector-gradcam", yaml_path, weights, tmp_path / "frames", tmp_path / "gc"))
    assert_close(gradcam_probs(tmp_path / "gc", stems), want)
    dataset = dataset_folder(tmp_path, frames)
    run(cli("evaluate", yaml_path, weights, dataset, tmp_path / "eval", "--gradcam_enabled", "--gradcam_samples", "2"))
    assert_close(evaluate_probs(tmp_path / "eval"), want)


def test_clip_non_64_head_size_needs_and_takes_the_count(tmp_path, capsys):
    """Width 96 with 3 heads of 32: the weights cannot tell; without a count every CLI stops with
    one message, with --num-heads (or the YAML's num_heads) the probabilities match."""
    det, weights = save_dfb_clip(tmp_path, 96, 3, "module.", patch=32)
    yaml_path = clip_yaml(tmp_path)
    frames = write_frames(tmp_path / "frames", seed=1)
    want = dfb_fake_probs(det, frames, 224)
    stems = [f.stem for f in frames]
    rc = main(cli("detector-gradcam", yaml_path, weights, frames[0], tmp_path / "no"))
    err = capsys.readouterr().err
    assert rc == 2 and "cannot tell the number of attention heads: hidden size 96" in err and "--num-heads" in err
    assert not (tmp_path / "no").exists()
    run(cli("detector-gradcam", yaml_path, weights, tmp_path / "frames", tmp_path / "gc", "--num-heads", "3"))
    assert_close(gradcam_probs(tmp_path / "gc", stems), want)
    run(cli("detector-attention", yaml_path, weights, tmp_path / "frames", tmp_path / "att", "--num-heads", "3"))
    assert_close(attention_probs(tmp_path / "att", stems), want)
    (tmp_path / "clip3.yaml").write_text(CLIP_YAML + "num_heads: 3\n")
    run(cli("evaluate", tmp_path / "clip3.yaml", weights, dataset_folder(tmp_path, frames), tmp_path / "eval"))
    assert_close(evaluate_probs(tmp_path / "eval"), want)


def test_clip_vit_h_width_gets_16_heads(tmp_path):
    """ViT-H/14's width (1280 = 16 heads of 80): hidden / 64 would give 20 heads and wrong numbers."""
    det, weights = save_dfb_clip(tmp_path, 1280, 16, patch=32)
    yaml_path = clip_yaml(tmp_path)
    frames = write_frames(tmp_path / "frames", seed=2)[:2]
    for f in write_frames(tmp_path / "frames", seed=2)[2:]:
        f.unlink()
    run(cli("detector-gradcam", yaml_path, weights, tmp_path / "frames", tmp_path / "gc"))
    assert_close(gradcam_probs(tmp_path / "gc", [f.stem for f in frames]), dfb_fake_probs(det, frames, 224))


def test_shallow_detector_default_layers_use_the_blocks_that_exist(tmp_path, capsys):
    """The seed's default (the last 4 blocks) on a one-block detector: all its blocks, said in the
    output, not refused; an explicit layer beyond the model is still an error."""
    det, weights = save_dfb_clip(tmp_path, 768, 12)
    yaml_path = clip_yaml(tmp_path)
    frames = write_frames(tmp_path / "frames", seed=3)[:1]
    run(cli("detector-attention", yaml_path, weights, frames[0], tmp_path / "att"))
    assert "has 1 transformer block(s), fewer than the default's 4" in capsys.readouterr().err
    side = json.loads((tmp_path / "att" / f"{frames[0].stem}.json").read_text())
    assert side["layers"] == ["backbone.encoder.layers.0"] and "fewer than the default's 4" in side["layers_note"]
    assert "fewer than the default's 4" in (tmp_path / "att" / "attention_report.md").read_text()
    rc = main(cli("detector-attention", yaml_path, weights, frames[0], tmp_path / "att2", "--target-layers", "-2"))
    assert rc == 2


def test_xception_verbatim_yaml_detector_gradcam_and_evaluate(tmp_path):
    """xception.yaml verbatim (resolution 256) and an XceptionDetector state dict saved under
    DataParallel; the reference is an independent functional forward of DeepfakeBench's Xception
    (tests/helpers/deepfakebench.py). Grad-CAM's default layer is the last convolutional block."""
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
    run(cli("detector-gradcam", yaml_path, weights, tmp_path / "frames", tmp_path / "gc"))
    assert_close(gradcam_probs(tmp_path / "gc", stems), want)
    side = json.loads((tmp_path / "gc" / f"{stems[0]}.json").read_text())
    assert side["layers"] == {"bn4": "bn4"}
    dataset = dataset_folder(tmp_path, frames)
    run(cli("evaluate", yaml_path, weights, dataset, tmp_path / "eval", "--gradcam_enabled", "--gradcam_samples", "1"))
    assert_close(evaluate_probs(tmp_path / "eval"), want)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["layers"] == ["bn4"]
