"""Scenario 1, 3 and 4 work on a Dask cluster: scenario 3's evaluation chunks and the batch
CLIs' images (``clip-gradcam``, ``detector-attention``, ``detector-gradcam``).

Each task is a module-level function of picklable arguments; on the worker the model is loaded
ONCE per process (:func:`vizkit.distributed.worker.cached`, keyed by the arguments that
determine it) and ``torch.set_num_threads`` is the worker's thread count. Results travel back to
the client, which writes them (the evaluation's chunk files, with the same atomic writes and
chunk manifest as a single-process run), so the outputs are the same files as without Dask and a
chunk lost with its worker is simply recomputed by Dask on another worker.

Example::

    from vizkit.scenarios.cluster_tasks import EvaluationMapper
    from vizkit.scenarios import run_evaluation
    with EvaluationMapper(workers=2) as mapper:
        summary = run_evaluation("eval_out", max_samples=100, map_chunks=mapper)
"""
from __future__ import annotations

import os
from collections import defaultdict
from contextlib import ExitStack
from typing import Any, Callable, Iterator, Sequence

from ..distributed.chunks import ClusterOptions, as_completed_with_progress, map_tasks, setup_worker
from . import detector_gradcam_eval as dge

__all__ = ["EvaluationMapper", "evaluate_chunk_task", "detector_gradcam_task", "detector_gradcam_mapper",
           "detector_attention_task", "clip_gradcam_task"]


# ------------------------------------------------------------------------------------ scenario 3
def evaluate_chunk_task(args: Any, device: str, k: int) -> tuple[int, dict, dict, dict]:
    """Chunk ``k`` of the evaluation ``args`` on a worker: ``(k, result, arrays, info)``;
    ``info``: the worker's pid and how many times it loaded this evaluation's model."""
    from ..distributed.worker import cache_loads, cached

    setup_worker()
    key = ("scenario3", args, device)
    ctx = cached(key, lambda: dge.evaluation_context(args, device))
    result, arrays = dge.evaluate_chunk(ctx, k)
    import torch

    return k, result, arrays, {"pid": os.getpid(), "loads": cache_loads().get(repr(key), 0),
                               "threads": torch.get_num_threads()}


