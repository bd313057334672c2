"""vizkit.zoo.face_test_split.images_or_test_faces: the user's files, or zoo test faces alternating fake and real."""

from __future__ import annotations

import numpy as np
from PIL import Image

from vizkit import zoo
from vizkit.zoo.face_test_split import images_or_test_faces


def test_the_users_files(tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / sub / "face.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "x" / "a.jpg")
    files, names, samples = images_or_test_faces(str(tmp_path / "x"), 5)
    assert files == [tmp_path / "x" / "a.jpg", tmp_path / "x" / "face.png"] and names == ["a", "face"]
    assert samples == [None, None]
    files, names, _ = images_or_test_faces([tmp_path / "x" / "face.png", tmp_path / "y"], 5)
    assert files == [tmp_path / "x" / "face.png", tmp_path / "y" / "face.png"] and names == ["face", "face_2"]


def test_zoo_faces_alternate_fake_and_real_in_a_seeded_order():
    images, names, samples = images_or_test_faces("", 5, seed=3)
    test = zoo.dataset("face_forgery_detector", "test")
    fakes, reals = [s for s in test if s.label == 1], [s for s in test if s.label == 0]
    rng = np.random.default_rng(3)
    ri, fi = rng.permutation(len(reals)), rng.permutation(len(fakes))
    expected = [fakes[fi[0]], reals[ri[0]], fakes[fi[1]], reals[ri[1]], fakes[fi[2]]]
    assert [s.label for s in samples] == [1, 0, 1, 0, 1]
    assert [s.meta["index"] for s in samples] == [e.meta["index"] for e in expected]  # a fresh list each read
    assert all(np.array_equal(s.image, e.image) and np.array_equal(s.mask, e.mask) for s, e in zip(samples, expected))
    assert all(im is s.image for im, s in zip(images, samples))
    assert names == [f"{'fake' if s.label else 'real'}_{s.meta['index']}" for s in expected]
    assert len(set(names)) == 5 and all(s.mask is not None for s in samples[::2])
    assert images_or_test_faces("", 5, seed=4)[1] != names
