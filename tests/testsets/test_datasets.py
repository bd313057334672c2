"""The test-set readers (vizkit.datasets): every source, hand-written files. DeepfakeBench's own
layout, rule by rule, is in test_datasets_deepfakebench.py."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from vizkit.datasets import EvalDataset, Item, parse_label, resolve_dataset
from vizkit.errors import InputError
from vizkit.zoo.face_test_split import FACE_FORGERY, NAMED_TEST_SETS, resolve_test_set


def _png(path, value=100, size=16):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return path


def test_labels():
    assert [parse_label(v, "x") for v in (0, 1, "0", "1", "Real", "FAKE", " fake ", True, 1.0)] == [
        0,
        1,
        0,
        1,
        0,
        1,
        1,
        1,
        1,
    ]
    with pytest.raises(InputError, match=r"row 3: label 'maybe' is not 0/1/real/fake"):
        parse_label("maybe", "row 3")
    with pytest.raises(InputError, match="label 2 is not"):
        parse_label(2, "r")


def test_zoo_default_and_subset():
    ds = resolve_test_set(None, max_samples=10)
    assert ds.name == FACE_FORGERY and len(ds) == 10 and ds.has_masks and not ds.has_videos
    assert [it.path for it in ds.items[:2]] == ["zoo:face_forgery/test/0000", "zoo:face_forgery/test/0001"]
    for alias in ("zoo", "face_forgery", "zoo:face_forgery_detector"):
        assert resolve_test_set(alias, max_samples=3).name == FACE_FORGERY
    assert ds.image(0).shape == (64, 64, 3) and ds.image(0).dtype == np.uint8
    fake = next(i for i, it in enumerate(ds.items) if it.label == 1)
    assert ds.mask(fake).any() and ds.mask(fake, (32, 32)).shape == (32, 32)


def test_read_images_skips_the_unreadable(tmp_path):
    good = _png(tmp_path / "a.png", value=7)
    (tmp_path / "b.png").write_text("not an image")
    other = _png(tmp_path / "c.png", value=9, size=4)
    (tmp_path / "l.csv").write_text(f"path,label\n{good},0\n{tmp_path / 'b.png'},1\n{other},fake\n")
    ds = resolve_dataset(str(tmp_path / "l.csv"))
    images, read, errors = ds.read_images([2, 1, 0])
    assert read == [2, 0] and [im.shape for im in images] == [(4, 4, 3), (16, 16, 3)]
    assert int(images[0][0, 0, 0]) == 9 and int(images[1][0, 0, 0]) == 7
    assert [(e["index"], e["path"]) for e in errors] == [(1, str(tmp_path / "b.png"))]
    assert "b.png" in errors[0]["error"]
    flipped, read, errors = ds.read_images(range(3), lambda p: np.asarray(Image.open(p).convert("RGB"))[:, ::-1])
    assert read == [0, 2] and len(errors) == 1 and flipped[0].shape == (16, 16, 3)


def test_real_fake_folder_with_videos(tmp_path):
    _png(tmp_path / "set" / "real" / "a.png")
    _png(tmp_path / "set" / "fake" / "vid7" / "f0.png")
    _png(tmp_path / "set" / "fake" / "vid7" / "f1.png")
    ds = resolve_dataset(tmp_path / "set")
    assert [(it.label, it.video) for it in ds.items] == [(0, None), (1, "fake/vid7"), (1, "fake/vid7")]
    assert ds.name == "set" and ds.has_videos and not ds.has_masks
    (tmp_path / "empty" / "real").mkdir(parents=True)
    with pytest.raises(InputError, match="holds no images under real/ or fake/"):
        resolve_dataset(tmp_path / "empty")
    (tmp_path / "flat").mkdir()
    with pytest.raises(InputError, match="needs real/ and fake/ subfolders"):
        resolve_dataset(tmp_path / "flat")


def test_csv_and_json_lists(tmp_path):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "m.png", 255)
    (tmp_path / "list.csv").write_text("path,label,video,mask\nimg/a.png,real,v1,\nimg/a.png,1,v2,img/m.png\n")
    ds = resolve_dataset(tmp_path / "list.csv")
    assert [(it.label, it.video) for it in ds.items] == [(0, "v1"), (1, "v2")]
    assert ds.items[0].path == str(tmp_path / "img" / "a.png") and ds.mask(1).all() and ds.mask(0) is None
    (tmp_path / "list.json").write_text(
        json.dumps([{"path": "img/a.png", "label": "fake"}, {"path": "img/a.png", "label": 0}])
    )
    assert [it.label for it in resolve_dataset(tmp_path / "list.json").items] == [1, 0]
    (tmp_path / "nolabel.csv").write_text("path,video\nimg/a.png,v\n")
    with pytest.raises(InputError, match="has no 'label' column"):
        resolve_dataset(tmp_path / "nolabel.csv")
    (tmp_path / "badlabel.csv").write_text("path,label\nimg/a.png,0\nimg/a.png,yes\n")
    with pytest.raises(InputError, match=r"row 2: label 'yes' is not 0/1/real/fake"):
        resolve_dataset(tmp_path / "badlabel.csv")
    (tmp_path / "nopath.json").write_text(json.dumps([{"label": 1}]))
    with pytest.raises(InputError, match="row 1: missing column 'path'"):
        resolve_dataset(tmp_path / "nopath.json")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(InputError, match="is not valid JSON"):
        resolve_dataset(tmp_path / "broken.json")


def _dfb_json(root, name="MiniDF"):
    """DeepfakeBench's layout (preprocessing/rearrange.py): dataset -> label -> split -> [compression ->] video."""
    for v in ("000", "001"):
        for f in range(2):
            _png(root / "rgb" / "real" / "frames" / v / f"{f}.png")
            _png(root / "rgb" / "fake" / "frames" / v / f"{f}.png", 200)
    _png(root / "rgb" / "fake" / "masks" / "000" / "0.png", 255)
    data = {
        name: {
            f"{name}_real": {
                "train": {},
                "test": {
                    "c23": {
                        v: {"label": f"{name}_real", "frames": [f"real/frames/{v}/{f}.png" for f in range(2)]}
                        for v in ("000", "001")
                    }
                },
            },
            f"{name}_fake": {
                "test": {
                    "c23": {
                        v: {"label": f"{name}_fake", "frames": [f"fake/frames/{v}/{f}.png" for f in range(2)]}
                        for v in ("000", "001")
                    }
                }
            },
        }
    }
    (root / "json").mkdir(parents=True, exist_ok=True)
    (root / "json" / f"{name}.json").write_text(json.dumps(data))
    return data