class EvaluationMapper:
    """``map_chunks`` for :func:`vizkit.scenarios.detector_gradcam_eval.run_evaluation` on a Dask
    cluster (a context manager: the cluster lives as long as the ``with`` block, so one cluster
    can serve several evaluations). ``info`` collects, per worker pid, the chunks it computed and
    its model loads, ``threads`` their torch threads. ``on_chunk(k)`` is called after each chunk
    arrives (tests use it)."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None, *, progress: bool = False,
                 allowed_failures: int = 3, quiet: bool = False, on_chunk: Callable[[int], None] | None = None):
        self.options = ClusterOptions(workers, scheduler, allowed_failures, quiet)
        self.progress, self.on_chunk = progress, on_chunk
        self.chunks: dict[int, list[int]] = defaultdict(list)
        self.loads: dict[int, int] = {}
        self.threads: dict[int, int] = {}
        self.client: Any = None
        self._stack: ExitStack | None = None

    def __enter__(self) -> "EvaluationMapper":
        self._stack = ExitStack()
        self.client = self._stack.enter_context(self.options.client())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stack is not None:
            self._stack.close()
        self.client = self._stack = None

    def __call__(self, args: Any, device: str, todo: Sequence[int]) -> Iterator[tuple[int, dict, dict]]:
        if self.client is None:
            with self:
                yield from self(args, device, todo)
            return
        futures = [self.client.submit(evaluate_chunk_task, args, device, k, pure=False,
                                      key=f"vizkit-evaluate-chunk-{k}-{os.urandom(4).hex()}") for k in todo]
        for fut in as_completed_with_progress(self.client, futures, "evaluate" if self.progress else False, "batch"):
            k, result, arrays, info = fut.result()
            fut.release()  # written by the caller: a worker lost later must not make Dask recompute it
            self.chunks[info["pid"]].append(k)
            self.loads[info["pid"]] = info["loads"]
            self.threads[info["pid"]] = info["threads"]
            yield k, result, arrays
            if self.on_chunk is not None:
                self.on_chunk(k)


# ------------------------------------------------------------------------------------ the batch CLIs
def detector_gradcam_task(path: Any, out: str, config: str | None, weights: str | None, layer_names: list[str],
                          method: str, target: str, device: str, layout: Any = None,
                          num_heads: int | None = None) -> Any:
    """One image of ``vizkit detector-gradcam`` on a worker (the detector loaded once per worker)."""
    from pathlib import Path

    from ..errors import VizkitError
    from ..distributed.worker import cached

    setup_worker()
    det, infos = cached(("detector-gradcam", config, weights, tuple(layer_names), device, num_heads),
                        lambda: _gc_model(config, weights, layer_names, device, num_heads))
    try:
        return dge.gradcam_image(det, infos, Path(path), Path(out), method, target, layout)
    except VizkitError as err:
        return (Path(path).name, str(err))


def _gc_model(config: str | None, weights: str | None, layer_names: list[str], device: str,
              num_heads: int | None = None) -> tuple[Any, Any]:
    det = dge.load_eval_detector(config, weights, num_heads=num_heads, device=device)
    return det, dge.resolve_gradcam_layers(det.model, layer_names, det.size)


def detector_gradcam_mapper(options: ClusterOptions, config: str | None, weights: str | None, method: str,
                            target: str, device: str, layout: Any = None,
                            num_heads: int | None = None) -> Callable[[list, Any, list[str]], list[Any]]:
    """``map_images`` for :func:`vizkit.scenarios.detector_gradcam_eval.gradcam_demo`."""
    def run(files: list, out: Any, layer_names: list[str]) -> list[Any]:
        return map_tasks(options, detector_gradcam_task, [str(f) for f in files], str(out), config, weights,
                         layer_names, method, target, device, layout, num_heads, progress="detector-gradcam",
                         unit="image")
    return run


def detector_attention_task(chunk: list[tuple[str, str]], out: str, model_config: str | None, weights: str | None,
                            head: str | None, layers: Any, head_fusion: str, aggregation: str, multi_layer: bool,
                            batch_size: int, device: str, num_heads: int | None = None) -> tuple[list, list]:
    """A batch of images of ``vizkit detector-attention`` on a worker: ``(results, failures)``."""
    from pathlib import Path

    from . import clip_detector_attention as s
    from ..distributed.worker import cached

    setup_worker()
    detector = cached(("detector-attention", model_config, weights, head, device, num_heads),
                      lambda: s.load_detector_model(None, model_config, weights, head=head, num_heads=num_heads,
                                                    device=device))
    return s.analyze_images(detector, [Path(p) for p, _ in chunk], Path(out), layers, head_fusion, aggregation,
                            multi_layer=multi_layer, stems=[st for _, st in chunk], batch_size=batch_size)


def clip_gradcam_task(item: tuple[str, str], out: str, model_kwargs: dict[str, Any], names: list[str],
                      texts: list[str], target_text_idx: int | None, method: str, target_layer: Any,
                      probability: bool, layout: Any = None) -> dict[str, Any]:
    """One image of ``vizkit clip-gradcam`` on a worker: what the CLI prints about it."""
    from . import clip_text_gradcam as cg
    from ..distributed.worker import cached

    setup_worker()
    path, stem = item
    adapter = cached(("clip-gradcam", tuple(sorted(model_kwargs.items()))), lambda: cg.load_clip_model(**model_kwargs))
    result = cg.explain_clip(adapter, [cg.load_image(path)], names, texts, target_text_idx, method, target_layer,
                             probability, [path], layout=layout)[0]
    written = cg.save_result(result, out, stem)
    t = result.target
    return {"model": adapter.name, "method": result.method, "layers": list(result.layers), "score": result.score,
            "target": t, "target_chosen": result.target_chosen, "prob": float(result.probs[t]),
            "figure": str(written["figure"])}
