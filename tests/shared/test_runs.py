"""vizkit.runs: run folders and completion markers."""

from __future__ import annotations

import pytest

from vizkit.errors import ParameterError
from vizkit.runs import (
    chunk_count,
    clear_complete,
    is_complete,
    mark_complete,
    run_folder,
    write_chunk,
    written_chunks,
)


def test_run_folder_new_and_refused(tmp_path):
    a = run_folder(None, "02 nb/x", root=tmp_path)
    b = run_folder("", "02 nb/x", root=tmp_path)
    assert a != b and a.parent == b.parent == tmp_path and a.name.endswith("-02_nb_x") and a.is_dir()
    (a / "f.txt").write_text("x")
    with pytest.raises(ParameterError, match="not empty"):
        run_folder(a, "nb")
    assert run_folder(a, "nb", overwrite=True) == a and (a / "f.txt").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParameterError, match="is a file"):
        run_folder(tmp_path / "file", "nb")


def test_complete_markers(tmp_path):
    assert not is_complete(tmp_path)
    marker = mark_complete(tmp_path, {"runs": 3})
    assert is_complete(tmp_path) and marker.parent == tmp_path
    import json

    info = json.loads(marker.read_text())
    assert info["runs"] == 3 and "completed" in info
    clear_complete(tmp_path)
    assert not is_complete(tmp_path)
    clear_complete(tmp_path)  # clearing twice is fine


def test_chunk_count_and_written_chunks(tmp_path):
    assert [chunk_count(n, 4) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]
    with pytest.raises(ParameterError, match="chunk size must be positive"):
        chunk_count(3, 0)
    assert written_chunks(tmp_path) == 0
    import numpy as np

    for k in range(3):
        write_chunk(tmp_path, k, {"chunk": k}, {"index": np.arange(2)})
    assert written_chunks(tmp_path) == 3
