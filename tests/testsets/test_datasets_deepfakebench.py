"""vizkit.datasets reads DeepfakeBench's dataset JSON as DeepfakeBench does (abstract_dataset.py,
test mode), rule by rule, on a fake DeepfakeBench root built in tmp_path: real files, the real
JSON nesting, a test_config.yaml-like config; the working directory is the root, as when
DeepfakeBench runs. Every list is asserted exactly."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vizkit.datasets import read_deepfakebench_json, resolve_dataset
from vizkit.errors import InputError
from vizkit.zoo.face_test_split import resolve_test_set

RGB = Path("datasets/rgb")
JSONS = Path("preprocessing/dataset_json")
REAL = "FaceForensics++/original_sequences/youtube/{c}/frames/{v}/{f}.png"
DF = "FaceForensics++/manipulated_sequences/Deepfakes/{c}/frames/{v}/{f}.png"
CELEB_REAL = "Celeb-DF-v2/Celeb-real/frames/id0_0000/{f}.png"
CELEB_FAKE = "Celeb-DF-v2/Celeb-synthesis/frames/{v}/{f}.png"
CONFIG = {  # as DeepfakeBench's test_config.yaml + a detector YAML
    "rgb_dir": "./datasets/rgb",
    "dataset_json_folder": "./preprocessing/dataset_json",
    "label_dict": {"FF-real": 0, "FF-DF": 1, "CelebDFv2_real": 0, "CelebDFv2_fake": 1},
    "compression": "c23",
    "frame_num": {"train": 8, "test": 32},
}
# frame numbers of every test video, in the order the JSON lists them
C23 = {
    ("real", "000"): list(range(33, -1, -1)),  # 34 frames, reversed
    ("real", "001"): [3, 0, 4, 1, 2],  # 5 frames, shuffled
    ("df", "000_003"): list(range(69, -1, -1)),
}  # 70 frames, reversed
C40 = {("real", "000"): [2, 0, 1], ("real", "001"): [1, 0], ("df", "000_003"): [3, 1, 0, 2]}


def _png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((2, 2, 3), value, np.uint8)).save(path)


def _rel(kind: str, c: str, v: str, f: int | str) -> str:
    return (REAL if kind == "real" else DF).format(c=c, v=v, f=f)


def _video(label: str, paths: list[str], backslash: bool = False) -> dict:
    return {"label": label, "frames": [p.replace("/", "\\") if backslash else p for p in paths]}


def _ff_data() -> dict:
    """FaceForensics++.json as preprocessing/rearrange.py writes it (Windows-made: backslashes)."""

    def split(frames_by_video, c, only=None):
        out = {"FF-real": {}, "FF-DF": {}}
        for (kind, v), numbers in frames_by_video.items():
            label = "FF-real" if kind == "real" else "FF-DF"
            out[label][v] = _video(label, [_rel(kind, c, v, f) for f in numbers], backslash=True)
        return out

    test23, test40 = split(C23, "c23"), split(C40, "c40")
    train = {
        "FF-real": {"100": _video("FF-real", [_rel("real", "c23", "100", f) for f in (0, 1)], True)},
        "FF-DF": {"100_101": _video("FF-DF", [_rel("df", "c23", "100_101", f) for f in (0, 1)], True)},
    }
    return {
        "FaceForensics++": {
            label: {
                "train": {"c23": train[label], "c40": {}},
                "val": {"c23": {}, "c40": {}},
                "test": {"c23": test23[label], "c40": test40[label]},
            }
            for label in ("FF-real", "FF-DF")
        }
    }


def _celeb_data(root: Path) -> dict:
    """Celeb-DF-v2.json: videos directly under the split (no compression level); forward slashes; one
    video with paths from DeepfakeBench's root ('./...'), one with absolute paths and a frame name
    that holds no integer."""
    odd = [str(root / RGB / CELEB_FAKE.format(v="id2_id3_0001", f=f)) for f in ("3", "cover", "1")]
    return {
        "Celeb-DF-v2": {
            "CelebDFv2_real": {
                "train": {},
                "test": {"id0_0000": _video("CelebDFv2_real", [CELEB_REAL.format(f=f) for f in (2, 0, 1)])},
            },
            "CelebDFv2_fake": {
                "train": {},
                "test": {
                    "id0_id1_0000": _video(
                        "CelebDFv2_fake", [f"./{RGB}/" + CELEB_FAKE.format(v="id0_id1_0000", f=f) for f in (1, 0)]
                    ),
                    "id2_id3_0001": _video("CelebDFv2_fake", odd),
                },
            },
        }
    }


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DeepfakeBench root (frames, masks, JSONs), made the working directory; returns os.getcwd()."""
    for frames, c, value in ((C23, "c23", 0), (C40, "c40", 100)):
        for (kind, v), numbers in frames.items():
            for f in numbers:
                _png(tmp_path / RGB / _rel(kind, c, v, f), value + f)
    for kind, v in (("real", "100"), ("df", "100_101")):
        for f in (0, 1):
            _png(tmp_path / RGB / _rel(kind, "c23", v, f), 250)
    _png(tmp_path / RGB / DF.format(c="c23", v="000_003", f=0).replace("frames", "masks"), 255)
    for f in (0, 1, 2):
        _png(tmp_path / RGB / CELEB_REAL.format(f=f), 10 + f)
    for v, names in (("id0_id1_0000", (0, 1)), ("id2_id3_0001", ("1", "3", "cover"))):
        for f in names:
            _png(tmp_path / RGB / CELEB_FAKE.format(v=v, f=f), 20)
    (tmp_path / JSONS).mkdir(parents=True)
    (tmp_path / JSONS / "FaceForensics++.json").write_text(json.dumps(_ff_data()))
    (tmp_path / JSONS / "Celeb-DF-v2.json").write_text(json.dumps(_celeb_data(tmp_path)))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    return Path(os.getcwd())


