"""Hugging Face models from a local directory (``config.json`` + weights), never from the hub
and never with ``trust_remote_code``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .load_common import CheckpointError, Loaded, PathLike, hub_hint, hub_offline, looks_like_hub_id, read_json, to_pil

# architecture name -> transformers class name (the classes vizkit knows how to explain).
SUPPORTED = {
    "CLIPModel": "CLIPModel",
    "CLIPVisionModel": "CLIPVisionModel",
    "ViTForImageClassification": "ViTForImageClassification",
    "LlavaForConditionalGeneration": "LlavaForConditionalGeneration",
    "Qwen2VLForConditionalGeneration": "Qwen2VLForConditionalGeneration",
    "Qwen2_5_VLForConditionalGeneration": "Qwen2_5_VLForConditionalGeneration",
}
_BY_MODEL_TYPE = {
    "clip": "CLIPModel",
    "clip_vision_model": "CLIPVisionModel",
    "vit": "ViTForImageClassification",
    "llava": "LlavaForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
}
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def _resolve_dir(directory: PathLike) -> tuple[Path, str | None]:
    """The local directory, or a snapshot already in the local HF cache for a hub name."""
    p = Path(directory).expanduser()
    if p.is_dir():
        return p, None
    if p.exists():
        raise CheckpointError(
            f"{p} is a file; load_hf expects a Hugging Face model directory "
            f"(config.json + model.safetensors / pytorch_model.bin)"
        )
    if looks_like_hub_id(str(directory)):
        from huggingface_hub import snapshot_download

        try:
            with hub_offline():
                snap = Path(snapshot_download(str(directory), local_files_only=True))
            if (snap / "config.json").is_file():
                return snap, str(directory)
        except Exception:
            pass
        raise CheckpointError(
            f"no local directory {str(directory)!r} (and not in the local Hugging Face "
            f"cache): {hub_hint(str(directory))} to load_hf"
        )
    raise CheckpointError(f"Hugging Face model directory not found: {p} does not exist")


def _architecture(cfg: dict[str, Any], directory: Path) -> str:
    archs = cfg.get("architectures") or []
    arch = archs[0] if archs else _BY_MODEL_TYPE.get(str(cfg.get("model_type")))
    if arch in SUPPORTED:
        return arch
    remote = (
        " (its config asks for custom code via auto_map; vizkit never sets trust_remote_code)"
        if cfg.get("auto_map")
        else ""
    )
    raise CheckpointError(
        f"{directory}: architecture {arch or cfg.get('model_type')!r} is not supported{remote}; "
        f"load_hf handles {', '.join(SUPPORTED)} (pass architecture=... to pick one)"
    )


def _image_processor(processor: Any) -> Any:
    from transformers.image_processing_utils import BaseImageProcessor

    ip = getattr(processor, "image_processor", None)
    if ip is None and (
        isinstance(processor, BaseImageProcessor)
        or hasattr(processor, "preprocess")
        and not hasattr(processor, "tokenize")
    ):
        ip = processor
    return ip


def unpatchify_qwen(
    pixel_values: torch.Tensor, grid_thw: torch.Tensor, patch: int, merge: int, temporal: int
) -> torch.Tensor:
    """Qwen2(.5)-VL flat patches ``[N, C*T*P*P]`` of one image back to ``[C, H, W]``."""
    t, gh, gw = (int(v) for v in grid_thw.reshape(-1)[:3])
    c = pixel_values.shape[-1] // (temporal * patch * patch)
    x = pixel_values.reshape(t, gh // merge, gw // merge, merge, merge, c, temporal, patch, patch)[0, ..., 0, :, :]
    return x.permute(4, 0, 2, 5, 1, 3, 6).reshape(c, gh * patch, gw * patch)


def image_preprocess(image_processor: Any) -> Callable[[Any], torch.Tensor]:
    """``image -> [C, H, W]`` through a HF image processor (Qwen-VL patches are reassembled)."""

    def preprocess(image: Any) -> torch.Tensor:
        out = image_processor(images=to_pil(image), return_tensors="pt")
        pv = out["pixel_values"]
        if pv.ndim == 4:
            return pv[0]
        if "image_grid_thw" in out:
            ip = image_processor
            return unpatchify_qwen(pv, out["image_grid_thw"][0], ip.patch_size, ip.merge_size, ip.temporal_patch_size)
        raise CheckpointError(
            f"{type(image_processor).__name__} returned pixel_values of shape "
            f"{tuple(pv.shape)}; cannot make a [C, H, W] image of it: use .processor"
        )

    return preprocess


def _no_processor(directory: Path, reason: str) -> Callable[[Any], torch.Tensor]:
    msg = (
        f"{directory} has no image processor ({reason}); save one next to the weights "
        f"(`AutoProcessor.from_pretrained(<original model>).save_pretrained({str(directory)!r})`, which writes "
        f"preprocessor_config.json / processor_config.json) or preprocess the images yourself"
    )

    def preprocess(image: Any) -> torch.Tensor:
        raise CheckpointError(msg)

    preprocess.message = msg  # type: ignore[attr-defined]
    return preprocess


TOKENIZER_FILES = ("tokenizer.json", "vocab.json + merges.txt")


def _clip_processor_from_config(model: Any, path: Path, found: Any) -> Any:
    """A ``CLIPProcessor`` for a CLIP folder saved without ``preprocessor_config.json``: the
    tokenizer from the folder, the image preprocessing from ``config.json`` (the vision
    tower's image size; CLIP's mean / std, resize of the short side and centre crop). None
    (with a warning naming the missing files) when the folder has no tokenizer either."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPProcessor

    tokenizer = found if found is not None and hasattr(found, "tokenize") else getattr(found, "tokenizer", None)
    has_files = (path / "tokenizer.json").is_file() or (
        (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    )
    if tokenizer is None and has_files:  # without its files AutoTokenizer builds an empty vocabulary
        try:
            with hub_offline():
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError, KeyError, TypeError):
            tokenizer = None
    if tokenizer is None:
        warnings.warn(
            f"{path} has neither a processor (preprocessor_config.json) nor a tokenizer "
            f"({' or '.join(TOKENIZER_FILES)}, with tokenizer_config.json): a CLIP model needs the "
            f"tokenizer for its texts; save it with `tokenizer.save_pretrained({str(path)!r})`",
            stacklevel=3,
        )
        return None
    size = int(model.config.vision_config.image_size)
    warnings.warn(
        f"{path} has no preprocessor_config.json: images are preprocessed from config.json (resize the "
        f"short side to {size}, centre crop {size}x{size}, CLIP's mean / std)",
        stacklevel=3,
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def load_hf(
    directory: PathLike,
    *,
    architecture: str | None = None,
    dtype: torch.dtype | str | None = torch.float32,
    device: str | torch.device = "cpu",
    **kwargs: Any,
) -> Loaded:
    """A Hugging Face model from a local directory (``local_files_only=True``, no remote code).

    Dispatches on ``config.architectures[0]`` (else ``model_type``) to one of :data:`SUPPORTED`;
    missing, unexpected or mis-shaped weights raise :class:`CheckpointError`. ``processor`` is
    ``AutoProcessor`` (or ``AutoImageProcessor``) from the same directory; when there is none,
    ``processor`` is None, a warning says so and ``preprocess`` raises the explanation. A
    ``CLIPModel`` folder with a tokenizer but no ``preprocessor_config.json`` gets a
    ``CLIPProcessor`` of that tokenizer and an image processor built from ``config.json``
    (image size; CLIP's mean / std), with a warning.
    ``kwargs`` go to ``from_pretrained`` (e.g. ``attn_implementation="eager"``).
    """
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoProcessor

    if kwargs.pop("trust_remote_code", False):
        raise CheckpointError("load_hf never runs code shipped with a model (trust_remote_code=True refused)")
    path, hub_name = _resolve_dir(directory)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        found = ", ".join(sorted(f.name for f in path.iterdir())[:8]) or "nothing"
        raise CheckpointError(f"{path} is not a Hugging Face model directory: no config.json (found {found})")
    raw_cfg = read_json(cfg_file, "a Hugging Face model config")
    if not (raw_cfg.get("model_type") or raw_cfg.get("architectures")):
        raise CheckpointError(
            f"{cfg_file} is not a Hugging Face model config: it has neither 'model_type' nor "
            f"'architectures' (keys: {', '.join(list(raw_cfg)[:8])})"
        )
    if architecture is not None and architecture not in SUPPORTED:
        raise CheckpointError(f"architecture {architecture!r} is not supported; choose one of {', '.join(SUPPORTED)}")
    arch = architecture or _architecture(raw_cfg, path)
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise CheckpointError(f"{path} has a config.json but no weights: expected one of {', '.join(_WEIGHT_FILES)}")
    cls = getattr(transformers, SUPPORTED[arch])
    with hub_offline():
        try:  # the class reads its own (sub)config; this only turns a bad config into a clear error
            AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        except (ValueError, KeyError, TypeError, OSError) as err:
            raise CheckpointError(f"{cfg_file} could not be read as a transformers config: {err}") from None
        if dtype is not None:
            kwargs["dtype"] = dtype
        model, info = cls.from_pretrained(
            path,
            local_files_only=True,
            trust_remote_code=False,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **kwargs,
        )
    problems = []
    if info["missing_keys"]:
        problems.append(f"{len(info['missing_keys'])} missing key(s) ({', '.join(sorted(info['missing_keys'])[:5])})")
    if info["mismatched_keys"]:
        mm = [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in sorted(info["mismatched_keys"])]
        problems.append(f"{len(mm)} shape mismatch(es) ({', '.join(mm[:3])})")
    if info["unexpected_keys"] and architecture is None:
        problems.append(
            f"{len(info['unexpected_keys'])} unexpected key(s) ({', '.join(sorted(info['unexpected_keys'])[:5])})"
        )
    if problems or info.get("error_msgs"):
        problems += list(info.get("error_msgs") or [])
        raise CheckpointError(
            f"the weights in {path} do not fit {arch} built from its config.json: {'; '.join(problems)}"
        )
    model.eval().to(device)

    processor, reason = None, ""
    with hub_offline():
        for auto in (AutoProcessor, AutoImageProcessor):
            try:
                processor = auto.from_pretrained(path, local_files_only=True, trust_remote_code=False)
                break
            except (OSError, ValueError, KeyError, TypeError) as err:
                reason = str(err).splitlines()[0][:200]
    ip = _image_processor(processor) if processor is not None else None
    if ip is None and arch == "CLIPModel":
        processor = _clip_processor_from_config(model, path, processor)
        ip = _image_processor(processor) if processor is not None else None
    if ip is None:
        preprocess = _no_processor(path, reason or "the processor found has no image part")
        warnings.warn(preprocess.message, stacklevel=2)  # type: ignore[attr-defined]
    else:
        preprocess = image_preprocess(ip)
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None and processor is not None and hasattr(processor, "tokenize"):
        tokenizer = processor
    return Loaded(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        processor=processor,
        meta={
            "family": "hf",
            "architecture": arch,
            "source": str(path),
            "hub_name": hub_name,
            "model_type": raw_cfg.get("model_type"),
            "dtype": str(model.dtype),
            "unexpected_keys": sorted(info["unexpected_keys"])[:20],
        },
    )
