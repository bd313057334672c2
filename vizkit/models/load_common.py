"""Shared pieces of the checkpoint loaders: the :class:`Loaded` result, the safe state-dict
reader, strict loading with a readable report, offline guards and simple image preprocessing.

Nothing here unpickles code: ``.pt/.pth/.bin`` files are read with ``torch.load(weights_only=True)``
and ``.safetensors`` with safetensors; nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import VizkitError

PathLike = str | Path

# Wrappers training scripts put around a state dict, tried in this order.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights", "params")
# Prefixes left by DataParallel / torch.compile / Lightning.
_PREFIXES = ("module.", "_orig_mod.", "model.")
_FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".json", ".npz")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class CheckpointError(VizkitError):
    """A checkpoint that is missing, in the wrong format, unsafe to read, or does not fit the model."""


@dataclass
class Loaded:
    """A model loaded from disk: ``model`` (eval mode) and what it takes to feed it.

    ``preprocess(PIL image | uint8 HxWx3 array) -> [C, H, W]`` float tensor; ``tokenizer`` /
    ``processor`` where the model reads text; ``meta`` says where the weights came from and
    the configuration used.
    """

    model: nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    tokenizer: Any = None
    processor: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- paths / offline


def looks_like_hub_id(name: Any) -> bool:
    """``org/name`` with no such local path (and no checkpoint suffix): a model-hub name, not a file."""
    return (
        isinstance(name, str)
        and bool(_HUB_ID.match(name))
        and not Path(name).exists()
        and Path(name).suffix not in _FILE_SUFFIXES
    )


def hub_hint(name: str) -> str:
    return (
        f"{name!r} looks like a model-hub name, but vizkit loads weights from disk only (it never "
        f"downloads). On a machine with network run `hf download {name} --local-dir DIR` (or "
        f"`huggingface_hub.snapshot_download({name!r}, local_dir=DIR)`), then pass that local directory"
    )


def existing(path: PathLike, what: str, kind: str = "file") -> Path:
    """``path`` as a Path, or a :class:`CheckpointError` naming what was expected there."""
    if not isinstance(path, (str, Path)):
        raise CheckpointError(f"expected a path to {what}, got {type(path).__name__}")
    p = Path(path).expanduser()
    if not p.exists():
        hint = f": {hub_hint(str(path))}" if looks_like_hub_id(str(path)) else ""
        raise CheckpointError(f"{what} not found: {p} does not exist{hint}")
    if kind == "file" and p.is_dir():
        raise CheckpointError(f"expected {what} at {p}, but it is a directory")
    if kind == "dir" and not p.is_dir():
        raise CheckpointError(f"expected {what} at {p}, but it is a file, not a directory")
    return p


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """Force Hugging Face Hub offline mode (every HTTP request fails at once, no retries) and
    hush third-party "initialised randomly" log lines while vizkit builds a model it then loads."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - hub not installed
        constants = None
    saved = constants.HF_HUB_OFFLINE if constants is not None else None
    saved_disable = logging.root.manager.disable
    tlog: Any = None
    try:
        from transformers.utils import logging as tlog

        saved_verbosity, saved_bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except (ImportError, AttributeError):  # pragma: no cover - no / another transformers
        tlog = None
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    logging.disable(max(saved_disable, logging.WARNING))
    try:
        yield
    finally:
        logging.disable(saved_disable)
        if constants is not None:
            constants.HF_HUB_OFFLINE = saved
        if tlog is not None:
            tlog.set_verbosity(saved_verbosity)
            if saved_bars:
                tlog.enable_progress_bar()


# --------------------------------------------------------------------------- safe reading


def _safe_extra_globals() -> list[Any]:
    """Inert data types often stored next to weights (run arguments, numpy scalars); allowing
    them keeps ``weights_only`` loading: no callable is ever executed."""
    import argparse

    out: list[Any] = [argparse.Namespace, np.dtype]
    try:
        out.append(np._core.multiarray.scalar)  # numpy >= 2
    except AttributeError:  # pragma: no cover
        out.append(np.core.multiarray.scalar)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType")]
    return out


def _unsafe_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:
        return []


