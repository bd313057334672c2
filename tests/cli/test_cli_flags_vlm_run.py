"""``vizkit vlm-video``'s ``--max_image_num``, ``--fps``, ``--sinks``, ``--overwrite`` and
``--scheduler``, and ``vizkit run --kernel``, each by the effect it must have (issue 28): the image
positions the prompt holds, the video's frame rate, the frames drawn from rows with the sinks
removed and renormalised by hand, the same rows from a ``dask scheduler``'s workers, and the
kernel a notebook ran in. Model: the zoo's tiny_vlm on its sample benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import imageio.v2 as imageio
import nbformat
import numpy as np
import pytest
from PIL import Image

from vizkit.cli import main
from vizkit.positions import IMAGE
from vizkit.scenarios import vlm_attention_video as V
from vizkit.token_video import contact_sheet

LAYER = 1


@pytest.fixture(scope="module")
def tiny_copy(tmp_path_factory) -> Path:
    """The zoo's tiny_vlm folder copied elsewhere: the same model, but not the zoo's, so a run skips
    the zoo-only ground-truth table (200 generations) that these checks do not read."""
    import shutil

    from vizkit.zoo.common import zoo_dir

    dest = tmp_path_factory.mktemp("vlm") / "tiny_vlm"
    shutil.copytree(zoo_dir("tiny_vlm"), dest, ignore=shutil.ignore_patterns("benchmark"))
    return dest


@pytest.fixture(scope="module")
def two_image_bench(tmp_path_factory) -> tuple[Path, Path, dict]:
    """The sample benchmark's first problem with two images (its own and the next sample's)."""
    json_path, image_dir = V.default_benchmark()
    records = json.loads(Path(json_path).read_text())
    sample = dict(records[0])
    sample["image"] = [records[0]["image"][0], records[1]["image"][0]]
    bench = tmp_path_factory.mktemp("bench") / "bench.json"
    bench.write_text(json.dumps([sample]))
    return bench, Path(image_dir), sample


def _vlm_video(model: Path, bench: Path, image_dir: Path, out: Path, *extra: str) -> int:
    common = ["--model_path", str(model), "--benchmark_json", str(bench), "--image_dir", str(image_dir)]
    common += ["--layers", str(LAYER), "--mode", "solution", "--start_phrase", "", "--output-dir", str(out)]
    return main(["vlm-video", *common, *extra])


def _sheet(folder: Path) -> np.ndarray:
    return np.asarray(Image.open(folder / f"contact_sheet_layer{LAYER}.png"))


def _fps_and_frames(folder: Path) -> tuple[float, int, float]:
    reader = imageio.get_reader(folder / f"combined_attention_visualization_layer{LAYER}.mp4")
    try:
        meta = reader.get_meta_data()
        return meta["fps"], reader.count_frames(), meta["duration"]
    finally:
        reader.close()


def test_max_image_num_fps_sinks_and_overwrite(tiny_copy, two_image_bench, tmp_path, capsys):
    bench, image_dir, sample = two_image_bench
    run, both = tmp_path / "run", tmp_path / "both"
    assert _vlm_video(tiny_copy, bench, image_dir, run, "--max_image_num", "1", "--fps", "7") == 0
    assert "has 2 images; using the first 1 (max_image_num)" in capsys.readouterr().err
    kept = {"sheet": _sheet(run), "video": _fps_and_frames(run), **np.load(run / "attention.npz")}
    # --overwrite: the folder of that run takes the next one only with it
    assert _vlm_video(tiny_copy, bench, image_dir, run, "--max_image_num", "1", "--sinks", "mask") == 2
    assert "pass --overwrite" in capsys.readouterr().err
    argv = ["--max_image_num", "1", "--fps", "3", "--sinks", "mask", "--overwrite"]
    assert _vlm_video(tiny_copy, bench, image_dir, run, *argv) == 0
    masked = {"sheet": _sheet(run), "video": _fps_and_frames(run), **np.load(run / "attention.npz")}
    assert _vlm_video(tiny_copy, bench, image_dir, both) == 0  # the default: at most 2 images
    capsys.readouterr()
    with np.load(both / "attention.npz") as z:
        two = dict(z)
    # --max_image_num 1: one image's patch positions (tiny_vlm: a 6 x 6 grid each); the default two
    assert kept["grids"].tolist() == [[6, 6]] and (kept["kind"] == IMAGE).sum() == 36
    assert two["grids"].tolist() == [[6, 6], [6, 6]] and (two["kind"] == IMAGE).sum() == 72
    assert (two["kind"] != IMAGE).sum() - (kept["kind"] != IMAGE).sum() <= 2  # the second image's markers only
    # --fps: the container's rate and duration, the same frames
    (fps7, n7, d7), (fps3, n3, d3) = kept["video"], masked["video"]
    assert (fps7, fps3) == (7, 3) and n7 == n3 > 1
    assert d7 == pytest.approx(n7 / 7, abs=0.5 / 7) and d3 == pytest.approx(n3 / 3, abs=0.5 / 3)
    # --sinks mask: the frames are drawn from each row with the layer's sinks set to 0 and the rest
    # renormalised -- by hand here, from the rows the run saved -- on the same trace as without it
    np.testing.assert_array_equal(kept["input_ids"], masked["input_ids"])
    rows = masked[f"rows_layer{LAYER}"].mean(1)  # [N, K], heads fused by the mean (the default)
    np.testing.assert_allclose(rows, kept[f"rows_layer{LAYER}"].mean(1), atol=1e-6)
    sinks = masked[f"sinks_layer{LAYER}"]
    assert 0 in sinks.tolist()
    by_hand = rows.copy()
    by_hand[:, sinks] = 0
    by_hand /= by_hand.sum(1, keepdims=True)
    vlm = V.load_vlm(tiny_copy)
    images = [Image.open(image_dir / sample["image"][0]).convert("RGB")]
    trace = V.trace_sample(
        vlm, sample["problem"], images, [LAYER], mode="solution", solution=sample["solution"], start_phrase=""
    )
    np.testing.assert_allclose(trace.rows[LAYER].mean(1), rows, atol=1e-5)
    np.testing.assert_array_equal(kept["sheet"], contact_sheet(V.FrameRenderer(trace, LAYER, "mean")))
    hand = V.FrameRenderer(trace, LAYER, "mean", sinks="mask")  # its header says so; its rows are replaced
    hand.rows = by_hand
    np.testing.assert_array_equal(masked["sheet"], contact_sheet(hand))
    assert np.abs(masked["sheet"].astype(int) - kept["sheet"]).max() > 50  # the masked frames differ


def test_scheduler_runs_the_samples_on_its_workers(tiny_copy, dask_scheduler, tmp_path, capsys):
    json_path, image_dir = (Path(p) for p in V.default_benchmark())
    here, there = tmp_path / "here", tmp_path / "there"
    assert _vlm_video(tiny_copy, json_path, image_dir, here, "--sample_idx", "0,1") == 0
    capsys.readouterr()
    argv = ["--sample_idx", "0,1", "--scheduler", dask_scheduler]
    assert _vlm_video(tiny_copy, json_path, image_dir, there, *argv) == 0
    assert f"connected to the Dask scheduler {dask_scheduler} (2 worker(s))" in capsys.readouterr().err
    for i in (0, 1):
        with (
            np.load(here / f"sample_{i}" / "attention.npz") as a,
            np.load(there / f"sample_{i}" / "attention.npz") as b,
        ):
            np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
            np.testing.assert_allclose(a[f"rows_layer{LAYER}"], b[f"rows_layer{LAYER}"], atol=1e-6)


def test_run_kernel_executes_the_notebook_in_the_named_kernel(tmp_path, monkeypatch, capsys):
    """A kernelspec written here (the venv's ipykernel, with an environment variable that names it):
    ``--kernel`` picks it; without the flag the default python3 kernel runs (no variable)."""
    spec = tmp_path / "jupyter" / "kernels" / "vizkit-flag-kernel"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "vizkit flag test",
                "language": "python",
                "env": {"VIZKIT_FLAG_KERNEL": "vizkit-flag-kernel"},
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell('output_dir: str = ""  # run folder', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(
            "import os\nos.makedirs(output_dir, exist_ok=True)\n"
            'open(os.path.join(output_dir, "report.md"), "w").write(os.environ.get("VIZKIT_FLAG_KERNEL", "none"))'
        ),
    ]
    nbformat.write(nb, tmp_path / "toy.ipynb")
    for kernel, expected in (("vizkit-flag-kernel", "vizkit-flag-kernel"), (None, "none")):
        out = tmp_path / f"out-{expected}"
        argv = ["run", str(tmp_path / "toy.ipynb"), "--output-dir", str(out)]
        assert main(argv + (["--kernel", kernel] if kernel else [])) == 0, capsys.readouterr().err
        (report,) = out.glob("*/outputs/report.md")  # <run>/outputs is the notebook's output_dir
        assert report.read_text() == expected
        assert len(list(out.glob("*/toy.ipynb"))) == 1  # the executed copy beside its outputs
