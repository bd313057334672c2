"""The one detector loader: a real/fake (or any-class) image detector from every format vizkit
reads, offline — a DeepfakeBench detector YAML + its ``.pth`` (CLIP or Xception), a Hugging Face
directory (+ a linear head), a timm classifier, or a vizkit detector folder (the zoo's
``face_forgery_detector``).

:func:`read_detector_config` reads the DeepfakeBench keys that matter for explaining a detector
(``model_name``, ``resolution``, ``mean``, ``std``, ``pretrained``, ``class_names``,
``num_heads``, ``backbone_config``) and keeps every other key in ``extra`` (seed 002's
``gradcam_layers``, the dataset keys ``dataset_json_folder`` / ``rgb_dir`` / ``label_dict`` /
``frame_num`` / ``compression``); unknown keys are ignored, not errors. A ``test_config`` YAML
(DeepfakeBench's ``training/config/test_config.yaml``) is merged over it as DeepfakeBench's
``test.py`` does (``config.update(test_config)``).
:func:`load_detector` returns a :class:`~vizkit.models.detector.Detector`.

Which pipeline feeds the model (``Detector.pipeline``):

- DeepfakeBench weights (``backbone.*`` keys) or any detector YAML with ``resolution`` /
  ``mean`` / ``std``: ``deepfakebench`` — files read with ``cv2.imread`` (BGR -> RGB; grey and
  RGBA become 3 channels as OpenCV makes them), ``cv2.resize(..., INTER_CUBIC)`` to the
  config's ``resolution``, ``/255``, the config's ``mean`` / ``std`` (0.5 when absent);
- a Hugging Face directory or a timm model without such a YAML: ``processor`` — the folder's own
  image processor / timm's eval transform;
- the zoo (a vizkit detector folder): ``zoo`` — its config's size, mean and std, ``INTER_AREA``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import VizkitError
from ..io import data_root, load_image, read_image_opencv
from .detector import CLASS_NAMES, ClipDetector, Detector, LinearHeadClassifier
from .load_common import (
    CheckpointError,
    Loaded,
    PathLike,
    existing,
    load_checkpoint,
    load_strict,
    read_checkpoint,
    strip_prefixes,
    unwrap_state_dict,
)
from .preprocess import CvResizeNormalize

__all__ = [
    "DetectorConfig",
    "read_detector_config",
    "load_detector",
    "load_eval_detector",
    "ZOO_DETECTORS",
    "DEEPFAKEBENCH_DETECTORS",
]

#: the zoo's detectors (vizkit detector folders under data/zoo/)
ZOO_DETECTORS = ("face_forgery_detector",)
#: the DeepfakeBench ``model_name`` values vizkit builds, and the ones it recognises but cannot
#: (docs/howto/deepfakebench.md)
DEEPFAKEBENCH_DETECTORS = ("clip", "xception")
DEEPFAKEBENCH_UNSUPPORTED = ("efficientnetb4",)
#: DeepfakeBench's resolution per detector when no YAML says it (its clip.yaml / xception.yaml)
_DFB_RESOLUTION = 256  # DeepfakeBench's xception.yaml and efficientnetb4.yaml

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
    num_heads: int | None = None
    backbone_config: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_deepfakebench(self) -> bool:
        """The config names one of DeepfakeBench's detectors (``model_name: clip`` ...)."""
        return (self.model_name or "").lower() in DEEPFAKEBENCH_DETECTORS + DEEPFAKEBENCH_UNSUPPORTED


def _floats3(value: Any, key: str, path: Path) -> tuple[float, ...]:
    if (
        isinstance(value, (list, tuple))
        and len(value) in (1, 3)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return tuple(float(v) for v in value)
    raise CheckpointError(f"{path}: {key!r} must be a list of 3 numbers (one per RGB channel), got {value!r}")


def _read_yaml(path: PathLike, what: str) -> tuple[Path, dict[str, Any]]:
    import yaml

    p = existing(path, what)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{p} is not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{p} holds a YAML {type(data).__name__}; a {what} is a mapping of keys "
            "(model_name: clip, resolution: 224, mean: [...], std: [...], ...)"
        )
    return p, data


