"""Model classes vizkit ships (for its zoo and for users' own checkpoints) and their loaders;
:class:`Detector` is the one detector type, :func:`load_detector` its one loader."""

from .detector import ClipDetector, Detector, LinearHeadClassifier
from .load_detector import load_detector
from .vit import SimpleViT

__all__ = ["SimpleViT", "ClipDetector", "LinearHeadClassifier", "Detector", "load_detector"]
