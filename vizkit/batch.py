"""The resumable batch runner every batch command uses (``clip-gradcam``, ``detector-attention``,
``detector-gradcam``, ``evaluate``, ``vlm-video`` with several samples).

A batch is a run folder and a list of **units** (an image, a chunk of samples, a VLM sample):

- :class:`BatchRun` opens the run folder with its ``manifest.json`` (the parameters that define
  the run; :func:`vizkit.runs.open_resumable_run`): the same parameters resume it, different
  ones are refused with one message unless ``overwrite``, which starts it afresh;
- each unit is computed by a :class:`Job` (a module-level function of a shared context and the
  unit's payload) that writes the unit's files atomically (:mod:`vizkit.io`); only then the
  runner writes the unit's marker ``.units/<key>.json`` (its status and record), so a crash
  between the files and the marker leaves the unit not done, and a unit that raised is reported
  ``failed``, never marked, and computed again by the next run;
- :class:`BatchMapper` runs the units: in this process, one after the other, or on a Dask
  cluster (:class:`~vizkit.distributed.chunks.ClusterOptions`: a LocalCluster or a scheduler
  address). On the cluster the whole unit runs on the worker, files and marker included; the
  context (a model, a data set) is built once per worker process from the job's picklable
  ``spec``. The same units give the same files either way;
- :meth:`BatchRun.write_index` writes ``index.csv`` and ``index.md``: every unit and its status.

Example::

    from vizkit.batch import BatchMapper, BatchRun, Job, Unit

    def square(ctx, x, folder):                      # module level: picklable for Dask
        write_text(folder / f"{x}.txt", str(x * x))
        return {"square": x * x}

    run = BatchRun.open("out", "squares", {"power": 2}, overwrite=False)
    with BatchMapper() as mapper:                    # BatchMapper(ClusterOptions(workers=2)) for Dask
        outcomes = run.run(mapper, Job(square), [Unit(str(x), x) for x in range(4)])
    run.write_index("Squares", columns=["square"])
"""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .io import unique_stems, write_csv, write_json, write_text
from .runs import open_resumable_run

__all__ = [
    "Unit",
    "Job",
    "Outcome",
    "BatchRun",
    "BatchMapper",
    "run_units",
    "run_inputs",
    "resolved",
    "records",
    "UNITS_DIR",
    "RUN_FILES",
    "DONE",
    "EARLIER",
    "INCOMPLETE",
    "FAILED",
]

#: the folder of a run folder that holds one marker per finished unit (``.units/<key>.json``)
UNITS_DIR = ".units"
#: the runner's own files in a run folder (besides the units' files)
RUN_FILES = ("manifest.json", "index.csv", "index.md", UNITS_DIR)
#: a unit's status in the index: done in this run, done in an earlier run (skipped), finished with
#: missing inputs (computed again next time), failed (reported, not marked)
DONE, EARLIER, INCOMPLETE, FAILED = "done", "done (earlier run)", "incomplete", "failed"


@dataclass(frozen=True)
class Unit:
    """One unit of a batch: ``key`` names it (its marker ``.units/<key>.json``; letters, digits,
    ``_-.``), ``payload`` is what the job's function gets (picklable)."""

    key: str
    payload: Any = None


@dataclass(frozen=True)
class Job:
    """What every unit of a batch shares.

    ``fn(context, payload, folder) -> record``: computes one unit, writes its files into the run
    ``folder`` (atomically) and returns a JSON-able ``record`` (the marker keeps it); a record
    with a true ``"incomplete"`` entry keeps the unit's files but is computed again next time.
    With ``grouped``, ``fn(context, [payloads], folder)`` computes several units at once (e.g.
    one forward pass) and returns one record or exception per payload.
    ``load(spec)`` (``load(**spec)`` for a dict) builds the context (once per process);
    ``context``: an already built one, used in this process only (never sent to a worker).
    ``catch``: the exceptions that make a unit ``failed`` (others stop the batch). ``name``: the
    progress bar's label."""

    fn: Callable[..., Any]
    load: Callable[[Any], Any] | None = None
    spec: Any = None
    context: Any = None
    grouped: bool = False
    catch: tuple[type[BaseException], ...] = (Exception,)
    name: str = "batch"

    def resolve(self) -> Any:
        """The context in this process: :attr:`context`, else built by ``load`` once per process."""
        if self.context is not None:
            return self.context
        if self.load is None:
            return None
        from .distributed.worker import cached

        spec = self.spec
        return cached(self.context_key(), lambda: self.load(**spec) if isinstance(spec, dict) else self.load(spec))

    def context_key(self) -> tuple[str, str]:
        """The per-process cache key of the context: the loader and the spec."""
        load = self.load
        return (f"{getattr(load, '__module__', '')}.{getattr(load, '__qualname__', repr(load))}", repr(self.spec))


