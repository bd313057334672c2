"""XGrad-CAM (Fu et al., 2020): weights = sum(g * A) / sum(A) over space."""

import torch


def xgradcam(activations: torch.Tensor, gradients: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, h, w]``."""
    sum_a = activations.sum(dim=(2, 3), keepdim=True)
    weights = (gradients * activations / (sum_a + eps)).sum(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(1)