def _pickled_code_error(path: Path, err: Exception) -> CheckpointError:
    names = _unsafe_globals(path) or re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    found = f" ({', '.join(names[:5])})" if names else ""
    return CheckpointError(
        f"{path} contains pickled Python objects{found}, i.e. code that vizkit will not execute by default "
        f"(it only reads tensors, with torch.load(weights_only=True)). Convert it once, where you trust the "
        f"file: `obj = torch.load(path, weights_only=False); torch.save(obj.state_dict() if isinstance(obj, "
        f"torch.nn.Module) else obj['state_dict'], 'weights.pt')` (or save it with safetensors.torch.save_file) "
        f"and load the converted file"
    )


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def read_checkpoint(path: PathLike) -> Any:
    """The raw content of a checkpoint file, read safely (no code execution, no network).

    ``.safetensors`` via safetensors; ``.pt/.pth/.bin/.ckpt`` (and anything else) via
    ``torch.load(weights_only=True)``. Pickled code, TorchScript archives and files that are not
    checkpoints raise :class:`CheckpointError`; there is never an unsafe fallback.
    """
    p = existing(path, "checkpoint file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p} is empty: expected a checkpoint (.safetensors, or a torch .pt/.pth/.bin)")
    if p.suffix == ".safetensors" or _is_safetensors(p):  # by name, or by header whatever the name
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(
                f"{p} is not a valid safetensors file ({err}); expected tensors saved with safetensors.torch.save_file"
            ) from None
    if p.suffix in (".json", ".txt", ".yaml", ".yml", ".md"):
        raise CheckpointError(f"{p} is a {p.suffix} file, not a checkpoint: expected .safetensors or .pt/.pth/.bin")
    try:
        with torch.serialization.safe_globals(_safe_extra_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
            return torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses both pickled classes ("Unsupported global") and bytes that are no
        # pickle at all ("Unsupported operand", "invalid load key"): only the first is code
        if "Unsupported global" in str(err) or _unsafe_globals(p):
            raise _pickled_code_error(p, err) from None
        raise _not_a_checkpoint(p, err) from None
    except RuntimeError as err:
        if "TorchScript" in str(err):
            raise CheckpointError(
                f"{p} is a TorchScript archive; vizkit reads plain state dicts only. Convert it once: "
                f"`torch.save(torch.jit.load(path, map_location='cpu').state_dict(), 'weights.pt')`"
            ) from None
        raise _not_a_checkpoint(p, err) from None
    except (EOFError, KeyError, ValueError, OSError, IndexError, TypeError, AttributeError) as err:
        raise _not_a_checkpoint(p, err) from None


def _not_a_checkpoint(p: Path, err: Exception) -> CheckpointError:
    try:
        text = p.read_bytes()[:64].decode("utf-8")
        printable = sum(c.isprintable() or c in "\n\r\t" for c in text) / max(1, len(text))
        what = f"it looks like text ({text[:30].strip()!r}...)" if printable > 0.95 else ""
    except UnicodeDecodeError:
        what = ""
    if isinstance(err, pickle.UnpicklingError):
        detail = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(err))
        why = detail.group(1).strip() if detail else err
        text = f"its bytes are neither a zip archive nor a pickle of tensors ({why})"
    else:
        text = f"{type(err).__name__}: {str(err).split('. ')[0][:120]}"
    reason = what or text
    return CheckpointError(
        f"{p} is not a PyTorch checkpoint ({reason}); expected a state dict saved with "
        f"torch.save(model.state_dict(), path) or safetensors.torch.save_file"
    )