def _frames(root: Path, kind: str, c: str, v: str, numbers) -> list[str]:
    return [str(root / RGB / _rel(kind, c, v, f)) for f in numbers]


def _expected_ff(root: Path, c: str, counts: dict, labels=(0, 1)) -> list[tuple[str, int, str]]:
    rows = []
    for (kind, v), n in counts.items():
        label, name = (labels[0], "FF-real") if kind == "real" else (labels[1], "FF-DF")
        rows += [(p, label, f"{name}_{v}") for p in _frames(root, kind, c, v, range(n))]
    return rows


def _rows(ds) -> list[tuple[str, int, str]]:
    return [(it.path, it.label, it.video) for it in ds.items]


C23_32 = {("real", "000"): 32, ("real", "001"): 5, ("df", "000_003"): 32}
C40_ALL = {("real", "000"): 3, ("real", "001"): 2, ("df", "000_003"): 4}


def test_faceforensics_by_name_first_32_frames_in_frame_number_order(root: Path) -> None:
    ds = resolve_dataset("FaceForensics++", CONFIG)
    # 34 listed 33..0 -> 0..31; 5 listed 3,0,4,1,2 -> 0..4; 70 listed 69..0 -> 0..31 (not 0,2,..,62)
    assert _rows(ds) == _expected_ff(root, "c23", C23_32)
    assert ds.name == "FaceForensics++" and ds.source == f"DeepfakeBench JSON {root / JSONS / 'FaceForensics++.json'}"
    mask = str(root / RGB / DF.format(c="c23", v="000_003", f=0).replace("frames", "masks"))
    assert [(i, it.mask) for i, it in enumerate(ds.items) if it.mask] == [(37, mask)]
    assert ds.mask(37).all() and ds.has_masks and ds.has_videos
    assert ds.image(0)[0, 0, 0] == 0 and ds.image(31)[0, 0, 0] == 31 and ds.image(36)[0, 0, 0] == 4
    assert _rows(resolve_dataset("FaceForensics++", CONFIG, max_samples=3)) == _expected_ff(root, "c23", C23_32)[:3]


