"""HiResCAM (Draelos & Carin, 2020): element-wise gradient x activation, summed over channels."""

import torch


def hirescam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, h, w]``."""
    return (gradients * activations).sum(1)
