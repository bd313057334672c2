"""Scenario 3's randomisation check (Adebayo et al., NeurIPS 2018): does a layer's Grad-CAM map
depend on the detector's weights? The explained score is the detector's logit of the explained
class (``args.target``); on the first ``count`` images of the test set every parameterised module
of the detector is re-initialised from the top (the classifier head) down to the patch embedding,
cascading (:func:`vizkit.metrics.parameter_randomisation`), and the map of each method x layer
(and of the layers combined) is compared with the original one by the Spearman rank correlation of
absolute values. The number kept is the mean over the images after the LAST step (every weight
random): 0 means the map changed completely (what a faithful map must do), 1 that it did not change
at all (the map shows the input, not what the model learnt).

Example::

    from vizkit.scenarios.detector_gradcam_sanity import randomisation_scores
    scores = randomisation_scores(ctx, count=8)     # {"gradcam|encoder.layers.3.layer_norm1": 0.04, ...}
"""

from __future__ import annotations

import torch

from ..explain import cam
from ..metrics import parameter_randomisation
from ..targets import real_fake_targets
from .detector_gradcam_params import EvalContext

__all__ = ["randomisation_scores", "RANDOMISATION_COUNT"]

#: images the randomisation check explains (the first of the test set that can be read)
RANDOMISATION_COUNT = 8


def randomisation_scores(ctx: EvalContext, count: int = RANDOMISATION_COUNT) -> dict[str, float]:
    """``{"<method>|<layer>": mean Spearman}`` over the first ``count`` readable images of
    ``ctx.dataset`` for every method of ``ctx.methods`` and layer of ``ctx.layers`` and
    ``"all layers"`` (the maps combined as :func:`vizkit.cam` combines them), after a cascading
    randomisation of every parameterised module, top-down (see the module docstring). The
    detector's weights are restored afterwards; ``{}`` without methods or images."""
    det = ctx.detector
    images, ok, _ = ctx.dataset.read_images(range(min(count, len(ctx.dataset))), det.read)
    if not ctx.methods or not ok:
        return {}
    x = torch.stack([det.preprocess(im) for im in images]).to(ctx.device)
    labels = torch.tensor([ctx.dataset.items[i].label for i in ok])
    targets = real_fake_targets(ctx.args.target, labels, det.fake_index)
    if targets is None:  # the predicted class of the ORIGINAL detector, kept at every step
        with torch.no_grad():
            targets = det.model(x).argmax(-1)
    modules = [i.module for i in ctx.layers]
    names = [i.name for i in ctx.layers] + ["all layers"]
    b = len(ok)
    out: dict[str, float] = {}
    for method in ctx.methods:

        def explain(model: torch.nn.Module, inputs: torch.Tensor, *, _method: str = method) -> torch.Tensor:
            # inputs: x repeated once per map kind; the maps of x stacked the same way [(L + 1) * b, H, W]
            exp = cam(model, inputs[:b], targets, layers=modules, method=_method, layout=ctx.args.layout)
            maps = [exp.layer_heatmaps[m] for m in modules] + [exp.heatmap]
            return torch.cat(maps).detach().float()

        steps = parameter_randomisation(det.model, x.repeat(len(names), 1, 1, 1), explain, cascade=True, seed=0)
        last = steps[-1][1].reshape(len(names), b).mean(dim=1)
        out.update({f"{method}|{n}": round(float(v), 6) for n, v in zip(names, last)})
    return out
