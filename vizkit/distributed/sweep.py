"""``vizkit run``: validated, parallel, resumable papermill runs of a notebook on Dask.

:func:`plan_sweep` reads the notebook's parameters and validates every run (``-p``/``-f``
overrides merged with each grid point) with the notebook's own check before anything runs (pass
the :class:`NotebookSpec` read with the scenario registry's validator lookup, as ``vizkit run``
does; a bare path is checked against its parameters cell's annotations);
:func:`run_sweep` executes the runs as independent papermill executions on the cluster, each in
its own folder ``<output_dir>/<run name>/`` (the executed notebook ``<stem>.ipynb`` and the
notebook's outputs in ``outputs/``), and rewrites ``index.csv`` and ``index.md`` (parameters,
status, duration, error, links) whenever a run finishes.

- A failed run (an exception in a cell) is recorded with its error cell and does not stop the
  others; a run whose worker died is retried (``retries``), then reported.
- A run folder is marked complete (:func:`vizkit.runs.mark_complete`, with its parameters) only
  after its notebook finished: rerunning the sweep skips those runs (``force`` reruns them), and
  redoes any other (interrupted, failed, or run with other parameters).
- Ctrl-C cancels the pending runs, stops the workers and records them as cancelled.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, ParameterError
from ..io import write_text
from ..runs import COMPLETE_MARKER, clear_complete, is_complete, mark_complete
from .params import RESERVED, NotebookSpec, expand_grid, load_grid, load_yaml_mapping, read_notebook, run_name

__all__ = [
    "RunPlan",
    "RunRecord",
    "SweepResult",
    "SweepInterrupted",
    "plan_sweep",
    "run_sweep",
    "execute_run",
    "write_index",
    "sweep_from_files",
]

OUTPUTS = "outputs"  # the notebook's output_dir inside a run folder


@dataclass
class RunPlan:
    """One planned run of a sweep: its folder name, the validated parameter overrides and its folder."""

    name: str
    params: dict[str, Any]  # the overrides passed to papermill (validated), without output_dir
    folder: Path


@dataclass
class RunRecord:
    """What became of one run (a row of ``index.csv``): parameters, status, duration, error, outputs."""

    name: str
    params: dict[str, Any]
    status: str = "pending"  # pending | running | done | skipped | failed | cancelled
    duration: float | None = None
    error: str = ""
    notebook: str = ""
    report: str = ""
    attempts: int = 0


@dataclass
class SweepResult:
    """A finished sweep: every run's record and the index files (``index.csv``, ``index.md``)."""

    records: list[RunRecord]
    output_dir: Path
    index_csv: Path
    index_md: Path
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.records if r.status == "failed"]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.records:
            out[r.status] = out.get(r.status, 0) + 1
        return out


class SweepInterrupted(Exception):
    """Ctrl-C during a sweep: pending runs were cancelled (``result`` holds the index)."""

    def __init__(self, result: SweepResult):
        super().__init__("interrupted")
        self.result = result


def plan_sweep(
    notebook: str | os.PathLike | NotebookSpec,
    params: Mapping[str, Any] | None = None,
    grid: Any = None,
    output_dir: str | os.PathLike = "runs/sweep",
) -> tuple[NotebookSpec, list[RunPlan]]:
    """The notebook's spec and its runs, every one validated (a :class:`ParameterError` naming
    the run otherwise). ``notebook``: a path or a :class:`NotebookSpec` (:func:`read_notebook`);
    ``grid``: None, a mapping of lists or a list of mappings."""
    spec = notebook if isinstance(notebook, NotebookSpec) else read_notebook(notebook)
    params = dict(params or {})
    points = expand_grid(grid, "--grid") if grid is not None else [{}]
    grid_keys = list(dict.fromkeys(k for p in points for k in p))
    for name in RESERVED:
        if name in params or name in grid_keys:
            raise ParameterError(
                f"{name} is set by vizkit run (each run writes into its own folder under "
                "--output-dir): remove it from the parameters"
            )
    unknown = [k for k in grid_keys if k not in spec.defaults]
    if unknown:  # say it is the grid, with the notebook's own message for the closest names
        try:
            spec.validate({k: spec.defaults.get(k) for k in unknown})
        except ParameterError as err:
            raise ParameterError(f"--grid: {err}") from err
    keys = grid_keys if grid is not None else list(params)
    out = Path(output_dir)
    runs: list[RunPlan] = []
    names: set[str] = set()
    for point in points:
        overrides = {**params, **point}
        if "interactive" in spec.defaults and "interactive" not in overrides:
            overrides["interactive"] = False  # headless: static figures only
        try:
            spec.validate({**overrides, **({"output_dir": ""} if "output_dir" in spec.defaults else {})})
        except ParameterError as err:
            where = f"run {run_name(point)}: " if grid is not None else ""
            raise ParameterError(f"{where}{err}") from err
        name = run_name({**params, **point}, keys)
        if name in names:
            raise ParameterError(f"two runs of the grid have the same parameters ({name}): remove the duplicate")
        names.add(name)
        runs.append(RunPlan(name, overrides, out / name))
    return spec, runs


