"""Scenario 4 end to end on the zoo's shapes_clip / shapes_clip_cnn (CLI, Python API, notebook)."""

import json

import pytest
from PIL import Image

from vizkit import cli
from vizkit.batch import RUN_FILES


# ------------------------------------------------------------------ the zoo models end to end
def save_scene(path, name="red circle"):
    from vizkit.zoo.shapes_clip import scenes_with

    sample = scenes_with("test", 1, name)[0]
    Image.fromarray(sample.image).save(path)
    return sample


@pytest.mark.parametrize(
    "model, layer", [("shapes_clip", "visual.trunk.blocks.2"), ("shapes_clip_cnn", "visual.trunk.layer4")]
)
def test_cli_zoo_models_with_list_and_json_texts(tmp_path, capsys, model, layer):
    folder = tmp_path / "imgs"
    folder.mkdir()
    save_scene(folder / "a.png")
    save_scene(folder / "b.png", "blue square")
    out = tmp_path / "out"
    texts = ["a red circle", "a blue square", "a green star"]
    assert (
        cli.main(
            [
                "clip-gradcam",
                "--model",
                model,
                "--image-path",
                str(folder),
                "--class-texts",
                *texts,
                "--output-dir",
                str(out),
                "--cpu",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"layer: {layer}" in printed and "explained score: image-text similarity" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(  # the images' files and the batch runner's
        [f"clip_gradcam_{s}{x}" for s in "ab" for x in (".json", ".png", "_overlay.png")] + list(RUN_FILES)
    )
    a = json.loads((out / "clip_gradcam_a.json").read_text())
    b = json.loads((out / "clip_gradcam_b.json").read_text())
    assert a["target_chosen"] == "most similar" and a["layers"][0].startswith(layer)
    assert (a["target_name"], b["target_name"]) == ("a red circle", "a blue square")  # the model recognises them
    f = tmp_path / "texts.json"
    f.write_text(json.dumps({"circle": "a red circle", "square": "a blue square"}))
    out2 = tmp_path / "out2"
    assert (
        cli.main(
            [
                "clip-gradcam",
                "--model",
                model,
                "--image-path",
                str(folder / "a.png"),
                "--class-texts-file",
                str(f),
                "--target-text-idx",
                "1",
                "--method",
                "layercam",
                "--probability",
                "--output-dir",
                str(out2),
                "--output-name",
                "square.png",
                "--cpu",
            ]
        )
        == 0
    )
    side = json.loads((out2 / "square.json").read_text())
    assert side["names"] == ["circle", "square"] and side["texts"] == ["a red circle", "a blue square"]
    assert side["target"] == 1 and side["target_chosen"] == "given" and side["method"] == "layercam"
    assert side["score"] == "probability" and abs(sum(side["probs"]) - 1) < 1e-5


def test_visualize_clip_gradcam_python_api(tmp_path):
    from vizkit.scenarios.clip_text_gradcam import visualize_clip_gradcam

    save_scene(tmp_path / "scene.png")
    res = visualize_clip_gradcam(
        "shapes_clip", tmp_path / "scene.png", ["a red circle", "a green star"], tmp_path / "result.png"
    )
    assert res.names[res.target] == "a red circle"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "result.json",
        "result.png",
        "result_overlay.png",
        "scene.png",
    ]


def test_notebook_04_with_non_default_parameters(tmp_path):
    from papermill_run import NOTEBOOKS, run

    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    run_dir = tmp_path / "run"
    nb = run(
        "04_clip_text_gradcam",
        tmp_path,
        model="shapes_clip_cnn",
        method="gradcam++",
        class_texts=["a red circle", "a blue square", "a green star", "a yellow triangle"],
        target_text_idx=0,
        num_scenes=20,
        table_methods="gradcam,layercam",
        interactive=False,
        output_dir=str(run_dir),
    )
    names = sorted(p.name for p in run_dir.iterdir())
    assert "clip_gradcam_report.md" in names and "clip_gradcam_all_texts.png" in names
    assert {f"clip_gradcam_scene_{i}{x}" for i in range(4) for x in (".png", "_overlay.png", ".json")} <= set(names)
    side = json.loads((run_dir / "clip_gradcam_scene_0.json").read_text())
    assert side["method"] == "gradcam++" and side["target"] == 0 and side["layers"] == ["visual.trunk.layer4"]
    report = (run_dir / "clip_gradcam_report.md").read_text()
    assert "| method | 'gradcam++' |" in report and "| gradcam |" in report and "| layercam |" in report
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "model zoo:shapes_clip_cnn | method gradcam++ | layer visual.trunk.layer4" in outputs
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before


def test_pointing_table_matches_a_direct_computation_and_rejects_missing_texts():
    import numpy as np
    import torch

    import vizkit
    from vizkit import zoo
    from vizkit.errors import InputError
    from vizkit.metrics import pointing_game
    from vizkit.scenarios.clip_text_gradcam import load_clip_model, pointing_table
    from vizkit.targets import ImageTextSimilarity

    adapter = load_clip_model("shapes_clip_cnn")
    bundle = zoo.load("shapes_clip_cnn")
    scenes = zoo.dataset("shapes_clip_cnn", "test")[:30]
    table = pointing_table(adapter, scenes, bundle.class_names, ["gradcam", "layercam"], batch_size=7)
    assert list(table["method"]) == ["gradcam", "layercam"] and list(table["scenes"]) == [30, 30]
    model = bundle.model
    with torch.no_grad():
        text = torch.nn.functional.normalize(model.encode_text(bundle.tokenizer(bundle.class_names)), dim=-1)
    x = bundle.preprocess.batch(np.stack([s.image for s in scenes]))
    for method, row in zip(("gradcam", "layercam"), table.itertuples()):
        exp = vizkit.cam(
            model,
            x,
            ImageTextSimilarity(text, [s.label for s in scenes], model.logit_scale.exp().item()),
            method=method,
            forward=model.encode_image,
        )
        masks = torch.from_numpy(np.stack([s.mask for s in scenes]))
        hits = pointing_game(exp.heatmap, masks)
        # the table runs batches of 7, this one batch of 30: the heatmaps differ by float
        # rounding (~2e-6), which can flip the argmax where pixels tie at the maximum (measured:
        # scene 18, 0.99999988 vs 0.99999982, one inside the mask, one outside). So a scene
        # counts as a sure hit when every pixel within 1e-5 of its maximum is in the mask and
        # as a possible hit when any is (21 and 24 of the 30 for Grad-CAM); without ties the
        # two counts are equal.
        near_max = exp.heatmap.flatten(1) >= exp.heatmap.flatten(1).amax(1, keepdim=True) - 1e-5
        inside = masks.flatten(1)
        sure = int((near_max <= inside).all(1).sum())
        possible = int((near_max & inside).any(1).sum())
        assert sure <= int(hits.sum()) <= possible and possible - sure <= 5
        assert sure <= row.hits <= possible and row.layer == "visual.trunk.layer4"
    with pytest.raises(InputError, match="not among the texts"):
        pointing_table(adapter, scenes, ["a red circle"], ["gradcam"])


def test_clip_explorer_redraws_and_caches():
    pytest.importorskip("ipywidgets")
    import numpy as np
    from PIL import Image

    from vizkit import zoo
    from vizkit.scenarios.clip_text_gradcam import ClipExplorer, explain_clip, load_clip_model
    from vizkit.widgets import describe_controls

    adapter = load_clip_model("shapes_clip")
    image = Image.fromarray(zoo.dataset("shapes_clip", "test")[0].image)
    names = ["a red circle", "a blue square", "a green star"]
    ex = ClipExplorer(adapter, image, names, names, ["gradcam", "layercam"], ["auto", "visual.trunk.blocks.1"])
    assert describe_controls(ex.controls) == list(ex.CONTROLS)
    np.testing.assert_allclose(ex.drawn, explain_clip(adapter, [image], names, names, 0)[0].heatmap, atol=1e-6)
    ex.text.value = 2
    ex.method.value = "layercam"
    np.testing.assert_allclose(
        ex.drawn, explain_clip(adapter, [image], names, names, 2, "layercam")[0].heatmap, atol=1e-6
    )
    calls = []
    h = adapter.model.visual.register_forward_hook(lambda *a: calls.append(1))
    try:
        ex.text.value = 0  # (0, layercam, auto): new -> one forward
        ex.method.value = "gradcam"  # (0, gradcam, auto): cached
    finally:
        h.remove()
    assert len(calls) == 1 and len(ex.cache) == 4  # (0|2, gradcam|layercam, auto)
