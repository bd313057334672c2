"""Grad-CAM++ (Chattopadhyay et al., 2018), in the closed form pytorch-grad-cam uses."""

import torch


def gradcam_pp(activations: torch.Tensor, gradients: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, h, w]``: weights = sum over space of relu(g) * alpha, with
    alpha = g^2 / (2 g^2 + sum(A) g^3 + eps) where g != 0."""
    g2 = gradients.pow(2)
    g3 = g2 * gradients
    sum_a = activations.sum(dim=(2, 3), keepdim=True)
    alpha = g2 / (2 * g2 + sum_a * g3 + eps)
    alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
    weights = (gradients.clamp(min=0) * alpha).sum(dim=(2, 3), keepdim=True)
    return (weights * activations).sum(1)