# ---------------------------------------------------------------------------------------- one run
def execute_run(
    notebook: str,
    folder: str,
    params: dict[str, Any],
    *,
    kernel_name: str = "python3",
    has_output_dir: bool = True,
    cwd: str | None = None,
) -> dict[str, Any]:
    """Execute one papermill run into ``folder`` (on a worker). A notebook exception is returned
    as ``status="failed"`` with its error cell; a dead kernel raises (so Dask retries it)."""
    from papermill.exceptions import PapermillExecutionError

    from .execute import execute_notebook

    run = Path(folder)
    clear_complete(run)
    if run.is_dir():  # leftovers of an interrupted or failed attempt
        for child in run.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    run.mkdir(parents=True, exist_ok=True)
    executed = run / Path(notebook).name
    parameters = dict(params)
    if has_output_dir:
        parameters["output_dir"] = str((run / OUTPUTS).resolve())
    start = time.perf_counter()
    record: dict[str, Any] = {"notebook": executed.name, "pid": os.getpid()}
    try:
        execute_notebook(notebook, executed, parameters, kernel_name=kernel_name, cwd=cwd)
    except PapermillExecutionError as err:
        record.update(
            status="failed",
            duration=time.perf_counter() - start,
            error=f"cell {err.exec_count}: {err.ename}: {err.evalue}".strip(),
        )
        write_text(
            run / "error.txt",
            f"{record['error']}\n\n"
            + "".join(err.traceback if isinstance(err.traceback, list) else [str(err.traceback)])
            + "\n",
        )
        return record
    duration = time.perf_counter() - start
    reports = sorted((run / OUTPUTS).rglob("*report*.md")) if (run / OUTPUTS).is_dir() else []
    record.update(status="done", duration=duration, report=reports[0].relative_to(run).as_posix() if reports else "")
    mark_complete(
        run,
        {
            "params": json.loads(json.dumps(params, default=str)),
            "notebook": str(notebook),
            "duration": round(duration, 3),
            "report": record["report"],
        },
    )
    return record


