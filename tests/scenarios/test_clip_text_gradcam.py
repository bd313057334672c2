"""Scenario 4: CLIP image-text Grad-CAM (texts, images, targets, outputs, CLI)."""

import json

import numpy as np
import pytest
import torch
from models import open_clip_resnet, open_clip_vit
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import vizkit
from vizkit import cli, render
from vizkit.batch import RUN_FILES
from vizkit.errors import InputError, TargetError
from vizkit.models.clip import adapt_clip
from vizkit.scenarios.clip_text_gradcam import explain_clip, load_class_texts, load_image, output_stem, save_result


def tiny_tokenizer(context_length=8):
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer(context_length=context_length)
    return lambda texts: torch.clamp(tok(texts), max=99)  # the tiny text tower has a 100-token vocabulary


@pytest.fixture(scope="module")
def rn_adapter():
    return adapt_clip(open_clip_resnet(), tokenizer=tiny_tokenizer())


@pytest.fixture
def image(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "scene.png"
    Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(path)
    return path


# ------------------------------------------------------------------ class texts
def test_class_texts_from_list_and_json(tmp_path):
    assert load_class_texts(["a", "b"]) == (["a", "b"], ["a", "b"])
    f = tmp_path / "texts.json"
    f.write_text(json.dumps({"正常": "正常的髋关节假体", "异常": "松动的假体"}, ensure_ascii=False), encoding="utf-8")
    assert load_class_texts(None, f) == (["正常", "异常"], ["正常的髋关节假体", "松动的假体"])


@pytest.mark.parametrize(
    "texts, content, message",
    [
        (["a"], '{"x": "y"}', "not both and not neither"),
        (None, None, "not both and not neither"),
        ([], None, "the list of class texts is empty"),
        (None, '{"x": ', "is not valid JSON"),
        (None, "{}", "holds no class texts"),
        (None, '["a", "b"]', 'must hold one JSON object {"name": "description"'),
        (None, '{"a": 1}', "with string names and descriptions"),
    ],
)
def test_class_text_errors(tmp_path, texts, content, message):
    f = None
    if content is not None:
        f = tmp_path / "t.json"
        f.write_text(content)
    with pytest.raises(InputError, match=message):
        load_class_texts(texts, f)


# ------------------------------------------------------------------ images
@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA"])
def test_images_are_converted_not_rejected(tmp_path, mode):
    rng = np.random.default_rng(1)
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, (20, 30), dtype=np.uint16))
    else:
        im = Image.fromarray(rng.integers(0, 255, (20, 30, 4), dtype=np.uint8), "RGBA").convert(mode)
    path = tmp_path / "x.png"
    im.save(path)
    out = load_image(path)
    assert out.mode == "RGB" and out.size == (30, 20)
    if mode == "I;16":
        a = np.asarray(im, dtype=np.float64) / 65535 * 255
        np.testing.assert_allclose(np.asarray(out)[..., 0], a.astype(np.uint8), atol=1)


def test_unreadable_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "missing.png")


# ------------------------------------------------------------------ explanation
def test_target_is_most_similar_text_and_matches_pytorch_grad_cam(rn_adapter, image):
    texts = ["a red circle", "a blue square", "a green star"]
    res = explain_clip(rn_adapter, [load_image(image)], texts, texts, method="gradcam")[0]
    sims = np.array(res.similarities)
    assert res.target == int(sims.argmax()) and res.target_chosen == "most similar"
    assert res.layers == ["visual.layer4"] and res.score == "similarity"
    np.testing.assert_allclose(sum(res.probs), 1.0, atol=1e-5)

    model = rn_adapter.model
    text = rn_adapter.text_features(texts)

    class Logits(torch.nn.Module):  # the reference sees a classifier whose logits are the similarities
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, x):
            return rn_adapter.logit_scale * torch.nn.functional.normalize(self.m.encode_image(x), dim=-1) @ text.T

    x = rn_adapter.preprocess(load_image(image))[None]
    with GradCAM(Logits(), [model.visual.layer4]) as ref:
        expected = ref(x, [ClassifierOutputTarget(res.target)])
    np.testing.assert_allclose(res.heatmap, expected[0], atol=1e-4)


