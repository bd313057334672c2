"""Deletion / insertion curves and the deletion references (:mod:`vizkit.metrics.perturbation`): the
smallest valid arguments, ties, the baseline's dtype and the references' ordering, by hand."""

from __future__ import annotations

import pytest
import torch

from vizkit.metrics import deletion_auc, deletion_references, insertion_auc

WEIGHTS = torch.arange(1.0, 65.0).view(1, 1, 8, 8)  # pixel p (raster order) weighs p + 1


def _weighted(batch: torch.Tensor) -> torch.Tensor:
    """A score that tells every pixel apart: sum of pixel value x (raster index + 1)."""
    return (batch * WEIGHTS).sum((1, 2, 3))


def test_one_step_and_batches_of_one():
    image = torch.ones(1, 1, 8, 8)
    heat = torch.rand(1, 8, 8, generator=torch.Generator().manual_seed(0))
    total = float(WEIGHTS.sum())
    for batch_size in (1, 64):
        auc, curves = deletion_auc(_weighted, image, heat, steps=1, batch_size=batch_size, return_curves=True)
        assert curves.tolist() == [[total, 0.0]] and auc.tolist() == [total / 2]
        auc, curves = insertion_auc(_weighted, image, heat, steps=1, batch_size=batch_size, return_curves=True)
        assert curves.tolist() == [[0.0, total]] and auc.tolist() == [total / 2]
    for steps, batch_size in ((0, 1), (1, 0)):
        with pytest.raises(ValueError, match="steps and batch_size must be >= 1"):
            deletion_auc(_weighted, image, heat, steps=steps, batch_size=batch_size)


def test_ties_go_in_raster_order():
    """A constant map: every pixel ties; the stable ordering deletes them row by row, left to right."""
    image = torch.ones(1, 1, 8, 8)
    _, curves = deletion_auc(_weighted, image, torch.zeros(1, 8, 8), steps=64, return_curves=True)
    remaining = [float(WEIGHTS.flatten()[k:].sum()) for k in range(65)]
    assert curves[0].tolist() == remaining


def test_the_baseline_takes_the_images_dtype():
    seen = []

    def score(batch):
        seen.append(batch.dtype)
        return batch.sum((1, 2, 3))

    image = torch.ones(1, 1, 8, 8)
    base = torch.tensor(0.5, dtype=torch.float64)
    auc, curves = deletion_auc(score, image, torch.zeros(1, 8, 8), steps=2, baseline=base, return_curves=True)
    assert set(seen) == {torch.float32} and curves.tolist() == [[64.0, 48.0, 32.0]]
    assert auc.tolist() == [pytest.approx(48.0)]


def test_deletion_references_order_inside_the_mask_and_defaults():
    images = torch.ones(2, 1, 8, 8)
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[0, 2:5, 1:7] = True
    masks[1, :, :3] = True
    seed, steps = 5, 8
    noise = torch.rand((2, 8, 8), generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(1234)  # the global RNG plays no part
    mask_order, random_order = deletion_references(_weighted, images, masks, steps=steps, seed=seed)
    # mask pixels first, among them (and among the rest) the larger noise first
    ranked = masks.float() * 10 + noise
    assert mask_order == pytest.approx(float(deletion_auc(_weighted, images, ranked, steps=steps).mean()))
    assert random_order == pytest.approx(float(deletion_auc(_weighted, images, noise, steps=steps).mean()))
    # the inside order matters for this score: the reverse order inside the mask gives another number
    reverse = masks.float() * 10 - noise
    assert mask_order != pytest.approx(float(deletion_auc(_weighted, images, reverse, steps=steps).mean()))
    # defaults: 20 steps, seed 0
    assert deletion_references(_weighted, images, masks) == deletion_references(
        _weighted, images, masks, steps=20, seed=0
    )
    assert deletion_references(_weighted, images, masks) != deletion_references(
        _weighted, images, masks, steps=21, seed=0
    )
    assert (
        deletion_references(_weighted, images, masks)[1]
        != deletion_references(_weighted, images, masks, steps=20, seed=1)[1]
    )


def test_deletion_references_deletes_the_whole_mask_first_whatever_the_noise():
    # 128 x 128 px, the left half is the mask; the score counts the pixels left outside it. Deleted in mask order,
    # the first half of the pixels is exactly the mask: curve [S, S, 0] at steps 0, 1, 2 with S = 8192, so the
    # trapezoidal AUC over [0, 1] is (S + S) / 4 + (S + 0) / 4 = 0.75 S = 6144. The tie-breaking noise reaches
    # 0.9999 here: scaled by more than 1e-3 it would lift such an outside pixel above mask pixels of little noise.
    images = torch.ones(1, 1, 128, 128)
    masks = torch.zeros(1, 128, 128, dtype=torch.bool)
    masks[:, :, :64] = True
    assert float(torch.rand((1, 128, 128), generator=torch.Generator().manual_seed(0))[~masks].max()) > 0.9999

    def outside(x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, :, 64:].sum(dim=(1, 2))

    mask_order, _ = deletion_references(outside, images, masks, steps=2, seed=0)
    assert mask_order == 6144.0
