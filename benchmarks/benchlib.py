"""Shared pieces of the benchmark scripts: round-robin timing and per-method peak memory in a
fresh subprocess. Benchmarks print ratios measured in one run; none of this is a test.

Peak memory: in the worker, glibc is told (``MEM_ENV``) to serve every allocation >= 64 KiB
with its own mmap and to unmap it on free, so resident memory follows the live tensors instead
of malloc's retained free lists. After model creation and a small warm-up of the same method
(lazy library initialisation), parameter gradients are dropped, the kernel's peak-RSS counter
is reset (``echo 5 > /proc/self/clear_refs``) and the current RSS is the baseline; the method
runs once and the peak is VmHWM from /proc/self/status (getrusage's ru_maxrss if the reset is
not allowed). Reported: peak - baseline = the extra memory the call needed on top of model +
input.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

MEM_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536", "MALLOC_TOP_PAD_": "0"}


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory(run: Callable[[], Any], warm_up: Callable[[], Any], model: Any = None) -> dict[str, Any]:
    """In a worker process: warm up, reset the peak counter, ``run()`` once; MiB above the baseline."""
    import resource

    warm_up()
    if model is not None:
        for p in model.parameters():
            p.grad = None
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    reset = reset_peak()
    base_kb = status_kb("VmRSS")
    out = run()
    peak_kb = status_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del out
    return {
        "base_mb": base_kb / 1024,
        "peak_mb": peak_kb / 1024,
        "delta_mb": (peak_kb - base_kb) / 1024,
        "reset": reset,
    }


def measure_memory(
    script: str, args: Sequence[str], methods: Sequence[str], flag: str = "--_mem-worker"
) -> dict[str, dict]:
    """Run ``script args flag METHOD`` in a fresh process per method; each prints one JSON line."""
    results: dict[str, dict] = {}
    env = {**os.environ, **MEM_ENV}
    for m in methods:
        proc = subprocess.run(
            [sys.executable, os.path.abspath(script), *args, flag, m], env=env, capture_output=True, text=True
        )
        line = next((ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith("{")), None)
        if proc.returncode != 0 or line is None:
            err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            results[m] = {"error": f"worker exit {proc.returncode}: {err}"}
        else:
            results[m] = json.loads(line)
    return results


def print_worker_result(method: str, result: dict[str, Any]) -> None:
    print(json.dumps({"method": method, **result}))


def time_round_robin(runners: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall-clock seconds of ``repeats`` calls of every runner, interleaved (a, b, c, a, b, c, ...)
    after one warm-up call each, so background load spreads over all of them."""
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {m: [] for m in runners}
    for _ in range(repeats):
        for m, run in runners.items():
            gc.collect()
            t0 = time.perf_counter()
            run()
            times[m].append(time.perf_counter() - t0)
    return times


def summary(times: Sequence[float]) -> str:
    """``min / median / max`` in ms."""
    return f"{min(times) * 1e3:8.0f} / {statistics.median(times) * 1e3:8.0f} / {max(times) * 1e3:8.0f} ms"