def test_most_similar_target_comes_from_the_explained_pass(rn_adapter, image):
    """One image-encoder forward per explanation; the similarities equal a plain no-grad pass."""
    texts = ["a red circle", "a blue square", "a green star"]
    model = rn_adapter.model
    calls = []
    handle = model.visual.register_forward_hook(lambda *_: calls.append(1))
    try:
        res = explain_clip(rn_adapter, [load_image(image)] * 2, texts, texts, method="gradcam")
    finally:
        handle.remove()
    assert len(calls) == 1
    x = rn_adapter.preprocess(load_image(image))[None]
    with torch.no_grad():
        feats = torch.nn.functional.normalize(rn_adapter.encode_image(x).float(), dim=-1)
    expected = (rn_adapter.logit_scale * feats @ rn_adapter.text_features(texts).T)[0]
    for r in res:
        np.testing.assert_allclose(r.similarities, expected.numpy(), rtol=1e-5, atol=1e-5)
        assert r.target == int(expected.argmax())
    # Score-CAM runs many masked passes: the target text stays the one chosen on the clean image
    sc = explain_clip(rn_adapter, [load_image(image)], texts, texts, method="scorecam")[0]
    assert sc.target == int(expected.argmax())
    np.testing.assert_allclose(sc.similarities, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_most_similar_target_function():
    text = torch.eye(3)
    target = vizkit.targets.ImageTextSimilarity(text, None, logit_scale=10.0)
    out = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    np.testing.assert_allclose(target(out).numpy(), [10 * 2 / 5**0.5, 10.0], rtol=1e-6)
    assert target.index.tolist() == [1, 0]
    # later calls keep the chosen texts even when another text wins
    np.testing.assert_allclose(target(torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])).numpy(), [0.0, 0.0])
    np.testing.assert_allclose(target.observed.numpy(), 10 * torch.nn.functional.normalize(out, dim=-1).numpy())
    with pytest.raises(TargetError, match="call the target on the full batch"):
        vizkit.targets.ImageTextSimilarity(text, None).take(torch.tensor([0]))


def test_given_target_and_probability_score(rn_adapter, image):
    texts = ["a", "b", "c"]
    res = explain_clip(rn_adapter, [load_image(image)], texts, texts, target_text_idx=2, probability=True)[0]
    assert res.target == 2 and res.target_chosen == "given" and res.score == "probability"
    with pytest.raises(
        InputError, match=r"target text index 3 is out of range: there are 3 class texts \(valid 0..2\)"
    ):
        explain_clip(rn_adapter, [load_image(image)], texts, texts, target_text_idx=3)


def test_vit_tower_auto_layer(image):
    adapter = adapt_clip(open_clip_vit(), tokenizer=tiny_tokenizer())
    res = explain_clip(adapter, [load_image(image)], ["x", "y"], ["x", "y"], method="gradcam++")[0]
    assert res.layers == ["visual.transformer.resblocks.1.ln_1"] and res.heatmap.shape == (32, 32)
    assert res.method == "gradcam++"


# ------------------------------------------------------------------ outputs
def test_outputs_and_sidecar(rn_adapter, image, tmp_path):
    res = explain_clip(
        rn_adapter, [load_image(image)], ["n1", "n2"], ["text one", "text two"], image_paths=[str(image)]
    )[0]
    paths = save_result(res, tmp_path / "out", output_stem(image, None, False))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "clip_gradcam_scene.json",
        "clip_gradcam_scene.png",
        "clip_gradcam_scene_overlay.png",
    ]
    side = json.loads(paths["sidecar"].read_text())
    assert side["names"] == ["n1", "n2"] and side["texts"] == ["text one", "text two"]
    assert side["layers"] == ["visual.layer4"] and side["method"] == "gradcam"
    assert side["target_name"] == ["n1", "n2"][side["target"]] and side["score"] == "similarity"
    assert Image.open(paths["overlay"]).size == (224, 224)  # the 64-px scene upsampled for legibility
    # with a ground-truth mask: its outline in cyan on the overlay file, at the upsampled size
    mask = np.zeros((64, 64), bool)
    mask[20:40, 10:30] = True
    with_mask = save_result(res, tmp_path / "masked", "m", mask=mask)
    saved = np.asarray(Image.open(with_mask["overlay"]).convert("RGB"))
    ring = render.outline_pixels(mask, (224, 224))
    assert ring.sum() > 0 and (saved[ring] == [0, 255, 255]).all()
    assert not (np.asarray(Image.open(paths["overlay"]).convert("RGB"))[ring] == [0, 255, 255]).all(-1).all()


def test_failed_save_leaves_no_partial_files(rn_adapter, image, tmp_path, monkeypatch):
    from vizkit import render

    res = explain_clip(rn_adapter, [load_image(image)], ["a", "b"], ["a", "b"])[0]

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(render, "save_image", boom)
    with pytest.raises(OSError, match="disk full"):
        save_result(res, tmp_path / "out", "x")
    assert list((tmp_path / "out").iterdir()) == []


def test_output_names():
    assert output_stem("a/b/cat.jpg", None, False) == "clip_gradcam_cat"
    assert output_stem("cat.jpg", "result_with_infection.png", False) == "result_with_infection"
    assert output_stem("cat.jpg", "res", True) == "res_cat"


