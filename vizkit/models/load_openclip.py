"""OpenCLIP models from local weights. open_clip is only asked to build the architecture
(``pretrained=None``, no tower weights); the weights file is read by vizkit's safe reader and
loaded strictly. Hub names (``hf-hub:...``) and pretrained tags (``"laion2b_s34b_b79k"``) are
resolved from the local Hugging Face cache only, else refused with instructions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .load_common import (
    CheckpointError,
    Loaded,
    PathLike,
    existing,
    hub_offline,
    load_strict,
    read_checkpoint,
    read_json,
    to_pil,
    unwrap_state_dict,
)
from .load_vision import _close

_DIR_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors", "pytorch_model.bin")


def _cached_tag_file(hf_hub: str) -> str | None:
    """The tag's weights file if it is already in the local HF cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    repo, filename = hf_hub.rstrip("/").rsplit("/", 1) if not hf_hub.endswith("/") else (hf_hub.rstrip("/"), "")
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    for name in names:
        hit = try_to_load_from_cache(repo, name)
        if isinstance(hit, str) and Path(hit).is_file():
            return hit
    return None


def _tag_error(model_name: str, tag: str, pcfg: dict[str, Any]) -> CheckpointError:
    hub = pcfg.get("hf_hub", "").rstrip("/")
    how = (
        f"`hf download {hub.rsplit('/', 1)[0] if hub.count('/') > 1 else hub} --local-dir DIR` on a machine "
        f"with network, then pass weights_path='DIR/open_clip_model.safetensors' (or the .bin there)"
        if hub
        else f"download {pcfg.get('url')} on a machine with network, then pass its local path"
    )
    return CheckpointError(
        f"{tag!r} is an open_clip pretrained tag of {model_name!r}, i.e. weights on the internet, and they are "
        f"not on this disk; vizkit loads weights from local files only (it never downloads). Get them with {how}, "
        f"plus tag={tag!r} so its preprocessing and QuickGELU setting are used"
    )