def read_detector_config(path: PathLike, test_config: PathLike | None = None) -> DetectorConfig:
    """Read a DeepfakeBench detector YAML (or JSON) config, with ``test_config``'s keys merged over
    it as DeepfakeBench's ``test.py`` merges ``test_config.yaml``; see the module docstring."""
    p, data = _read_yaml(path, "detector config (YAML)")
    if test_config is not None:
        data = {**data, **_read_yaml(test_config, "test config (YAML)")[1]}
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
        pre = Path(str(data["pretrained"])).expanduser()  # DeepfakeBench: the backbone's initialisation
        cfg.pretrained = str(p.parent / pre)  # relative to the YAML; an absolute path stays as it is
    names = data.get("class_names")
    if names is not None:
        if not (isinstance(names, list) and names and all(isinstance(n, (str, int)) for n in names)):
            raise CheckpointError(f"{p}: 'class_names' must be a non-empty list of names, got {names!r}")
        cfg.class_names = [str(n) for n in names]
    heads = data.get("num_heads")
    if heads is not None:
        if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
            raise CheckpointError(
                f"{p}: 'num_heads' must be a positive integer (attention heads per layer), got {heads!r}"
            )
        cfg.num_heads = heads
    bc = data.get("backbone_config")
    if bc is not None:
        if not isinstance(bc, dict):
            raise CheckpointError(f"{p}: 'backbone_config' must be a mapping (mode: original, num_classes: 2, ...)")
        cfg.backbone_config = dict(bc)
    known = {"model_name", "resolution", "mean", "std", "pretrained", "class_names", "num_heads", "backbone_config"}
    cfg.extra = {k: v for k, v in data.items() if k not in known}
    return cfg


def _class_names(n: int, *candidates: Sequence[str] | None) -> list[str]:
    for names in candidates:
        if names:
            if len(names) != n:
                raise CheckpointError(
                    f"the config names {len(names)} classes ({', '.join(names)}) but the model has {n} outputs"
                )
            return list(names)
    return list(CLASS_NAMES) if n == 2 else [f"class {i}" for i in range(n)]


def _head_from(path: Path, hidden: int) -> nn.Linear:
    sd = strip_prefixes(load_checkpoint(path), ("head.", "classifier.", "fc."))  # load_checkpoint drops "module."
    w, b = sd.get("weight"), sd.get("bias")
    if w is None or w.ndim != 2:
        raise CheckpointError(
            f"{path} is not a linear head: expected a 'weight' [classes, {hidden}] (and 'bias'), "
            f"found keys {', '.join(list(sd)[:5])}"
        )
    if w.shape[1] != hidden:
        raise CheckpointError(
            f"{path}: the head's weight is {tuple(w.shape)} but the backbone's features have "
            f"{hidden} dimensions: expected [classes, {hidden}]"
        )
    head = nn.Linear(hidden, w.shape[0], bias=b is not None)
    head.load_state_dict({k: v for k, v in (("weight", w), ("bias", b)) if v is not None})
    return head


def _pil_read(path: Any) -> np.ndarray:
    return np.asarray(load_image(path), dtype=np.uint8)


def _dfb_preprocess(cfg: DetectorConfig, size: int) -> CvResizeNormalize:
    return CvResizeNormalize(size, cfg.mean or (0.5,) * 3, cfg.std or (0.5,) * 3, "cubic")


def _output_width(model: nn.Module) -> int:
    """The last axis of ``model``'s output for one 32 x 32 RGB image made on the model's device."""
    param = next(model.parameters(), None)
    with torch.no_grad():
        return int(model(torch.zeros(1, 3, 32, 32, device=param.device if param is not None else None)).shape[-1])


def _size_of(preprocess: Any) -> int:
    return int(preprocess(np.zeros((8, 8, 3), np.uint8)).shape[-1])


