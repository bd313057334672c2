"""vizkit.io: the one atomic writer. A failed write leaves the old file and no temp file."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

from vizkit.errors import InputError
from vizkit.io import atomic_path, image_files, save_safetensors, write_json, write_text


def test_write_text_and_json(tmp_path):
    p = write_text(tmp_path / "a" / "b.md", "héllo\n")
    assert p.read_text(encoding="utf-8") == "héllo\n"
    j = write_json(tmp_path / "c.json", {"b": 1, "a": "病灶"}, sort_keys=True)
    assert j.read_text(encoding="utf-8") == '{\n  "a": "病灶",\n  "b": 1\n}\n'
    assert json.loads(j.read_text(encoding="utf-8")) == {"a": "病灶", "b": 1}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a", "c.json"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["keep.txt"]
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert sorted(x.name for x in tmp_path.iterdir()) == ["keep.txt"]


def test_save_safetensors_roundtrip_and_mode(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    state = {"w": torch.arange(6.0).reshape(2, 3).t(), "b": torch.tensor([1, 2])}  # a non-contiguous tensor
    p = save_safetensors(state, tmp_path / "m" / "model.safetensors", metadata={"model": "x"})
    loaded = load_file(str(p))
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["b"], state["b"])
    with safe_open(str(p), "pt") as f:
        assert f.metadata() == {"format": "pt", "model": "x"}
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o644


def test_image_files(tmp_path):
    (tmp_path / "imgs").mkdir()
    for name in ("b.png", "a.JPG", "notes.txt"):
        (tmp_path / "imgs" / name).write_bytes(b"x")
    one = tmp_path / "one.png"
    one.write_bytes(b"x")
    assert image_files([tmp_path / "imgs", str(one)]) == [tmp_path / "imgs" / "a.JPG", tmp_path / "imgs" / "b.png", one]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images"):
        image_files([tmp_path / "empty"])
    with pytest.raises(InputError, match="does not exist"):
        image_files([tmp_path / "nope.png"])


def test_read_json_names_what_and_where(tmp_path):
    from vizkit.errors import InputError
    from vizkit.io import read_json

    (tmp_path / "ok.json").write_text('{"a": [1, 2]}', encoding="utf-8")
    assert read_json(tmp_path / "ok.json") == {"a": [1, 2]}
    with pytest.raises(InputError, match=r"^class texts file '.*nope.json' does not exist$"):
        read_json(tmp_path / "nope.json", "class texts file")
    (tmp_path / "bad.json").write_text('{"a": ', encoding="utf-8")
    with pytest.raises(InputError, match=r"^benchmark file '.*bad.json' is not valid JSON: Expecting value: line 1"):
        read_json(tmp_path / "bad.json", "benchmark file")
