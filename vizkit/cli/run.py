"""``vizkit run``: a notebook headless (papermill), or a parameter sweep of it on Dask
(:func:`vizkit.distributed.sweep.sweep_from_files`)."""

from __future__ import annotations

import argparse

from .common import cluster_flags, say


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a notebook headless (papermill), or a parameter sweep on Dask",
        description="Validate the parameters against the notebook's parameters cell, then execute "
        "it with papermill: one run, or one run per point of --grid, in parallel on a "
        "Dask cluster. Each run writes into <output-dir>/<run name>/; index.csv and "
        "index.md list every run. Rerunning skips complete runs (--force reruns them). "
        "Exit code 1 when a run failed, 2 on bad input, 130 on Ctrl-C.",
    )
    p.add_argument("notebook", help="the notebook, e.g. notebooks/02_vit_mnist_attention.ipynb")
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a parameter (repeatable); VALUE is read as the parameter's type",
    )
    p.add_argument("-f", "--parameters-file", default=None, metavar="params.yaml", help="YAML mapping of parameters")
    p.add_argument(
        "--grid",
        default=None,
        metavar="grid.yaml",
        help="YAML mapping of parameter -> list of values (cartesian product) or a list of mappings",
    )
    p.add_argument(
        "--output-dir", default="runs/sweep", help="folder of the run folders and the index (default runs/sweep)"
    )
    p.add_argument("--force", action="store_true", help="rerun runs whose folders are already complete")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    cluster_flags(p, retries=True)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..distributed.sweep import SweepInterrupted, sweep_from_files
    from ..scenarios.registry import notebook_validator

    try:
        result = sweep_from_files(
            args.notebook,
            args.parameter,
            args.parameters_file,
            args.grid,
            validator_for=notebook_validator,  # a registered notebook's own check
            output_dir=args.output_dir,
            workers=args.workers,
            scheduler=args.scheduler,
            retries=args.retries,
            force=args.force,
            kernel_name=args.kernel,
        )
    except SweepInterrupted as stop:
        counts = stop.result.counts()
        say(
            args,
            f"interrupted: {counts.get('cancelled', 0)} run(s) cancelled, {counts.get('done', 0)} done; "
            f"index: {stop.result.index_md}",
        )
        return 130
    for rec in result.failed:
        say(args, f"{rec.name} failed: {rec.error}")
    counts = result.counts()
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; index: {result.index_md}")
    return 1 if result.failed else 0
