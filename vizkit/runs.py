"""Run folders: where a notebook, CLI or sweep writes its outputs, and "complete" markers.

A run writes everything into one folder (:func:`run_folder`). When it has written all its
files it calls :func:`mark_complete`; a resumable caller (a sweep, an evaluation) skips a
folder for which :func:`is_complete` is true and redoes one that is not, so an interrupted
run is never mistaken for a finished one.

A chunked run (scenario 3's evaluation) resumes chunk by chunk: :func:`open_resumable_run`
reopens the folder of the same run (same ``manifest.json``), each chunk is written atomically
to ``chunks/NNNNN.json`` + ``.npz`` (:func:`write_chunk`; the JSON last, so it marks the chunk
written); :mod:`vizkit.batch` marks which units a rerun can skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ParameterError
from .io import save_npz, write_json

__all__ = [
    "runs_root",
    "run_folder",
    "mark_complete",
    "is_complete",
    "clear_complete",
    "COMPLETE_MARKER",
    "open_resumable_run",
    "chunk_count",
    "chunk_paths",
    "written_chunks",
    "write_chunk",
    "read_chunks",
    "read_chunk_arrays",
]

#: the file that marks a run folder complete (written last, with the run's parameters)
COMPLETE_MARKER = ".complete.json"


def runs_root() -> Path:
    """Where new run folders go: ``$VIZKIT_RUNS``, else ``runs/`` at the project root (never
    beside the notebook)."""
    env = os.environ.get("VIZKIT_RUNS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "runs"


def run_folder(
    output_dir: str | Path | None,
    notebook: str,
    overwrite: bool = False,
    root: str | Path | None = None,
    overwrite_hint: str = "set overwrite=True",
) -> Path:
    """The folder a run writes into, created now.

    ``output_dir`` None or "" -> ``<root>/<timestamp>-<notebook>/`` (a new folder every run;
    ``root`` defaults to :func:`runs_root`). An explicit folder that exists and is not empty
    is refused unless ``overwrite``, so a re-run never silently replaces an earlier run.
    """
    if output_dir is None or str(output_dir) == "":
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(root or runs_root()) / f"{stamp}-{re.sub(r'[^A-Za-z0-9_.-]', '_', notebook)}"
        path, n = base, 1
        while path.exists():
            path, n = Path(f"{base}-{n}"), n + 1
    else:
        path = Path(output_dir)
        if path.exists() and not path.is_dir():
            raise ParameterError(f"output folder {str(path)!r} is a file, not a folder")
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise ParameterError(
                f"output folder {str(path)!r} is not empty (it holds an earlier run): choose another folder, leave "
                f"it empty for a new timestamped one, or {overwrite_hint}"
            )
    path.mkdir(parents=True, exist_ok=True)
    return path


def mark_complete(folder: str | Path, info: Mapping[str, Any] | None = None) -> Path:
    """Record that the run in ``folder`` finished (atomically, with ``info`` and the time)."""
    return write_json(
        Path(folder) / COMPLETE_MARKER, {"completed": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **dict(info or {})}
    )


def is_complete(folder: str | Path) -> bool:
    """Whether the run in ``folder`` was marked complete."""
    return (Path(folder) / COMPLETE_MARKER).is_file()


def clear_complete(folder: str | Path) -> None:
    """Remove the completion marker (before a run rewrites the folder)."""
    (Path(folder) / COMPLETE_MARKER).unlink(missing_ok=True)


def open_resumable_run(
    output_dir: str | os.PathLike | None, name: str, manifest: dict[str, Any], overwrite: bool
) -> tuple[Path, bool]:
    """The run folder of a resumable run; ``(folder, resuming)``. The same run (an equal
    ``manifest.json``) is resumed; ``overwrite`` starts it afresh (its previous outputs removed,
    also when the manifest is the same); a folder holding a different run is refused without
    ``overwrite``. No ``output_dir``: a new timestamped folder named after ``name``."""
    if output_dir:
        out = Path(output_dir)
        old = out / "manifest.json"
        if old.is_file() and not overwrite:
            try:
                same = json.loads(old.read_text(encoding="utf-8")) == manifest
            except json.JSONDecodeError:
                same = False
            if same:
                return out, True
            raise ParameterError(
                f"output folder {str(out)!r} holds a different run (another model, dataset or "
                "arguments; see its manifest.json): choose another folder or pass --overwrite"
            )
        if overwrite and out.is_dir():
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    out = run_folder(output_dir or None, name, overwrite=overwrite, overwrite_hint="pass --overwrite")
    write_json(out / "manifest.json", manifest)
    return out, False


def chunk_count(items: int, chunk_size: int) -> int:
    """How many chunks of ``chunk_size`` items cover ``items`` items (the last one may be short)."""
    if chunk_size < 1:
        raise ParameterError(f"chunk size must be positive, got {chunk_size}")
    return (items + chunk_size - 1) // chunk_size


def written_chunks(run: Path) -> int:
    """How many chunks ``run`` holds written (``chunks/NNNNN.json`` files; a finished run's are
    ``0 .. n-1``)."""
    return len(list((Path(run) / "chunks").glob("*.json")))


def chunk_paths(run: Path, k: int) -> tuple[Path, Path]:
    """``chunks/NNNNN.json`` (the chunk's results) and ``chunks/NNNNN.npz`` (its arrays)."""
    return run / "chunks" / f"{k:05d}.json", run / "chunks" / f"{k:05d}.npz"


def write_chunk(run: Path, k: int, result: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Chunk ``k``'s arrays, then its results (atomically; the JSON's presence marks it written)."""
    js, npz = chunk_paths(run, k)
    save_npz(npz, arrays)
    write_json(js, result)


def read_chunks(run: Path, n: int) -> list[dict[str, Any]]:
    """The results of chunks ``0 .. n-1``."""
    return [json.loads(chunk_paths(run, k)[0].read_text(encoding="utf-8")) for k in range(n)]


def read_chunk_arrays(run: Path, n: int) -> dict[str, dict[int, np.ndarray]]:
    """``{array name: {item index: array}}`` from the ``.npz`` of chunks ``0 .. n-1``; each holds an
    ``index`` array (the items' indices) and arrays whose rows belong to those items."""
    out: dict[str, dict[int, np.ndarray]] = {}
    for k in range(n):
        with np.load(chunk_paths(run, k)[1]) as z:
            index = z["index"]
            for key in z.files:
                if key != "index":
                    out.setdefault(key, {}).update({int(i): z[key][j] for j, i in enumerate(index)})
    return out
