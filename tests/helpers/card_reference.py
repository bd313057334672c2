"""The metric card's deletion / insertion AUC written out: the softmax probability of each image's class,
one curve call per class (as ``vizkit.metrics.card`` scores them)."""

from __future__ import annotations

import torch


def per_class(curve, model, x, maps, targets, steps):
    """``curve`` (``deletion_auc`` / ``insertion_auc``) of each image's class probability: ``[B]``."""
    out = torch.empty(len(x))
    for c in targets.unique().tolist():
        rows = (targets == c).nonzero().flatten()
        out[rows] = curve(lambda images, c=c: model(images).softmax(-1)[:, c], x[rows], maps[rows], steps=steps)
    return out
