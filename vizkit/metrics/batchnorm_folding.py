"""A copy of an eval-mode model with its BatchNorms folded into the convolutions before them, for the
many inference-only forward passes of the perturbation metrics (ROAD: one per percentile, order and image).

In eval mode a BatchNorm after a convolution is an affine map per channel, so it can be absorbed into
the convolution's weight and bias (torch.fx finds the pairs and folds them): the same function up to
float rounding, one memory pass per BatchNorm fewer. The caller's model is not changed.
"""

from __future__ import annotations

from torch import nn
from torch.fx.experimental.optimization import fuse

from ..errors import InputError

__all__ = ["fold_batchnorm"]


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A ``torch.fx.GraphModule`` copy of ``model`` (in eval mode) with every BatchNorm that follows a
    convolution (or a Linear before ``BatchNorm1d``) folded into it; the other modules are kept as they are.

    Raises :class:`vizkit.errors.InputError` if the model is in training mode (BatchNorm then normalises
    with each batch's statistics, which no folded weight reproduces) or if torch.fx cannot trace it
    (data-dependent control flow, non-tensor outputs such as a Hugging Face ``ModelOutput``).
    """
    if model.training:
        raise InputError(
            "fold_batchnorm needs the model in eval mode (in training mode BatchNorm uses each batch's "
            "statistics, which no folded convolution reproduces): call model.eval() or leave fold_batchnorm off"
        )
    try:
        return fuse(model)
    except Exception as err:  # symbolic tracing fails in many ways (TraceError, TypeError, AttributeError ...)
        raise InputError(
            f"cannot fold BatchNorm into the convolutions of {type(model).__name__}: torch.fx could not trace it "
            f"({type(err).__name__}: {err}); leave fold_batchnorm off for this model"
        ) from err
