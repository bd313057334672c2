"""Scenario 1's faithfulness table: every head fusion x layer mode x aggregation of the detector's
gradient-weighted attention, scored on held-out faces whose manipulated region is known. The
score explained: the fake-class logit (the real-class logit for the real faces' entropy). Per
combination: the pointing game and the energy inside the mask, the deletion AUC of the fake
probability (:func:`vizkit.evaluate.config_scores`), the entropy of the maps and a weight
re-initialisation sanity check (:func:`vizkit.metrics.sanity_by_config`).

Example::

    from vizkit.scenarios.detector_attention_eval import faithfulness_table
    table = faithfulness_table(detector, fakes, reals, layer_modes=["last_layer", "all_layers"])
    table[["head_fusion", "layer_mode", "aggregation", "pointing", "deletion_auc"]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..attention_math import AGGREGATIONS, HEAD_FUSIONS
from ..errors import InputError
from ..evaluate import config_maps, config_scores
from ..metrics import deletion_references, sanity_by_config
from ..models import Detector
from ..models.vit_gradcam import LAYER_MODES, CLIPViTGradCAM, DetectorAttention
from ..state import model_device
from ..stats import map_entropy

__all__ = ["faithfulness_table"]


def _combo_maps(result: DetectorAttention, class_idx: int, combos: Sequence[tuple]) -> dict[tuple, torch.Tensor]:
    """Each ``(head fusion, layer mode, aggregation)``'s ``[B, H, W]`` map of class ``class_idx``."""
    return {(f, m, a): result.heatmap(class_idx, f, m, a) for f, m, a in combos}


def faithfulness_table(
    detector: Detector,
    fakes: Sequence[Any],
    reals: Sequence[Any],
    head_fusions: Sequence[str] = HEAD_FUSIONS,
    layer_modes: Sequence[str] = tuple(LAYER_MODES),
    aggregations: Sequence[str] = AGGREGATIONS,
    deletion_steps: int = 10,
    sanity_samples: int = 16,
    sanity_blocks: int = 2,
    batch_size: int = 50,
) -> pd.DataFrame:
    """Faithfulness of each head fusion x layer mode x aggregation on held-out faces.

    ``fakes`` carry ``image`` and ``mask`` (the manipulated region); ``reals`` carry ``image``.
    Per combination: the pointing game and energy inside the mask of the fake-class map on
    the fakes, the deletion AUC of the fake probability (lower = the map finds what the
    detector uses), the mean entropy of the real-class maps on real images and of the
    fake-class maps on fakes (nats), and the mean Spearman correlation of the fake-class maps
    after re-initialising the last ``sanity_blocks`` blocks (Adebayo et al. 2018; near 0 = the
    map depends on the weights, as it should). ``table.attrs`` hold the deletion AUC of two
    references: pixels deleted in the order of the masks, and at random.
    """
    if not fakes or not reals:
        raise InputError("the faithfulness table needs fake images with masks and real images")
    device = model_device(detector.model)
    real_k, fake_k = detector.real_index, detector.fake_index
    gradcam = CLIPViTGradCAM(detector.model, "all", class_names=detector.class_names)
    combos = [(f, m, a) for a in aggregations for m in layer_modes for f in head_fusions]
    xf = torch.stack([detector.preprocess(s.image) for s in fakes]).to(device)
    xr = torch.stack([detector.preprocess(s.image) for s in reals]).to(device)
    fake_maps = config_maps(lambda x: _combo_maps(gradcam.explain(x), fake_k, combos), xf, batch_size)
    real_maps = config_maps(lambda x: _combo_maps(gradcam.explain(x), real_k, combos), xr, batch_size)

    def fake_prob(images: torch.Tensor) -> torch.Tensor:
        return detector.model(images).float().softmax(-1)[:, fake_k]

    scores = config_scores(fakes, xf, fake_maps, fake_prob, deletion_steps=deletion_steps, batch_size=batch_size)
    n = len(gradcam.layer_names)
    n_layers = {m: n if LAYER_MODES[m] == "all" else min(n, 1 if LAYER_MODES[m] == "last" else 4) for m in layer_modes}
    table = pd.DataFrame(
        [
            {
                "head_fusion": f,
                "layer_mode": m,
                "aggregation": a,
                "layers": n_layers[m],
                "pointing": scores[(f, m, a)]["pointing"],
                "energy_in_mask": scores[(f, m, a)]["energy_in_mask"],
                "deletion_auc": scores[(f, m, a)]["deletion_auc"],
                "entropy_real_maps_real": float(map_entropy(real_maps[(f, m, a)]).nanmean()),
                "entropy_fake_maps_fake": scores[(f, m, a)]["entropy"],
            }
            for f, m, a in combos
        ]
    )
    xs = xf[:sanity_samples]

    def sanity_maps(model: nn.Module) -> dict[tuple, torch.Tensor]:
        return _combo_maps(CLIPViTGradCAM(model, "all", class_names=detector.class_names).explain(xs), fake_k, combos)

    sanity = sanity_by_config(sanity_maps, detector.model, gradcam.layer_names[::-1][:sanity_blocks], seed=0)
    table["sanity_spearman"] = [sanity[c] for c in combos]
    masks = torch.stack([torch.as_tensor(np.asarray(s.mask, dtype=np.float32)) for s in fakes]).to(device)
    mask_order, random_order = deletion_references(fake_prob, xf, masks, steps=deletion_steps, seed=0)
    table.attrs["deletion_auc_mask_order"] = mask_order
    table.attrs["deletion_auc_random_order"] = random_order
    return table
