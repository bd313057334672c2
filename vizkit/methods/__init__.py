"""The CAM family as pure tensor functions of ``(activations, gradients)``, one file each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import VizkitError
from .eigencam import eigencam
from .gradcam import gradcam
from .gradcam_pp import gradcam_pp
from .hirescam import hirescam
from .layercam import layercam
from .scorecam import channel_masks, scorecam
from .xgradcam import xgradcam


@dataclass(frozen=True)
class Method:
    """A CAM method: its map function and the flags that drive how :func:`vizkit.cam` calls it.

    - ``uses_gradients``: ``fn(activations, gradients)``; else ``fn(activations, **options)``.
    - ``uses_scores``: the method scores masked copies of the input (extra forward passes):
      ``fn(activations, inputs, score_fn, batch_size=...)``.
    - ``options``: keyword arguments of :func:`vizkit.cam` the method reads.
    """

    name: str
    fn: Callable
    uses_gradients: bool = True
    uses_scores: bool = False
    options: tuple[str, ...] = ()


#: every CAM method by name (``method=`` of :func:`vizkit.cam`), each with the flags that tell ``cam``
#: how to call it
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("gradcam", gradcam),
        Method("gradcam++", gradcam_pp),
        Method("xgradcam", xgradcam),
        Method("hirescam", hirescam),
        Method("layercam", layercam),
        Method("eigencam", eigencam, uses_gradients=False, options=("sign_correction",)),
        Method("scorecam", scorecam, uses_gradients=False, uses_scores=True),
    )
}
_ALIASES = {"gradcampp": "gradcam++", "gradcam_pp": "gradcam++", "grad-cam": "gradcam", "grad-cam++": "gradcam++"}


def get_method(name: str) -> Method:
    """Look a method up by name (case-insensitive); unknown names list the valid ones."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in METHODS:
        raise VizkitError(f"unknown CAM method {name!r}: choose one of {', '.join(METHODS)}")
    return METHODS[key]


__all__ = [
    "METHODS",
    "Method",
    "get_method",
    "gradcam",
    "gradcam_pp",
    "xgradcam",
    "hirescam",
    "layercam",
    "eigencam",
    "scorecam",
    "channel_masks",
]
