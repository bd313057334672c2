"""Loaders for users' own checkpoints on disk: offline, safe (no unpickling of code), strict.

Every loader returns a :class:`Loaded` (``model`` in eval mode, ``preprocess``, ``tokenizer``,
``processor``, ``meta``) and raises :class:`CheckpointError` (a ``VizkitError``) with one clear
message for a missing file, a wrong format, pickled code, weights that do not fit, or a hub
name asked for offline. Implementations live in ``load_*.py``.
"""

from .load_clip import load_clip
from .load_common import CheckpointError, Loaded, fit_report, load_checkpoint, read_checkpoint, unwrap_state_dict
from .load_deepfakebench import infer_clip_vision_config, load_deepfakebench_clip
from .load_detector import DetectorConfig, load_detector, read_detector_config
from .load_hf import load_hf
from .load_openclip import load_open_clip
from .load_vision import load_timm, load_torchvision, load_vit_checkpoint

__all__ = [
    "CheckpointError",
    "Loaded",
    "load_checkpoint",
    "read_checkpoint",
    "unwrap_state_dict",
    "fit_report",
    "load_open_clip",
    "load_hf",
    "load_deepfakebench_clip",
    "infer_clip_vision_config",
    "load_timm",
    "load_torchvision",
    "load_vit_checkpoint",
    "load_clip",
    "load_detector",
    "read_detector_config",
    "DetectorConfig",
]