@dataclass
class Outcome:
    """A unit's result: ``status`` (done, done (earlier run), incomplete, failed), its ``record``
    (what the job returned, or the marker's record of an earlier run), the ``error`` of a failed
    unit (``error_type``: the exception's class name)."""

    key: str
    status: str
    record: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    error_type: str = ""

    @property
    def ok(self) -> bool:
        """The unit's files are written (done now or earlier, or incomplete)."""
        return self.status != FAILED


def _marker(folder: Path, key: str) -> Path:
    return folder / UNITS_DIR / f"{key}.json"


def run_units(job: Job, units: Sequence[Unit], folder: str | os.PathLike) -> list[Outcome]:
    """Compute ``units`` here (in this process or on the Dask worker that runs this), writing
    each unit's marker after its files; the outcomes in the units' order."""
    folder = Path(folder)
    ctx = job.resolve()
    results: list[Any]
    if job.grouped:
        try:
            results = list(job.fn(ctx, [u.payload for u in units], folder))
        except job.catch as err:
            results = [err] * len(units)
    else:
        results = []
        for u in units:
            try:
                results.append(job.fn(ctx, u.payload, folder))
            except job.catch as err:
                results.append(err)
    out = []
    for unit, res in zip(units, results):
        if isinstance(res, BaseException):
            if not isinstance(res, job.catch):
                raise res
            out.append(Outcome(unit.key, FAILED, error=str(res), error_type=type(res).__name__))
            continue
        record = dict(res or {})
        status = INCOMPLETE if record.get("incomplete") else DONE
        write_json(_marker(folder, unit.key), {"unit": unit.key, "status": status, "record": record})
        out.append(Outcome(unit.key, status, record))
    return out


def _worker_units(job: Job, units: Sequence[Unit], folder: str) -> tuple[list[Outcome], dict[str, int]]:
    """:func:`run_units` on a Dask worker: torch threads set, the context cached per process;
    also ``info``: the worker's pid, its loads of this job's context, its torch threads."""
    import torch

    from .distributed.chunks import setup_worker
    from .distributed.worker import cache_loads

    setup_worker()
    outcomes = run_units(job, units, folder)
    return outcomes, {
        "pid": os.getpid(),
        "loads": cache_loads().get(repr(job.context_key()), 0),
        "threads": torch.get_num_threads(),
    }


