"""The five batch commands, each once in this process and once through the Dask path (``--workers 2``,
a real LocalCluster) on its zoo / tiny default: the same files (byte for byte; the VLM's arrays to
1e-6), every unit done, the runner's manifest, markers and index in both run folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from daskcluster import subprocess_env
from PIL import Image

from vizkit.batch import RUN_FILES
from vizkit.cli import main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Three zoo test faces and three zoo shape scenes."""
    from vizkit import zoo
    from vizkit.zoo.shapes_clip import scenes_with

    root = tmp_path_factory.mktemp("inputs")
    (root / "faces").mkdir()
    (root / "scenes").mkdir()
    for i, s in enumerate(zoo.dataset("face_forgery_detector", "test")[:3]):
        Image.fromarray(s.image).save(root / "faces" / f"f{i}.png")
    for i, name in enumerate(["red circle", "blue square", "green star"]):
        Image.fromarray(scenes_with("test", 1, name)[0].image).save(root / "scenes" / f"s{i}.png")
    return root


COMMANDS = {
    "clip-gradcam": lambda inp, out: [
        "--image-path",
        str(inp / "scenes"),
        "--class-texts",
        "a red circle",
        "a blue square",
        "a green star",
        "--output-dir",
        str(out),
        "--cpu",
    ],
    "detector-attention": lambda inp, out: [
        "--image-path",
        str(inp / "faces"),
        "--output-dir",
        str(out),
        "--multi-layer",
        "--cpu",
    ],
    "detector-gradcam": lambda inp, out: ["--input", str(inp / "faces"), "--output", str(out), "--cpu"],
    "evaluate": lambda inp, out: [
        "--output-dir",
        str(out),
        "--max-samples",
        "12",
        "--batch-size",
        "4",
        "--gradcam-enabled",
        "--gradcam-samples",
        "2",
        "--cpu",
    ],
    "vlm-video": lambda inp, out: [
        "--sample_idx",
        "0,1",
        "--layers",
        "1",
        "--mode",
        "solution",
        "--start_phrase",
        "",
        "--max_new_tokens",
        "8",
        "--output-dir",
        str(out),
    ],
}
UNITS = {"clip-gradcam": 3, "detector-attention": 3, "detector-gradcam": 3, "evaluate": None, "vlm-video": 2}


def _text(path: Path, folder: Path) -> str:
    text = path.read_text(encoding="utf-8").replace(str(folder), "<run>")
    return text.split("## Model", 1)[-1] if path.name == "attention_report.md" else text  # past the CLI flags


@pytest.mark.parametrize("command", list(COMMANDS))
def test_batch_command_in_process_and_on_dask_give_the_same_outputs(command, inputs, tmp_path, monkeypatch, capsys):
    for key, value in subprocess_env().items():  # the spawned workers import this checkout's vizkit
        monkeypatch.setenv(key, value)
    here, there = tmp_path / "here", tmp_path / "there"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a worker: the same float reductions, so the same bytes
    try:
        assert main([command, *COMMANDS[command](inputs, here)]) == 0, capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)
    assert main([command, *COMMANDS[command](inputs, there), "--workers", "2"]) == 0, capsys.readouterr().err
    assert "local Dask cluster: 2 worker(s)" in capsys.readouterr().err
    files = sorted(p.relative_to(here) for p in here.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(there) for p in there.rglob("*") if p.is_file())
    assert set(RUN_FILES) <= {p.name for p in here.iterdir()} and set(RUN_FILES) <= {p.name for p in there.iterdir()}
    index = [line.split(",")[1] for line in (there / "index.csv").read_text().splitlines()[1:]]
    assert index and set(index) == {"done"} and (UNITS[command] is None or len(index) == UNITS[command])
    for rel in files:
        a, b = here / rel, there / rel
        if rel.name == ".complete.json":  # the time it finished
            assert json.loads(a.read_text()).keys() == json.loads(b.read_text()).keys()
        elif rel.suffix in (".json", ".md", ".csv", ".txt"):
            if command == "vlm-video" and rel.suffix != ".csv":  # shares and numbers of torch (threads may differ)
                continue
            assert _text(a, here) == _text(b, there), rel
        elif rel.suffix == ".npz":
            with np.load(a) as za, np.load(b) as zb:
                assert za.files == zb.files, rel
                for key in za.files:
                    if command == "vlm-video" and za[key].dtype.kind in "fc":
                        np.testing.assert_allclose(za[key], zb[key], atol=1e-6, err_msg=f"{rel} {key}")
                    else:
                        np.testing.assert_array_equal(za[key], zb[key], err_msg=f"{rel} {key}")
        elif command != "vlm-video":  # figures, overlays (the VLM's videos and frames: names only)
            assert a.read_bytes() == b.read_bytes(), rel
