"""CAM maps computed outside vizkit, for the tests that check what vizkit's CLIs and explorers show:
:func:`hooked_vit_cam` (a ViT layer's tokens hooked here, weighted by pytorch-grad-cam's own weight
functions) and :func:`clip_reference` (pytorch-grad-cam on a zoo CLIP's image encoder toward
``logit_scale * cos(image, text)``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM

REFERENCE = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "scorecam": ScoreCAM,
}


def hooked_vit_cam(
    model: torch.nn.Module, module: str, x: torch.Tensor, classes: Sequence[int], method: str = "gradcam"
) -> np.ndarray:
    """``[B, h, w]`` raw map of a ViT layer whose output is tokens ``[B, 1 + h*w, C]`` (CLS first)
    toward the logit of ``classes[b]``: activations and gradients hooked here, weights by
    pytorch-grad-cam's ``get_cam_weights`` of ``method`` (gradcam / gradcam++), map
    ``relu(sum_c w_c A_c)``."""
    store: dict[str, torch.Tensor] = {}
    handle = dict(model.named_modules())[module].register_forward_hook(lambda m, i, o: store.setdefault("a", o))
    try:
        with torch.enable_grad():
            logits = model(x)
            (grad,) = torch.autograd.grad(logits[torch.arange(len(x)), torch.tensor(list(classes))].sum(), store["a"])
    finally:
        handle.remove()
    side = int(round((store["a"].shape[1] - 1) ** 0.5))

    def grid(t: torch.Tensor) -> np.ndarray:
        return t[:, 1:].reshape(len(x), side, side, -1).permute(0, 3, 1, 2).detach().double().numpy()

    acts, grads = grid(store["a"]), grid(grad)
    weights = REFERENCE[method].get_cam_weights(None, None, None, None, acts, grads)
    return np.maximum((weights[:, :, None, None] * acts).sum(1), 0)


class ImageEncoder(torch.nn.Module):
    """A CLIP's ``encode_image`` as a module (what pytorch-grad-cam calls)."""

    def __init__(self, clip: torch.nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(x)


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """What ``layout="nhwc"`` reads: ``[B, h, w, C]`` -> ``[B, C, h, w]``."""
    return t.permute(0, 3, 1, 2)


def tokens_on(grid: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Patch tokens ``[B, h*w, C]`` (the zoo ViT CLIP pools by average: no CLS token) -> ``[B, C, h, w]``."""
    return lambda t: t.reshape(t.shape[0], *grid, t.shape[-1]).permute(0, 3, 1, 2)


def clip_reference(
    model: str,
    image: np.ndarray,
    texts: Sequence[str],
    layer: str,
    method: str,
    reshape: Callable[[torch.Tensor], torch.Tensor] | None = None,
    target: int | None = None,
) -> tuple[np.ndarray, int]:
    """pytorch-grad-cam's heatmap ``[S, S]`` of zoo CLIP ``model`` at ``layer`` toward
    ``logit_scale * cos(image, text)`` of text ``target`` (None: the most similar), and that index."""
    from vizkit import zoo

    bundle = zoo.load(model)
    clip = bundle.model.eval()
    x = bundle.preprocess(image)[None]
    with torch.no_grad():
        text = F.normalize(clip.encode_text(bundle.tokenizer(list(texts))), dim=-1)
        scale = float(clip.logit_scale.exp())
        if target is None:
            target = int((F.normalize(clip.encode_image(x), dim=-1) @ text.T).argmax())
    module = dict(clip.named_modules())[layer]
    with REFERENCE[method](model=ImageEncoder(clip), target_layers=[module], reshape_transform=reshape) as cam:
        cam.batch_size = 64
        heat = cam(input_tensor=x, targets=[lambda out: scale * F.normalize(out, dim=-1) @ text[target]])
    return heat[0], target