def test_compression_from_config_and_from_the_c40_name(root: Path) -> None:
    c40 = _expected_ff(root, "c40", C40_ALL)
    assert _rows(resolve_dataset("FaceForensics++", {**CONFIG, "compression": "c40"})) == c40
    by_name = resolve_dataset("FaceForensics++_c40", CONFIG)  # config says c23: the name wins
    assert _rows(by_name) == c40 and by_name.name == "FaceForensics++_c40"
    assert by_name.image(0)[0, 0, 0] == 100  # c40's frame 0, not c23's
    # DeepfakeBench opens <NAME>.json: FaceForensics++_c40.json is read when it exists (key FaceForensics++)
    only_real = _ff_data()
    del only_real["FaceForensics++"]["FF-DF"]
    (root / JSONS / "FaceForensics++_c40.json").write_text(json.dumps(only_real))
    assert _rows(resolve_dataset("FaceForensics++_c40", CONFIG)) == _expected_ff(
        root, "c40", {k: n for k, n in C40_ALL.items() if k[0] == "real"}
    )
    with pytest.raises(
        InputError,
        match=r"FaceForensics\+\+ / FF-real / test holds compression levels c23, c40 "
        r"but not 'raw': set the config's compression",
    ):
        resolve_dataset("FaceForensics++", {**CONFIG, "compression": "raw"})


def test_dataset_without_compression_levels_dot_and_absolute_paths(root: Path) -> None:
    ds = resolve_dataset("Celeb-DF-v2", CONFIG)  # compression c23 in the config: no level in the data, ignored
    fake = root / RGB / "Celeb-DF-v2" / "Celeb-synthesis" / "frames"
    assert _rows(ds) == [
        *[(str(root / RGB / CELEB_REAL.format(f=f)), 0, "CelebDFv2_real_id0_0000") for f in (0, 1, 2)],
        # './datasets/rgb/...': from the root, not joined onto rgb_dir
        *[(str(fake / "id0_id1_0000" / f"{f}.png"), 1, "CelebDFv2_fake_id0_id1_0000") for f in (0, 1)],
        # 'cover' holds no integer: this video keeps its JSON order
        *[(str(fake / "id2_id3_0001" / f"{f}.png"), 1, "CelebDFv2_fake_id2_id3_0001") for f in ("3", "cover", "1")],
    ]
    assert not ds.has_masks


def test_label_dict_decides_the_labels(root: Path) -> None:
    swapped = {**CONFIG, "label_dict": {"FF-real": 1, "FF-DF": 0}}  # a "real" name mapped to 1
    assert _rows(resolve_dataset("FaceForensics++", swapped)) == _expected_ff(root, "c23", C23_32, labels=(1, 0))
    no_dict = {k: v for k, v in CONFIG.items() if k != "label_dict"}  # fallback: "real" in the name -> 0
    assert _rows(resolve_dataset("FaceForensics++", no_dict)) == _expected_ff(root, "c23", C23_32)
    with pytest.raises(
        InputError,
        match=r"label 'FF-DF' of dataset 'FaceForensics\+\+' .* is not in the config's "
        r"label_dict \(it has FF-real\): add FF-DF: 0 \(real\) or 1 \(fake\) to "
        r"label_dict",
    ):
        resolve_dataset("FaceForensics++", {**CONFIG, "label_dict": {"FF-real": 0}})


def test_frame_num(root: Path) -> None:
    three = {("real", "000"): 3, ("real", "001"): 3, ("df", "000_003"): 3}
    assert _rows(resolve_dataset("FaceForensics++", {**CONFIG, "frame_num": 3})) == _expected_ff(root, "c23", three)
    everything = {("real", "000"): 34, ("real", "001"): 5, ("df", "000_003"): 70}
    no_num = {k: v for k, v in CONFIG.items() if k != "frame_num"}
    assert _rows(resolve_dataset("FaceForensics++", no_num)) == _expected_ff(root, "c23", everything)
    train = read_deepfakebench_json(root / JSONS / "FaceForensics++.json", config=CONFIG, split="train")
    assert _rows(train) == [(p, 0, "FF-real_100") for p in _frames(root, "real", "c23", "100", (0, 1))] + [
        (p, 1, "FF-DF_100_101") for p in _frames(root, "df", "c23", "100_101", (0, 1))
    ]
    with pytest.raises(InputError, match=r"frame_num \{'test': 0\} gives 0 frames for split 'test'"):
        resolve_dataset("FaceForensics++", {**CONFIG, "frame_num": {"test": 0}})


