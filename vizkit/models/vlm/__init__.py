"""Vision-language models, one adapter per family, keyed by ``config.json``'s ``model_type``.

:func:`load_vlm` loads a ``save_pretrained`` folder offline with its family's transformers class
and its own processor; :func:`family_for` names the adapter (:class:`~.base.VLMFamily`) that
places its image patches (:class:`~.base.PositionMap`). Adding a family is one adapter module in
this package whose class is decorated with :func:`register` (every module but ``base`` is
imported on first use).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...errors import InputError
from ...io import data_root
from ..load_common import hub_offline
from .base import (
    GENERATED,
    IMAGE,
    KIND_NAMES,
    MOSAIC,
    SPECIAL,
    TEXT,
    THUMBNAIL,
    PositionMap,
    VLMFamily,
    config_value,
    place_grid,
    runs_of,
    token_id,
)

__all__ = [
    "FAMILIES",
    "register",
    "family_for",
    "supported",
    "family_table",
    "load_vlm",
    "VLM",
    "PositionMap",
    "VLMFamily",
    "TEXT",
    "IMAGE",
    "GENERATED",
    "SPECIAL",
    "KIND_NAMES",
    "MOSAIC",
    "THUMBNAIL",
    "config_value",
    "token_id",
    "runs_of",
    "place_grid",
]

#: model_type -> adapter instance
FAMILIES: dict[str, VLMFamily] = {}
_loaded = False


def register(cls: type[VLMFamily]) -> type[VLMFamily]:
    """Class decorator: one instance of ``cls`` serves each of its ``model_types``."""
    inst = cls()
    for mt in cls.model_types:
        FAMILIES[mt] = inst
    return cls


def _load_modules() -> None:
    global _loaded
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            if info.name != "base" and not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True


def supported() -> dict[str, VLMFamily]:
    """Every registered ``model_type`` and its adapter."""
    _load_modules()
    return dict(FAMILIES)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def family_for(model_type: str, architectures: Any = None) -> VLMFamily:
    """The adapter for ``model_type``, or one :class:`InputError` listing the supported families."""
    fams = supported()
    if model_type in fams:
        return fams[model_type]
    names = ", ".join(sorted({f"{f.name} ({', '.join(f.model_types)})" for f in fams.values()}))
    arch = f" ({', '.join(architectures)})" if architectures else ""
    what = model_type or "unknown"
    raise InputError(
        f"this is {_article(what)} {what} model{arch}, not an image-text family vizkit can place "
        f"image patches for: supported are {names}"
    )


def family_table() -> str:
    """The family table of the documentation (docs/howto/vlm-families.md, markdown): one row per adapter, what it
    reads and its limits."""
    rows = ["| family | `model_type` | transformers class | the adapter reads | limits |", "|---|---|---|---|---|"]
    seen: set[int] = set()
    for fam in sorted(supported().values(), key=lambda f: f.name.lower()):
        if id(fam) in seen:
            continue
        seen.add(id(fam))
        types = ", ".join(f"`{t}`" for t in fam.model_types)
        rows.append(f"| {fam.name} | {types} | `{fam.model_class}` | {fam.reads} | {fam.limits} |")
    return "\n".join(rows)


@dataclass
class VLM:
    """A loaded vision-language model: ``model`` (eval), ``processor``, ``tokenizer``, its
    ``family`` adapter, ``model_type`` and where it came from."""

    model: Any
    processor: Any
    tokenizer: Any
    family: VLMFamily
    model_type: str
    path: str
    name: str = ""

    @property
    def decoder_layers(self) -> torch.nn.ModuleList:
        return self.family.decoder_layers(self.model)

    @property
    def num_layers(self) -> int:
        return len(self.decoder_layers)

    @property
    def num_heads(self) -> int:
        return int(self.decoder_layers[0].self_attn.config.num_attention_heads)

    def position_map(self, inputs: dict[str, Any], prompt_len: int | None = None) -> PositionMap:
        return self.family.position_map(self.model.config, inputs, prompt_len, self.processor)


def load_vlm(model_name_or_path: str | Path | None = None, device: str = "cpu") -> VLM:
    """Load a VLM folder (``save_pretrained`` output of the family's model and processor classes)
    offline; None / ``"tiny_vlm"`` / ``"zoo:tiny_vlm"``: the zoo's ``tiny_vlm``. A folder whose
    ``model_type`` has no adapter, or that the installed transformers does not know, is one
    :class:`InputError` listing the supported families."""
    import transformers

    if model_name_or_path in (None, "", "tiny_vlm", "zoo:tiny_vlm"):
        model_name_or_path = data_root() / "zoo" / "tiny_vlm"
    path = Path(model_name_or_path)
    if not (path / "config.json").is_file():
        names = ", ".join(sorted({f.name for f in supported().values()}))
        raise InputError(
            f"model folder {str(path)!r} has no config.json: give a local folder of a supported VLM ({names})"
        )
    try:
        raw = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path / 'config.json'} is not valid JSON: {err}") from None
    model_type = raw.get("model_type", "")
    family = family_for(model_type, raw.get("architectures"))
    cls = getattr(transformers, family.model_class, None)
    if cls is None:
        raise InputError(
            f"{str(path)!r} is {_article(model_type)} {model_type} model, but the installed transformers "
            f"{transformers.__version__} has no {family.model_class}: upgrade transformers"
        )
    with hub_offline():  # local files only, and no "Loading weights" progress bar
        model = cls.from_pretrained(path, dtype=torch.float32, local_files_only=True).to(device).eval()
        family.check(model.config)
        processor = transformers.AutoProcessor.from_pretrained(path, local_files_only=True)
    tokenizer = getattr(processor, "tokenizer", processor)
    return VLM(model, processor, tokenizer, family, model_type, str(path), name=path.name)
