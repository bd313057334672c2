"""Quality metrics for saliency / explanation maps.

- localisation (:mod:`.maps`): :func:`pointing_game`, :func:`energy_pointing_game`,
  :func:`top_region_iou`, :func:`region_means`
- faithfulness (:mod:`.perturbation`): :func:`deletion_auc`, :func:`insertion_auc`
- sanity (:mod:`.randomisation`): :func:`randomization_sanity_check` (Adebayo et al., 2018)

Heatmaps are ``[B, H, W]`` at image resolution; images are ``[B, C, H, W]``.
"""

from __future__ import annotations

from .maps import energy_pointing_game, pointing_game, region_means, top_region_iou
from .perturbation import deletion_auc, insertion_auc
from .randomisation import randomization_sanity_check

__all__ = [
    "pointing_game",
    "energy_pointing_game",
    "deletion_auc",
    "insertion_auc",
    "randomization_sanity_check",
    "top_region_iou",
    "region_means",
]
