"""vizkit.models.load_detector: DeepfakeBench YAML + .pth, HF directories with a head, timm, the zoo
folder; head counts; pipelines; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from deepfakebench import cv2_reference as _cv2_reference
from deepfakebench import write_yaml as _yaml

from vizkit.errors import VizkitError
from vizkit.models import ClipDetector
from vizkit.models.load_common import CheckpointError
from vizkit.models.load_detector import load_detector, load_eval_detector, read_detector_config


def _detector(hidden=128, layers=3, image=32, patch=8, heads=2):  # CLIP heads are 64 wide
    from transformers import CLIPVisionConfig

    torch.manual_seed(0)
    return ClipDetector(
        CLIPVisionConfig(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            image_size=image,
            patch_size=patch,
        )
    ).eval()


def _dfb_state(model):
    return {k.replace("backbone.vision_model.", "backbone."): v for k, v in model.state_dict().items()}


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)


def test_read_config_keys_and_extra(tmp_path):
    cfg = read_detector_config(
        _yaml(
            tmp_path / "clip.yaml",
            model_name="clip",
            resolution=224,
            mean=[0.5, 0.5, 0.5],
            std=[0.5, 0.5, 0.5],
            pretrained="w/det.pth",
            gradcam_layers=["encoder.layers.23"],
            log_dir="/x",
            train_dataset=["FaceForensics++"],
        )
    )
    assert (cfg.model_name, cfg.resolution, cfg.mean, cfg.std) == ("clip", 224, (0.5,) * 3, (0.5,) * 3)
    assert cfg.pretrained == str(tmp_path / "w" / "det.pth")  # relative to the config's folder
    assert cfg.extra == {"gradcam_layers": ["encoder.layers.23"], "log_dir": "/x", "train_dataset": ["FaceForensics++"]}
    assert read_detector_config(_yaml(tmp_path / "empty.yaml")).resolution is None


@pytest.mark.parametrize(
    "text, match",
    [
        ("a: [1, 2", "not valid YAML"),
        ("- 1\n- 2\n", "holds a YAML list"),
        ("resolution: big\n", "'resolution' must be a positive integer"),
        ("mean: [0.5, 0.5]\n", "'mean' must be a list of 3"),
        ("std: [0.5, 0, 0.5]\n", "'std' value must be positive"),
        ("class_names: []\n", "'class_names' must be a non-empty"),
    ],
)
def test_bad_configs(tmp_path, text, match):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(CheckpointError, match=match):
        read_detector_config(tmp_path / "c.yaml")
    with pytest.raises(CheckpointError, match="detector config .* not found"):
        read_detector_config(tmp_path / "missing.yaml")


def test_deepfakebench_yaml_and_pth(tmp_path, image):
    model = _detector(hidden=128, layers=3, image=32, patch=8, heads=2)
    torch.save(_dfb_state(model), tmp_path / "det.pth")
    cfg = _yaml(
        tmp_path / "clip.yaml", model_name="clip", resolution=32, mean=[0.4, 0.5, 0.6], std=[0.2, 0.3, 0.4], num_heads=2
    )
    det = load_detector(cfg, tmp_path / "det.pth")
    assert det.class_names == ["real", "fake"] and det.meta["vision_config"]["num_hidden_layers"] == 3
    assert (det.family, det.pipeline, det.size) == ("deepfakebench:clip", "deepfakebench", 32)
    x = det.preprocess(image)
    torch.testing.assert_close(x, _cv2_reference(image, 32, [0.4, 0.5, 0.6], [0.2, 0.3, 0.4]), rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(det.model(x[None]), model(x[None]))
    # the head count from the argument wins over none in the YAML; a wrong count is refused or changes the output
    det2 = load_detector(_yaml(tmp_path / "c.yaml", resolution=32), tmp_path / "det.pth", num_heads=2)
    with torch.no_grad():
        torch.testing.assert_close(det2.model(x[None]), model(x[None]))
    # a non-DeepfakeBench config's `pretrained` path stands in for missing weights
    det3 = load_detector(
        _yaml(tmp_path / "c2.yaml", pretrained="det.pth", class_names=["genuine", "forged"], num_heads=2)
    )
    assert det3.class_names == ["genuine", "forged"]


def test_head_count_known_widths_given_or_refused(tmp_path):
    from vizkit.models.load_deepfakebench import CLIP_HEADS_BY_WIDTH, head_count, infer_clip_vision_config

    assert [head_count(w) for w in (768, 1024, 1280, 1408, 1664)] == [12, 16, 16, 16, 16]
    assert CLIP_HEADS_BY_WIDTH[1280] == 16 and 1280 // 16 == 80  # ViT-H/14: heads of 80, not 64
    assert head_count(96, 3) == 3
    with pytest.raises(CheckpointError, match="cannot tell the number of attention heads: hidden size 96 .*num_heads"):
        head_count(96)
    with pytest.raises(CheckpointError, match="num_heads 5 does not divide the hidden size 96"):
        head_count(96, 5)
    # a ViT-H/14-width state dict (meta tensors: no memory) gets 16 heads without being told
    sd = {
        "backbone.embeddings.patch_embedding.weight": torch.empty(1280, 3, 14, 14, device="meta"),
        "backbone.embeddings.position_embedding.weight": torch.empty(257, 1280, device="meta"),
        "backbone.encoder.layers.0.mlp.fc1.weight": torch.empty(5120, 1280, device="meta"),
    }
    assert infer_clip_vision_config(sd)["num_attention_heads"] == 16
    # the width-128 detector without a count: one clear error naming both ways to give it
    model = _detector(hidden=128, heads=2)
    torch.save(_dfb_state(model), tmp_path / "det.pth")
    with pytest.raises(CheckpointError, match="`num_heads: N` in the detector YAML, --num-heads N"):
        load_detector(_yaml(tmp_path / "c.yaml", resolution=32), tmp_path / "det.pth")
    with pytest.raises(CheckpointError, match="'num_heads' must be a positive integer"):
        read_detector_config(_yaml(tmp_path / "bad.yaml", num_heads="two"))


def test_wrong_head_count_changes_the_probabilities(tmp_path, image):
    """Why the count matters: the same weights split into 4 heads instead of 2 give other logits."""
    model = _detector(hidden=128, heads=2)
    torch.save(_dfb_state(model), tmp_path / "det.pth")
    right = load_detector(None, tmp_path / "det.pth", num_heads=2)
    wrong = load_detector(None, tmp_path / "det.pth", num_heads=4)
    x = right.preprocess(image)[None]
    with torch.no_grad():
        assert (right.model(x) - wrong.model(x)).abs().max() > 1e-3


def test_deepfakebench_errors(tmp_path):
    model = _detector(image=32, patch=8)
    torch.save(_dfb_state(model), tmp_path / "det.pth")
    with pytest.raises(CheckpointError, match="resolution 224 does not fit .* 32x32 images: set resolution: 32"):
        load_detector(_yaml(tmp_path / "c.yaml", resolution=224, num_heads=2), tmp_path / "det.pth")
    with pytest.raises(CheckpointError, match="no detector weights given and .* has no 'pretrained'"):
        load_detector(_yaml(tmp_path / "c2.yaml", resolution=32))
    with pytest.raises(CheckpointError, match="DeepfakeBench config, whose 'pretrained' is the backbone's"):
        load_detector(_yaml(tmp_path / "c4.yaml", model_name="clip", pretrained="det.pth"))
    with pytest.raises(CheckpointError, match="detector weights not found"):
        load_detector(None, tmp_path / "nope.pth")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(CheckpointError, match="is not a weights file"):
        load_detector(None, tmp_path / "w.txt")
    with pytest.raises(CheckpointError, match="names 3 classes .* has 2 outputs"):
        load_detector(_yaml(tmp_path / "c3.yaml", class_names=["a", "b", "c"], num_heads=2), tmp_path / "det.pth")
    (tmp_path / "random.pth").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CheckpointError, match="random.pth is not a PyTorch checkpoint") as err:
        load_detector(None, tmp_path / "random.pth")
    assert "pickled" not in str(err.value) and "weights_only=False" not in str(err.value)


def test_zoo_detector_is_a_detector_folder(tmp_path, image):
    from vizkit import zoo

    det = load_detector()  # nothing given: the zoo's face_forgery_detector
    assert (det.source, det.pipeline, det.size, det.class_names) == (
        "zoo:face_forgery_detector",
        "zoo",
        64,
        ["real", "fake"],
    )
    bundle = zoo.load("face_forgery_detector")
    torch.testing.assert_close(det.preprocess(image), bundle.preprocess(image), rtol=0, atol=0)
    x = det.preprocess(image)[None]
    with torch.no_grad():
        torch.testing.assert_close(det.model(x), bundle.model(x), rtol=0, atol=0)
    assert load_detector(None, "zoo:face_forgery_detector").source == "zoo:face_forgery_detector"
    with pytest.raises(CheckpointError, match="unknown zoo detector 'zoo:nope'"):
        load_detector(None, "zoo:nope")
    with pytest.raises(CheckpointError, match="has its own head"):
        load_detector(None, "zoo:face_forgery_detector", head=tmp_path / "h.pth")


def test_hf_clip_vision_directory_with_head(tmp_path, image):
    det = _detector(hidden=32, layers=2, image=32, patch=8)
    det.backbone.save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="features only.*head"):
        with pytest.warns(UserWarning):
            load_detector(None, tmp_path / "hf")
    torch.save({"head.weight": det.head.weight, "head.bias": det.head.bias}, tmp_path / "hf" / "head.pth")
    cfg = _yaml(tmp_path / "c.yaml", resolution=32, mean=[0.5] * 3, std=[0.5] * 3)
    loaded = load_detector(cfg, tmp_path / "hf")
    assert (loaded.pipeline, loaded.family) == ("deepfakebench", "hf:CLIPVisionModel")  # a YAML's resolution/mean/std
    x = loaded.preprocess(image)[None]
    torch.testing.assert_close(x[0], _cv2_reference(image, 32, [0.5] * 3, [0.5] * 3), rtol=0, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), det(x))
    assert loaded.class_names == ["real", "fake"]
    torch.save({"weight": torch.zeros(3, 16)}, tmp_path / "bad_head.pth")
    with pytest.raises(CheckpointError, match=r"head's weight is \(3, 16\) .* 32 dimensions"):
        load_detector(cfg, tmp_path / "hf", head=tmp_path / "bad_head.pth")


def test_hf_vit_classifier_directory_names_its_classes(tmp_path, image):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    vit = ViTForImageClassification(
        ViTConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            num_labels=3,
            id2label={0: "cat", 1: "dog", 2: "owl"},
            label2id={"cat": 0, "dog": 1, "owl": 2},
        )
    ).eval()
    vit.save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    loaded = load_detector(None, tmp_path / "vit")
    assert loaded.class_names == ["cat", "dog", "owl"] and loaded.pipeline == "processor"
    x = loaded.preprocess(image)[None]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x).logits, vit(pixel_values=x).logits)


def test_timm_classifier_from_config(tmp_path, image):
    import timm

    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=32, depth=2).eval()
    torch.save(m.state_dict(), tmp_path / "vit.pth")
    kw = {"num_classes": 3, "img_size": 32, "depth": 2}
    cfg = _yaml(
        tmp_path / "c.yaml",
        model_name="timm:vit_tiny_patch16_224",
        model_kwargs=kw,
        resolution=32,
        mean=[0.5] * 3,
        std=[0.5] * 3,
        class_names=["a", "b", "c"],
    )
    loaded = load_detector(cfg, tmp_path / "vit.pth")
    x = loaded.preprocess(image)[None]
    assert x.shape == (1, 3, 32, 32) and loaded.class_names == ["a", "b", "c"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), m(x))
    with pytest.raises(CheckpointError, match="do not fit timm model .*missing key"):
        load_detector(_yaml(tmp_path / "bad.yaml", model_name="timm:vit_tiny_patch16_224"), tmp_path / "vit.pth")


def test_load_eval_detector_two_classes_only(tmp_path, image):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    det = load_eval_detector()  # the zoo detector
    assert det.class_names == ["real", "fake"] and det.fake_index == 1
    zoo = load_detector()
    x = det.preprocess(image)[None]
    with torch.no_grad():
        torch.testing.assert_close(det.model(x), zoo.model(x))  # the same detector load_detector gives
    assert load_eval_detector("", "").source == zoo.source  # empty strings: not given
    config = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32)
    vit = ViTForImageClassification(ViTConfig(**config, patch_size=8, num_labels=3)).eval()
    vit.save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    with pytest.raises(VizkitError, match=r"the detector has 3 outputs \(.*\); a real/fake detector has 2"):
        load_eval_detector(None, tmp_path / "vit")
