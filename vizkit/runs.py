"""Run folders: where a notebook, CLI or sweep writes its outputs, and "complete" markers.

A run writes everything into one folder (:func:`run_folder`). When it has written all its
files it calls :func:`mark_complete`; a resumable caller (a sweep, an evaluation) skips a
folder for which :func:`is_complete` is true and redoes one that is not, so an interrupted
run is never mistaken for a finished one.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Mapping

from .errors import ParameterError
from .io import write_json

__all__ = ["runs_root", "run_folder", "mark_complete", "is_complete", "clear_complete", "COMPLETE_MARKER"]

COMPLETE_MARKER = ".complete.json"


def runs_root() -> Path:
    """Where new run folders go: ``$VIZKIT_RUNS``, else ``runs/`` at the project root (never
    beside the notebook)."""
    env = os.environ.get("VIZKIT_RUNS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "runs"


def run_folder(output_dir: str | Path | None, notebook: str, overwrite: bool = False, root: str | Path | None = None,
               overwrite_hint: str = "set overwrite=True") -> Path:
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
                f"it empty for a new timestamped one, or {overwrite_hint}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def mark_complete(folder: str | Path, info: Mapping[str, Any] | None = None) -> Path:
    """Record that the run in ``folder`` finished (atomically, with ``info`` and the time)."""
    return write_json(Path(folder) / COMPLETE_MARKER,
                      {"completed": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **dict(info or {})})


def is_complete(folder: str | Path) -> bool:
    """Whether the run in ``folder`` was marked complete."""
    return (Path(folder) / COMPLETE_MARKER).is_file()


def clear_complete(folder: str | Path) -> None:
    """Remove the completion marker (before a run rewrites the folder)."""
    (Path(folder) / COMPLETE_MARKER).unlink(missing_ok=True)
