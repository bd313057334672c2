"""Work mapped on a Dask cluster, whatever the scenario: :class:`ClusterOptions` (a local
cluster or an existing scheduler), :func:`map_tasks` (one task per item, results in order, a
progress bar), :class:`ClusterChunkMapper` (chunks of a resumable run, yielded as they finish) and
:func:`setup_worker` (torch threads per worker process).

The scenarios' own tasks (scenario 3's evaluation chunks, the batch CLIs' images) live in
:mod:`vizkit.scenarios.cluster_tasks`; this module knows no scenario.

Example::

    from vizkit.distributed.chunks import ClusterOptions, map_tasks
    squares = map_tasks(ClusterOptions(workers=2), pow, [1, 2, 3], 2)
"""
from __future__ import annotations

import os
import sys
from collections import defaultdict
from contextlib import ExitStack
from typing import Any, Callable, Iterator, Sequence

__all__ = ["ClusterOptions", "ClusterChunkMapper", "map_tasks", "as_completed_with_progress", "setup_worker"]


class ClusterOptions:
    """Where to run: ``workers`` (a local cluster) or ``scheduler`` (an address); see
    :func:`vizkit.distributed.cluster.cluster_client`."""

    def __init__(self, workers: int | None = None, scheduler: str | None = None, allowed_failures: int = 3,
                 quiet: bool = False):
        self.workers, self.scheduler, self.allowed_failures, self.quiet = workers, scheduler, allowed_failures, quiet

    def client(self) -> Any:
        from .cluster import cluster_client

        return cluster_client(self.workers, self.scheduler, allowed_failures=self.allowed_failures, quiet=self.quiet)


def as_completed_with_progress(client: Any, futures: Sequence[Any], progress: str | bool, unit: str) -> Iterator[Any]:
    """The futures as they finish, with a tqdm bar; Ctrl-C cancels the rest and re-raises."""
    from distributed import as_completed

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(futures), desc=progress if isinstance(progress, str) else None, unit=unit,
                   file=sys.stderr)
    try:
        for fut in as_completed(list(futures), loop=client.loop):
            yield fut
            if bar is not None:
                bar.update(1)
    except BaseException:
        client.cancel(list(futures), force=True)
        raise
    finally:
        if bar is not None:
            bar.close()


def map_tasks(options: ClusterOptions, task: Callable[..., Any], items: Sequence[Any], *args: Any,
              progress: str | bool = False, unit: str = "item", **kwargs: Any) -> list[Any]:
    """``[task(item, *args, **kwargs) for item in items]`` on the cluster (results in item order).
    The shared helper of the batch CLIs' ``--workers/--scheduler``."""
    with options.client() as client:
        futures = [client.submit(task, item, *args, pure=False, **kwargs) for item in items]
        order = {f.key: i for i, f in enumerate(futures)}
        out: list[Any] = [None] * len(items)
        for fut in as_completed_with_progress(client, futures, progress, unit):
            out[order[fut.key]] = fut.result()
            fut.release()
        return out


class ClusterChunkMapper:
    """Chunks of a resumable run computed on a Dask cluster: ``mapper(args, device, todo)`` submits
    ``task(args, device, k)`` for each chunk ``k`` of ``todo`` and yields ``(k, result, arrays)`` as
    they finish (the caller writes each). ``task`` returns ``(k, result, arrays, info)``, ``info``
    holding the worker's ``pid``, its model ``loads`` and torch ``threads``: collected per pid in
    :attr:`chunks`, :attr:`loads`, :attr:`threads`. A context manager: the cluster lives as long as
    the ``with`` block (one cluster can serve several runs); used outside one, it lives for the call.
    ``on_chunk(k)`` is called after each chunk arrives (tests use it)."""

    def __init__(self, task: Callable[..., tuple[int, dict, dict, dict]], options: ClusterOptions, *,
                 name: str = "chunk", progress: bool = False, on_chunk: Callable[[int], None] | None = None):
        self.task, self.options, self.name = task, options, name
        self.progress, self.on_chunk = progress, on_chunk
        self.chunks: dict[int, list[int]] = defaultdict(list)
        self.loads: dict[int, int] = {}
        self.threads: dict[int, int] = {}
        self.client: Any = None
        self._stack: ExitStack | None = None

    def __enter__(self) -> "ClusterChunkMapper":
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
        futures = [self.client.submit(self.task, args, device, k, pure=False,
                                      key=f"vizkit-{self.name}-chunk-{k}-{os.urandom(4).hex()}") for k in todo]
        for fut in as_completed_with_progress(self.client, futures, self.name if self.progress else False, "batch"):
            k, result, arrays, info = fut.result()
            fut.release()  # written by the caller: a worker lost later must not make Dask recompute it
            self.chunks[info["pid"]].append(k)
            self.loads[info["pid"]] = info["loads"]
            self.threads[info["pid"]] = info["threads"]
            yield k, result, arrays
            if self.on_chunk is not None:
                self.on_chunk(k)


def setup_worker() -> None:
    """On a worker: ``torch.set_num_threads`` to the worker's share of the cores."""
    from .cluster import worker_threads
    from .worker import set_torch_threads

    set_torch_threads(worker_threads())
