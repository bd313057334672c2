"""Model classes vizkit ships (for its zoo and for users' own checkpoints) and their loaders."""
from .detector import ClipDetector, LinearHeadClassifier
from .vit import SimpleViT

__all__ = ["SimpleViT", "ClipDetector", "LinearHeadClassifier"]
