"""Quality metrics for saliency / explanation maps.

- localisation (:mod:`.maps`): :func:`pointing_game`, :func:`energy_pointing_game`,
  :func:`top_region_iou`, :func:`region_means`,
  :func:`comparison_numbers` (two maps of one image)
- faithfulness (:mod:`.perturbation`): :func:`deletion_auc`, :func:`insertion_auc`, :func:`deletion_references`
- faithfulness by imputation (:mod:`.road`): :func:`road` (Rong et al., 2022), :func:`confidence_change`,
  :func:`random_map_baseline` (the chance level of any of them); :func:`faithfulness_scores`
  (:mod:`.faithfulness`: ROAD and confidence change per sample in one call)
- sanity (:mod:`.randomisation`): :func:`parameter_randomisation`, :func:`randomization_sanity_check`,
  :func:`sanity_by_config`
  (Adebayo et al., 2018)
- chance levels (:mod:`.chance`): :func:`pointing_chance`, :func:`top_region_iou_chance`,
  :func:`uniform_attention_distance`, :func:`at_or_below_chance` (what a map with no information scores)
- metric cards (:mod:`.card`): every score above for some methods' maps beside random maps, as a
  Markdown table and a JSON record (``python -m vizkit.zoo card`` writes the zoo's)

Heatmaps are ``[B, H, W]`` at image resolution; images are ``[B, C, H, W]``.
"""

from __future__ import annotations

from .chance import at_or_below_chance, pointing_chance, top_region_iou_chance, uniform_attention_distance
from .faithfulness import FAITHFULNESS_SCORES, faithfulness_scores
from .maps import comparison_numbers, energy_pointing_game, pointing_game, region_means, top_region_iou
from .perturbation import deletion_auc, deletion_references, insertion_auc
from .randomisation import (
    map_similarity,
    parameter_randomisation,
    parameterised_layers,
    randomization_sanity_check,
    sanity_by_config,
)
from .road import ConfidenceChange, confidence_change, random_map_baseline, road, road_curves

__all__ = [
    "pointing_chance",
    "top_region_iou_chance",
    "uniform_attention_distance",
    "at_or_below_chance",
    "pointing_game",
    "energy_pointing_game",
    "deletion_auc",
    "insertion_auc",
    "randomization_sanity_check",
    "parameter_randomisation",
    "parameterised_layers",
    "map_similarity",
    "road",
    "road_curves",
    "confidence_change",
    "ConfidenceChange",
    "random_map_baseline",
    "faithfulness_scores",
    "FAITHFULNESS_SCORES",
    "top_region_iou",
    "region_means",
    "comparison_numbers",
    "deletion_references",
    "sanity_by_config",
]