def _finish(
    model: nn.Module,
    preprocess: Any,
    read: Any,
    names: list[str],
    source: Any,
    family: str,
    pipeline: str,
    cfg: DetectorConfig,
    device: Any,
    meta: dict[str, Any] | None = None,
) -> Detector:
    model = model.eval().to(device)
    return Detector(
        model,
        preprocess,
        read,
        names,
        _size_of(preprocess),
        str(source),
        family,
        pipeline,
        dict(cfg.extra),
        {"config_path": str(cfg.path) if cfg.path else None, **(meta or {})},
    )


def _hf_detector(directory: Path, head: PathLike | None, cfg: DetectorConfig, device: Any) -> Detector:
    from .load_hf import load_hf

    loaded = load_hf(directory, device=device)
    model, arch = loaded.model, loaded.meta["architecture"]
    if arch in ("CLIPVisionModel", "CLIPModel"):
        head_path = (
            Path(head) if head else next((directory / f for f in _HEAD_FILES if (directory / f).is_file()), None)
        )
        if head_path is None:
            raise CheckpointError(
                f"{directory} holds a {arch} (features only): give the linear head's weights with "
                f"--head / head=PATH, or save them beside the model as {' or '.join(_HEAD_FILES)}"
            )
        vision = model.vision_model if arch == "CLIPModel" else model
        hidden, native = vision.config.hidden_size, vision.config.image_size
        model = LinearHeadClassifier(vision, _head_from(existing(head_path, "linear head weights"), hidden))
        names = _class_names(model.head.out_features, cfg.class_names)
    else:
        id2label = model.config.id2label  # a transformers config's num_labels is len(id2label)
        n = len(id2label)
        default = (
            None if all(str(v).startswith("LABEL_") for v in id2label.values()) else [id2label[i] for i in range(n)]
        )
        names = _class_names(n, cfg.class_names, default)
        native = getattr(model.config, "image_size", None)
    if cfg.resolution or cfg.mean or cfg.std:
        size = cfg.resolution or native or 224  # the model's own input size when the YAML has none
        return _finish(
            model,
            _dfb_preprocess(cfg, size),
            read_image_opencv,
            names,
            directory,
            f"hf:{arch}",
            "deepfakebench",
            cfg,
            device,
        )
    return _finish(model, loaded.preprocess, _pil_read, names, directory, f"hf:{arch}", "processor", cfg, device)


def _zoo_folder(folder: Path, device: Any) -> Detector:
    """A vizkit detector folder: ``config.json`` (``model_class``, ``vision_config``,
    ``class_names``, ``preprocess`` {size, mean, std}) + ``model.safetensors`` (``backbone.*``,
    ``head.*``), as the zoo ships ``face_forgery_detector``."""
    import json

    config_path, weights = folder / "config.json", folder / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(
            f"detector folder {folder} has config.json but no model.safetensors (a zoo model: "
            f"rebuild it with `python -m vizkit.zoo build {folder.name}`)"
        )
    config = json.loads(config_path.read_text(encoding="utf-8"))
    model = ClipDetector(dict(config["vision_config"]))
    load_strict(model, {k: v.float() for k, v in load_checkpoint(weights).items()}, weights, "ClipDetector")
    pre = config["preprocess"]
    preprocess = CvResizeNormalize(int(pre["size"]), pre["mean"], pre["std"], "area")
    names = list(config.get("class_names") or CLASS_NAMES)
    name = config.get("name") or folder.name
    return _finish(
        model,
        preprocess,
        _pil_read,
        names,
        f"zoo:{name}" if folder.parent.name == "zoo" else folder,
        f"zoo:{name}",
        "zoo",
        DetectorConfig(),
        device,
        {"metrics": config.get("metrics"), "config": config},
    )


def _is_vizkit_folder(folder: Path) -> bool:
    import json

    try:
        return (
            json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_class")
            == "vizkit.models.ClipDetector"
        )
    except (OSError, ValueError, AttributeError):
        return False


def _zoo_spec(spec: Any) -> Path | None:
    text = str(spec)
    name = text[4:] if text.startswith("zoo:") else text
    if name in ZOO_DETECTORS and (text.startswith("zoo:") or not Path(text).exists()):
        return data_root() / "zoo" / name
    if text.startswith("zoo:"):
        raise CheckpointError(
            f"unknown zoo detector {text!r}: the zoo's detectors are {', '.join('zoo:' + n for n in ZOO_DETECTORS)}"
        )
    return None


