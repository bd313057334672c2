"""vizkit.batch, the one resumable batch runner, on a toy unit function: resume, failures, a crash
between a unit's files and its marker, overwrite, a refused manifest, and the same bytes in this
process and on a real Dask LocalCluster."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from daskcluster import subprocess_env
from PIL import Image

from vizkit.batch import DONE, EARLIER, FAILED, INCOMPLETE, RUN_FILES, BatchMapper, BatchRun, Job, Unit
from vizkit.errors import ParameterError
from vizkit.io import atomic_path, write_text

MANIFEST = {"toy": 1, "scale": 3}


def toy_context(**spec: object) -> dict:
    """The toy job's context: its spec (a model would be loaded here, once per process)."""
    return dict(spec)


def toy_unit(ctx: dict, x: int, folder: Path) -> dict:
    """Writes ``u<x>.txt`` and ``u<x>.png``; raises while ``fail_<x>`` exists in the flags folder;
    logs each call (one line per call, any process) into ``calls.log``; ``crash_<x>``: the process
    dies after the files, before the runner writes the marker."""
    flags = Path(ctx["flags"])
    with open(flags / "calls.log", "a") as fh:
        fh.write(f"{x}\n")
    if (flags / f"fail_{x}").exists():
        raise ValueError(f"unit {x} failed on purpose")
    write_text(folder / f"u{x}.txt", str(x * ctx["scale"]))
    with atomic_path(folder / f"u{x}.png") as tmp:
        Image.fromarray(np.full((4, 4), x * 10 % 256, np.uint8)).save(tmp, format="png")
    if (flags / f"crash_{x}").exists():
        os._exit(3)
    return {"value": x * ctx["scale"], **({"incomplete": "half"} if (flags / f"half_{x}").exists() else {})}


def calls(flags: Path) -> list[int]:
    log = flags / "calls.log"
    return [int(v) for v in log.read_text().split()] if log.exists() else []


def job(flags: Path) -> Job:
    return Job(toy_unit, toy_context, {"flags": str(flags), "scale": 3}, name="toy")


UNITS = [Unit(f"u{x}", x) for x in range(5)]


def run(
    out: Path, flags: Path, mapper: BatchMapper | None = None, overwrite: bool = False, manifest: dict = MANIFEST
) -> tuple[BatchRun, list]:
    batch = BatchRun.open(out, "toy", manifest, overwrite)
    outcomes = batch.run(mapper or BatchMapper(), job(flags), UNITS)
    batch.write_index("Toy", columns=["value"])
    return batch, outcomes


@pytest.fixture
def flags(tmp_path: Path) -> Path:
    (tmp_path / "flags").mkdir()
    return tmp_path / "flags"


def test_resume_skips_done_units_and_a_failed_unit_is_redone(tmp_path, flags):
    out = tmp_path / "out"
    (flags / "fail_2").touch()
    batch, outcomes = run(out, flags)
    assert [o.status for o in outcomes] == [DONE, DONE, FAILED, DONE, DONE]
    assert outcomes[2].error == "unit 2 failed on purpose" and outcomes[2].error_type == "ValueError"
    assert outcomes[1].record == {"value": 3} and not batch.done("u2") and batch.done("u3")
    assert not (out / ".units" / "u2.json").exists() and not (out / "u2.txt").exists()
    index = (out / "index.csv").read_text().splitlines()
    assert index[0] == "unit,status,value,error" and index[3] == "u2,failed,,ValueError: unit 2 failed on purpose"
    assert "4 done, 1 failed" in (out / "index.md").read_text()
    assert json.loads((out / "manifest.json").read_text()) == MANIFEST
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*RUN_FILES, *(f"u{x}.{e}" for x in (0, 1, 3, 4) for e in ("txt", "png"))]
    )
    # the same run again: the done units are skipped (their records read back), the failed one still fails
    batch, outcomes = run(out, flags)
    assert batch.resuming and calls(flags) == [0, 1, 2, 3, 4, 2]
    assert [o.status for o in outcomes] == [EARLIER, EARLIER, FAILED, EARLIER, EARLIER]
    assert outcomes[4].record == {"value": 12}
    # fixed: only unit 2 is computed
    (flags / "fail_2").unlink()
    batch, outcomes = run(out, flags)
    assert calls(flags) == [0, 1, 2, 3, 4, 2, 2] and outcomes[2].status == DONE and (out / "u2.txt").read_text() == "6"
    assert "1 done, 4 done (earlier run)" in (out / "index.md").read_text()
    # nothing left: nothing computed
    run(out, flags)
    assert calls(flags) == [0, 1, 2, 3, 4, 2, 2]


