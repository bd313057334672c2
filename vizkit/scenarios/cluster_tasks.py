"""Scenario 1, 3, 4 and 5 batch commands on a Dask cluster: every one runs its units with the one
batch runner, :class:`vizkit.batch.BatchMapper` (``clip-gradcam``, ``detector-attention``,
``detector-gradcam``, ``evaluate``, ``vlm-video``). Each unit's function lives with its scenario and runs whole on the
worker (model loaded once per worker process, files and marker written there).

:class:`EvaluationMapper` is the name scenario 3's evaluation has used for its mapper: a
:class:`~vizkit.batch.BatchMapper` on a cluster, whose :attr:`~EvaluationMapper.chunks` lists the
evaluation chunks each worker computed.

Example::

    from vizkit.scenarios.cluster_tasks import EvaluationMapper
    from vizkit.scenarios import run_evaluation
    with EvaluationMapper(workers=2) as mapper:
        summary = run_evaluation("eval_out", max_samples=100, map_chunks=mapper)
"""

from __future__ import annotations

from collections.abc import Callable

from ..batch import BatchMapper, Outcome
from ..distributed.chunks import ClusterOptions

__all__ = ["EvaluationMapper"]


class EvaluationMapper(BatchMapper):
    """A :class:`~vizkit.batch.BatchMapper` on a Dask cluster (``workers`` or ``scheduler``) for
    :func:`vizkit.scenarios.detector_gradcam_eval.run_evaluation`; ``on_chunk(k)`` is called as
    each chunk arrives (tests use it)."""

    def __init__(
        self,
        workers: int | None = None,
        scheduler: str | None = None,
        *,
        progress: bool = False,
        allowed_failures: int = 3,
        quiet: bool = False,
        on_chunk: Callable[[int], None] | None = None,
    ):
        def arrived(outcome: Outcome) -> None:
            if on_chunk is not None and outcome.key.startswith("chunk-"):
                on_chunk(int(outcome.key.split("-")[1]))

        super().__init__(
            ClusterOptions(workers, scheduler, allowed_failures, quiet), progress=progress, on_unit=arrived
        )

    @property
    def chunks(self) -> dict[int, list[int]]:
        """Per worker pid, the evaluation chunks it computed."""
        return {
            pid: [int(k.split("-")[1]) for k in keys if k.startswith("chunk-")]
            for pid, keys in self.units.items()
            if any(k.startswith("chunk-") for k in keys)
        }
