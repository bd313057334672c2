"""Grad-CAM (Selvaraju et al., 2017): channel weights = spatial mean of the gradients."""

import torch


def gradcam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` activations and gradients -> ``[B, h, w]`` map (before ReLU)."""
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(1)
