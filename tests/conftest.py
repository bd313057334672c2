import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def dask_scheduler():
    """``tcp://127.0.0.1:PORT`` of a ``dask scheduler`` + ``dask worker`` (2 processes) started as
    subprocesses for the session (tests/daskcluster.py), stopped at its end."""
    from daskcluster import scheduler_and_worker

    with scheduler_and_worker(workers=2) as address:
        yield address