def test_deepfakebench_json_by_name_and_file(tmp_path, monkeypatch):
    _dfb_json(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = {
        "dataset_json_folder": str(tmp_path / "json"),
        "rgb_dir": str(tmp_path / "rgb"),
        "label_dict": {"MiniDF_real": 0, "MiniDF_fake": 1},
    }
    ds = resolve_dataset("MiniDF", config)
    assert ds.name == "MiniDF" and len(ds) == 8
    assert [it.label for it in ds.items] == [0] * 4 + [1] * 4
    assert ds.items[4].video == "MiniDF_fake_000" and ds.items[0].video == "MiniDF_real_000"
    assert ds.items[4].mask == str(tmp_path / "rgb" / "fake" / "masks" / "000" / "0.png") and ds.items[5].mask is None
    assert ds.image(4)[0, 0, 0] == 200
    # the file directly: the config applies as for the name
    direct = resolve_dataset(tmp_path / "json" / "MiniDF.json", config)
    assert [(it.path, it.label, it.video, it.mask) for it in direct.items] == [
        (it.path, it.label, it.video, it.mask) for it in ds.items
    ]
    # without a config: labels by "real" in the name, frames under the working directory (not the JSON's folder)
    nodict = resolve_dataset(tmp_path / "json" / "MiniDF.json", {"rgb_dir": str(tmp_path / "rgb")})
    assert [it.label for it in nodict.items] == [0] * 4 + [1] * 4
    with pytest.raises(
        InputError,
        match=r"none of the 8 frames of dataset 'MiniDF' .* \(tried "
        + re.escape(str(tmp_path / "elsewhere" / "real" / "frames" / "000" / "0.png")),
    ):
        resolve_dataset(tmp_path / "json" / "MiniDF.json")


def test_dataset_name_that_resolves_to_nothing(tmp_path):
    with pytest.raises(
        InputError,
        match=r"'Celeb-DF' resolves to nothing: looked for Celeb-DF \(no such file or "
        r"folder\); .*Celeb-DF.json \(dataset_json_folder\)",
    ):
        resolve_dataset("Celeb-DF", {"dataset_json_folder": str(tmp_path)})
    with pytest.raises(InputError, match="no dataset_json_folder in the detector config"):
        resolve_dataset("Celeb-DF")
    # the caller's named test sets are listed as the alternatives
    with pytest.raises(InputError, match=r"DeepfakeBench JSON, or one of zoo:face_forgery, zoo:face_forgery_detector"):
        resolve_dataset("Celeb-DF", named=NAMED_TEST_SETS)


def test_named_test_sets_come_from_the_caller():
    held = EvalDataset("mine", [Item("mine/0", 1), Item("mine/1", 0)], "memory")
    assert resolve_dataset("mine", named={"mine": lambda: held}) is held
    assert resolve_dataset("mine", max_samples=1, named={"mine": lambda: held}).items == [Item("mine/0", 1)]
    for empty in (None, ""):
        with pytest.raises(InputError, match=r"^no test dataset given: .* DeepfakeBench JSON or NAME, or one of mine$"):
            resolve_dataset(empty, named={"mine": lambda: held})
        with pytest.raises(InputError, match=r"DeepfakeBench JSON or NAME$"):
            resolve_dataset(empty)
