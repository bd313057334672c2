"""Runs beyond one process on Dask distributed: parameter sweeps of the notebooks
(``vizkit run``), the dataset-scale evaluation of scenario 3 (``vizkit evaluate --workers``) and
the batch CLIs (``--workers`` / ``--scheduler``).

A ``LocalCluster`` of process workers on 127.0.0.1 by default, or the address of an existing
Dask scheduler (``tcp://host:8786``, e.g. one started by dask-jobqueue or dask-kubernetes).

- :mod:`.params`: a notebook's parameters read from its ``parameters`` cell and validated by
  the notebook's own check (no dask needed);
- :mod:`.cluster`: the shared ``--workers/--scheduler`` flags, the client, the worker setup;
- :mod:`.sweep`: validated, parallel, resumable papermill runs with ``index.csv`` / ``index.md``;
- :mod:`.chunks`: scenario 3's evaluation chunks and the batch CLIs' images mapped on the cluster.

Nothing here is imported by ``import vizkit``; dask is imported only when a cluster is used.

Example::

    from vizkit.distributed.sweep import run_sweep
    result = run_sweep("notebooks/02_vit_mnist_attention.ipynb",
                       grid={"num_samples": [2, 4], "head_fusion": ["mean", "max"]},
                       output_dir="runs/sweep", workers=2)
    result.failed, result.index_csv
"""