def _massage(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's own (deterministic) key conversions for older / third-party layouts."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    sd = convert_state_dict(model, sd)
    if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
        sd = convert_to_custom_text_state_dict(sd)
    for key in ("logit_scale", "logit_bias"):
        own = getattr(model, key, None)
        if key in sd and isinstance(own, torch.Tensor) and sd[key].ndim != own.ndim:
            sd[key] = sd[key].reshape(own.shape)
    own_keys = model.state_dict().keys()
    return {k: v for k, v in sd.items() if not (k.endswith("position_ids") and k not in own_keys)}


def load_open_clip(
    model_name: str,
    weights_path: PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    tag: str | None = None,
    tokenizer: bool | PathLike = True,
    **create_kwargs: Any,
) -> Loaded:
    """An OpenCLIP model (``open_clip.CLIP`` / ``CustomTextCLIP``) from local weights.

    ``model_name``: a built-in / registered config name (``"ViT-B-32"``; see
    ``open_clip.add_model_config``) or ``"local-dir:DIR"`` (a downloaded hub repo with
    ``open_clip_config.json``). ``weights_path``: a ``.safetensors``/``.pt``/``.bin`` file, such a
    directory, or a pretrained tag already in the local HF cache. ``tag`` names the pretrained
    tag the file came from (its mean/std and QuickGELU are applied). ``tokenizer``: True for
    open_clip's tokenizer (an error if it would need a download), False for none, or a local
    directory with Hugging Face tokenizer files. ``create_kwargs`` go to ``open_clip.create_model``.
    """
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    if model_name.startswith("hf-hub:"):
        repo = model_name[len("hf-hub:") :]
        raise CheckpointError(
            f"{model_name!r} names a hub repo; vizkit loads from disk only (it never downloads). Run `hf download "
            f"{repo} --local-dir DIR` on a machine with network, then load_open_clip('local-dir:DIR')"
        )
    for k in ("pretrained", "pretrained_image", "pretrained_text"):
        if create_kwargs.pop(k, None):
            raise CheckpointError(f"load_open_clip never downloads ({k}=...); pass weights_path=<local file>")
    local_dir: Path | None = None
    if model_name.startswith("local-dir:"):
        local_dir = existing(model_name[len("local-dir:") :], "open_clip model directory", kind="dir")
    elif weights_path is not None and Path(weights_path).is_dir():
        local_dir = Path(weights_path)
    meta: dict[str, Any] = {"family": "open_clip", "model_name": model_name, "tag": tag}
    pcfg: dict[str, Any] = {}
    if local_dir is not None:
        oc_cfg = read_json(local_dir / "open_clip_config.json", "an open_clip_config.json with 'model_cfg'")
        if "model_cfg" not in oc_cfg:
            raise CheckpointError(f"{local_dir / 'open_clip_config.json'} has no 'model_cfg' entry")
        files = [local_dir / f for f in _DIR_WEIGHTS if (local_dir / f).is_file()]
        if not files:
            raise CheckpointError(f"{local_dir} has no weights: expected one of {', '.join(_DIR_WEIGHTS)}")
        weights, name = files[0], f"local-dir:{local_dir}"
    else:
        cleaned = model_name.replace("/", "-")
        if open_clip.get_model_config(cleaned) is None:
            raise CheckpointError(
                f"unknown open_clip model {model_name!r}{_close(cleaned, open_clip.list_models())}; "
                f"register your own config with open_clip.add_model_config(path)"
            )
        name = cleaned
        tags = open_clip.list_pretrained_tags_by_model(cleaned)
        if (
            isinstance(weights_path, str)
            and not Path(weights_path).exists()
            and open_clip.is_pretrained_cfg(cleaned, weights_path)
        ):
            tag = tag or weights_path
            pcfg = open_clip.get_pretrained_cfg(cleaned, weights_path)
            cached = _cached_tag_file(pcfg.get("hf_hub", "")) if pcfg.get("hf_hub") else None
            if cached is None:
                raise _tag_error(model_name, weights_path, pcfg)
            weights, meta["from_cache"] = Path(cached), True
        elif weights_path is None:
            raise CheckpointError(
                f"load_open_clip({model_name!r}) needs weights_path=<local .safetensors/.pt/.bin "
                f"file>; vizkit never returns a randomly initialised model here"
            )
        else:
            weights = existing(weights_path, f"open_clip weights for {model_name!r}")
        if tag is not None:
            if not open_clip.is_pretrained_cfg(cleaned, tag):
                raise CheckpointError(
                    f"{tag!r} is not a pretrained tag of {model_name!r}; known: {', '.join(tags) or 'none'}"
                )
            pcfg = pcfg or open_clip.get_pretrained_cfg(cleaned, tag)
            if pcfg.get("quick_gelu") and not open_clip.get_model_config(cleaned).get("quick_gelu"):
                create_kwargs.setdefault("force_quick_gelu", True)
    sd = unwrap_state_dict(read_checkpoint(weights), weights)[0]
    with hub_offline():
        try:
            model = open_clip.create_model(
                name,
                pretrained=None,
                load_weights=False,
                pretrained_image=False,
                pretrained_text=False,
                device="cpu",
                **create_kwargs,
            )
        except OSError as err:  # an HF text tower whose config is not on disk
            raise CheckpointError(
                f"building open_clip {model_name!r} needs files that are not on disk "
                f"({str(err).splitlines()[0]}); its text tower is a Hugging Face model: put its "
                f"config in the local HF cache or use a local-dir: model"
            ) from None
    load_strict(model, _massage(model, sd), weights, f"open_clip {model_name!r}")
    model.eval().to(device)
    pp = merge_preprocess_dict(
        dict(model.visual.preprocess_cfg),
        {k: pcfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in pcfg},
    )
    open_clip.set_model_preprocess_cfg(model, pp)
    transform = image_transform_v2(PreprocessCfg(**pp), is_train=False)
    tok = None
    if tokenizer is True:
        with hub_offline():
            try:
                tok = open_clip.get_tokenizer(name)
            except (OSError, ValueError, RuntimeError) as err:
                raise CheckpointError(
                    f"the tokenizer of open_clip {model_name!r} is a Hugging Face tokenizer that is not on disk "
                    f"({str(err).splitlines()[0][:120]}); pass tokenizer=<local directory with its tokenizer files> "
                    f"or tokenizer=False to load the model without one"
                ) from None
    elif tokenizer:
        from open_clip.tokenizer import HFTokenizer

        tdir = existing(tokenizer, "tokenizer directory", kind="dir")
        with hub_offline():
            tok = HFTokenizer(str(tdir), context_length=getattr(model, "context_length", None) or 77)
    meta.update(source=str(weights), preprocess_cfg=pp, create_kwargs=create_kwargs)
    return Loaded(model=model, preprocess=lambda image: transform(to_pil(image)), tokenizer=tok, meta=meta)
