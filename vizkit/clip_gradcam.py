"""Deprecated: moved to :mod:`vizkit.scenarios.clip_text_gradcam` (scenario 4). This re-export shim warns and
will be removed in the next release."""

import warnings

from .scenarios.clip_text_gradcam import *  # noqa: F401,F403
from .scenarios.clip_text_gradcam import __all__  # noqa: F401

warnings.warn(
    "vizkit.clip_gradcam moved to vizkit.scenarios.clip_text_gradcam; import from there (or from vizkit.scenarios)",
    FutureWarning,
    stacklevel=2,
)