# ------------------------------------------------------------------ CLI errors (exit code 2, nothing written)
def test_cli_both_text_sources_is_a_usage_error(tmp_path, image, capsys):
    f = tmp_path / "t.json"
    f.write_text('{"a": "b"}')
    with pytest.raises(SystemExit) as exc:
        cli.main(["clip-gradcam", "--image-path", str(image), "--class-texts", "a", "--class-texts-file", str(f)])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "give the class texts with --class-texts or --class-texts-file"),
        (["--class-texts", "a", "b", "--target-text-idx", "5"], "--target-text-idx 5 is out of range: there are 2"),
        (
            ["--class-texts", "a", "--model", "ViT-B-32", "--model-path", "/nonexistent/model.pt"],
            "model path '/nonexistent/model.pt' does not exist",
        ),
        (["--class-texts", "a", "--model", "ViT-B-32"], "needs its weights on disk"),
        (["--class-texts", "a", "--model", "no-such-model"], "unknown model 'no-such-model'"),
    ],
)
def test_cli_bad_input(tmp_path, image, capsys, extra, message):
    out = tmp_path / "out"
    code = cli.main(["clip-gradcam", "--image-path", str(image), "--output-dir", str(out), "--cpu"] + extra)
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_cli_unreadable_image_in_a_folder(tmp_path, image, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "ok.png").write_bytes(image.read_bytes())
    (folder / "broken.jpg").write_text("nope")
    code = cli.main(
        [
            "clip-gradcam",
            "--image-path",
            str(folder),
            "--class-texts",
            "a",
            "b",
            "--output-dir",
            str(tmp_path / "out"),
            "--cpu",
        ]
    )
    assert code == 2 and "cannot read image" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ real model formats through the CLI
def test_cli_hugging_face_clip_directory(tmp_path, image):
    from models import hf_clip_dir

    hf_clip_dir(tmp_path / "hf_clip")
    out = tmp_path / "out"
    code = cli.main(
        [
            "clip-gradcam",
            "--model",
            str(tmp_path / "hf_clip"),
            "--image-path",
            str(image),
            "--class-texts",
            "a cat",
            "a dog",
            "--target-text-idx",
            "1",
            "--output-dir",
            str(out),
            "--output-name",
            "hf.png",
            "--cpu",
        ]
    )
    assert code == 0
    side = json.loads((out / "hf.json").read_text())
    assert side["layers"] == ["vision_model.encoder.layers.1.layer_norm1"] and side["target"] == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(["hf.json", "hf.png", "hf_overlay.png", *RUN_FILES])


def chinese_text_encoder(path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    chars = sorted(set("正常异常病灶髋关节假体松动周围感染"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars
    path.mkdir()
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
        )
    ).save_pretrained(path)


def test_cli_custom_two_tower_model_with_a_chinese_text_encoder(tmp_path, image):
    from vizkit.models.dual_encoder import DualEncoderCLIP

    chinese_text_encoder(tmp_path / "bert-tiny-chinese")
    torch.manual_seed(0)
    model = DualEncoderCLIP("resnet18", tmp_path / "bert-tiny-chinese", embed_dim=16, img_size=64)
    torch.save(model.state_dict(), tmp_path / "clip_starnet_bert.pth")
    out = tmp_path / "out"
    args = [
        "clip-gradcam",
        "--model-path",
        str(tmp_path / "clip_starnet_bert.pth"),
        "--image-path",
        str(image),
        "--class-texts",
        "正常",
        "异常",
        "病灶",
        "--target-text-idx",
        "2",
        "--image-encoder",
        "resnet18",
        "--text-encoder",
        str(tmp_path / "bert-tiny-chinese"),
        "--img-size",
        "64",
        "--output-dir",
        str(out),
        "--cpu",
    ]
    assert cli.main(args + ["--embed-dim", "16"]) == 0
    side = json.loads((out / "clip_gradcam_scene.json").read_text())
    assert side["layers"] == ["image_encoder.layer4"] and side["target_name"] == "病灶"
    # the same texts through the model directly give the same probabilities
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path / "bert-tiny-chinese")
    model.eval()
    x = torch.stack([__import__("vizkit.models.clip", fromlist=["x"]).default_preprocess(64)(load_image(image))])
    with torch.no_grad():
        logits = model(
            x,
            **{
                k: v
                for k, v in tok(["正常", "异常", "病灶"], padding=True, return_tensors="pt").items()
                if k != "token_type_ids"
            },
        )
    np.testing.assert_allclose(side["probs"], logits.softmax(-1)[0].numpy(), atol=1e-5)
    # a checkpoint of another embedding size does not fit: one clear error, nothing written
    code = cli.main(args[:-2] + [str(tmp_path / "out2"), "--cpu", "--embed-dim", "32"])
    assert code == 2 and not (tmp_path / "out2").exists()
