"""The Dask cluster every distributed command uses, and its command-line flags (one helper).

:func:`add_cluster_flags` gives a subcommand ``--workers N | --scheduler ADDRESS``;
:func:`cluster_client` yields a connected ``distributed.Client``: a ``LocalCluster`` of ``N``
process workers with one thread each, everything (scheduler, workers, dashboard) listening on
127.0.0.1 only, or the existing scheduler at ``ADDRESS`` (one clear error within ``timeout``
seconds when it cannot be reached). Every worker gets :class:`~vizkit.distributed.worker.WorkerSetup`: ``torch`` and the
BLAS libraries limited to the worker's threads (``torch.set_num_threads``; ``OMP_NUM_THREADS``
for the notebook kernels it starts) so workers do not oversubscribe the cores, and, on a local
cluster, Ctrl-C left to the client (the client cancels the runs and stops the workers).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import InputError, ParameterError

__all__ = ["add_cluster_flags", "cluster_requested", "cluster_client", "worker_threads", "DEFAULT_CONNECT_TIMEOUT"]

#: seconds to wait for an existing scheduler (``--scheduler``) before giving up with one message
DEFAULT_CONNECT_TIMEOUT = 5.0


def add_cluster_flags(parser: argparse.ArgumentParser, *, retries: bool = False) -> None:
    """``--workers N | --scheduler ADDRESS`` (and ``--retries K``) on a subcommand's parser."""
    group = parser.add_argument_group("Dask cluster (see docs/howto/dask.md)")
    where = group.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="run on a local Dask cluster of N process workers, one thread each (127.0.0.1 only)",
    )
    where.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run on an existing Dask cluster: its scheduler address, e.g. tcp://host:8786",
    )
    if retries:
        group.add_argument(
            "--retries",
            type=int,
            default=1,
            metavar="K",
            help="retries of a run whose worker died or whose kernel crashed (default 1)",
        )


def cluster_requested(args: argparse.Namespace) -> bool:
    """Whether the parsed flags ask for Dask (``--workers N`` or ``--scheduler ADDRESS``)."""
    return getattr(args, "workers", None) is not None or bool(getattr(args, "scheduler", None))


def worker_threads() -> int:
    """Threads of the current Dask worker (1 outside a worker)."""
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        return 1


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as err:  # pragma: no cover - it is a dependency
        raise InputError("--workers/--scheduler need Dask distributed: pip install 'dask[distributed]'") from err
    return distributed


@contextmanager
def cluster_client(
    workers: int | None = None,
    scheduler: str | None = None,
    *,
    allowed_failures: int | None = None,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    dashboard: bool = True,
    quiet: bool = False,
) -> Iterator[Any]:
    """A ``distributed.Client`` on a new local cluster (``workers`` processes, default: the CPU
    count) or on the scheduler at ``scheduler``; closed (and the local cluster stopped) on exit.

    ``allowed_failures``: how many times a task may lose its worker before it is reported failed
    (local clusters; an existing scheduler keeps its own ``distributed.scheduler.allowed-failures``).
    """
    if workers is not None and scheduler:
        raise ParameterError("give --workers or --scheduler, not both")
    if workers is not None and workers < 1:
        raise ParameterError(f"--workers must be at least 1, got {workers}")
    distributed = _import_distributed()
    import dask

    from .worker import WorkerSetup

    env = {
        k: os.environ[k]
        for k in ("PYTHONPATH", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "MPLBACKEND")
        if k in os.environ
    }
    cluster = None
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    if scheduler:
        if "://" not in scheduler and ":" not in scheduler:
            raise ParameterError(f"--scheduler {scheduler!r} is not an address: give e.g. tcp://host:8786")
        with dask.config.set({"distributed.comm.timeouts.connect": f"{timeout}s"}):
            try:
                client = distributed.Client(scheduler, timeout=f"{timeout}s", set_as_default=False)
            except (OSError, TimeoutError, ValueError) as err:
                raise InputError(
                    f"cannot reach the Dask scheduler at {scheduler!r} within {timeout:g} s: start one "
                    "(`dask scheduler`, dask-jobqueue, dask-kubernetes) or check the address"
                ) from err
        say(f"connected to the Dask scheduler {scheduler} ({len(client.scheduler_info()['workers'])} worker(s))")
        setup = WorkerSetup(1, {})
    else:
        n = workers or os.cpu_count() or 1
        # worker-saturation 1.0: a worker holds only the task it runs (none queued behind it), so a worker
        # that dies takes only that task down (Dask counts every task on it towards allowed-failures)
        config = {
            "distributed.worker.daemon": False,
            "distributed.scheduler.worker-saturation": 1.0,
            "distributed.admin.system-monitor.gil.enabled": False,
        }
        if allowed_failures is not None:
            config["distributed.scheduler.allowed-failures"] = int(allowed_failures)
        with dask.config.set(config):
            cluster = distributed.LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                worker_dashboard_address=None,  # None would mean :8787
                silence_logs=logging.CRITICAL,
            )
            client = distributed.Client(cluster, set_as_default=False)
        link = client.dashboard_link if dashboard else None
        say(f"local Dask cluster: {n} worker(s) x 1 thread" + (f"; dashboard {link}" if link else ""))
        setup = WorkerSetup(1, env, ignore_sigint=True)
    try:
        client.register_plugin(setup, name=WorkerSetup.name)
        yield client
    finally:
        _close(client, cluster)


def _close(client: Any, cluster: Any) -> None:
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    try:
        client.close(timeout=10)
    except Exception:  # noqa: BLE001 - closing must not hide the real error
        pass
    if cluster is not None:
        try:
            cluster.close(timeout=10)
        except Exception:  # noqa: BLE001
            pass
