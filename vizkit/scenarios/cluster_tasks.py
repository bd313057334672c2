"""Scenario 1, 3 and 4 work on a Dask cluster: scenario 3's evaluation chunks and the batch
CLIs' images (``clip-gradcam``, ``detector-attention``, ``detector-gradcam``).

Each task is a module-level function of picklable arguments that lives with its scenario
(:func:`~vizkit.scenarios.detector_gradcam_eval.evaluate_chunk_task`,
:func:`~vizkit.scenarios.detector_gradcam_eval.detector_gradcam_task`,
:func:`~vizkit.scenarios.clip_detector_attention.detector_attention_task`,
:func:`~vizkit.scenarios.clip_text_gradcam.clip_gradcam_task`), so each scenario's batch
function maps its own task; they are collected here. On the worker the model is loaded ONCE
per process (:func:`vizkit.distributed.worker.cached`, keyed by the arguments that determine it)
and ``torch.set_num_threads`` is the worker's thread count. Results travel back to the client,
which writes them (the evaluation's chunk files, with the same atomic writes and chunk manifest
as a single-process run), so the outputs are the same files as without Dask and a chunk lost
with its worker is simply recomputed by Dask on another worker.

Example::

    from vizkit.scenarios.cluster_tasks import EvaluationMapper
    from vizkit.scenarios import run_evaluation
    with EvaluationMapper(workers=2) as mapper:
        summary = run_evaluation("eval_out", max_samples=100, map_chunks=mapper)
"""
from __future__ import annotations

from typing import Any, Callable

from ..distributed.chunks import ClusterChunkMapper, ClusterOptions, map_tasks
from .clip_detector_attention import detector_attention_task
from .clip_text_gradcam import clip_gradcam_task
from .detector_gradcam_eval import detector_gradcam_task, evaluate_chunk_task

__all__ = ["EvaluationMapper", "evaluate_chunk_task", "detector_gradcam_task", "detector_gradcam_mapper",
           "detector_attention_task", "clip_gradcam_task"]


class EvaluationMapper(ClusterChunkMapper):
    """``map_chunks`` for :func:`vizkit.scenarios.detector_gradcam_eval.run_evaluation` on a Dask
    cluster (a context manager: the cluster lives as long as the ``with`` block, so one cluster
    can serve several evaluations). ``chunks`` collects, per worker pid, the chunks it computed,
    ``loads`` its model loads, ``threads`` their torch threads. ``on_chunk(k)`` is called after
    each chunk arrives (tests use it)."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None, *, progress: bool = False,
                 allowed_failures: int = 3, quiet: bool = False, on_chunk: Callable[[int], None] | None = None):
        super().__init__(evaluate_chunk_task, ClusterOptions(workers, scheduler, allowed_failures, quiet),
                         name="evaluate", progress=progress, on_chunk=on_chunk)


def detector_gradcam_mapper(options: ClusterOptions, config: str | None, weights: str | None, method: str,
                            target: str, device: str, layout: Any = None,
                            num_heads: int | None = None) -> Callable[[list, Any, list[str]], list[Any]]:
    """``map_images`` for :func:`vizkit.scenarios.detector_gradcam_eval.gradcam_demo` (which also
    takes ``cluster=options`` directly)."""
    def run(files: list, out: Any, layer_names: list[str]) -> list[Any]:
        return map_tasks(options, detector_gradcam_task, [str(f) for f in files], str(out), config, weights,
                         layer_names, method, target, device, layout, num_heads, progress="detector-gradcam",
                         unit="image")
    return run