class BatchMapper:
    """Runs a job's units: in this process, serially (``cluster`` None), or on a Dask cluster
    (``cluster``: :class:`~vizkit.distributed.chunks.ClusterOptions`), one task per group of units.
    A context manager: a cluster lives as long as the ``with`` block (one cluster can serve several
    batches); used outside one, it lives for one :meth:`map` call. Per worker pid it collects the
    units computed (:attr:`units`), the context loads (:attr:`loads`) and torch threads
    (:attr:`threads`); ``on_unit(outcome)`` is called as each unit arrives (tests use it)."""

    def __init__(
        self, cluster: Any = None, *, progress: bool = False, on_unit: Callable[[Outcome], None] | None = None
    ):
        self.cluster, self.progress, self.on_unit = cluster, progress, on_unit
        self.units: dict[int, list[str]] = defaultdict(list)
        self.loads: dict[int, int] = {}
        self.threads: dict[int, int] = {}
        self.client: Any = None
        self._stack: ExitStack | None = None

    @property
    def distributed(self) -> bool:
        """Whether the units run on a Dask cluster."""
        return self.cluster is not None

    def __enter__(self) -> "BatchMapper":
        self._stack = ExitStack()
        if self.cluster is not None:
            self.client = self._stack.enter_context(self.cluster.client())
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stack is not None:
            self._stack.close()
        self.client = self._stack = None

    def map(self, job: Job, units: Sequence[Unit], folder: str | os.PathLike, group: int = 1) -> Iterator[Outcome]:
        """The outcomes of ``units`` (in groups of ``group`` per call of the job), as they finish."""
        groups = [list(units[i : i + max(1, group)]) for i in range(0, len(units), max(1, group))]
        if not groups:
            return
        if self.cluster is None:
            yield from self._local(job, groups, Path(folder))
        elif self.client is None:
            with self:
                yield from self.map(job, units, folder, group)
        else:
            yield from self._dask(job, groups, str(folder))

    def _local(self, job: Job, groups: list[list[Unit]], folder: Path) -> Iterator[Outcome]:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=sum(map(len, groups)),
            desc=job.name,
            unit="unit",
            file=sys.stderr,
            disable=not (self.progress and sum(map(len, groups)) > 1),
        )
        try:
            for units in groups:
                for outcome in run_units(job, units, folder):
                    self.units[os.getpid()].append(outcome.key)
                    bar.update(1)
                    yield outcome
                    if self.on_unit is not None:
                        self.on_unit(outcome)
        finally:
            bar.close()

    def _dask(self, job: Job, groups: list[list[Unit]], folder: str) -> Iterator[Outcome]:
        from .distributed.chunks import as_completed_with_progress

        remote = replace(job, context=None)  # a live model never travels; the worker builds its own
        futures = [
            self.client.submit(
                _worker_units,
                remote,
                units,
                folder,
                pure=False,
                key=f"vizkit-{job.name}-{units[0].key}-{os.urandom(4).hex()}",
            )
            for units in groups
        ]
        for fut in as_completed_with_progress(self.client, futures, job.name if self.progress else False, "unit"):
            outcomes, info = fut.result()
            fut.release()  # its files are written: a worker lost later must not make Dask compute it again
            self.loads[info["pid"]] = info["loads"]
            self.threads[info["pid"]] = info["threads"]
            for outcome in outcomes:
                self.units[info["pid"]].append(outcome.key)
                yield outcome
                if self.on_unit is not None:
                    self.on_unit(outcome)


