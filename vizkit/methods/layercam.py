"""LayerCAM (Jiang et al., 2021): positive gradients x activations, summed over channels."""

import torch


def layercam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, h, w]``."""
    return (gradients.clamp(min=0) * activations).sum(1)
