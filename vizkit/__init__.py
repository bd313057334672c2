"""vizkit: why did the vision model decide that?

Grad-CAM family, attention capture, rollout and gradient-weighted attention for CNNs, ViTs,
CLIP and VLMs, with statistics, metrics and rendering. Everything runs offline.
"""

from . import targets
from .errors import CaptureError, InputError, LayerNotFoundError, TargetError, VizkitError
from .explain import AttentionMaps, Explanation, attention, cam, gradient_attention, rollout
from .layers import find_blocks, resolve_layers
from .methods import METHODS

__version__ = "0.1.0"

__all__ = [
    "cam",
    "attention",
    "rollout",
    "gradient_attention",
    "Explanation",
    "AttentionMaps",
    "targets",
    "resolve_layers",
    "find_blocks",
    "METHODS",
    "VizkitError",
    "LayerNotFoundError",
    "TargetError",
    "InputError",
    "CaptureError",
]
