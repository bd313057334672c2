"""What a shipped zoo checkpoint promises: evaluated again, here or on any machine, on the held-out set its build
measured, it gives the metrics recorded in its ``config.json`` within a stated tolerance.

Float sums differ from machine to machine (and with the thread count), so a rebuild does not give the same
tensors everywhere, and the shipped checkpoint's scores can differ in the last digits: a borderline sample may
flip. The tolerances below allow that and nothing more: 0.5 percentage point of an accuracy (3 faces of 600,
2 questions of 400, 3 scenes of 600) and 0.002 of an AUC. ``tests/zoo/test_mnist_vit.py`` checks mnist_vit's
test accuracy on all 10,000 test digits (within 0.1 point) and ``tests/zoo/test_shapes_clip.py`` the CLIPs'
pointing game on the build's 300 scenes (within 1 point); docs/howto/reproduce-zoo.md says what a rebuild
reproduces. Real models, real data, no skips."""

from __future__ import annotations

import pytest

from vizkit import zoo
from vizkit.zoo import faces, shapes_clip, vlm_data
from vizkit.zoo.train import face_forgery as train_ff
from vizkit.zoo.train import shapes_clip as train_sc
from vizkit.zoo.train import tiny_vlm as train_vlm

ACCURACY_TOLERANCE = 0.005
AUC_TOLERANCE = 0.002


def test_face_forgery_detector_reproduces_its_recorded_test_auc_and_accuracy():
    bundle = zoo.load("face_forgery_detector")
    recorded = bundle.meta["metrics"]["test"]
    samples = faces.make_samples("test", train_ff.SPLIT_SIZES["test"], seed=0)  # the build's 600 test faces
    assert len(samples) == recorded["n"] == 600
    measured = train_ff.evaluate(
        bundle.model, samples, train_ff.Preprocess(faces.IMAGE_SIZE, train_ff.MEAN, train_ff.STD)
    )
    print(
        f"face_forgery_detector: AUC {measured['auc']:.4f} (recorded {recorded['auc']:.4f}), accuracy "
        f"{measured['accuracy']:.4f} (recorded {recorded['accuracy']:.4f}) on {len(samples)} faces"
    )
    assert abs(measured["auc"] - recorded["auc"]) <= AUC_TOLERANCE
    assert abs(measured["accuracy"] - recorded["accuracy"]) <= ACCURACY_TOLERANCE


@pytest.mark.parametrize("name", ["shapes_clip", "shapes_clip_cnn"])
def test_shapes_clips_reproduce_their_recorded_zero_shot_accuracy(name):
    bundle = zoo.load(name)
    recorded = bundle.meta["metrics"]
    cfg = train_sc.RECIPES[name][0]  # the full recipe, whose evaluation set the build used
    samples = shapes_clip.single_object_scenes("test", cfg.eval_single)
    assert len(samples) == recorded["zero_shot_n"] == 600
    measured = train_sc.zero_shot_accuracy(bundle.model, bundle.preprocess, bundle.tokenizer, samples)
    print(f"{name}: zero-shot {measured:.4f} (recorded {recorded['zero_shot_accuracy']:.4f}) on {len(samples)} scenes")
    assert abs(measured - recorded["zero_shot_accuracy"]) <= ACCURACY_TOLERANCE


def test_tiny_vlm_reproduces_its_recorded_answer_accuracy():
    bundle = zoo.load("tiny_vlm")
    recorded = bundle.meta["metrics"]
    samples = vlm_data.dataset("test", n=recorded["n_eval"], masks=False)  # the build's 400 test questions
    assert len(samples) == 400
    measured = train_vlm.evaluate(bundle.model, bundle.tokenizer, samples, bundle.meta["train"]["max_new_tokens"])
    print(f"tiny_vlm: accuracy {measured['accuracy']:.4f} (recorded {recorded['accuracy']:.4f}) on {measured['n']}")
    assert measured["n"] == recorded["n_eval"]
    assert abs(measured["accuracy"] - recorded["accuracy"]) <= ACCURACY_TOLERANCE
    assert abs(measured["solution_exact_match"] - recorded["solution_exact_match"]) <= ACCURACY_TOLERANCE
