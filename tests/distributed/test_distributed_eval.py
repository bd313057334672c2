"""Scenario 3's evaluation and the batch CLIs on real Dask clusters: the same files as a single
process, the model loaded once per worker, a worker killed mid-run (the run still completes with
identical metrics), and ``--scheduler`` with ``dask scheduler`` / ``dask worker`` subprocesses."""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from daskcluster import subprocess_env

from vizkit.batch import RUN_FILES
from vizkit.cli import main
from vizkit.scenarios import detector_gradcam_eval as dge
from vizkit.scenarios.cluster_tasks import EvaluationMapper

KW = dict(max_samples=16, batch_size=4, gradcam_samples=2)  # 4 chunks, maps of every sample, 2 sample folders
CHUNKS = 4
FILES = ["predictions.csv", "metrics.json", "errors.csv", "localization.csv", "samples.csv"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The single-process run."""
    out = tmp_path_factory.mktemp("single") / "run"
    dge.run_evaluation(out, **KW)
    return out


@pytest.fixture(scope="module")
def local_cluster():
    """A LocalCluster of 2 process workers (vizkit's own cluster_client) shared by this module's tests."""
    old = dict(os.environ)
    os.environ.update(subprocess_env())  # the spawned workers import this checkout's vizkit
    try:
        from vizkit.distributed.cluster import cluster_client

        with cluster_client(workers=2, quiet=True, dashboard=False) as client:
            yield client
    finally:
        os.environ.clear()
        os.environ.update(old)


def assert_same_run(a: Path, b: Path) -> None:
    for name in FILES:
        assert filecmp.cmp(a / name, b / name, shallow=False), name
    for k in range(CHUNKS):
        with np.load(a / "chunks" / f"{k:05d}.npz") as za, np.load(b / "chunks" / f"{k:05d}.npz") as zb:
            assert za.files == zb.files
            for key in za.files:
                np.testing.assert_array_equal(za[key], zb[key], err_msg=f"chunk {k} {key}")
        assert (a / "chunks" / f"{k:05d}.json").read_text() == (b / "chunks" / f"{k:05d}.json").read_text()
    samples = sorted(p.relative_to(a) for p in a.glob("sample*/*"))
    assert samples and samples == sorted(p.relative_to(b) for p in b.glob("sample*/*"))
    for rel in samples:  # overlays, comparison figure, metadata
        assert filecmp.cmp(a / rel, b / rel, shallow=False), rel
    assert (b / ".complete.json").is_file()


def test_local_cluster_gives_identical_files_and_loads_the_model_once_per_worker(tmp_path, reference, local_cluster):
    with EvaluationMapper(scheduler=local_cluster.scheduler.address, quiet=True) as mapper:
        summary = dge.run_evaluation(tmp_path / "run", **KW, map_chunks=mapper)
    assert_same_run(reference, tmp_path / "run")
    assert summary.metrics["samples"] == 16
    assert sorted(k for ks in mapper.chunks.values() for k in ks) == list(range(CHUNKS))
    assert len(mapper.chunks) == 2 and set(mapper.loads.values()) == {1}  # both workers worked, one load each
    assert set(mapper.threads.values()) == {1}  # torch.set_num_threads(1): one thread per worker process
    # a second evaluation on the same workers: no new load (the per-process cache), the same files
    with EvaluationMapper(scheduler=local_cluster.scheduler.address, quiet=True) as mapper:
        dge.run_evaluation(tmp_path / "again", **KW, map_chunks=mapper)
    assert set(mapper.loads.values()) == {1}
    assert_same_run(reference, tmp_path / "again")


def test_a_killed_worker_is_replaced_and_the_metrics_are_identical(tmp_path, reference, local_cluster):
    killed = []

    def kill_one(k: int) -> None:
        if not killed:  # after the first chunk arrives: kill a worker process while others are computed
            victim = sorted(local_cluster.run(os.getpid).values())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    with EvaluationMapper(scheduler=local_cluster.scheduler.address, quiet=True, on_chunk=kill_one) as mapper:
        dge.run_evaluation(tmp_path / "run", **KW, map_chunks=mapper)
    assert killed
    assert_same_run(reference, tmp_path / "run")
    assert sorted(k for ks in mapper.chunks.values() for k in ks) == list(range(CHUNKS))  # each chunk written once
    local_cluster.wait_for_workers(2, timeout=60)  # the nanny restarted it
    assert killed[0] not in local_cluster.run(os.getpid).values()


def test_evaluate_cli_on_an_existing_scheduler(tmp_path, reference, dask_scheduler):
    address = dask_scheduler  # `dask scheduler` + `dask worker` subprocesses (conftest)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vizkit.cli",
            "evaluate",
            "--output-dir",
            str(tmp_path / "run"),
            "--max-samples",
            "16",
            "--batch-size",
            "4",
            "--gradcam-samples",
            "2",
            "--gradcam-enabled",
            "--scheduler",
            address,
        ],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"connected to the Dask scheduler {address} (2 worker(s))" in proc.stderr
    assert_same_run(reference, tmp_path / "run")


def test_batch_clis_share_the_cluster_flags(tmp_path, local_cluster, capsys):
    from PIL import Image

    from vizkit import zoo

    faces = tmp_path / "faces"
    faces.mkdir()
    for i, s in enumerate(zoo.dataset("face_forgery_detector", "test")[:3]):
        Image.fromarray(s.image).save(faces / f"f{i}.png")
    (faces / "broken.png").write_bytes(b"not an image")
    assert main(["detector-gradcam", "--input", str(faces), "--output", str(tmp_path / "single")]) == 1
    local_cluster.wait_for_workers(2, timeout=60)
    assert (
        main(
            [
                "detector-gradcam",
                "--input",
                str(faces),
                "--output",
                str(tmp_path / "dask"),
                "--scheduler",
                local_cluster.scheduler.address,
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert err.count("skipped broken.png") == 2  # the unreadable image is reported, the others explained
    single = sorted(p.name for p in (tmp_path / "single").iterdir() if p.name not in RUN_FILES)
    dask = sorted(p.name for p in (tmp_path / "dask").iterdir())
    assert len(single) == 3 * 6 and sorted([*single, *RUN_FILES]) == dask
    for name in single:  # overlays, comparison figures, sidecars: byte for byte
        assert filecmp.cmp(tmp_path / "single" / name, tmp_path / "dask" / name, shallow=False), name
    for cmd in ("clip-gradcam", "detector-attention", "detector-gradcam", "evaluate"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = capsys.readouterr().out
        assert "--workers N" in text and "--scheduler ADDRESS" in text, cmd
