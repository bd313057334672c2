"""Deprecated: moved to :mod:`vizkit.scenarios.vit_mnist_attention` (scenario 2). This re-export shim warns and
will be removed in the next release."""

import warnings

from .scenarios.vit_mnist_attention import *  # noqa: F401,F403
from .scenarios.vit_mnist_attention import __all__  # noqa: F401

warnings.warn(
    "vizkit.attention_visualizer moved to vizkit.scenarios.vit_mnist_attention; "
    "import from there (or from vizkit.scenarios)",
    FutureWarning,
    stacklevel=2,
)
