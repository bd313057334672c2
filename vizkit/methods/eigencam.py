"""Eigen-CAM (Muhammad & Yeasin, 2020): projection on the first principal component.

Gradient-free. Per image the ``[h*w, C]`` activation matrix is centred over positions and
projected on its first right-singular vector. The sign of a singular vector is arbitrary;
``sign_correction=True`` flips a map whose largest magnitude is negative (Seg-Eigen-CAM).
"""

import torch


def eigencam(
    activations: torch.Tensor, gradients: torch.Tensor | None = None, sign_correction: bool = False
) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, h, w]``; ``gradients`` is ignored."""
    b, c, h, w = activations.shape
    x = torch.nan_to_num(activations.float()).reshape(b, c, h * w).transpose(1, 2)  # [B, hw, C]
    x = x - x.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    proj = (x @ vh[:, 0, :, None])[..., 0]  # [B, hw]
    if sign_correction:
        flip = proj.amin(1).abs() > proj.amax(1).abs()
        proj = torch.where(flip[:, None], -proj, proj)
    return proj.reshape(b, h, w)
