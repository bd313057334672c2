"""One image explained at several layers, side by side: the input, one overlay per layer and, with
more than one layer, the layers combined (:func:`vizkit.render.combined_map`).

Example::

    from vizkit.figures.layer_comparison import comparison_figure
    fig = comparison_figure(display, {"encoder.layers.3": m3, "encoder.layers.5": m5},
                            "predicted Fake (p = 0.912)", "gradcam")
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np

from .. import render

__all__ = ["comparison_figure"]


def comparison_figure(display: np.ndarray, maps: Mapping[str, np.ndarray], title: str, method: str) -> plt.Figure:
    """One row: ``display`` (uint8 ``S x S x 3``), then per layer its map (``h x w``, any scale,
    normalised and resized by the overlay) over it, then the layers combined at ``S`` px when
    there is more than one; the suptitle ``"{method}: {title}"``."""
    panels = [render.Panel(image=display, kind="image", title="input")]
    panels += [render.Panel(image=display, heatmap=m, title=layer) for layer, m in maps.items()]
    if len(maps) > 1:
        panels.append(
            render.Panel(
                image=display,
                heatmap=render.combined_map(list(maps.values()), display.shape[0]),
                title="layers combined",
            )
        )
    return render.figure_grid([panels], suptitle=f"{method}: {title}")
