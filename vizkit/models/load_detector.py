"""A real/fake (or any-class) image detector from a user's files: a DeepfakeBench detector YAML
config and its weights, a Hugging Face directory, or a timm classifier — offline.

:func:`read_detector_config` reads the DeepfakeBench keys that matter for explaining a detector
(``model_name``, ``resolution``, ``mean``, ``std``, ``pretrained``, ``class_names``) and keeps
every other key in ``extra`` (e.g. seed 002's ``gradcam_layers``, the dataset keys
``dataset_json_folder`` / ``rgb_dir``); unknown keys are ignored, not errors.
:func:`load_detector` returns a :class:`~vizkit.models.load_common.Loaded` whose model maps
``[B, 3, H, W]`` to logits ``[B, C]`` and whose ``meta["class_names"]`` names the C classes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .detector import CLASS_NAMES, ClipDetector, LinearHeadClassifier
from .load_common import CheckpointError, Loaded, PathLike, existing, load_checkpoint, resize_normalize, strip_prefixes

__all__ = ["DetectorConfig", "read_detector_config", "load_detector"]

_WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
_HEAD_FILES = ("head.safetensors", "head.pth", "head.pt", "head.bin")


@dataclass
class DetectorConfig:
    """The keys of a detector YAML config vizkit reads; the rest in ``extra``."""

    path: Path | None = None
    model_name: str | None = None
    resolution: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    pretrained: str | None = None
    class_names: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _floats3(value: Any, key: str, path: Path) -> tuple[float, ...]:
    if (isinstance(value, (list, tuple)) and len(value) in (1, 3)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        return tuple(float(v) for v in value)
    raise CheckpointError(f"{path}: {key!r} must be a list of 3 numbers (one per RGB channel), got {value!r}")


def read_detector_config(path: PathLike) -> DetectorConfig:
    """Read a DeepfakeBench detector YAML (or JSON) config; see the module docstring."""
    import yaml

    p = existing(path, "detector config (YAML)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{p} is not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CheckpointError(f"{p} holds a YAML {type(data).__name__}; a detector config is a mapping of keys "
                              "(model_name: clip, resolution: 224, mean: [...], std: [...], ...)")
    cfg = DetectorConfig(path=p)
    if data.get("model_name") is not None:
        cfg.model_name = str(data["model_name"])
    if data.get("resolution") is not None:
        r = data["resolution"]
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise CheckpointError(f"{p}: 'resolution' must be a positive integer (pixels), got {r!r}")
        cfg.resolution = r
    for key in ("mean", "std"):
        if data.get(key) is not None:
            setattr(cfg, key, _floats3(data[key], key, p))
    if cfg.std is not None and any(s <= 0 for s in cfg.std):
        raise CheckpointError(f"{p}: every 'std' value must be positive, got {list(cfg.std)}")
    if data.get("pretrained"):
        pre = Path(str(data["pretrained"])).expanduser()
        cfg.pretrained = str(pre if pre.is_absolute() else (p.parent / pre))
    names = data.get("class_names")
    if names is not None:
        if not (isinstance(names, list) and names and all(isinstance(n, (str, int)) for n in names)):
            raise CheckpointError(f"{p}: 'class_names' must be a non-empty list of names, got {names!r}")
        cfg.class_names = [str(n) for n in names]
    known = {"model_name", "resolution", "mean", "std", "pretrained", "class_names"}
    cfg.extra = {k: v for k, v in data.items() if k not in known}
    return cfg


def _class_names(n: int, *candidates: Sequence[str] | None) -> list[str]:
    for names in candidates:
        if names:
            if len(names) != n:
                raise CheckpointError(f"the config names {len(names)} classes ({', '.join(names)}) but the model "
                                      f"has {n} outputs")
            return list(names)
    return list(CLASS_NAMES) if n == 2 else [f"class {i}" for i in range(n)]


def _head_from(path: Path, hidden: int) -> nn.Linear:
    sd = strip_prefixes(load_checkpoint(path), ("module.", "head.", "classifier.", "fc."))
    w, b = sd.get("weight"), sd.get("bias")
    if w is None or w.ndim != 2:
        raise CheckpointError(f"{path} is not a linear head: expected a 'weight' [classes, {hidden}] (and 'bias'), "
                              f"found keys {', '.join(list(sd)[:5])}")
    if w.shape[1] != hidden:
        raise CheckpointError(f"{path}: the head's weight is {tuple(w.shape)} but the backbone's features have "
                              f"{hidden} dimensions: expected [classes, {hidden}]")
    head = nn.Linear(hidden, w.shape[0], bias=b is not None)
    head.load_state_dict({k: v for k, v in (("weight", w), ("bias", b)) if v is not None})
    return head


def _hf_detector(directory: Path, head: PathLike | None, cfg: DetectorConfig, device: Any) -> Loaded:
    from .load_hf import load_hf

    loaded = load_hf(directory, device=device)
    model, arch = loaded.model, loaded.meta["architecture"]
    if arch in ("CLIPVisionModel", "CLIPModel"):
        head_path = Path(head) if head else next((directory / f for f in _HEAD_FILES if (directory / f).is_file()), None)
        if head_path is None:
            raise CheckpointError(f"{directory} holds a {arch} (features only): give the linear head's weights with "
                                  f"--head / head=PATH, or save them beside the model as {' or '.join(_HEAD_FILES)}")
        vision = model.vision_model if arch == "CLIPModel" else model
        hidden = vision.config.hidden_size
        clf = LinearHeadClassifier(vision, _head_from(existing(head_path, "linear head weights"), hidden))
        loaded.model = clf.eval().to(device)
        names = _class_names(clf.head.out_features, cfg.class_names)
    else:
        id2label = getattr(model.config, "id2label", None) or {}
        n = int(getattr(model.config, "num_labels", len(id2label)))
        default = [id2label[i] for i in range(n)] if len(id2label) == n and not all(
            str(v).startswith("LABEL_") for v in id2label.values()) else None
        names = _class_names(n, cfg.class_names, default)
    if cfg.resolution or cfg.mean or cfg.std:
        size = cfg.resolution or getattr(getattr(loaded.model, "config", None), "image_size", None) or 224
        loaded.preprocess = resize_normalize(size, cfg.mean or (0.5,) * 3, cfg.std or (0.5,) * 3)
    loaded.meta.update({"class_names": names, "family": f"hf:{arch}"})
    return loaded


def load_detector(config: PathLike | DetectorConfig | None = None, weights: PathLike | None = None, *,
                  head: PathLike | None = None, device: str | torch.device = "cpu") -> Loaded:
    """Load the detector a user names (see the module docstring).

    - ``weights`` a ``.pth`` / ``.safetensors`` file: a DeepfakeBench CLIP detector (architecture
      inferred from the shapes), or, when the config's ``model_name`` is ``timm:<name>``, that timm
      classifier built with the config's ``model_kwargs``; ``weights`` None falls back to the
      config's ``pretrained`` path.
    - ``weights`` a directory: a Hugging Face ``CLIPVisionModel`` / ``CLIPModel`` (with ``head``,
      or ``head.safetensors`` / ``head.pth`` beside it) or an image classifier
      (``ViTForImageClassification`` ...).
    The config's ``resolution``, ``mean`` and ``std`` set the preprocessing; ``class_names``
    names the outputs (default real, fake for two outputs).
    """
    from .load_deepfakebench import DFB_MEAN, DFB_STD, load_deepfakebench_clip

    cfg = config if isinstance(config, DetectorConfig) else (
        read_detector_config(config) if config is not None else DetectorConfig())
    if weights is None:
        if not cfg.pretrained:
            where = f" and {cfg.path} has no 'pretrained' path" if cfg.path else ""
            raise CheckpointError(f"no detector weights given{where}: pass the weights file (.pth / .safetensors) "
                                  "or a Hugging Face model directory")
        weights = cfg.pretrained
    w = existing(weights, "detector weights", kind="any")
    if w.is_dir():
        return _hf_detector(w, head, cfg, device)
    if head is not None:
        raise CheckpointError(f"a separate head ({head}) applies to a Hugging Face CLIPVisionModel directory; {w} is a "
                              "weights file that holds its own head: drop the head argument")
    if w.suffix.lower() not in _WEIGHT_SUFFIXES:
        raise CheckpointError(f"{w} is not a weights file: expected one of {', '.join(_WEIGHT_SUFFIXES)} or a Hugging "
                              "Face model directory")
    if cfg.model_name and cfg.model_name.startswith("timm:"):
        from .load_vision import load_timm

        kwargs = cfg.extra.get("model_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise CheckpointError(f"{cfg.path}: 'model_kwargs' must be a mapping (e.g. {{num_classes: 2, img_size: 224}})")
        loaded = load_timm(cfg.model_name[5:], w, device=device, **kwargs)
        n = int(getattr(loaded.model, "num_classes", 0) or loaded.model(torch.zeros(1, 3, 32, 32)).shape[-1])
        if cfg.resolution or cfg.mean or cfg.std:
            loaded.preprocess = resize_normalize(cfg.resolution or 224, cfg.mean or (0.5,) * 3, cfg.std or (0.5,) * 3)
        loaded.meta.update({"class_names": _class_names(n, cfg.class_names), "family": f"timm:{cfg.model_name[5:]}"})
        return loaded
    loaded = load_deepfakebench_clip(w, mean=cfg.mean or DFB_MEAN, std=cfg.std or DFB_STD, device=device)
    size = loaded.meta["config"]["image_size"]
    if cfg.resolution is not None and cfg.resolution != size:
        raise CheckpointError(f"{cfg.path}: resolution {cfg.resolution} does not fit the weights in {w}, whose "
                              f"position embeddings are for {size}x{size} images: set resolution: {size}")
    loaded.meta["class_names"] = _class_names(2, cfg.class_names)
    loaded.meta["config_path"] = str(cfg.path) if cfg.path else None
    return loaded
