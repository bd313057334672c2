"""Score-CAM (Wang et al., 2020): channel weights = softmax over channels of the target score
of the input masked by each (upsampled, min-max normalised) activation channel.

Gradient-free; costs one forward pass per channel, run in batches.
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def channel_masks(activations: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``[B, C, h, w]`` -> ``[B, C, H, W]`` masks in [0, 1] (bilinear, corners aligned)."""
    up = F.interpolate(activations.float(), size=size, mode="bilinear", align_corners=True)
    flat = up.flatten(2)
    lo, hi = flat.amin(-1)[..., None, None], flat.amax(-1)[..., None, None]
    return (up - lo) / (hi - lo + 1e-8)


def scorecam(activations: torch.Tensor, inputs: torch.Tensor, score_fn: ScoreFn, batch_size: int = 32) -> torch.Tensor:
    """``[B, C, h, w]`` activations and ``[B, 3, H, W]`` inputs -> ``[B, h, w]`` map.

    ``score_fn(images [N, 3, H, W], rows [N]) -> [N]`` scores each masked image for the
    target of original image ``rows[n]``.
    """
    b, c = activations.shape[:2]
    masks = channel_masks(activations, inputs.shape[-2:])
    # channel-major order: a batch of exactly ``b`` rows holds one channel of every image
    rows = torch.arange(b).repeat(c)
    chans = torch.arange(c).repeat_interleave(b)
    scores = torch.empty(b * c, device=activations.device)
    with torch.no_grad():
        for start in range(0, b * c, batch_size):
            r, ch = rows[start : start + batch_size], chans[start : start + batch_size]
            batch = inputs[r] * masks[r, ch][:, None].to(inputs.dtype)
            scores[start : start + batch_size] = score_fn(batch, r).float()
    weights = scores.view(c, b).T.softmax(-1)[..., None, None]
    return (weights * activations).sum(1)