def _is_tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def unwrap_state_dict(obj: Any, source: Any = "checkpoint") -> tuple[dict[str, torch.Tensor], str | None]:
    """The flat ``{name: tensor}`` inside ``obj`` and the wrapper key it was under (or None).

    Accepts a state dict, or one nested under ``state_dict`` / ``model_state_dict`` / ``model`` /
    ``module`` / ``net`` / ... (one or two levels); a ``module.`` prefix on every key is removed.
    """
    found_key: str | None = None
    for _ in range(3):
        if _is_tensor_dict(obj):
            return strip_prefixes(dict(obj), ("module.", "_orig_mod.")), found_key
        if not isinstance(obj, Mapping):
            break
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj, found_key = obj[key], key if found_key is None else f"{found_key}.{key}"
                break
        else:
            break
    if isinstance(obj, Mapping) and obj and all(isinstance(k, str) for k in obj):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if len(tensors) >= max(1, len(obj) // 2):  # a state dict with a few stray non-tensor entries
            return strip_prefixes(tensors, ("module.", "_orig_mod.")), found_key
        keys = ", ".join(map(str, list(obj)[:8]))
        raise CheckpointError(
            f"{source} holds no state dict: its top-level keys are [{keys}]; expected "
            f"{{name: tensor}} or one nested under 'state_dict' / 'model_state_dict' / 'model'"
        )
    raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state dict; expected {{name: tensor}}")


def load_checkpoint(path: PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file safely and return its flat state dict (see :func:`read_checkpoint`
    and :func:`unwrap_state_dict`)."""
    return unwrap_state_dict(read_checkpoint(path), Path(path))[0]


def strip_prefixes(
    sd: dict[str, torch.Tensor], prefixes: Sequence[str] = _PREFIXES, expected: Iterable[str] | None = None
) -> dict[str, torch.Tensor]:
    """Remove a wrapper prefix that every key carries; with ``expected`` keys only when that
    makes more keys match."""
    want = set(expected) if expected is not None else None
    changed = True
    while changed and sd:
        changed = False
        for pre in prefixes:
            if all(k.startswith(pre) for k in sd):
                new = {k[len(pre) :]: v for k, v in sd.items()}
                if want is None or len(want & set(new)) > len(want & set(sd)):
                    sd, changed = new, True
    return sd


# --------------------------------------------------------------------------- strict loading


def _listing(keys: Sequence[str], n: int = 5) -> str:
    more = f", ... and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def fit_report(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> str | None:
    """None when ``sd`` fits ``model`` exactly (same keys and shapes); else a short summary."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) ({_listing(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) ({_listing(unexpected)})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es) ({_listing(shapes, 3)})")
    return "; ".join(parts) or None


def load_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], source: Any, what: str) -> None:
    """``model.load_state_dict(sd, strict=True)`` after a readable check of keys and shapes
    (a ``model.`` wrapper prefix is removed first when that is what makes the keys fit)."""
    sd = strip_prefixes(dict(sd), _PREFIXES, expected=model.state_dict().keys())
    report = fit_report(model, sd)
    if report:
        raise CheckpointError(
            f"the weights in {source} do not fit {what}: {report}. Check the model "
            f"name / config matches the one the checkpoint was trained with"
        )
    model.load_state_dict(sd, strict=True)


def read_json(path: PathLike, what: str) -> dict[str, Any]:
    p = existing(path, what)
    try:
        obj = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{p} is not valid JSON ({err}); expected {what}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p} holds a JSON {type(obj).__name__}, expected {what} (a JSON object)")
    return obj


# --------------------------------------------------------------------------- images


def to_pil(image: Any, mode: str = "RGB") -> Any:
    """A PIL image (``mode``) from PIL, a uint8 ``HxW`` / ``HxWx{1,3,4}`` array or tensor."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert(mode)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise VizkitError(f"expected an image HxW or HxWx3 (uint8) or a PIL image, got shape {a.shape}")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and a.max() <= 1.0:
            a = a * 255.0
        a = np.clip(a, 0, 255).astype(np.uint8)
    return Image.fromarray(a).convert(mode)


def resize_normalize(
    size: int | tuple[int, int], mean: Sequence[float], std: Sequence[float], grey: bool = False
) -> Callable[[Any], torch.Tensor]:
    """``image -> [C, H, W]``: resize to ``size`` (bilinear), scale to [0, 1], normalise."""
    from PIL import Image

    h, w = (size, size) if isinstance(size, int) else size
    m = torch.tensor(list(mean), dtype=torch.float32)[:, None, None]
    s = torch.tensor(list(std), dtype=torch.float32)[:, None, None]

    def preprocess(image: Any) -> torch.Tensor:
        im = to_pil(image, "L" if grey else "RGB").resize((w, h), Image.BILINEAR)
        a = np.asarray(im, dtype=np.float32) / 255.0
        x = torch.from_numpy(a[None] if grey else a.transpose(2, 0, 1).copy())
        return (x - m) / s

    return preprocess