def _deepfakebench_weights(w: Path, cfg: DetectorConfig, num_heads: int | None, device: Any) -> Detector:
    """A DeepfakeBench ``.pth`` (CLIP or Xception), fed by DeepfakeBench's test pipeline."""
    from .deepfakebench_cnn import build_deepfakebench_cnn, deepfakebench_cnn_kind
    from .load_deepfakebench import load_deepfakebench_clip, to_flat_layout

    sd = unwrap_state_dict(read_checkpoint(w), w)[0]
    kind = deepfakebench_cnn_kind(sd)
    name = (cfg.model_name or "").lower()
    if kind is not None:
        model = build_deepfakebench_cnn(sd, model_name=cfg.model_name, backbone_config=cfg.backbone_config, source=w)
        size = cfg.resolution or _DFB_RESOLUTION
        return _finish(
            model,
            _dfb_preprocess(cfg, size),
            read_image_opencv,
            _class_names(2, cfg.class_names),
            w,
            f"deepfakebench:{kind}",
            "deepfakebench",
            cfg,
            device,
        )
    if name and name != "clip" and name in DEEPFAKEBENCH_DETECTORS + DEEPFAKEBENCH_UNSUPPORTED:
        to_flat_layout(sd, w)  # a CLIP layout under another model_name: say what the weights are
        raise CheckpointError(
            f"{cfg.path} says model_name: {cfg.model_name}, but {w} holds a CLIP detector "
            f"(backbone.embeddings...): use DeepfakeBench's clip.yaml with these weights"
        )
    heads = num_heads if num_heads is not None else cfg.num_heads
    loaded = load_deepfakebench_clip(
        w, num_heads=heads, mean=cfg.mean or (0.5,) * 3, std=cfg.std or (0.5,) * 3, device=device
    )
    size = loaded.meta["config"]["image_size"]
    if cfg.resolution is not None and cfg.resolution != size:
        raise CheckpointError(
            f"{cfg.path}: resolution {cfg.resolution} does not fit the weights in {w}, whose "
            f"position embeddings are for {size}x{size} images: set resolution: {size}"
        )
    return _finish(
        loaded.model,
        loaded.preprocess,
        read_image_opencv,
        _class_names(2, cfg.class_names),
        w,
        "deepfakebench:clip",
        "deepfakebench",
        cfg,
        device,
        {"vision_config": loaded.meta["config"]},
    )