def test_relative_rgb_dir_and_json_folder_are_read_from_the_working_directory(root: Path, monkeypatch) -> None:
    expected = _expected_ff(root, "c23", C23_32)
    elsewhere = root / "elsewhere"
    monkeypatch.chdir(elsewhere)
    absolute_jsons = {**CONFIG, "dataset_json_folder": str(root / JSONS)}
    tried = ", ".join(str(elsewhere / RGB / _rel("real", "c23", "000", f)) for f in (0, 1, 2))
    with pytest.raises(
        InputError,
        match=re.escape(
            f"none of the 69 frames of dataset 'FaceForensics++' ({root / JSONS / 'FaceForensics++.json'}) exists "
            f"(tried {tried}, ...): relative frame paths are read under the config's rgb_dir './datasets/rgb' "
            f"(= {elsewhere / RGB}) and paths starting with '.' under DeepfakeBench's root {elsewhere}"
        )
        + ".*run from DeepfakeBench's root, or set rgb_dir to an absolute path, or pass root=",
    ):
        resolve_dataset("FaceForensics++", absolute_jsons)
    looked = f"{elsewhere / JSONS / 'FaceForensics++.json'} (dataset_json_folder)"
    with pytest.raises(InputError, match=re.escape(looked)):
        resolve_dataset("FaceForensics++", CONFIG)
    # root= says where DeepfakeBench's root is: both relative folders are read from there
    assert _rows(resolve_dataset("FaceForensics++", CONFIG, root=root)) == expected
    assert _rows(resolve_dataset("FaceForensics++", absolute_jsons, root="..")) == expected  # relative to the cwd
    assert _rows(resolve_dataset("FaceForensics++", {**CONFIG, "rgb_dir": str(root / RGB)}, root=root)) == expected


def test_json_given_by_path_honours_the_config(root: Path) -> None:
    path = root / JSONS / "FaceForensics++.json"
    assert _rows(resolve_dataset(path, CONFIG)) == _expected_ff(root, "c23", C23_32)
    two = {("real", "000"): 2, ("real", "001"): 2, ("df", "000_003"): 2}
    cfg = {**CONFIG, "compression": "c40", "frame_num": {"test": 2}, "label_dict": {"FF-real": 1, "FF-DF": 0}}
    assert _rows(resolve_dataset(path, cfg)) == _expected_ff(root, "c40", two, labels=(1, 0))
    shutil.copy(path, root / "FaceForensics++_c40.json")  # the file's stem names the compression too
    assert _rows(resolve_dataset("FaceForensics++_c40.json", CONFIG)) == _expected_ff(root, "c40", C40_ALL)
    # no config: no rgb_dir, so the frames are looked for under the root itself (where they are not)
    with pytest.raises(
        InputError,
        match=re.escape(f"(tried {root / _rel('real', 'c23', '000', 0)}, ")
        + r".*under DeepfakeBench's root .* \(the config has no rgb_dir\)",
    ):
        resolve_dataset(path)


def test_some_frames_missing_is_not_an_error_here(root: Path) -> None:
    (root / RGB / _rel("real", "c23", "000", 5)).unlink()
    ds = resolve_dataset("FaceForensics++", CONFIG)
    assert _rows(ds) == _expected_ff(root, "c23", C23_32)
    assert ds.image(4)[0, 0, 0] == 4 and ds.image(6)[0, 0, 0] == 6
    missing = str(root / RGB / _rel("real", "c23", "000", 5))
    with pytest.raises(InputError, match=re.escape(f"image {missing!r} does not exist")):
        ds.image(5)


def test_image_reader(root: Path) -> None:
    ds = resolve_dataset("FaceForensics++", CONFIG)
    calls = []

    def reader(path):
        calls.append(path)
        return np.full((4, 6, 3), 9, np.uint8)

    out = ds.image(3, reader)
    assert out.shape == (4, 6, 3) and (out == 9).all() and calls == [ds.items[3].path]
    assert ds.image(3).shape == (2, 2, 3) and ds.image(3)[0, 0, 0] == 3  # default: the file, by PIL
    with pytest.raises(InputError, match=r"reader <lambda> returned None"):
        ds.image(0, lambda p: None)
    with pytest.raises(InputError, match=r"with reader boom: OSError: disk gone"):

        def boom(p):
            raise OSError("disk gone")

        ds.image(0, boom)
    with pytest.raises(InputError, match=r"returned a float64 array of shape \(2, 2, 3\) .* must return uint8"):
        ds.image(0, lambda p: np.zeros((2, 2, 3)))
    zoo = resolve_test_set(None, max_samples=1)
    assert zoo.image(0, boom).shape == (64, 64, 3)  # zoo samples are in memory: the reader is not used
