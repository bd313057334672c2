#!/usr/bin/env python
"""Dask benchmark: scenario 3's zoo evaluation and a notebook sweep, with and without Dask.

1. **Evaluation** (``vizkit evaluate``): the zoo detector on the first ``--samples`` zoo test
   faces, Grad-CAM maps of every sample (the table methods gradcam + gradcam++, as the zoo set has
   masks), chunks of ``--batch-size``, the whole run (chunks, metrics, sample folders, report) into
   a fresh folder each time. Three ways, each with 1 torch thread per process:
   ``plain`` (:func:`run_evaluation` in this process), ``dask 1 worker`` and ``dask 2 workers``
   (a LocalCluster started once, before the timing; one warm-up run each, so the workers hold
   their model, as they do from the second evaluation on). Round-robin, ``--repeats`` times.
   All three run the evaluation with the one batch runner (:class:`vizkit.batch.BatchMapper`: in
   this process, or on the cluster, where each unit -- chunk, sample folder, report figure --
   writes its own files). Targets: 2 workers vs 1 worker >= 1.6x; dask 1 worker vs plain <= 1.10x
   (overhead <= 10 %). Also printed: the phases (chunks; sample folders + figures); the client's
   serial part (model + dataset preparation, metrics, CSVs, report.md) bounds the end-to-end ratio.
2. **Sweep** (``vizkit run``): notebook 02 over ``num_samples`` [2, 4, 6, 8] x ``head_fusion``
   [mean, max, min] (12 runs): sequential ``papermill.execute_notebook`` calls in this process (the
   kernels use torch's default threads) vs :func:`run_sweep` with ``workers=2`` (including the
   cluster start; ``force=True``, so every run executes). Target >= 1.5x.

Prints min / median / max of every measurement and the ratios of the medians. The exit code is 0
whether the targets are met or not. On a shared 2-core machine other processes change the
numbers: the load average is printed before and after.

    .venv/bin/python benchmarks/bench_dask.py                 # all 600 faces, 3 repeats, both parts
    .venv/bin/python benchmarks/bench_dask.py --part eval --samples 200
    .venv/bin/python benchmarks/bench_dask.py --part sweep --repeats 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
sys.path.insert(0, str(ROOT))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import time_round_robin  # noqa: E402

NB02 = ROOT / "notebooks" / "02_vit_mnist_attention.ipynb"
GRID = {"num_samples": [2, 4, 6, 8], "head_fusion": ["mean", "max", "min"]}


def stats(times: list[float]) -> str:
    return f"{min(times):7.1f} / {statistics.median(times):7.1f} / {max(times):7.1f} s"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_eval(samples: int, batch_size: int, repeats: int, work: Path) -> dict[str, list[float]]:
    import torch

    from vizkit.batch import BatchMapper
    from vizkit.distributed.chunks import ClusterOptions
    from vizkit.distributed.cluster import cluster_client
    from vizkit.scenarios import detector_gradcam_eval as dge

    torch.set_num_threads(1)
    kw = dict(max_samples=samples, batch_size=batch_size, gradcam_samples=8, gradcam_enabled=True)
    count = [0]

    def fresh() -> Path:
        count[0] += 1
        out = work / f"eval{count[0]}"
        shutil.rmtree(out, ignore_errors=True)
        return out

    class Timed(BatchMapper):
        """The one batch mapper, timing its phases: the chunks ("evaluate") and the sample folders +
        report figures ("samples"), both mapped on the cluster (or run here, for "plain")."""

        def __init__(self, name: str, cluster=None):
            super().__init__(cluster)
            self.name = name

        def map(self, job, units, folder, group=1):
            t = time.perf_counter()
            yield from super().map(job, units, folder, group)
            phase[job.name][self.name].append(time.perf_counter() - t)

    t0 = time.perf_counter()
    with (
        cluster_client(workers=1, quiet=True, dashboard=False) as c1,
        cluster_client(workers=2, quiet=True, dashboard=False) as c2,
    ):
        print(f"  two local clusters started in {time.perf_counter() - t0:.1f} s (not timed below)")
        ways = ("plain", "dask 1 worker", "dask 2 workers")
        phase: dict[str, dict[str, list[float]]] = {p: {w: [] for w in ways} for p in ("evaluate", "samples")}
        m0 = Timed("plain")
        m1 = Timed("dask 1 worker", ClusterOptions(scheduler=c1.scheduler.address, quiet=True))
        m2 = Timed("dask 2 workers", ClusterOptions(scheduler=c2.scheduler.address, quiet=True))
        with m1, m2:
            runners = {
                w: (lambda m=m: dge.run_evaluation(fresh(), **kw, map_chunks=m)) for w, m in zip(ways, (m0, m1, m2))
            }
            times = time_round_robin(runners, repeats)
        print(f"  context loads per worker: 1 worker {dict(m1.loads)}, 2 workers {dict(m2.loads)}")
        print(
            "  phases (what the one mapper runs: per-unit files written where the unit runs; the client's serial "
            "part is the model + dataset preparation, metrics, CSVs and report.md):"
        )
        for p, label in (("evaluate", "chunks"), ("samples", "sample folders + report figures")):
            print(f"   {label}:")
            for k, v in phase[p].items():
                print(f"    {k:16s} {stats(v[1:])}")
        med = {k: statistics.median(v[1:]) for k, v in phase["evaluate"].items()}
        print(
            f"    chunks: speed-up 2 workers vs 1 worker: {med['dask 1 worker'] / med['dask 2 workers']:.2f}x; "
            f"dask 1 worker vs plain: {med['dask 1 worker'] / med['plain']:.3f}x"
        )
    ref = (work / "eval1" / "metrics.json").read_text()
    same = all((work / f"eval{i}" / "metrics.json").read_text() == ref for i in range(1, count[0] + 1))
    print(f"  metrics.json identical across all {count[0]} runs: {same}")
    return times


def bench_sweep(repeats: int, work: Path) -> dict[str, list[float]]:
    import itertools

    import papermill as pm

    from vizkit.distributed.sweep import run_sweep

    points = [dict(zip(GRID, combo)) for combo in itertools.product(*GRID.values())]
    times: dict[str, list[float]] = {"sequential papermill": [], "vizkit run --workers 2": []}
    for r in range(repeats):
        seq = work / f"seq{r}"
        seq.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        for i, p in enumerate(points):
            pm.execute_notebook(
                str(NB02),
                str(seq / f"run{i}.ipynb"),
                kernel_name="python3",
                progress_bar=False,
                parameters={**p, "interactive": False, "output_dir": str(seq / f"out{i}")},
            )
        times["sequential papermill"].append(time.perf_counter() - t0)
        print(f"  repeat {r + 1}: sequential {times['sequential papermill'][-1]:.1f} s (load {load()})", flush=True)
        t0 = time.perf_counter()
        result = run_sweep(NB02, grid=GRID, output_dir=work / f"sweep{r}", workers=2, force=True, progress=False)
        times["vizkit run --workers 2"].append(time.perf_counter() - t0)
        print(
            f"  repeat {r + 1}: vizkit run --workers 2 {times['vizkit run --workers 2'][-1]:.1f} s, "
            f"{result.counts()} (load {load()})",
            flush=True,
        )
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "eval", "sweep"], default="all")
    parser.add_argument("--samples", type=int, default=600, help="zoo test faces evaluated (default 600: all)")
    parser.add_argument("--batch-size", type=int, default=20, help="samples per chunk (default 20)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"cpus {os.cpu_count()}, load average {load()}")
    with tempfile.TemporaryDirectory(prefix="bench_dask_") as tmp:
        work = Path(tmp)
        if args.part in ("all", "eval"):
            print(
                f"== evaluation: {args.samples} zoo faces, chunks of {args.batch_size}, maps of every sample, "
                f"1 torch thread per process, {args.repeats} repeats (min / median / max)"
            )
            t = bench_eval(args.samples, args.batch_size, args.repeats, work)
            for k, v in t.items():
                print(f"  {k:16s} {stats(v)}")
            med = {k: statistics.median(v) for k, v in t.items()}
            print(
                f"  speed-up 2 workers vs 1 worker: {med['dask 1 worker'] / med['dask 2 workers']:.2f}x "
                "(target >= 1.6x)"
            )
            print(f"  dask 1 worker vs plain: {med['dask 1 worker'] / med['plain']:.3f}x (target <= 1.10x)")
            print(f"  load average now {load()}", flush=True)
        if args.part in ("all", "sweep"):
            print(f"== sweep: notebook 02, num_samples x head_fusion = 12 runs, {args.repeats} repeats")
            t = bench_sweep(args.repeats, work)
            for k, v in t.items():
                print(f"  {k:24s} {stats(v)}")
            med = {k: statistics.median(v) for k, v in t.items()}
            print(f"  speed-up: {med['sequential papermill'] / med['vizkit run --workers 2']:.2f}x (target >= 1.5x)")
            print(f"  load average now {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
