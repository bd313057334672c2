"""Scenario 3 (seed 002): metrics against scikit-learn and by hand, the wrong-only selection, the
metadata format, resume after an interruption, every bad input (exit code 2, nothing written),
zero hooks when Grad-CAM is disabled, the explorer reading the saved run; on the zoo detector and
a tiny temp DeepfakeBench checkpoint of another depth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from vizkit.batch import RUN_FILES
from vizkit.cli import main
from vizkit.errors import LayerNotFoundError, VizkitError
from vizkit.models import ClipDetector
from vizkit.scenarios import detector_gradcam_eval as dge


# ------------------------------------------------------------------ fixtures
def _tiny_detector(layers=6):
    from transformers import CLIPVisionConfig

    torch.manual_seed(0)
    return ClipDetector(
        CLIPVisionConfig(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=layers,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    ).eval()


@pytest.fixture(scope="module")
def dfb(tmp_path_factory):
    """A DeepfakeBench-format checkpoint (6 layers, 32 px) + YAML, and a small real/fake image set."""
    root = tmp_path_factory.mktemp("dfb")
    model = _tiny_detector()
    torch.save(
        {k.replace("backbone.vision_model.", "backbone."): v for k, v in model.state_dict().items()}, root / "clip.pth"
    )
    (root / "clip.yaml").write_text(
        yaml.safe_dump(
            {
                "model_name": "clip",
                "resolution": 32,
                "mean": [0.5] * 3,
                "std": [0.5] * 3,
                "num_heads": 2,  # width 128: say the count
                "gradcam_layers": ["encoder.layers.5.layer_norm1", "encoder.layers.-3"],
                "dataset_json_folder": str(root / "json"),
            }
        )
    )
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        label = i % 2
        p = root / "imgs" / f"{i:02d}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(p)
        rows.append(f"imgs/{i:02d}.png,{'fake' if label else 'real'},video{i // 4}_{label}")
    (root / "list.csv").write_text("path,label,video\n" + "\n".join(rows) + "\n")
    return root


def _metrics(path):
    return json.loads((path / "metrics.json").read_text())


# ------------------------------------------------------------------ metrics
LABELS = [0, 0, 1, 1, 0, 1]
PROBS = [0.1, 0.4, 0.35, 0.8, 0.7, 0.9]
VIDEOS = ["a", "a", "b", "b", "c", "d"]


def test_metrics_by_hand_and_against_sklearn():
    from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

    m = dge.detector_metrics(LABELS, PROBS, videos=VIDEOS)
    # AUC: 7 of the 9 (fake, real) pairs are ordered; predictions at 0.5 -> 4 of 6 correct
    assert m["auc"] == pytest.approx(7 / 9) == roc_auc_score(LABELS, PROBS)
    assert m["accuracy"] == pytest.approx(4 / 6) == accuracy_score(LABELS, [int(p >= 0.5) for p in PROBS])
    # EER: at threshold 0.7 fpr = 1/3 and fnr = 1/3
    assert m["eer"] == pytest.approx(1 / 3)
    # AP: precision 1, 1, 3/5 at the three recall steps
    assert m["ap"] == pytest.approx((1 + 1 + 0.6) / 3) == average_precision_score(LABELS, PROBS)
    assert m["confusion"] == {
        "true_real_pred_real": 2,
        "true_real_pred_fake": 1,
        "true_fake_pred_real": 1,
        "true_fake_pred_fake": 2,
    }
    # video level: mean prob per video a 0.25 (real), b 0.575 (fake), c 0.7 (real), d 0.9 (fake) -> 3 of 4 pairs
    assert m["video_auc"] == pytest.approx(0.75) and m["videos"] == 4
    one_class = dge.detector_metrics([1, 1], [0.2, 0.9])
    assert one_class["auc"] is None and one_class["eer"] is None and one_class["accuracy"] == 0.5
    table = dge.metrics_table(m)
    assert table.set_index("metric").loc["AUC", "value"] == round(7 / 9, 4)


def test_wrong_only_selection_and_metadata_format():
    preds = pd.DataFrame(
        {
            "index": [5, 1, 3, 0, 4],
            "path": list("abcde"),
            "label": [1, 0, 1, 0, 1],
            "prob": [0.2, 0.9, 0.8, 0.1, 0.4],
            "pred": [0, 1, 1, 0, 0],
            "correct": [False, False, True, True, False],
        }
    )
    assert dge.select_samples(preds, 2)["index"].tolist() == [1, 4]  # the first wrong ones, dataset order
    assert dge.select_samples(preds, 10)["index"].tolist() == [1, 4, 5]
    assert dge.select_samples(preds, 3, save_all=True)["index"].tolist() == [0, 1, 3]
    assert dge.metadata_text(1, 0, 0.72341, "FaceForensics++") == (
        "True Label: 1 (Fake)\nPredicted Label: 0 (Real)\nConfidence: 0.7234\nCorrect: False\n"
        "Dataset: FaceForensics++\n"
    )
    assert dge.metadata_text(0, 0, 0.9, "x").splitlines()[3] == "Correct: True"


# ------------------------------------------------------------------ layers
def test_layer_names_resolve_by_suffix_and_fail_with_closest_names():
    model = _tiny_detector(layers=6)
    infos = dge.resolve_gradcam_layers(model, ["encoder.layers.5", "encoder.layers.-1.layer_norm1", 2])
    prefix = next(n for n, _ in model.named_modules() if n.endswith("encoder.layers"))
    assert [i.module for i in infos] == [f"{prefix}.5", f"{prefix}.5.layer_norm1", f"{prefix}.2"]
    assert [i.name for i in infos] == ["encoder.layers.5", "encoder.layers.5.layer_norm1", "encoder.layers.2"]
    assert "zero for a CLS-pooled classifier" in infos[0].note and "input of block 5" in infos[1].note
    with pytest.raises(
        LayerNotFoundError,
        match=r"6 transformer blocks .* Closest valid names: encoder.layers.5, "
        r"encoder.layers.4",
    ):
        dge.resolve_gradcam_layers(model, ["encoder.layers.23"])
    with pytest.raises(LayerNotFoundError, match="Closest valid names"):
        dge.resolve_gradcam_layers(model, ["encoder.layers.2.layer_norm9"])
    assert dge.default_layers(model) == [f"encoder.layers.{i}.layer_norm1" for i in (2, 3, 4, 5)]


def test_seed_name_on_a_12_layer_model_suggests_11():
    from transformers import CLIPVisionConfig

    model = ClipDetector(
        CLIPVisionConfig(
            hidden_size=64,
            intermediate_size=64,
            num_hidden_layers=12,
            num_attention_heads=1,
            image_size=16,
            patch_size=8,
        )
    )
    with pytest.raises(LayerNotFoundError, match=r"Closest valid names: encoder.layers.11,"):
        dge.resolve_gradcam_layers(model, ["encoder.layers.23"])


# ------------------------------------------------------------------ the evaluation on the zoo
def test_zoo_evaluation_files_and_resume(tmp_path, monkeypatch):
    kw = dict(max_samples=40, batch_size=10, gradcam_samples=3)
    full = dge.run_evaluation(tmp_path / "full", **kw)
    m = _metrics(tmp_path / "full")
    assert m["samples"] == 40 and m["layers"] == [f"encoder.layers.{i}.layer_norm1" for i in range(4)]
    preds = pd.read_csv(tmp_path / "full" / "predictions.csv")
    assert list(preds.columns) == ["path", "label", "fake_probability", "prediction", "correct"] and len(preds) == 40
    from sklearn.metrics import roc_auc_score

    assert m["auc"] == pytest.approx(roc_auc_score(preds["label"], preds["fake_probability"]), abs=1e-5)
    wrong = full.predictions[~full.predictions["correct"]].sort_values("index")
    assert full.samples["index"].tolist() == wrong["index"].tolist()[:3]
    s0 = tmp_path / "full" / "sample0"
    assert sorted(p.name for p in s0.iterdir()) == ["gradcam_comparison.png"] + [
        f"gradcam_encoder.layers.{i}.layer_norm1_sample0.png" for i in range(4)
    ] + ["sample0_metadata.txt"]
    for k in range(3):  # the per-layer overlay files outline the manipulation mask of a fake, nothing on a real
        saved = np.asarray(Image.open(tmp_path / "full" / f"sample{k}" / f"gradcam_{m['layers'][-1]}_sample{k}.png"))
        cyan = int((saved == [0, 255, 255]).all(-1).sum())
        assert (cyan > 0) == bool(wrong.iloc[k]["label"]), (k, cyan)
    meta = (s0 / "sample0_metadata.txt").read_text().splitlines()
    assert meta[0] == f"True Label: {int(wrong.iloc[0]['label'])} ({'Fake' if wrong.iloc[0]['label'] else 'Real'})"
    assert meta[3] == "Correct: False" and meta[4] == "Dataset: zoo:face_forgery"
    loc = full.localization
    assert set(loc["method"]) == {"gradcam", "gradcam++"} and set(loc["layer"]) == set(m["layers"]) | {"all layers"}
    assert (loc["fakes"] == 20).all() and loc["pointing_game"].between(0, 1).all()
    report = (tmp_path / "full" / "report.md").read_text()
    for part in (
        "## Metrics",
        "## Confusion matrix",
        "score_distribution.png",
        "worst_mistakes.png",
        "Does the map find the manipulation",
        "backbone.encoder.layers.3.layer_norm1",
    ):
        assert part in report

    # interrupted after 2 chunks (as Ctrl-C would), then rerun with the same arguments
    real = dge.evaluate_chunk
    calls = []

    def flaky(ctx, k):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(k)
        return real(ctx, k)

    monkeypatch.setattr(dge, "evaluate_chunk", flaky)
    with pytest.raises(KeyboardInterrupt):
        dge.run_evaluation(tmp_path / "resumed", **kw)
    chunks = tmp_path / "resumed" / "chunks"
    assert sorted(p.name for p in chunks.iterdir()) == ["00000.json", "00000.npz", "00001.json", "00001.npz"]
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    monkeypatch.setattr(dge, "evaluate_chunk", lambda ctx, k: calls.append(k) or real(ctx, k))
    dge.run_evaluation(tmp_path / "resumed", **kw)
    assert calls == [0, 1, 2, 3]  # only the two missing chunks were computed
    assert (tmp_path / "resumed" / "metrics.json").read_text() == (tmp_path / "full" / "metrics.json").read_text()
    assert (tmp_path / "resumed" / "localization.csv").read_text() == (
        tmp_path / "full" / "localization.csv"
    ).read_text()
    # a finished run is not recomputed; a different run in the same folder is refused
    dge.run_evaluation(tmp_path / "resumed", **kw)
    assert calls == [0, 1, 2, 3]
    with pytest.raises(VizkitError, match="holds a different run"):
        dge.run_evaluation(tmp_path / "resumed", **{**kw, "method": "gradcam++"})


def test_explorer_reads_the_saved_run(tmp_path, monkeypatch):
    dge.run_evaluation(tmp_path / "run", max_samples=20, batch_size=10, gradcam_samples=2)
    recompute = lambda *a, **k: pytest.fail("the explorer must not recompute")  # noqa: E731
    monkeypatch.setattr("vizkit.explain.cam", recompute)  # what every map of the evaluation comes from
    monkeypatch.setattr(dge, "evaluate_chunk", recompute)
    ex = dge.DetectorGradCAMExplorer(tmp_path / "run")
    assert [c.description for c in ex.controls] == [label for label, _ in ex.CONTROLS]
    assert len(ex.sample.options) == 20 and ex.method.options == ("gradcam", "gradcam++")
    ex.layer.value = "encoder.layers.3.layer_norm1"
    i = ex.sample.value
    with np.load(tmp_path / "run" / "chunks" / f"{i // 10:05d}.npz") as z:
        expected = z["gradcam|encoder.layers.3.layer_norm1"][list(z["index"]).index(i)]
    np.testing.assert_array_equal(ex.drawn, expected)
    ex.show.value = "wrong only"
    wrong = ex.summary.predictions.loc[~ex.summary.predictions["correct"], "index"].tolist()
    assert [v for _, v in ex.sample.options] == wrong


# ------------------------------------------------------------------ the CLIs on a DeepfakeBench checkpoint
def test_evaluate_cli_on_deepfakebench_checkpoint(dfb, tmp_path, capsys):
    out = tmp_path / "ev"
    Image.new("RGB", (4, 4)).save(dfb / "imgs" / "ok.png")
    (dfb / "imgs" / "broken.png").write_text("not an image")
    listing = tmp_path / "with_broken.csv"
    listing.write_text(
        (dfb / "list.csv").read_text().replace("imgs/", str(dfb / "imgs") + "/")
        + f"{dfb / 'imgs' / 'broken.png'},fake,\n"
    )
    rc = main(
        [
            "evaluate",
            "--detector_path",
            str(dfb / "clip.yaml"),
            "--weights_path",
            str(dfb / "clip.pth"),
            "--test_dataset",
            str(listing),
            "--gradcam_enabled",
            "--gradcam_samples",
            "2",
            "--gradcam_output_dir",
            str(out),
            "--save_all_predictions",
            "--batch-size",
            "5",
            "--method",
            "gradcam++",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 1 and "skipped unreadable" in captured.err and "broken.png" in captured.err  # recorded, run went on
    m = _metrics(out)
    assert m["samples"] == 12 and m["unreadable"] == 1 and m["videos"] == 6 and m["video_auc"] is not None
    assert m["layers"] == ["encoder.layers.5.layer_norm1", "encoder.layers.3"]  # the YAML's gradcam_layers
    assert pd.read_csv(out / "errors.csv")["path"].str.endswith("broken.png").tolist() == [True]
    assert sorted(p.name for p in (out / "sample1").iterdir()) == [
        "gradcam_comparison.png",
        "gradcam_encoder.layers.3_sample1.png",
        "gradcam_encoder.layers.5.layer_norm1_sample1.png",
        "sample1_metadata.txt",
    ]
    assert not (out / "sample2").exists()
    assert "AUC" in captured.out and m["method"] == "gradcam++"


def test_detector_gradcam_cli_one_image(dfb, tmp_path, capsys):
    rc = main(
        [
            "detector-gradcam",
            "--input",
            str(dfb / "imgs" / "00.png"),
            "--output",
            str(tmp_path / "o"),
            "--config",
            str(dfb / "clip.yaml"),
            "--weights",
            str(dfb / "clip.pth"),
            "--layers",
            "encoder.layers.-1.layer_norm1",
            "encoder.layers.1",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == sorted(
        [
            "00.json",
            "00_comparison.png",
            "gradcam_encoder.layers.1_00.png",
            "gradcam_encoder.layers.5.layer_norm1_00.png",
            *RUN_FILES,
        ]
    )  # the image's + the runner's
    side = json.loads((tmp_path / "o" / "00.json").read_text())
    assert side["prediction"] in ("Real", "Fake") and 0 <= side["fake_probability"] <= 1


def test_dataset_name_through_dataset_json_folder(dfb, tmp_path):
    (dfb / "json").mkdir(exist_ok=True)
    frames = {
        f"v{i}": {"label": "Mini_fake" if i % 2 else "Mini_real", "frames": [f"{i:02d}.png", f"{i + 2:02d}.png"]}
        for i in range(4)
    }
    data = {
        "Mini": {
            "Mini_real": {"test": {k: v for k, v in frames.items() if v["label"] == "Mini_real"}},
            "Mini_fake": {"test": {k: v for k, v in frames.items() if v["label"] == "Mini_fake"}},
        }
    }
    (dfb / "json" / "Mini.json").write_text(json.dumps(data))
    cfg = yaml.safe_load((dfb / "clip.yaml").read_text())
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**cfg, "rgb_dir": str(dfb / "imgs")}))
    assert (
        main(
            [
                "evaluate",
                "--detector-path",
                str(tmp_path / "c.yaml"),
                "--weights-path",
                str(dfb / "clip.pth"),
                "--test-dataset",
                "Mini",
                "--output-dir",
                str(tmp_path / "ev"),
            ]
        )
        == 0
    )
    m = _metrics(tmp_path / "ev")
    assert m["dataset"] == "Mini" and m["samples"] == 8 and m["videos"] == 4 and m["layers"] == []  # no Grad-CAM


# ------------------------------------------------------------------ bad input: one message, exit 2, nothing written
@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_config", "detector config .* not found"),
        ("corrupt_config", "not valid YAML"),
        ("missing_weights", "not found"),
        ("corrupt_weights", "clip.pth|bad.pth"),
        ("weights_do_not_fit", "resolution 64 does not fit the weights"),
        ("unknown_layer", "Closest valid names: encoder.layers.5, encoder.layers.4"),
        ("empty_folder", "holds no images under real/ or fake/"),
        ("unknown_name", "'Celeb-DF' resolves to nothing: looked for"),
        ("csv_missing_column", "has no 'label' column"),
        ("csv_bad_label", "label 'maybe' is not 0/1/real/fake"),
        ("zero_samples", "--gradcam_samples must be positive"),
    ],
)
def test_bad_input(dfb, tmp_path, capsys, case, match):
    cfg, weights = str(dfb / "clip.yaml"), str(dfb / "clip.pth")
    data = str(dfb / "list.csv")
    extra: list[str] = []
    if case == "missing_config":
        cfg = str(tmp_path / "nope.yaml")
    elif case == "corrupt_config":
        (tmp_path / "c.yaml").write_text("a: [1,")
        cfg = str(tmp_path / "c.yaml")
    elif case == "missing_weights":
        weights = str(tmp_path / "nope.pth")
    elif case == "corrupt_weights":
        (tmp_path / "bad.pth").write_bytes(b"garbage")
        weights = str(tmp_path / "bad.pth")
    elif case == "weights_do_not_fit":
        (tmp_path / "c.yaml").write_text(yaml.safe_dump({"model_name": "clip", "resolution": 64, "num_heads": 2}))
        cfg = str(tmp_path / "c.yaml")
    elif case == "unknown_layer":
        extra = ["--gradcam_enabled", "--layers", "encoder.layers.23"]
    elif case == "empty_folder":
        (tmp_path / "set" / "real").mkdir(parents=True)
        (tmp_path / "set" / "fake").mkdir()
        data = str(tmp_path / "set")
    elif case == "unknown_name":
        data = "Celeb-DF"
    elif case == "csv_missing_column":
        (tmp_path / "l.csv").write_text("path,video\na.png,v\n")
        data = str(tmp_path / "l.csv")
    elif case == "csv_bad_label":
        (tmp_path / "l.csv").write_text("path,label\na.png,maybe\n")
        data = str(tmp_path / "l.csv")
    elif case == "zero_samples":
        extra = ["--gradcam_enabled", "--gradcam_samples", "0"]
    out = tmp_path / "out"
    rc = main(
        [
            "evaluate",
            "--detector_path",
            cfg,
            "--weights_path",
            weights,
            "--test_dataset",
            data,
            "--gradcam_output_dir",
            str(out),
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("vizkit evaluate: error: ") and len(err.strip().splitlines()) == 1, err
    assert __import__("re").search(match, err), err
    assert not out.exists()  # nothing half-written


def test_output_folder_with_another_run_is_refused_unless_overwrite(dfb, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "evaluate",
        "--detector_path",
        str(dfb / "clip.yaml"),
        "--weights_path",
        str(dfb / "clip.pth"),
        "--test_dataset",
        str(dfb / "list.csv"),
        "--gradcam_output_dir",
        str(out),
    ]
    assert main(args) == 0
    assert main([*args, "--max-samples", "6"]) == 2
    assert "holds a different run" in capsys.readouterr().err and _metrics(out)["samples"] == 12
    assert main([*args, "--max-samples", "6", "--overwrite"]) == 0 and _metrics(out)["samples"] == 6
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert main([*args[:-1], str(tmp_path / "other")]) == 2 and "is not empty" in capsys.readouterr().err


# ------------------------------------------------------------------ the seed's Python API
def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def test_wrapper_disabled_means_no_hooks(tmp_path):
    model = _tiny_detector()
    seen = []
    head_forward = model.head.forward
    model.head.forward = lambda x: (seen.append(_hooks(model)), head_forward(x))[1]
    det = dge.CLIPDetectorWithGradCAM(
        {
            "gradcam_layers": ["encoder.layers.4.layer_norm1", "encoder.layers.5.layer_norm1"],
            "gradcam_save_dir": str(tmp_path / "viz"),
        },
        model=model,
    )
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = det({"image": x})
    assert set(out) == {"cls", "prob"} and seen == [0] and _hooks(model) == 0
    with pytest.raises(VizkitError, match="Grad-CAM is disabled"):
        det.generate_gradcam({"image": x})
    with det.gradcam():
        maps = det.generate_gradcam({"image": x}, save_visualizations=True, filename_prefix="val")
        assert seen[-1] == 3  # during the call only: the two layers and the patch embedding (token grid)
    assert not det.gradcam_enabled and _hooks(model) == 0
    assert set(maps) == {"encoder.layers.4.layer_norm1", "encoder.layers.5.layer_norm1"}
    assert maps["encoder.layers.5.layer_norm1"].shape == (2, 32, 32)
    assert not any(isinstance(v, torch.Tensor) for v in vars(det).values())  # nothing cached on the wrapper
    assert (tmp_path / "viz" / "val_encoder.layers.5.layer_norm1_sample1.png").is_file()
    assert (tmp_path / "viz" / "val_comparison_sample0.png").is_file()
    det.enable_gradcam()
    assert (
        det.generate_gradcam({"image": x[:1]}, save_visualizations=False)["encoder.layers.4.layer_norm1"].shape[0] == 1
    )
    det.disable_gradcam()
    assert _hooks(model) == 0
