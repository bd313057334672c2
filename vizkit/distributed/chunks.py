"""Where batch work runs on a Dask cluster, whatever the scenario: :class:`ClusterOptions` (a
local cluster or an existing scheduler), :func:`as_completed_with_progress` (futures as they
finish, a progress bar, Ctrl-C cancels the rest) and :func:`setup_worker` (torch threads per
worker process). The one batch runner that maps units on it is :mod:`vizkit.batch`
(:class:`~vizkit.batch.BatchMapper`); this module knows no scenario.

Example::

    from vizkit.batch import BatchMapper
    from vizkit.distributed.chunks import ClusterOptions
    with BatchMapper(ClusterOptions(workers=2)) as mapper:
        ...
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["ClusterOptions", "as_completed_with_progress", "setup_worker"]


class ClusterOptions:
    """Where to run: ``workers`` (a local cluster) or ``scheduler`` (an address); see
    :func:`vizkit.distributed.cluster.cluster_client`."""

    def __init__(
        self, workers: int | None = None, scheduler: str | None = None, allowed_failures: int = 3, quiet: bool = False
    ):
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

        bar = tqdm(total=len(futures), desc=progress if isinstance(progress, str) else None, unit=unit, file=sys.stderr)
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


def setup_worker() -> None:
    """On a worker: ``torch.set_num_threads`` to the worker's share of the cores."""
    from .cluster import worker_threads
    from .worker import set_torch_threads

    set_torch_threads(worker_threads())