class BatchRun:
    """A resumable batch's run folder (see the module docstring). :meth:`open` it, :meth:`run`
    jobs' units into it (the done ones are skipped), :meth:`write_index`. :attr:`outcomes` holds
    every unit run or skipped so far, by key, in the order given."""

    def __init__(self, folder: Path, manifest: Mapping[str, Any], resuming: bool):
        self.folder, self.manifest, self.resuming = folder, dict(manifest), resuming
        self.outcomes: dict[str, Outcome] = {}

    @classmethod
    def open(
        cls,
        output_dir: str | os.PathLike | None,
        name: str,
        manifest: Mapping[str, Any],
        overwrite: bool = False,
        protect: Sequence[str | os.PathLike] = (),
    ) -> "BatchRun":
        """Open (or resume) the run folder ``output_dir`` (None: a new timestamped folder named after
        ``name``) for a run defined by ``manifest`` (JSON-able). ``protect``: input files that
        ``overwrite`` must not delete (an input inside the output folder is refused)."""
        from .errors import ParameterError

        manifest = json.loads(json.dumps(manifest))  # as stored: tuples become lists
        if overwrite and output_dir and Path(output_dir).is_dir():
            root = Path(output_dir).resolve()
            inside = [str(p) for p in protect if root in Path(p).resolve().parents]
            if inside:
                raise ParameterError(
                    f"--overwrite would delete the inputs inside {str(output_dir)!r} "
                    f"({inside[0]}{', ...' if len(inside) > 1 else ''}): choose another output folder"
                )
        folder, resuming = open_resumable_run(output_dir, name, manifest, overwrite)
        return cls(folder, manifest, resuming)

    def marker(self, key: str) -> dict[str, Any] | None:
        """The marker of unit ``key`` (None: not written, or unreadable)."""
        try:
            return json.loads(_marker(self.folder, key).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None

    def done(self, key: str) -> bool:
        """Unit ``key`` is done: its marker says so (an incomplete or failed unit is not)."""
        m = self.marker(key)
        return bool(m) and m.get("status") == DONE

    def forget(self, keys: Sequence[str]) -> None:
        """Remove the markers of ``keys`` (their units are computed again; their files stay until then)."""
        for key in keys:
            _marker(self.folder, key).unlink(missing_ok=True)

    def run(self, mapper: BatchMapper, job: Job, units: Sequence[Unit], group: int = 1) -> list[Outcome]:
        """Compute the units that are not done (``group`` per call of the job), skip the others
        (``done (earlier run)``, their records read from their markers); the outcomes in the
        units' order. A unit that raised one of ``job.catch`` is ``failed``; anything else
        stops the batch, the units finished so far keeping their markers."""
        got = {
            u.key: Outcome(u.key, EARLIER, dict((self.marker(u.key) or {}).get("record") or {}))
            for u in units
            if self.done(u.key)
        }
        try:
            for outcome in mapper.map(job, [u for u in units if u.key not in got], self.folder, group):
                got[outcome.key] = outcome
        finally:  # in the units' order, whatever order they finished in (an interrupted batch: those done)
            self.outcomes.update((u.key, got[u.key]) for u in units if u.key in got)
        return [self.outcomes[u.key] for u in units]

    def write_index(self, title: str, intro: str = "", columns: Sequence[str] = ()) -> Path:
        """``index.csv`` and ``index.md``: every unit of :attr:`outcomes` with its status, the
        ``columns`` of its record and its error."""
        import pandas as pd

        rows = [
            {
                "unit": o.key,
                "status": o.status,
                **{c: o.record.get(c, "") for c in columns},
                "error": f"{o.error_type}: {o.error}" if o.error_type else o.error,
            }
            for o in self.outcomes.values()
        ]
        frame = pd.DataFrame(rows, columns=["unit", "status", *columns, "error"])
        write_csv(self.folder / "index.csv", frame)
        counts = frame["status"].value_counts()
        summary = ", ".join(f"{int(counts[s])} {s}" for s in (DONE, EARLIER, INCOMPLETE, FAILED) if s in counts)
        about = " ".join(
            p
            for p in (
                intro,
                f"{len(frame)} unit(s): {summary or 'none'}. A rerun into this folder "
                "skips the done units and computes the others.",
            )
            if p
        )
        cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
        table = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
        table += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
        return write_text(self.folder / "index.md", f"# {title}\n\n{about}\n\n" + "\n".join(table) + "\n")

    def failed(self) -> list[Outcome]:
        """The units that failed in this run."""
        return [o for o in self.outcomes.values() if o.status == FAILED]


def run_inputs(
    output_dir: str | os.PathLike | None,
    name: str,
    manifest: Mapping[str, Any],
    files: Sequence[Path],
    job: Job,
    payload: Callable[[Path, str], Any],
    *,
    overwrite: bool = False,
    cluster: Any = None,
    progress: bool = False,
    group: Callable[[int], int] | int = 1,
    columns: Sequence[str] = (),
) -> tuple[BatchRun, list[Outcome]]:
    """A batch of one unit per input file (key: its stem, made unique; ``payload(file, key)``):
    the run folder opened (``overwrite`` never deletes the inputs), the units not done computed
    (``group``: units per call of a grouped job, or a function of how many are left), the index
    written. Returns the run and the outcomes in the files' order."""
    batch = BatchRun.open(output_dir, name, manifest, overwrite, protect=files)
    units = [Unit(key, payload(f, key)) for key, f in zip(unique_stems(files), files)]
    size = group(sum(not batch.done(u.key) for u in units)) if callable(group) else group
    outcomes = batch.run(BatchMapper(cluster, progress=progress), job, units, max(1, size))
    batch.write_index(f"{name}: units", "One unit per input file.", columns)
    return batch, outcomes


def resolved(path: str | os.PathLike | None) -> str | None:
    """A path as a manifest records it (absolute), None as None."""
    return str(Path(path).resolve()) if path else None


def records(frame: Any) -> list[dict[str, Any]]:
    """A DataFrame's rows as dicts of plain Python values (exact, picklable: unit payloads)."""
    return [
        {k: v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v for k, v in r.items()}
        for r in frame.to_dict("records")
    ]