def _completed(plan: RunPlan) -> dict[str, Any] | None:
    """The marker of a complete run folder with the same parameters, else None."""
    if not is_complete(plan.folder):
        return None
    try:
        info = json.loads((plan.folder / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    same = info.get("params") == json.loads(json.dumps(plan.params, default=str))
    return info if same else None


# ---------------------------------------------------------------------------------------- index
def write_index(
    output_dir: Path, records: Sequence[RunRecord], param_names: Sequence[str], notebook: str
) -> tuple[Path, Path]:
    """``index.csv`` and ``index.md`` (atomic rewrites): one row per run."""
    cols = ["run", "status", *param_names, "duration_s", "attempts", "error", "notebook", "report"]
    rows = []
    for r in records:

        def link(rel: str, name: str = r.name) -> str:
            return f"{name}/{rel}" if rel else ""

        rows.append(
            {
                "run": r.name,
                "status": r.status,
                **{k: _cell(r.params.get(k)) for k in param_names},
                "duration_s": "" if r.duration is None else f"{r.duration:.1f}",
                "attempts": r.attempts,
                "error": r.error,
                "notebook": link(r.notebook),
                "report": link(r.report),
            }
        )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path = write_text(output_dir / "index.csv", buf.getvalue())
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    md = [
        f"# Runs of `{notebook}`",
        "",
        ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + f" (of {len(records)}); updated "
        + time.strftime("%Y-%m-%d %H:%M:%S"),
        "",
        "| " + " | ".join(c for c in cols if c not in ("notebook", "report")) + " | links |",
        "|" + "---|" * (len(cols) - 1),
    ]
    for row in rows:
        links = " ".join(f"[{k}]({row[k]})" for k in ("notebook", "report") if row[k])
        md.append("| " + " | ".join(esc(row[c]) for c in cols if c not in ("notebook", "report")) + f" | {links} |")
    md_path = write_text(output_dir / "index.md", "\n".join(md) + "\n")
    return csv_path, md_path


def _cell(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v) if v is not None else ""


# ---------------------------------------------------------------------------------------- the sweep
def run_sweep(
    notebook: str | os.PathLike | NotebookSpec,
    params: Mapping[str, Any] | None = None,
    grid: Any = None,
    *,
    output_dir: str | os.PathLike = "runs/sweep",
    workers: int | None = None,
    scheduler: str | None = None,
    retries: int = 1,
    force: bool = False,
    progress: bool = True,
    kernel_name: str = "python3",
    connect_timeout: float | None = None,
) -> SweepResult:
    """Validate, then run the sweep on Dask (see the module docstring). Raises
    :class:`SweepInterrupted` on Ctrl-C; failed runs are in ``result.failed``."""
    if retries < 0:
        raise ParameterError(f"--retries must be >= 0, got {retries}")
    spec, plans = plan_sweep(notebook, params, grid, output_dir)  # every run validated before any starts
    notebook = spec.path  # a path from here on
    out = Path(output_dir)
    param_names = list(dict.fromkeys(k for p in plans for k in p.params))
    records = [RunRecord(p.name, p.params) for p in plans]
    todo = []
    for plan, rec in zip(plans, records):
        info = None if force else _completed(plan)
        if info is not None:
            rec.status, rec.duration = "skipped", info.get("duration")
            rec.notebook, rec.report = Path(notebook).name, info.get("report", "")
        else:
            todo.append((plan, rec))
    result = SweepResult(records, out, out / "index.csv", out / "index.md")
    nb_label = str(notebook)
    if not todo:
        out.mkdir(parents=True, exist_ok=True)
        write_index(out, records, param_names, nb_label)
        return result

    from .cluster import DEFAULT_CONNECT_TIMEOUT, cluster_client

    interrupted = False
    # the index is written once the cluster is there: a refused sweep (no scheduler) writes nothing
    with cluster_client(
        workers if workers is not None or scheduler else min(len(todo), os.cpu_count() or 1),
        scheduler,
        allowed_failures=retries,
        timeout=connect_timeout or DEFAULT_CONNECT_TIMEOUT,
    ) as client:
        from distributed import as_completed

        out.mkdir(parents=True, exist_ok=True)
        write_index(out, records, param_names, nb_label)

        nb_abs = str(Path(notebook).resolve())
        futures = {}
        for plan, rec in todo:
            fut = client.submit(
                execute_run,
                nb_abs,
                str(plan.folder.resolve()),
                plan.params,
                kernel_name=kernel_name,
                has_output_dir="output_dir" in spec.defaults,
                cwd=os.getcwd(),
                key=f"vizkit-run-{plan.name}-{os.urandom(4).hex()}",
                retries=retries,
                pure=False,
            )
            futures[fut] = rec
            rec.status = "running"
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=len(records), initial=len(records) - len(todo), desc="vizkit run", unit="run", file=sys.stderr
            )
        try:
            for fut in as_completed(list(futures), loop=client.loop):
                rec = futures[fut]
                try:
                    got = fut.result()
                    rec.status, rec.duration = got["status"], got.get("duration")
                    rec.error, rec.notebook, rec.report = got.get("error", ""), got["notebook"], got.get("report", "")
                    rec.attempts = 1
                except Exception as err:  # noqa: BLE001 - the worker died (KilledWorker) or the kernel crashed
                    rec.status, rec.attempts = "failed", retries + 1
                    rec.error = _task_error(err, retries)
                    executed = Path(output_dir) / rec.name / Path(notebook).name
                    rec.notebook = executed.name if executed.is_file() else ""
                fut.release()  # the result is recorded: a worker lost later must not make Dask recompute it
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(f"{rec.name}: {rec.status}")
                write_index(out, records, param_names, nb_label)
        except KeyboardInterrupt:
            interrupted = True
            client.cancel(list(futures), force=True)
        finally:
            if bar is not None:
                bar.close()
    if interrupted:  # the workers are stopped now: a run that finished meanwhile has its marker
        for plan, rec in todo:
            if rec.status in ("running", "pending"):
                info = _completed(plan)
                rec.status = "cancelled" if info is None else "done"
                if info is not None:
                    rec.duration, rec.report = info.get("duration"), info.get("report", "")
                    rec.notebook, rec.attempts = Path(notebook).name, 1
        write_index(out, records, param_names, nb_label)
        raise SweepInterrupted(result)
    return result


def _task_error(err: BaseException, retries: int) -> str:
    name = type(err).__name__
    if name == "KilledWorker":
        return (
            f"the worker running it died {retries + 1} time(s) (KilledWorker: out of memory or killed?); "
            "see the worker logs"
        )
    return f"{name}: {err}".strip()


def sweep_from_files(
    notebook: str | os.PathLike,
    parameters: Sequence[tuple[str, str]] = (),
    parameters_file: str | os.PathLike | None = None,
    grid_file: str | os.PathLike | None = None,
    validator_for: Any = None,
    **options: Any,
) -> SweepResult:
    """``vizkit run``: the parameters of ``parameters_file`` (a YAML mapping), then the ``(NAME,
    VALUE)`` pairs of ``parameters`` (each VALUE read as the notebook's parameter type), the grid
    of ``grid_file`` (YAML), then :func:`run_sweep` with ``options``. ``validator_for``: the
    notebook's check by its stem (:func:`read_notebook`; the CLI passes the scenario registry's)."""
    spec = read_notebook(notebook, validator_for)
    params: dict[str, Any] = {}
    if parameters_file:
        loaded = load_yaml_mapping(parameters_file)
        if not isinstance(loaded, dict):
            raise InputError(f"parameter file {str(parameters_file)!r} must be a mapping of name -> value")
        params.update(loaded)
    for name, raw in parameters:
        params[name] = spec.parse_value(name, raw)
    return run_sweep(spec, params, load_grid(grid_file) if grid_file else None, **options)
