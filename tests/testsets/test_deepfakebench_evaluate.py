"""``vizkit evaluate`` run as DeepfakeBench's test.py runs: from DeepfakeBench's root, with its
``training/config/test_config.yaml`` (relative ``rgb_dir``, ``dataset_json_folder``,
``label_dict``), its clip.yaml verbatim, a dataset NAME and a JSON in its own nesting with
backslash paths; the frames and labels read, the probabilities (DeepfakeBench's forward, 1e-4),
and a run that failed on missing frames completing once they are added."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from deepfakebench import CLIP_YAML, dfb_inputs, save_dfb_clip

from vizkit.cli import main

TEST_CONFIG = {  # DeepfakeBench's training/config/test_config.yaml, trimmed to the keys a test set needs
    "mode": "test",
    "lmdb": False,
    "rgb_dir": "./datasets/rgb",
    "dataset_json_folder": "preprocessing/dataset_json",
    "label_dict": {"FF-DF": 1, "FF-F2F": 1, "FF-real": 0, "CelebDFv2_real": 0, "CelebDFv2_fake": 1},
}
VIDEOS = {
    ("FF-real", "original_sequences/youtube", "000"): 3,
    ("FF-real", "original_sequences/youtube", "001"): 2,
    ("FF-DF", "manipulated_sequences/Deepfakes", "000_003"): 34,
    ("FF-F2F", "manipulated_sequences/Face2Face", "001_870"): 2,
}


def build_root(root: Path) -> tuple[dict[str, int], dict[str, str]]:
    """A DeepfakeBench root: frames (256 px PNG, c23 and c40), FaceForensics++.json written with
    backslashes, frames listed in reverse; returns the frames DeepfakeBench selects (relative
    path -> label) and their videos."""
    rng = np.random.default_rng(0)
    data: dict = {"FaceForensics++": {}}
    selected: dict[str, int] = {}
    videos: dict[str, str] = {}
    for (label, where, video), n in VIDEOS.items():
        for c in ("c23", "c40"):
            frames = []
            for f in range(n):
                rel = f"FaceForensics++/{where}/{c}/frames/{video}/{f:03d}.png"
                path = root / "datasets" / "rgb" / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                img = cv2.GaussianBlur(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8), (0, 0), 2)
                cv2.imwrite(str(path), img)
                frames.append(rel.replace("/", "\\"))
                if c == "c23" and f < 32:  # DeepfakeBench's frame_num test: 32, by frame number
                    selected[rel] = TEST_CONFIG["label_dict"][label]
                    videos[rel] = f"{label}_{video}"
            node = data["FaceForensics++"].setdefault(label, {"train": {}, "val": {}, "test": {}})
            node["test"].setdefault(c, {})[video] = {"label": label, "frames": frames[::-1]}
            node["train"].setdefault(c, {})
    (root / "preprocessing" / "dataset_json").mkdir(parents=True)
    (root / "preprocessing" / "dataset_json" / "FaceForensics++.json").write_text(json.dumps(data))
    (root / "training" / "config" / "detector").mkdir(parents=True)
    (root / "training" / "config" / "test_config.yaml").write_text(yaml.safe_dump(TEST_CONFIG))
    (root / "training" / "config" / "detector" / "clip.yaml").write_text(CLIP_YAML)
    return selected, videos


def rel(path: str) -> str:
    """A path read by vizkit, relative to the working directory (DeepfakeBench's root)."""
    return os.path.normpath(os.path.relpath(path) if os.path.isabs(path) else path)


def predictions(out: Path) -> dict[str, float]:
    with open(out / "predictions.csv", newline="") as f:
        return {rel(r["path"]): float(r["fake_probability"]) for r in csv.DictReader(f)}


@pytest.fixture
def dfb_root(tmp_path, monkeypatch):
    root = tmp_path / "DeepfakeBench"
    root.mkdir()
    selected, videos = build_root(root)
    det, weights = save_dfb_clip(tmp_path, 768, 12, "module.")
    monkeypatch.chdir(root)
    return root, selected, videos, det, weights


def argv(weights: Path, out: str, *extra: str) -> list[str]:
    return [
        "evaluate",
        "--detector_path",
        "training/config/detector/clip.yaml",
        "--weights_path",
        str(weights),
        "--gradcam_output_dir",
        out,
        "--batch-size",
        "8",
        "--cpu",
        *extra,
    ]


def test_deepfakebench_dataset_name_from_its_root(dfb_root, capsys):
    root, selected, videos, det, weights = dfb_root
    # clip.yaml's own test_dataset list names FaceForensics++ first: no --test_dataset needed
    assert main(argv(weights, "out")) == 0
    got = predictions(root / "out")
    want_paths = {os.path.normpath(os.path.join("datasets/rgb", rel)): label for rel, label in selected.items()}
    assert set(got) == set(want_paths)  # 3 + 2 + 32 (of 34, by number) + 2 frames, c23
    assert len(got) == 39
    with open(root / "out" / "predictions.csv", newline="") as f:
        labels = {rel(r["path"]): int(r["label"]) for r in csv.DictReader(f)}
    assert labels == want_paths
    with torch.no_grad():
        probs = torch.softmax(det(dfb_inputs([root / p for p in want_paths], 224)), 1)[:, 1]
    ref = dict(zip(want_paths, probs.tolist()))
    diffs = {p: abs(got_p - ref[p]) for p, got_p in got.items()}
    assert max(diffs.values()) <= 1e-4, diffs
    metrics = json.loads((root / "out" / "metrics.json").read_text())
    assert (metrics["samples"], metrics["videos"], metrics["dataset"]) == (39, 4, "FaceForensics++")
    # FaceForensics++_c40 reads the c40 frames (the 34-frame video keeps 32 of them)
    assert main(argv(weights, "out40", "--test_dataset", "FaceForensics++_c40")) == 0
    got40 = predictions(root / "out40")
    assert len(got40) == 39 and all("/c40/" in p.replace("\\", "/") for p in got40)


def test_missing_frames_then_added_rerun_completes(dfb_root, capsys):
    root, selected, videos, det, weights = dfb_root
    missing = sorted(selected)[:3]
    stash = {}
    for rel in missing:
        path = root / "datasets" / "rgb" / rel
        stash[path] = path.read_bytes()
        path.unlink()
    assert main(argv(weights, "out")) == 1  # finished, with the unreadable frames listed
    err = capsys.readouterr().err
    assert all(Path(rel).as_posix() in err.replace("\\", "/") for rel in missing)
    assert len(predictions(root / "out")) == 36
    for path, data in stash.items():
        path.write_bytes(data)
    assert main(argv(weights, "out")) == 0  # the same command again reads the failed chunks again
    assert len(predictions(root / "out")) == 39
    errors = (root / "out" / "errors.csv").read_text().strip().splitlines()
    assert errors == ["index,path,error"]
    # --overwrite on a finished run starts afresh: every chunk is computed again
    before = {p.name: p.stat().st_mtime_ns for p in (root / "out" / "chunks").glob("*.json")}
    assert main(argv(weights, "out", "--overwrite")) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (root / "out" / "chunks").glob("*.json")}
    assert set(before) == set(after) and all(after[k] != before[k] for k in before)


def test_run_from_elsewhere_names_the_paths_tried(dfb_root, tmp_path, monkeypatch, capsys):
    root, selected, videos, det, weights = dfb_root
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rc = main(
        [
            "evaluate",
            "--detector_path",
            str(root / "training/config/detector/clip.yaml"),
            "--weights_path",
            str(weights),
            "--test_config",
            str(root / "training/config/test_config.yaml"),
            "--test_dataset",
            str(root / "preprocessing/dataset_json/FaceForensics++.json"),
            "--gradcam_output_dir",
            "out",
            "--cpu",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "datasets/rgb" in err.replace("\\", "/") and str(elsewhere) in err
    assert not (elsewhere / "out" / "predictions.csv").exists()
