"""vizkit.models.load_detector: DeepfakeBench YAML + .pth, HF directories with a head, timm; errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from vizkit.models import ClipDetector
from vizkit.models.load_common import CheckpointError
from vizkit.models.load_detector import load_detector, read_detector_config


def _detector(hidden=128, layers=3, image=32, patch=8, heads=2):  # CLIP heads are 64 wide
    from transformers import CLIPVisionConfig

    torch.manual_seed(0)
    return ClipDetector(CLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                                         num_attention_heads=heads, image_size=image, patch_size=patch)).eval()


def _dfb_state(model):
    return {k.replace("backbone.vision_model.", "backbone."): v for k, v in model.state_dict().items()}


def _yaml(path, **keys):
    path.write_text(yaml.safe_dump(keys))
    return path


@pytest.fixture
def image():
    return np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)


def test_read_config_keys_and_extra(tmp_path):
    cfg = read_detector_config(_yaml(tmp_path / "clip.yaml", model_name="clip", resolution=224, mean=[0.5, 0.5, 0.5],
                                     std=[0.5, 0.5, 0.5], pretrained="w/det.pth", gradcam_layers=["encoder.layers.23"],
                                     log_dir="/x", train_dataset=["FaceForensics++"]))
    assert (cfg.model_name, cfg.resolution, cfg.mean, cfg.std) == ("clip", 224, (0.5,) * 3, (0.5,) * 3)
    assert cfg.pretrained == str(tmp_path / "w" / "det.pth")  # relative to the config's folder
    assert cfg.extra == {"gradcam_layers": ["encoder.layers.23"], "log_dir": "/x", "train_dataset": ["FaceForensics++"]}
    assert read_detector_config(_yaml(tmp_path / "empty.yaml")).resolution is None


@pytest.mark.parametrize("text, match", [
    ("a: [1, 2", "not valid YAML"), ("- 1\n- 2\n", "holds a YAML list"),
    ("resolution: big\n", "'resolution' must be a positive integer"), ("mean: [0.5, 0.5]\n", "'mean' must be a list of 3"),
    ("std: [0.5, 0, 0.5]\n", "'std' value must be positive"), ("class_names: []\n", "'class_names' must be a non-empty"),
])
def test_bad_configs(tmp_path, text, match):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(CheckpointError, match=match):
        read_detector_config(tmp_path / "c.yaml")
    with pytest.raises(CheckpointError, match="detector config .* not found"):
        read_detector_config(tmp_path / "missing.yaml")


def test_deepfakebench_yaml_and_pth(tmp_path, image):
    model = _detector(hidden=128, layers=3, image=32, patch=8)
    torch.save(_dfb_state(model), tmp_path / "det.pth")
    cfg = _yaml(tmp_path / "clip.yaml", model_name="clip", resolution=32, mean=[0.4, 0.5, 0.6], std=[0.2, 0.3, 0.4])
    loaded = load_detector(cfg, tmp_path / "det.pth")
    assert loaded.meta["class_names"] == ["real", "fake"] and loaded.meta["config"]["num_hidden_layers"] == 3
    x = loaded.preprocess(image)
    # resize to 32 px, then (x - mean) / std with the config's values
    from PIL import Image

    ref = np.asarray(Image.fromarray(image).resize((32, 32), Image.BILINEAR), np.float32) / 255.0
    ref = (torch.from_numpy(ref.transpose(2, 0, 1)) - torch.tensor([0.4, 0.5, 0.6])[:, None, None]) \
        / torch.tensor([0.2, 0.3, 0.4])[:, None, None]
    torch.testing.assert_close(x, ref)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x[None]), model(x[None]))
    # the config's `pretrained` path stands in for missing weights
    loaded2 = load_detector(_yaml(tmp_path / "c2.yaml", pretrained="det.pth", class_names=["genuine", "forged"]))
    assert loaded2.meta["class_names"] == ["genuine", "forged"]


def test_deepfakebench_errors(tmp_path):
    model = _detector(image=32, patch=8)
    torch.save(_dfb_state(model), tmp_path / "det.pth")
    with pytest.raises(CheckpointError, match="resolution 224 does not fit .* 32x32 images: set resolution: 32"):
        load_detector(_yaml(tmp_path / "c.yaml", resolution=224), tmp_path / "det.pth")
    with pytest.raises(CheckpointError, match="no detector weights given and .* has no 'pretrained'"):
        load_detector(_yaml(tmp_path / "c2.yaml", resolution=32))
    with pytest.raises(CheckpointError, match="detector weights not found"):
        load_detector(None, tmp_path / "nope.pth")
    (tmp_path / "w.txt").write_text("x")
    with pytest.raises(CheckpointError, match="is not a weights file"):
        load_detector(None, tmp_path / "w.txt")
    with pytest.raises(CheckpointError, match="names 3 classes .* has 2 outputs"):
        load_detector(_yaml(tmp_path / "c3.yaml", class_names=["a", "b", "c"]), tmp_path / "det.pth")


def test_hf_clip_vision_directory_with_head(tmp_path, image):
    det = _detector(hidden=32, layers=2, image=32, patch=8)
    det.backbone.save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="features only.*head"):
        with pytest.warns(UserWarning):
            load_detector(None, tmp_path / "hf")
    torch.save({"head.weight": det.head.weight, "head.bias": det.head.bias}, tmp_path / "hf" / "head.pth")
    cfg = _yaml(tmp_path / "c.yaml", resolution=32, mean=[0.5] * 3, std=[0.5] * 3)
    loaded = load_detector(cfg, tmp_path / "hf")
    x = loaded.preprocess(image)[None]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), det(x))
    assert loaded.meta["class_names"] == ["real", "fake"]
    torch.save({"weight": torch.zeros(3, 16)}, tmp_path / "bad_head.pth")
    with pytest.raises(CheckpointError, match=r"head's weight is \(3, 16\) .* 32 dimensions"):
        load_detector(cfg, tmp_path / "hf", head=tmp_path / "bad_head.pth")


def test_hf_vit_classifier_directory_names_its_classes(tmp_path, image):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    vit = ViTForImageClassification(ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                              num_attention_heads=2, image_size=32, patch_size=8, num_labels=3,
                                              id2label={0: "cat", 1: "dog", 2: "owl"},
                                              label2id={"cat": 0, "dog": 1, "owl": 2})).eval()
    vit.save_pretrained(tmp_path / "vit")
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "vit")
    loaded = load_detector(None, tmp_path / "vit")
    assert loaded.meta["class_names"] == ["cat", "dog", "owl"]
    x = loaded.preprocess(image)[None]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x).logits, vit(pixel_values=x).logits)


def test_timm_classifier_from_config(tmp_path, image):
    import timm

    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=32, depth=2).eval()
    torch.save(m.state_dict(), tmp_path / "vit.pth")
    kw = {"num_classes": 3, "img_size": 32, "depth": 2}
    cfg = _yaml(tmp_path / "c.yaml", model_name="timm:vit_tiny_patch16_224", model_kwargs=kw, resolution=32,
                mean=[0.5] * 3, std=[0.5] * 3, class_names=["a", "b", "c"])
    loaded = load_detector(cfg, tmp_path / "vit.pth")
    x = loaded.preprocess(image)[None]
    assert x.shape == (1, 3, 32, 32) and loaded.meta["class_names"] == ["a", "b", "c"]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), m(x))
    with pytest.raises(CheckpointError, match="do not fit timm model .*missing key"):
        load_detector(_yaml(tmp_path / "bad.yaml", model_name="timm:vit_tiny_patch16_224"), tmp_path / "vit.pth")
