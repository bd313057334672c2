"""Every field of the :class:`~vizkit.models.detector.Detector` that :func:`load_detector` returns, per
loading path (DeepfakeBench CLIP weights, a Hugging Face CLIP / CLIPModel directory with a linear
head, a Hugging Face classifier, a timm classifier, a vizkit detector folder), and what decides
p(fake): the class names (which index is "fake"), the reading and preprocessing pipeline (parity
with OpenCV / PIL written out here) and the logits (parity with the model the weights came from).
Cases a mutation run found untested."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import yaml
from deepfakebench import random_deepfakebench_xception
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from vizkit.io import read_image_opencv
from vizkit.models import ClipDetector
from vizkit.models.detector import Detector, fake_class_index, real_class_index
from vizkit.models.load_common import CheckpointError
from vizkit.models.load_detector import (
    DetectorConfig,
    _output_width,
    load_detector,
    load_eval_detector,
    loaded_detector,
    read_detector_config,
)

VISION = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}


def _clip_detector() -> ClipDetector:
    torch.manual_seed(0)
    return ClipDetector(dict(VISION)).eval()


def _yaml(path, **keys):
    path.write_text(yaml.safe_dump(keys))
    return path


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    """A 40 x 48 RGB PNG."""
    a = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("img") / "face.png"
    Image.fromarray(a).save(path)
    return path


def _cv2_pipeline(image: np.ndarray, size: int, mean, std, interpolation: str) -> torch.Tensor:
    """cv2.resize, /255, (x - mean) / std, written out."""
    import cv2

    flag = {"cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}[interpolation]
    a = cv2.resize(image, (size, size), interpolation=flag) if image.shape[:2] != (size, size) else image
    x = torch.from_numpy(a.transpose(2, 0, 1).copy()).float() / 255.0
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def _p_fake(det: Detector, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = det.model(x)
    logits = out.logits if hasattr(out, "logits") else out
    return logits.softmax(-1)[:, det.fake_index]


# ------------------------------------------------------------------ the class indices of p(fake)
@pytest.mark.parametrize(
    "names, fake, real",
    [
        (["real", "fake"], 1, 0),
        (["Fake", "Real"], 0, 1),
        (["pristine", "deepfake", "faceswap"], 2, 0),
        (["REAL", "x", "y"], 2, 0),
        (["a", "FAKE", "c"], 1, 0),
    ],
)
def test_fake_and_real_class_indices(names, fake, real):
    assert fake_class_index(names) == fake and real_class_index(names) == real
    det = Detector(nn.Identity(), lambda x: x, lambda p: p, names, 8, "s", "f", "zoo")
    assert (det.fake_index, det.real_index) == (fake, real)


# ------------------------------------------------------------------ DeepfakeBench CLIP weights
def test_deepfakebench_clip_every_field_and_p_fake(tmp_path, image_file):
    model = _clip_detector()
    sd = {k.replace("backbone.vision_model.", "backbone."): v for k, v in model.state_dict().items()}
    torch.save(sd, tmp_path / "det.pth")
    cfg = _yaml(tmp_path / "clip.yaml", model_name="clip", num_heads=2, gradcam_layers=["encoder.layers.0"], seed=3)
    det = load_detector(cfg, tmp_path / "det.pth")
    assert det.class_names == ["real", "fake"] and det.size == 32
    assert (det.source, det.family, det.pipeline) == (str(tmp_path / "det.pth"), "deepfakebench:clip", "deepfakebench")
    assert det.config == {"gradcam_layers": ["encoder.layers.0"], "seed": 3}
    assert det.meta["config_path"] == str(cfg) and det.meta["vision_config"]["hidden_size"] == 128
    assert det.read is read_image_opencv and not det.model.training
    # no mean / std in the YAML: DeepfakeBench's CLIP default 0.5 / 0.5, INTER_CUBIC
    img = det.load(image_file)
    x = det.preprocess(img)
    assert torch.allclose(x, _cv2_pipeline(img, 32, [0.5] * 3, [0.5] * 3, "cubic"), atol=1e-6)
    with torch.no_grad():
        want = model(x[None]).softmax(-1)[:, 1]
    assert torch.allclose(_p_fake(det, x[None]), want, atol=1e-6)
    # an explicit DetectorConfig is used as is; the device is honoured (meta stands in for a GPU)
    cfg2 = DetectorConfig(num_heads=2, class_names=["genuine", "forged"])
    det2 = load_detector(cfg2, tmp_path / "det.pth", device="meta")
    assert det2.class_names == ["genuine", "forged"] and det2.meta["config_path"] is None
    assert next(det2.model.parameters()).device.type == "meta"


def test_deepfakebench_weights_under_another_model_name(tmp_path):
    model = _clip_detector()
    torch.save(model.state_dict(), tmp_path / "det.pth")
    for name in ("xception", "efficientnetb4"):
        with pytest.raises(CheckpointError, match="holds a CLIP detector .*use DeepfakeBench's clip.yaml"):
            load_detector(_yaml(tmp_path / f"{name}.yaml", model_name=name, num_heads=2), tmp_path / "det.pth")
    # a model_name DeepfakeBench does not know is just a name
    det = load_detector(_yaml(tmp_path / "mine.yaml", model_name="my_clip", num_heads=2), tmp_path / "det.pth")
    assert det.family == "deepfakebench:clip"
    # neither CLIP nor Xception keys: the weights file is named
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path / 'other.pth'} is not a DeepfakeBench CLIP")):
        load_detector(_yaml(tmp_path / "x.yaml", model_name="xception"), tmp_path / "other.pth")


def test_config_and_test_config(tmp_path):
    base = _yaml(tmp_path / "clip.yaml", model_name="clip", resolution=1, num_heads=1, mean=[0.25], seed=1)
    cfg = read_detector_config(base)
    assert (cfg.path, cfg.resolution, cfg.num_heads, cfg.mean) == (base, 1, 1, (0.25,))
    test = _yaml(tmp_path / "test.yaml", resolution=64, backbone_config={"mode": "original"}, label_dict={"a": 0})
    merged = read_detector_config(base, test)
    assert (merged.path, merged.resolution, merged.model_name, merged.backbone_config) == (
        base,
        64,
        "clip",
        {"mode": "original"},
    )
    assert merged.extra == {"seed": 1, "label_dict": {"a": 0}}
    # class_names, num_heads and backbone_config are read, not left in `extra`
    full = read_detector_config(
        _yaml(tmp_path / "full.yaml", class_names=["a", 1], num_heads=3, backbone_config={}, frame_num=8)
    )
    assert (full.class_names, full.num_heads, full.backbone_config, full.extra) == (["a", "1"], 3, {}, {"frame_num": 8})
    # through load_detector: only a test config is the config; with a config, it is merged over it
    torch.save(_clip_detector().state_dict(), tmp_path / "det.pth")
    t2 = _yaml(tmp_path / "t2.yaml", num_heads=2, seed=5)
    only = load_detector(None, tmp_path / "det.pth", test_config=t2)
    assert (only.meta["config_path"], only.config) == (str(t2), {"seed": 5})
    both = load_detector(
        _yaml(tmp_path / "b2.yaml", class_names=["r", "f"], seed=1), tmp_path / "det.pth", test_config=t2
    )
    assert (both.meta["config_path"], both.config, both.class_names) == (
        str(tmp_path / "b2.yaml"),
        {"seed": 5},
        ["r", "f"],
    )
    # an empty YAML is an empty config
    (tmp_path / "empty.yaml").write_text("")
    empty = read_detector_config(tmp_path / "empty.yaml")
    assert (empty.model_name, empty.resolution, empty.extra) == (None, None, {})
    with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path / 'b.yaml'}: 'mean' must be a list of 3")):
        read_detector_config(_yaml(tmp_path / "b.yaml", mean=[True, 0.5, 0.5]))
    for bad in (0, -2):
        with pytest.raises(CheckpointError, match="'resolution' must be a positive integer"):
            read_detector_config(_yaml(tmp_path / "r.yaml", resolution=bad))
    with pytest.raises(CheckpointError, match="'num_heads' must be a positive integer"):
        read_detector_config(_yaml(tmp_path / "h.yaml", num_heads=0))
    with pytest.raises(CheckpointError, match="'backbone_config' must be a mapping"):
        read_detector_config(_yaml(tmp_path / "bc.yaml", backbone_config=[1]))
    with pytest.raises(CheckpointError, match=r"^test config \(YAML\) not found"):
        read_detector_config(base, tmp_path / "missing.yaml")
    with pytest.raises(CheckpointError, match=r"^detector config \(YAML\) not found"):
        read_detector_config(tmp_path / "missing.yaml")
    absolute = read_detector_config(_yaml(tmp_path / "p.yaml", pretrained=str(tmp_path / "w" / "d.pth")))
    assert absolute.pretrained == str(tmp_path / "w" / "d.pth")


def test_no_weights_messages(tmp_path):
    with pytest.raises(CheckpointError, match="backbone's initialisation, not the trained detector"):
        load_detector(_yaml(tmp_path / "c.yaml", model_name="Xception", pretrained="x.pth"))


# ------------------------------------------------------------------ Hugging Face directories
def _save_clip_vision(tmp_path, name="hf"):
    det = _clip_detector()
    det.backbone.save_pretrained(tmp_path / name)
    return det


@pytest.mark.parametrize("prefix", ["", "module.head.", "classifier.", "fc."])
def test_hf_clip_vision_with_a_head_every_field(tmp_path, image_file, prefix):
    det = _save_clip_vision(tmp_path)
    torch.save({f"{prefix}weight": det.head.weight, f"{prefix}bias": det.head.bias}, tmp_path / "head.pth")
    cfg = _yaml(tmp_path / "c.yaml", mean=[0.4, 0.5, 0.6], class_names=["genuine", "forged"], seed=2)
    with pytest.warns(UserWarning, match="no image processor"):
        loaded = load_detector(cfg, tmp_path / "hf", head=tmp_path / "head.pth")
    # only a mean: the DeepfakeBench pipeline at the model's own image size, std 0.5
    assert (loaded.size, loaded.pipeline, loaded.family) == (32, "deepfakebench", "hf:CLIPVisionModel")
    assert (loaded.source, loaded.class_names, loaded.config) == (
        str(tmp_path / "hf"),
        ["genuine", "forged"],
        {"seed": 2},
    )
    assert loaded.read is read_image_opencv and not loaded.model.training
    img = loaded.load(image_file)
    x = loaded.preprocess(img)
    assert torch.allclose(x, _cv2_pipeline(img, 32, [0.4, 0.5, 0.6], [0.5] * 3, "cubic"), atol=1e-6)
    with torch.no_grad():
        want = det(x[None]).softmax(-1)[:, 1]
    assert torch.allclose(_p_fake(loaded, x[None]), want, atol=1e-6)


def test_hf_clip_head_without_bias_and_bad_heads(tmp_path, image_file):
    det = _save_clip_vision(tmp_path)
    torch.save({"weight": det.head.weight}, tmp_path / "hf" / "head.pth")  # found beside the model
    cfg = _yaml(tmp_path / "c.yaml", std=[0.25, 0.25, 0.25])  # only a std: the CLIP tower's own 32 px
    with pytest.warns(UserWarning):
        loaded = load_detector(cfg, tmp_path / "hf")
    assert loaded.model.head.bias is None and loaded.size == 32 and loaded.pipeline == "deepfakebench"
    img = loaded.load(image_file)  # no mean in the YAML: 0.5
    assert torch.allclose(loaded.preprocess(img), _cv2_pipeline(img, 32, [0.5] * 3, [0.25] * 3, "cubic"), atol=1e-6)
    assert loaded.class_names == ["real", "fake"]
    torch.save({"bias": det.head.bias}, tmp_path / "no_weight.pth")
    with pytest.raises(CheckpointError, match="is not a linear head"), pytest.warns(UserWarning):
        load_detector(None, tmp_path / "hf", head=tmp_path / "no_weight.pth")
    with pytest.raises(CheckpointError, match="linear head weights not found"), pytest.warns(UserWarning):
        load_detector(None, tmp_path / "hf", head=tmp_path / "missing.pth")


def test_hf_clip_model_directory_uses_its_vision_tower(tmp_path, image_file):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(1)
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=dict(VISION), projection_dim=16)).eval()
    clip.save_pretrained(tmp_path / "clip")
    head = nn.Linear(128, 2)
    torch.save(head.state_dict(), tmp_path / "clip" / "head.pth")
    cfg = _yaml(tmp_path / "c.yaml", resolution=32, mean=[0.5] * 3, std=[0.5] * 3)
    with pytest.warns(UserWarning):
        loaded = load_detector(cfg, tmp_path / "clip", device="meta")
    assert loaded.family == "hf:CLIPModel" and next(loaded.model.parameters()).device.type == "meta"
    with pytest.warns(UserWarning):
        loaded = load_detector(cfg, tmp_path / "clip")
    x = loaded.preprocess(loaded.load(image_file))[None]
    with torch.no_grad():
        want = head(clip.vision_model(pixel_values=x).pooler_output).softmax(-1)[:, 1]
    assert torch.allclose(_p_fake(loaded, x), want, atol=1e-6)


def _save_vit(path, labels):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    vit = ViTForImageClassification(
        ViTConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={n: i for i, n in enumerate(labels)},
        )
    ).eval()
    vit.save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return vit


@pytest.mark.parametrize(
    "labels, names",
    [
        (["LABEL_0", "LABEL_1"], ["real", "fake"]),
        (["LABEL_0", "LABEL_1", "LABEL_2"], ["class 0", "class 1", "class 2"]),
        (["pristine", "LABEL_1"], ["pristine", "LABEL_1"]),
    ],
)
def test_hf_classifier_class_names(tmp_path, labels, names):
    _save_vit(tmp_path / "vit", labels)
    assert load_detector(None, tmp_path / "vit").class_names == names


def test_hf_classifier_every_field_and_yaml_pipelines(tmp_path, image_file):
    vit = _save_vit(tmp_path / "vit", ["cat", "dog"])
    det = load_detector(None, tmp_path / "vit")
    assert (det.pipeline, det.family, det.source, det.size) == (
        "processor",
        "hf:ViTForImageClassification",
        str(tmp_path / "vit"),
        32,
    )
    assert det.read.__name__ == "_pil_read" and det.config == {} and det.meta == {"config_path": None}
    img = det.load(image_file)
    assert img.dtype == np.uint8 and np.array_equal(img, np.asarray(Image.open(image_file).convert("RGB")))
    x = det.preprocess(img)[None]
    with torch.no_grad():
        want = vit(pixel_values=x).logits.softmax(-1)[:, 1]
    assert torch.allclose(_p_fake(det, x), want, atol=1e-6)
    assert next(load_detector(None, tmp_path / "vit", device="meta").model.parameters()).device.type == "meta"
    # the YAML's class names win; any of resolution / mean / std selects the DeepfakeBench pipeline
    named = load_detector(_yaml(tmp_path / "n.yaml", class_names=["real", "fake"]), tmp_path / "vit")
    assert named.class_names == ["real", "fake"] and named.pipeline == "processor"
    only_res = load_detector(_yaml(tmp_path / "r.yaml", resolution=16), tmp_path / "vit")
    assert (only_res.pipeline, only_res.size) == ("deepfakebench", 16) and only_res.read is read_image_opencv
    only_mean = load_detector(_yaml(tmp_path / "m.yaml", mean=[0.5] * 3), tmp_path / "vit")
    assert (only_mean.pipeline, only_mean.size) == ("deepfakebench", 32)
    dfb = load_detector(_yaml(tmp_path / "d.yaml", resolution=16, mean=[0.1] * 3), tmp_path / "vit", device="meta")
    assert next(dfb.model.parameters()).device.type == "meta" and dfb.source == str(tmp_path / "vit")


def test_hf_model_without_an_image_size_gets_224(tmp_path):
    # an architecture whose config has no image size (a VLM's is in its vision config): 224 px
    import vlm_folders as VF

    folder = VF.save_random_qwen2_vl(tmp_path / "q", layers=1, heads=2, kv_heads=1)
    det = load_detector(_yaml(tmp_path / "m.yaml", mean=[0.5] * 3), folder, device="meta")
    assert (det.size, det.pipeline, det.class_names) == (224, "deepfakebench", ["real", "fake"])


def test_a_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="is not a Hugging Face model directory: no config.json"):
        load_detector(None, tmp_path / "empty")
    (tmp_path / "listcfg").mkdir()
    (tmp_path / "listcfg" / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="is not a Hugging Face model directory|JSON list"):
        load_detector(None, tmp_path / "listcfg")


# ------------------------------------------------------------------ timm
def _save_timm(path, **kw):
    import timm

    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=1, **kw).eval()
    torch.save(m.state_dict(), path)
    return m


def test_timm_classifier_every_field(tmp_path, image_file):
    m = _save_timm(tmp_path / "vit.pth", num_classes=3)
    kw = {"num_classes": 3, "img_size": 32, "depth": 1}
    det = load_detector(
        _yaml(tmp_path / "c.yaml", model_name="timm:vit_tiny_patch16_224", model_kwargs=kw), tmp_path / "vit.pth"
    )
    assert (det.family, det.pipeline, det.source) == (
        "timm:vit_tiny_patch16_224",
        "processor",
        str(tmp_path / "vit.pth"),
    )
    assert det.class_names == ["class 0", "class 1", "class 2"] and det.read.__name__ == "_pil_read"
    assert det.config == {"model_kwargs": kw} and det.size == 32
    x = det.preprocess(det.load(image_file))[None]
    with torch.no_grad():
        assert torch.allclose(det.model(x), m(x), atol=1e-6)
    meta = load_detector(
        _yaml(tmp_path / "c.yaml", model_name="timm:vit_tiny_patch16_224", model_kwargs=kw),
        tmp_path / "vit.pth",
        device="meta",
    )
    assert next(meta.model.parameters()).device.type == "meta"
    for keys, size in [({"resolution": 32}, 32), ({"mean": [0.5] * 3}, 224), ({"std": [0.5] * 3}, 224)]:
        y = _yaml(tmp_path / "y.yaml", model_name="timm:vit_tiny_patch16_224", model_kwargs=kw, **keys)
        d = load_detector(y, tmp_path / "vit.pth", device="meta")
        assert (d.pipeline, d.size, d.family, d.source) == (
            "deepfakebench",
            size,
            "timm:vit_tiny_patch16_224",
            str(tmp_path / "vit.pth"),
        )
        assert d.read is read_image_opencv and next(d.model.parameters()).device.type == "meta"


def test_timm_features_only_model_counts_its_outputs(tmp_path):
    _save_timm(tmp_path / "feat.pth", num_classes=0)  # no classifier: the output is the 192 features
    y = _yaml(
        tmp_path / "c.yaml",
        model_name="timm:vit_tiny_patch16_224",
        model_kwargs={"num_classes": 0, "img_size": 32, "depth": 1},
    )
    det = load_detector(y, tmp_path / "feat.pth")
    assert len(det.class_names) == 192 and det.class_names[-1] == "class 191"


# ------------------------------------------------------------------ vizkit detector folders
def _vizkit_folder(path, **config):
    model = _clip_detector()
    path.mkdir(parents=True)
    cfg = {
        "model_class": "vizkit.models.ClipDetector",
        "vision_config": dict(VISION),
        "preprocess": {"size": 24, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.4]},
        **config,
    }
    (path / "config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
    return model


def test_vizkit_folder_every_field(tmp_path, image_file):
    model = _vizkit_folder(tmp_path / "det", name="mine", class_names=["pristine", "fake"], metrics={"auc": 0.5})
    det = load_detector(None, tmp_path / "det")
    assert (det.source, det.family, det.pipeline, det.size) == (str(tmp_path / "det"), "zoo:mine", "zoo", 24)
    assert det.class_names == ["pristine", "fake"] and det.meta["metrics"] == {"auc": 0.5}
    assert det.meta["config"]["name"] == "mine" and det.config == {} and det.read.__name__ == "_pil_read"
    img = det.load(image_file)
    x = det.preprocess(img)
    assert torch.allclose(x, _cv2_pipeline(img, 24, [0.4, 0.5, 0.6], [0.2, 0.3, 0.4], "area"), atol=1e-6)
    # 24 px input for a 32 px model: compare the logits on a 32 px input instead
    z = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(_p_fake(det, z), model(z).softmax(-1)[:, 1], atol=1e-6)
    assert next(load_detector(None, tmp_path / "det", device="meta").model.parameters()).device.type == "meta"
    # a folder inside a `zoo` folder is named zoo:<name>; no name / class names: the folder's, real / fake
    _vizkit_folder(tmp_path / "zoo" / "plain")
    plain = load_detector(None, tmp_path / "zoo" / "plain")
    assert (plain.source, plain.family, plain.class_names) == ("zoo:plain", "zoo:plain", ["real", "fake"])
    assert plain.meta["metrics"] is None


def test_vizkit_folder_whose_weights_do_not_fit(tmp_path):
    _vizkit_folder(tmp_path / "det")
    cfg = json.loads((tmp_path / "det" / "config.json").read_text())
    cfg["vision_config"]["intermediate_size"] = 64
    (tmp_path / "det" / "config.json").write_text(json.dumps(cfg))
    weights = tmp_path / "det" / "model.safetensors"
    with pytest.raises(CheckpointError, match=re.escape(f"the weights in {weights} do not fit ClipDetector")):
        load_detector(None, tmp_path / "det")


def test_zoo_names(tmp_path, monkeypatch):
    # the bare name is the zoo's detector unless a file of that name exists; the zoo: prefix always is
    monkeypatch.chdir(tmp_path)
    bare = load_detector(None, "face_forgery_detector", device="meta")
    assert bare.source == "zoo:face_forgery_detector" and next(bare.model.parameters()).device.type == "meta"
    (tmp_path / "zoo:face_forgery_detector").write_text("not weights")
    assert load_detector(None, "zoo:face_forgery_detector").family == "zoo:face_forgery_detector"


def test_loaded_detector_view():
    det = Detector(nn.Identity(), str, str, ["real", "fake"], 8, "src", "fam", "zoo", meta={"k": 1})
    loaded = loaded_detector(det)
    assert loaded.model is det.model and loaded.preprocess is det.preprocess
    assert loaded.meta == {"class_names": ["real", "fake"], "source": "src", "family": "fam", "pipeline": "zoo", "k": 1}


def test_deepfakebench_xception_every_field_and_p_fake(tmp_path, image_file):
    from test_deepfakebench_cnn import fake_prob, random_deepfakebench_xception, reference_logits

    sd = random_deepfakebench_xception(dropout=False, seed=1)
    torch.save(sd, tmp_path / "ckpt_best.pth")
    bc = {"mode": "original", "num_classes": 2, "inc": 3, "dropout": False}
    cfg = _yaml(
        tmp_path / "xception.yaml",
        model_name="xception",
        backbone_config=bc,
        class_names=["real", "FAKE"],
        frame_num=32,
    )
    det = load_detector(cfg, tmp_path / "ckpt_best.pth")
    assert (det.family, det.pipeline, det.source) == (
        "deepfakebench:xception",
        "deepfakebench",
        str(tmp_path / "ckpt_best.pth"),
    )
    assert (det.size, det.class_names, det.fake_index, det.config) == (256, ["real", "FAKE"], 1, {"frame_num": 32})
    assert det.meta == {"config_path": str(cfg)} and det.read is read_image_opencv and not det.model.training
    img = det.load(image_file)
    x = det.preprocess(img)  # DeepfakeBench's default size for Xception, 0.5 / 0.5, INTER_CUBIC
    assert torch.allclose(x, _cv2_pipeline(img, 256, [0.5] * 3, [0.5] * 3, "cubic"), atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(_p_fake(det, x[None]), fake_prob(reference_logits(sd, x[None])), atol=1e-5)
    sized = load_detector(
        _yaml(tmp_path / "s.yaml", resolution=224, mean=[0.4] * 3), tmp_path / "ckpt_best.pth", device="meta"
    )
    assert (sized.size, sized.class_names) == (224, ["real", "fake"]) and next(
        sized.model.parameters()
    ).device.type == "meta"
    # the YAML's model_name and backbone_config reach the builder, which names the weights file
    with pytest.raises(
        CheckpointError,
        match=re.escape(f"model_name 'clip' (from the YAML) does not match {tmp_path / 'ckpt_best.pth'}"),
    ):
        load_detector(_yaml(tmp_path / "c.yaml", model_name="clip"), tmp_path / "ckpt_best.pth")
    with pytest.raises(CheckpointError, match="mode 'shallow_xception' is not supported"):
        load_detector(
            _yaml(tmp_path / "m.yaml", backbone_config={"mode": "shallow_xception"}), tmp_path / "ckpt_best.pth"
        )


def test_detector_inputs_stack_preprocessed_images_on_the_model_device(image_file):
    model = _clip_detector()
    seen = []

    def preprocess(image):
        seen.append(image)
        return torch.as_tensor(image, dtype=torch.float32).permute(2, 0, 1) / 255

    det = Detector(model, preprocess, read_image_opencv, ["real", "fake"], 32, "mem", "test", "none")
    a = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    b = 255 - a
    x = det.inputs([a, b])
    assert [id(i) for i in seen] == [id(a), id(b)]  # every image, in order, through the pipeline
    assert x.shape == (2, 3, 4, 4) and x.device.type == "cpu"
    assert torch.equal(x[1], torch.as_tensor(b).permute(2, 0, 1).float() / 255)
    # .to moves the model and returns the detector; inputs then land on that device (meta stands in for a GPU)
    assert det.to("meta") is det and next(model.parameters()).device.type == "meta"
    assert det.inputs([a]).device.type == "meta"


def test_load_eval_detector_passes_heads_test_config_and_device_on(tmp_path):
    torch.save(_clip_detector().state_dict(), tmp_path / "det.pth")
    base = _yaml(tmp_path / "clip.yaml", model_name="clip")
    test = _yaml(tmp_path / "test.yaml", mean=[0.25, 0.25, 0.25], seed=9)
    det = load_eval_detector(base, tmp_path / "det.pth", num_heads=2, test_config=test, device="meta")
    assert det.meta["vision_config"]["num_attention_heads"] == 2 and det.config == {"seed": 9}
    assert next(det.model.parameters()).device.type == "meta"
    x = det.preprocess(np.full((32, 32, 3), 255, dtype=np.uint8))
    assert torch.allclose(x, torch.full((3, 32, 32), (1 - 0.25) / 0.5))  # the test config's mean, DFB's std
    det = load_eval_detector(base, tmp_path / "det.pth", num_heads=4)
    assert det.meta["vision_config"]["num_attention_heads"] == 4 and det.config == {}
    assert next(det.model.parameters()).device.type == "cpu"


def test_deepfakebench_xception_size_device_and_a_file_that_is_not_a_state_dict(tmp_path):
    torch.save(random_deepfakebench_xception(seed=2), tmp_path / "x.pth")
    cfg = _yaml(tmp_path / "xception.yaml", model_name="xception")
    det = load_detector(cfg, tmp_path / "x.pth", device="meta")
    assert det.size == 256 and det.family == "deepfakebench:xception"  # DeepfakeBench's default resolution
    assert next(det.model.parameters()).device.type == "meta"
    assert (
        load_detector(_yaml(tmp_path / "x299.yaml", model_name="xception", resolution=299), tmp_path / "x.pth").size
        == 299
    )
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=re.escape(f"{tmp_path / 'list.pth'} holds a list, not a state dict")):
        load_detector(cfg, tmp_path / "list.pth")


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_timm_token_features_model_counts_the_last_axis(tmp_path, device):
    # no classifier and no pooling: the output is [1, tokens, features]; the class count is the features (last
    # axis), from a forward pass where the model is (the meta device stands in for a GPU)
    _save_timm(tmp_path / "tok.pth", num_classes=0, global_pool="")
    y = _yaml(
        tmp_path / "c.yaml",
        model_name="timm:vit_tiny_patch16_224",
        model_kwargs={"num_classes": 0, "global_pool": "", "img_size": 32, "depth": 1},
    )
    det = load_detector(y, tmp_path / "tok.pth", device=device)
    assert len(det.class_names) == 192 and det.class_names[-1] == "class 191"
    assert next(det.model.parameters()).device.type == device


def test_timm_model_without_num_classes_counts_its_outputs(tmp_path, monkeypatch):
    # a timm factory whose model has no num_classes attribute: the count comes from a forward pass
    import timm

    def build(name, pretrained=False, **kw):
        torch.manual_seed(0)
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))

    torch.save(build("x").state_dict(), tmp_path / "seq.pth")
    monkeypatch.setattr(timm, "create_model", build)
    det = load_detector(_yaml(tmp_path / "c.yaml", model_name="timm:resnet18"), tmp_path / "seq.pth")
    assert not hasattr(det.model, "num_classes")
    assert det.class_names == ["class 0", "class 1", "class 2", "class 3"] and det.family == "timm:resnet18"


def test_timm_loader_gets_the_device(tmp_path, monkeypatch):
    import vizkit.models.load_vision as load_vision

    real, seen = load_vision.load_timm, []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("device", "<default>"))
        return real(*args, **kwargs)

    monkeypatch.setattr(load_vision, "load_timm", spy)
    _save_timm(tmp_path / "vit.pth", num_classes=2)
    y = _yaml(
        tmp_path / "c.yaml",
        model_name="timm:vit_tiny_patch16_224",
        model_kwargs={"num_classes": 2, "img_size": 32, "depth": 1},
    )
    det = load_detector(y, tmp_path / "vit.pth", device="meta")
    assert seen == ["meta"] and next(det.model.parameters()).device.type == "meta"
    assert det.class_names == ["real", "fake"]


def test_the_output_width_of_a_model_without_parameters():
    # nothing to read a device from: the counting pass runs one 32 x 32 RGB image on the default device
    assert _output_width(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())) == 3