def test_an_incomplete_unit_keeps_its_files_and_is_redone(tmp_path, flags):
    (flags / "half_1").touch()
    batch, outcomes = run(tmp_path / "out", flags)
    assert outcomes[1].status == INCOMPLETE and outcomes[1].ok and (tmp_path / "out" / "u1.txt").is_file()
    assert not batch.done("u1") and batch.marker("u1")["status"] == INCOMPLETE
    (flags / "half_1").unlink()
    _, outcomes = run(tmp_path / "out", flags)
    assert calls(flags) == [0, 1, 2, 3, 4, 1] and outcomes[1].status == DONE


def test_a_crash_between_the_files_and_the_marker_leaves_the_unit_not_done(tmp_path, flags):
    out = tmp_path / "out"
    (flags / "crash_2").touch()
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_batch import run
        run(Path({str(out)!r}), Path({str(flags)!r}))
        """)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 3, proc.stderr  # the process died inside unit 2, after its files
    assert (out / "u2.txt").is_file() and (out / "u2.png").is_file()  # its files are written ...
    assert sorted(p.name for p in (out / ".units").iterdir()) == ["u0.json", "u1.json"]  # ... but not its marker
    (flags / "crash_2").unlink()
    batch, outcomes = run(out, flags)
    assert calls(flags) == [0, 1, 2, 2, 3, 4]  # unit 2 computed again, then the rest
    assert [o.status for o in outcomes] == [EARLIER, EARLIER, DONE, DONE, DONE] and batch.done("u2")


def test_overwrite_starts_afresh_and_another_manifest_is_refused(tmp_path, flags):
    out = tmp_path / "out"
    run(out, flags)
    (out / "stray.txt").write_text("from the earlier run")
    with pytest.raises(ParameterError, match="holds a different run .* pass --overwrite"):
        run(out, flags, manifest={**MANIFEST, "scale": 4})
    assert calls(flags) == [0, 1, 2, 3, 4]  # refused before any unit ran
    batch, outcomes = run(out, flags, overwrite=True, manifest={**MANIFEST, "scale": 4})
    assert not batch.resuming and [o.status for o in outcomes] == [DONE] * 5 and calls(flags) == [0, 1, 2, 3, 4] * 2
    assert not (out / "stray.txt").exists() and json.loads((out / "manifest.json").read_text())["scale"] == 4
    _, outcomes = run(out, flags, overwrite=True, manifest={**MANIFEST, "scale": 4})  # overwrite: even the same run
    assert [o.status for o in outcomes] == [DONE] * 5 and len(calls(flags)) == 15
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ParameterError, match="is not empty"):  # a folder that holds no run
        run(tmp_path / "other", flags)
    with pytest.raises(ParameterError, match="would delete the inputs"):
        BatchRun.open(tmp_path / "other", "toy", MANIFEST, overwrite=True, protect=[tmp_path / "other" / "notes.txt"])


@pytest.fixture(scope="module")
def local_cluster():
    """A real LocalCluster of 2 process workers (vizkit's own cluster_client)."""
    old = dict(os.environ)
    os.environ.update(subprocess_env())  # the spawned workers import this checkout's vizkit and this module
    try:
        from vizkit.distributed.cluster import cluster_client

        with cluster_client(workers=2, quiet=True, dashboard=False) as client:
            yield client
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_in_process_and_dask_give_the_same_bytes(tmp_path, flags, local_cluster):
    from vizkit.distributed.chunks import ClusterOptions

    (flags / "fail_3").touch()
    here, there = tmp_path / "here", tmp_path / "there"
    _, local = run(here, flags)
    with BatchMapper(ClusterOptions(scheduler=local_cluster.scheduler.address, quiet=True)) as mapper:
        _, remote = run(there, flags, mapper)
        assert mapper.distributed and len(mapper.units) == 2  # both workers computed units
        assert set(mapper.loads.values()) == {1}  # the context built once per worker process
    assert [(o.key, o.status, o.record, o.error) for o in local] == [
        (o.key, o.status, o.record, o.error) for o in remote
    ]
    assert remote[3].status == FAILED and remote[3].error_type == "ValueError"
    files = sorted(p.relative_to(here) for p in here.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(there) for p in there.rglob("*") if p.is_file())
    assert len(files) == 4 * 2 + 4 + 3  # the units' files, their markers, manifest + index.csv + index.md
    for rel in files:  # files, markers and index: byte for byte
        assert filecmp.cmp(here / rel, there / rel, shallow=False), rel
    # resumed on the cluster: only the failed unit is computed
    (flags / "fail_3").unlink()
    with BatchMapper(ClusterOptions(scheduler=local_cluster.scheduler.address, quiet=True)) as mapper:
        _, remote = run(there, flags, mapper)
    assert [o.status for o in remote] == [EARLIER, EARLIER, EARLIER, DONE, EARLIER]
    assert sorted(k for keys in mapper.units.values() for k in keys) == ["u3"]
