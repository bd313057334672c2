"""Deprecated: ``load_clip_model`` moved to :mod:`vizkit.scenarios.clip_text_gradcam` (zoo names)
and :func:`vizkit.models.load_clip.load_clip` (users' checkpoints). This re-export shim warns and
will be removed in the next release."""

import warnings

from .models.load_clip import load_clip  # noqa: F401
from .scenarios.clip_text_gradcam import ZOO_CLIPS, load_clip_model  # noqa: F401

__all__ = ["load_clip_model", "load_clip", "ZOO_CLIPS"]

warnings.warn(
    "vizkit.clip_models moved: use vizkit.scenarios.load_clip_model (or vizkit.models.load_clip.load_clip "
    "for checkpoints on disk)",
    FutureWarning,
    stacklevel=2,
)