def load_detector(
    config: PathLike | DetectorConfig | None = None,
    weights: PathLike | None = None,
    *,
    head: PathLike | None = None,
    num_heads: int | None = None,
    test_config: PathLike | None = None,
    device: str | torch.device = "cpu",
) -> Detector:
    """The detector a user names (see the module docstring for the pipelines).

    - nothing, ``"zoo:face_forgery_detector"`` (or its bare name): the zoo detector;
    - ``weights`` a ``.pth`` / ``.safetensors`` file: a DeepfakeBench detector — CLIP (architecture
      read off the shapes; ``num_heads`` or the YAML's ``num_heads`` for a width that is not a
      known CLIP tower) or Xception (timm's ``legacy_xception``) — or, when the config's
      ``model_name`` is ``timm:<name>``, that timm classifier built with ``model_kwargs``;
    - ``weights`` a directory: a vizkit detector folder, or a Hugging Face ``CLIPVisionModel`` /
      ``CLIPModel`` (with ``head``, or ``head.safetensors`` / ``head.pth`` beside it) or image
      classifier (``ViTForImageClassification`` ...).

    ``weights`` None with a non-DeepfakeBench config falls back to the config's ``pretrained``
    (for DeepfakeBench, ``pretrained`` is the backbone's ImageNet initialisation, not a detector).
    """
    if isinstance(config, DetectorConfig):
        cfg = config
    elif config is not None or test_config is not None:
        cfg = read_detector_config(config, test_config) if config is not None else read_detector_config(test_config)
    else:
        cfg = DetectorConfig()
    if weights is None and config is None:
        weights = f"zoo:{ZOO_DETECTORS[0]}"
    if weights is None:
        if not cfg.pretrained or cfg.is_deepfakebench:
            why = (
                f"{cfg.path} is a DeepfakeBench config, whose 'pretrained' is the backbone's initialisation, not "
                "the trained detector"
                if cfg.is_deepfakebench
                else f"{cfg.path} has no 'pretrained' path"
            )
            raise CheckpointError(
                f"no detector weights given and {why}: pass the detector's weights (.pth / "
                ".safetensors, e.g. DeepfakeBench's ckpt_best.pth) or a Hugging Face model directory"
            )
        weights = cfg.pretrained
    zoo = _zoo_spec(weights)
    if zoo is not None:
        if head is not None:
            raise CheckpointError(
                f"a separate head ({head}) applies to a Hugging Face CLIPVisionModel directory; the "
                f"zoo detector {weights} has its own head: drop the head argument"
            )
        if not (zoo / "config.json").is_file():
            raise CheckpointError(
                f"zoo detector {weights} has no checkpoint at {zoo}: rebuild it with "
                f"`python -m vizkit.zoo build {zoo.name}`"
            )
        return _zoo_folder(zoo, device)
    w = existing(weights, "detector weights", kind="any")
    if w.is_dir():
        if _is_vizkit_folder(w):
            return _zoo_folder(w, device)
        return _hf_detector(w, head, cfg, device)
    if head is not None:
        raise CheckpointError(
            f"a separate head ({head}) applies to a Hugging Face CLIPVisionModel directory; {w} is a "
            "weights file that holds its own head: drop the head argument"
        )
    if w.suffix.lower() not in _WEIGHT_SUFFIXES:
        raise CheckpointError(
            f"{w} is not a weights file: expected one of {', '.join(_WEIGHT_SUFFIXES)} or a Hugging "
            "Face model directory"
        )
    if cfg.model_name and cfg.model_name.startswith("timm:"):
        from .load_vision import load_timm

        kwargs = cfg.extra.get("model_kwargs") or {}
        if not isinstance(kwargs, dict):
            raise CheckpointError(
                f"{cfg.path}: 'model_kwargs' must be a mapping (e.g. {{num_classes: 2, img_size: 224}})"
            )
        loaded = load_timm(cfg.model_name[5:], w, device=device, **kwargs)
        n = int(getattr(loaded.model, "num_classes", 0) or _output_width(loaded.model))
        names = _class_names(n, cfg.class_names)
        family = f"timm:{cfg.model_name[5:]}"
        if cfg.resolution or cfg.mean or cfg.std:
            return _finish(
                loaded.model,
                _dfb_preprocess(cfg, cfg.resolution or 224),
                read_image_opencv,
                names,
                w,
                family,
                "deepfakebench",
                cfg,
                device,
            )
        return _finish(loaded.model, loaded.preprocess, _pil_read, names, w, family, "processor", cfg, device)
    return _deepfakebench_weights(w, cfg, num_heads, device)


def load_eval_detector(
    config: PathLike | None = None,
    weights: PathLike | None = None,
    *,
    num_heads: int | None = None,
    test_config: PathLike | None = None,
    device: str | torch.device = "cpu",
) -> Detector:
    """:func:`load_detector` (the zoo's ``face_forgery_detector`` when neither is given; an empty
    string counts as not given), checked to be a two-class real/fake detector (``[B, 3, S, S] ->
    [B, 2]``): any other class count raises :class:`VizkitError` naming the classes."""
    det = load_detector(config or None, weights or None, num_heads=num_heads, test_config=test_config, device=device)
    if len(det.class_names) != 2:
        raise VizkitError(
            f"the detector has {len(det.class_names)} outputs ({', '.join(det.class_names)}); a "
            "real/fake detector has 2"
        )
    return det


def loaded_detector(det: Detector) -> Loaded:
    """``det`` as a :class:`Loaded` (model, preprocess, meta) for code written against the loaders."""
    return Loaded(det.model, det.preprocess, meta={"class_names": det.class_names, **det.info})
