"""What runs inside a Dask worker process: its setup plugin and the per-process cache of loaded
models (each worker loads a model once, not once per task). Imports distributed: only ever
imported by the cluster code and by the tasks on the workers."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Hashable
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

__all__ = ["WorkerSetup", "cached", "cache_loads", "set_torch_threads"]

_CACHE: dict[Hashable, Any] = {}
_LOADS: dict[Hashable, int] = {}
_LOCK = threading.Lock()


def cached(key: Hashable, load: Callable[[], Any]) -> Any:
    """``load()`` once per worker process for ``key``; later calls return the same object."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = load()
            _LOADS[key] = _LOADS.get(key, 0) + 1
        return _CACHE[key]


def cache_loads() -> dict[str, int]:
    """How many times each key was loaded in this process (the tests check: once)."""
    return {repr(k): n for k, n in _LOADS.items()}


def set_torch_threads(threads: int) -> None:
    """Set torch's intra-op thread count in this (worker) process, when it differs."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class WorkerSetup(WorkerPlugin):
    """Runs on every worker (also a restarted one): limit threads, set the environment, and on a
    local cluster ignore SIGINT (the client handles Ctrl-C; the terminal sends it to the group)."""

    name = "vizkit-worker-setup"

    def __init__(self, threads: int = 1, env: dict[str, str] | None = None, ignore_sigint: bool = False):
        self.threads = int(threads)
        self.env = dict(env or {})
        self.ignore_sigint = ignore_sigint

    def setup(self, worker: Any) -> None:
        for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[key] = str(self.threads)
        os.environ.update(self.env)
        for p in reversed(self.env.get("PYTHONPATH", "").split(os.pathsep)):
            if p and p not in sys.path:
                sys.path.insert(0, p)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(self.threads)
        if self.ignore_sigint:
            import signal
            import threading

            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGINT, signal.SIG_IGN)
