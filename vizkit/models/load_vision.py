"""Vision classifiers from local weights: timm, torchvision, and vizkit's own :class:`SimpleViT`
(seed 001's configuration keys). Models are always created without pretrained weights (no
download) and the local file, when given, is loaded strictly.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from .load_common import (
    CheckpointError,
    Loaded,
    PathLike,
    existing,
    hub_offline,
    load_checkpoint,
    load_strict,
    read_checkpoint,
    read_json,
    resize_normalize,
    to_pil,
    unwrap_state_dict,
)
from .vit import SimpleViT, ViTConfig

_VIT_KEYS = [f.name for f in fields(ViTConfig)]
_VIT_REQUIRED = [k for k in _VIT_KEYS if k != "dropout"]
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)


def _random_warning(what: str) -> None:
    warnings.warn(
        f"{what}: no weights_path given, so the model is RANDOMLY initialised "
        f"(vizkit never downloads weights); pass weights_path=<local file> to load yours",
        stacklevel=3,
    )


def _close(name: str, choices: Sequence[str]) -> str:
    near = difflib.get_close_matches(name, list(choices), n=5, cutoff=0.5)
    return f"; close names: {', '.join(near)}" if near else ""


def _pil_pipeline(transform: Callable[[Any], torch.Tensor]) -> Callable[[Any], torch.Tensor]:
    return lambda image: transform(to_pil(image))


def load_timm(
    name: str, weights_path: PathLike | None = None, *, device: str | torch.device = "cpu", **kwargs: Any
) -> Loaded:
    """``timm.create_model(name, pretrained=False, **kwargs)`` + the local weights, strictly.

    ``preprocess`` is timm's eval transform for the model (input size follows ``img_size``).
    """
    import timm
    from timm.data import create_transform, resolve_model_data_config

    if kwargs.pop("pretrained", False):
        raise CheckpointError("load_timm never downloads (pretrained=True); pass weights_path=<local file>")
    if name.startswith(("hf-hub:", "hf_hub:")):
        raise CheckpointError(
            f"timm model {name!r} lives on the hub; download its weights and pass the "
            f"architecture name plus weights_path=<local file>"
        )
    p = existing(weights_path, f"weights for timm model {name!r}") if weights_path is not None else None
    if not timm.is_model(name):
        raise CheckpointError(f"unknown timm model {name!r}{_close(name, timm.list_models())}")
    with hub_offline():
        model = timm.create_model(name, pretrained=False, **kwargs)
    if p is not None:
        load_strict(model, load_checkpoint(p), p, f"timm model {name!r} (kwargs {kwargs})")
    else:
        _random_warning(f"timm model {name!r}")
    model.eval().to(device)
    cfg = resolve_model_data_config(model)
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None) or kwargs.get("img_size")
    if img_size is not None:
        hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        cfg["input_size"] = (cfg["input_size"][0], *hw)
    transform = create_transform(**cfg, is_training=False)
    return Loaded(
        model=model,
        preprocess=_pil_pipeline(transform),
        meta={
            "family": "timm",
            "name": name,
            "kwargs": kwargs,
            "source": str(p) if p else None,
            "random_init": p is None,
            "data_config": cfg,
        },
    )


def load_torchvision(
    name: str, weights_path: PathLike | None = None, *, device: str | torch.device = "cpu", **kwargs: Any
) -> Loaded:
    """``torchvision.models.get_model(name, weights=None, **kwargs)`` + the local weights, strictly.

    ``preprocess`` is the eval transform of the architecture's default weights (resize, crop,
    ImageNet normalisation; ``image_size`` kwargs set the crop).
    """
    import torchvision
    from torchvision.transforms._presets import ImageClassification

    for k in ("weights", "pretrained", "weights_backbone"):
        if kwargs.get(k):
            raise CheckpointError(
                f"load_torchvision never downloads ({k}={kwargs[k]!r}); pass weights_path=<local file>"
            )
        kwargs.pop(k, None)
    p = existing(weights_path, f"weights for torchvision model {name!r}") if weights_path is not None else None
    names = torchvision.models.list_models()
    if name not in names:
        raise CheckpointError(f"unknown torchvision model {name!r}{_close(name, names)}")
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    if p is not None:
        load_strict(model, load_checkpoint(p), p, f"torchvision model {name!r} (kwargs {kwargs})")
    else:
        _random_warning(f"torchvision model {name!r}")
    model.eval().to(device)
    try:
        transform = torchvision.models.get_model_weights(name).DEFAULT.transforms()
    except (ValueError, AttributeError, KeyError):
        transform = ImageClassification(crop_size=224)
    if "image_size" in kwargs:
        s = int(kwargs["image_size"])
        transform = ImageClassification(crop_size=s, resize_size=s)
    return Loaded(
        model=model,
        preprocess=_pil_pipeline(transform),
        meta={
            "family": "torchvision",
            "name": name,
            "kwargs": kwargs,
            "source": str(p) if p else None,
            "random_init": p is None,
        },
    )


def _floats(v: Any) -> tuple[float, ...]:
    return (float(v),) if isinstance(v, (int, float)) else tuple(float(x) for x in v)


def _vit_config(config: Mapping[str, Any] | PathLike, source: Any) -> dict[str, Any]:
    if isinstance(config, (str, Path)):
        source = Path(config)
        config = read_json(config, "a SimpleViT config (JSON object with img_size, patch_size, ...)")
    if not isinstance(config, Mapping):
        raise CheckpointError(f"expected a SimpleViT config dict or JSON path, got {type(config).__name__}")
    for nest in ("config", "model_config"):  # {"config": {...}, "metrics": ...}
        if not set(_VIT_REQUIRED) & set(config) and isinstance(config.get(nest), Mapping):
            config = config[nest]
    missing = [k for k in _VIT_REQUIRED if k not in config]
    if missing:
        raise CheckpointError(
            f"{source} is not a complete SimpleViT config: missing {', '.join(missing)} "
            f"(expected keys {', '.join(_VIT_KEYS)}; found {', '.join(map(str, config)) or 'none'})"
        )
    return dict(config)


def load_vit_checkpoint(
    config: Mapping[str, Any] | PathLike | None,
    state_dict_or_path: Mapping[str, torch.Tensor] | PathLike,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
) -> Loaded:
    """A user's own :class:`SimpleViT` (seed 001's config keys) from a config and weights.

    ``config``: a dict or a JSON file (``None`` when the checkpoint is
    ``{"model_state_dict": ..., "config": {...}}``). ``preprocess``: resize to ``img_size``, grey
    for one channel, [0, 1], then ``(x - mean) / std`` (from the arguments, the config's
    ``mean``/``std``, or MNIST's 0.1307/0.3081 for one channel and 0.5/0.5 for three).
    """
    if isinstance(state_dict_or_path, Mapping):
        raw, source = state_dict_or_path, "the given state dict"
    else:
        source = existing(state_dict_or_path, "SimpleViT checkpoint")
        raw = read_checkpoint(source)
    if config is None:
        if not (isinstance(raw, Mapping) and isinstance(raw.get("config"), Mapping)):
            raise CheckpointError(
                f"{source} carries no 'config' entry; pass the SimpleViT config "
                f"(dict or JSON path) as the first argument"
            )
        config, cfg_source = raw["config"], f"the 'config' entry of {source}"
    else:
        cfg_source = config if isinstance(config, (str, Path)) else "the given config"
    full = _vit_config(config, cfg_source)
    cfg = ViTConfig.from_dict({k: full[k] for k in _VIT_KEYS if k in full})
    sd, wrapper = unwrap_state_dict(raw, source)
    model = SimpleViT(cfg)
    load_strict(model, sd, source, f"SimpleViT({cfg.to_dict()})")
    model.eval().to(device)
    grey = cfg.in_channels == 1
    mean = _floats(mean or full.get("mean") or (MNIST_MEAN if grey else (0.5,) * cfg.in_channels))
    std = _floats(std or full.get("std") or (MNIST_STD if grey else (0.5,) * cfg.in_channels))
    if len(mean) != cfg.in_channels or len(std) != cfg.in_channels:
        raise CheckpointError(f"mean {mean} / std {std} need {cfg.in_channels} value(s), one per input channel")
    if cfg.in_channels not in (1, 3):
        raise CheckpointError(f"preprocess handles 1 (grey) or 3 (RGB) channels, not {cfg.in_channels}")
    extra = {k: v for k, v in full.items() if k not in _VIT_KEYS}
    return Loaded(
        model=model,
        preprocess=resize_normalize(cfg.img_size, mean, std, grey=grey),
        meta={
            "family": "simple_vit",
            "source": str(source),
            "config": cfg.to_dict(),
            "extra_config": extra,
            "state_dict_key": wrapper,
            "mean": list(mean),
            "std": list(std),
        },
    )
