"""Faithfulness metrics (issue 29): ROAD and confidence change against pytorch-grad-cam, the imputation
by hand, parameter randomisation on hand-built models, the random-map baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from models import resnet18, timm_vit
from pytorch_grad_cam.metrics import road as pgc_road
from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from vizkit.errors import InputError
from vizkit.metrics import (
    ConfidenceChange,
    confidence_change,
    faithfulness_scores,
    map_similarity,
    parameter_randomisation,
    parameterised_layers,
    random_map_baseline,
    randomization_sanity_check,
    road,
    road_curves,
)
from vizkit.metrics.imputation import noisy_linear_impute

PERCENTILES = [10, 30, 50, 70, 90]


@pytest.fixture(autouse=True)
def one_thread():
    """Many small tensor ops: one thread is much faster than two on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def exact_pgc(monkeypatch):
    """pytorch-grad-cam's ROAD with noise 0 (its imputer is built inside the metric with noise=0.01)."""
    monkeypatch.setattr(pgc_road.NoisyLinearImputer.__init__, "__defaults__", (0.0, pgc_road.neighbors_weights))


def _pgc_road(model, x, maps, classes, percentiles=PERCENTILES):
    targets = [ClassifierOutputTarget(c) if isinstance(c, int) else c for c in classes]
    cams = maps.numpy().astype(np.float32)
    morf = pgc_road.ROADMostRelevantFirstAverage(percentiles)(x, cams, targets, model)
    lerf = pgc_road.ROADLeastRelevantFirstAverage(percentiles)(x, cams, targets, model)
    return {"morf": morf, "lerf": lerf}


def _cnn_case(size=64, b=3):
    model = resnet18()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 3, size, size, generator=g)
    maps = F.interpolate(torch.rand(b, 1, 7, 7, generator=g), size=size, mode="bilinear", align_corners=False)[:, 0]
    return model, x, maps


# ----------------------------------------------------------------------------- ROAD parity


def test_road_matches_pytorch_grad_cam_on_resnet18_all_orders_and_target_kinds(exact_pgc):
    model, x, maps = _cnn_case(size=40, b=2)
    with torch.no_grad():
        predicted = model(x).argmax(1).tolist()
    cases = [
        (None, predicted),
        (4, [4, 4]),
        ([1, 7], [1, 7]),
        (lambda out: out[:, 2] - out[:, 5], [lambda o: o[2] - o[5]] * 2),
    ]
    for targets, reference_targets in cases:
        ref = _pgc_road(model, x, maps, reference_targets)
        curves = road_curves(model, x, maps, targets, percentiles=PERCENTILES, noise=0)
        assert curves["morf"].shape == (2, len(PERCENTILES))
        for order in ("morf", "lerf"):
            np.testing.assert_allclose(curves[order].mean(1).numpy(), ref[order], atol=1e-3, rtol=0)
    for order in ("morf", "lerf"):
        got = road(model, x, maps, targets, percentiles=PERCENTILES, order=order, noise=0)
        np.testing.assert_allclose(got.numpy(), ref[order], atol=1e-3, rtol=0)
    combined = road(model, x, maps, targets, percentiles=PERCENTILES, noise=0)
    np.testing.assert_allclose(combined.numpy(), (ref["lerf"] - ref["morf"]) / 2, atol=1e-3, rtol=0)
    # the scores are not trivially equal: the orders give different numbers
    assert abs(ref["morf"] - ref["lerf"]).max() > 0.01, ref


def test_road_combined_is_pytorch_grad_cam_road_combined(exact_pgc):
    model, x, maps = _cnn_case(size=48, b=2)
    targets = [ClassifierOutputTarget(3), ClassifierOutputTarget(8)]
    expected = pgc_road.ROADCombined([20, 60, 80])(x, maps.numpy(), targets, model)
    got = road(model, x, maps, [3, 8], percentiles=[20, 60, 80], noise=0)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-3, rtol=0)


def test_road_matches_pytorch_grad_cam_on_a_vit_with_upsampled_token_maps(exact_pgc):
    model = timm_vit()  # 32 px, 8 px patches: 4 x 4 tokens
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 32, 32, generator=g)
    tokens = torch.rand(3, 1, 4, 4, generator=g)
    with torch.no_grad():
        predicted = model(x).argmax(1).tolist()
    # nearest upsampling: 64 tied pixels per token, so the thresholds fall on ties (tests numpy's percentile)
    for mode in ("nearest", "bilinear"):
        maps = F.interpolate(tokens, size=32, mode=mode)[:, 0]
        ref = _pgc_road(model, x, maps, predicted, percentiles=[10, 25, 50, 75, 90])
        for order in ("morf", "lerf"):
            got = road(model, x, maps, None, percentiles=[10, 25, 50, 75, 90], order=order, noise=0)
            np.testing.assert_allclose(got.numpy(), ref[order], atol=1e-3, rtol=0)


def test_road_batches_forward_passes_and_plain_callables_see_aligned_batches():
    model, x, maps = _cnn_case(size=32, b=2)
    sizes = []
    handle = model.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    try:
        road(model, x, maps, 1, percentiles=[10, 50, 90], order="combined", noise=0, batch_size=64)
        assert sizes == [2, 12]  # the clean batch, then all 2 orders x 3 percentiles x 2 images at once
        sizes.clear()
        road(model, x, maps, 1, percentiles=[10, 50, 90], order="combined", noise=0, batch_size=4)
        assert sizes == [2, 4, 4, 4]
        sizes.clear()
        seen = []

        def target(out):
            seen.append(out.shape[0])
            return out[:, 1]

        road(model, x, maps, target, percentiles=[10, 50, 90], order="morf", noise=0)
        assert sizes == [2, 2, 2, 2] and seen == [2, 2, 2, 2]
    finally:
        handle.remove()


def test_road_noise_is_seeded_and_leaves_the_global_rng_alone():
    model, x, maps = _cnn_case(size=32, b=2)
    state = torch.get_rng_state()
    a = road(model, x, maps, 0, percentiles=[30, 70], noise=0.05, seed=1)
    b = road(model, x, maps, 0, percentiles=[30, 70], noise=0.05, seed=1)
    c = road(model, x, maps, 0, percentiles=[30, 70], noise=0.05, seed=2)
    exact = road(model, x, maps, 0, percentiles=[30, 70], noise=0.0)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, exact)


def test_road_errors():
    model, x, maps = _cnn_case(size=32, b=2)
    with pytest.raises(InputError, match=r"maps must be a tensor \[B, H, W\] = \[2, 32, 32\]"):
        road(model, x, maps[:, :16])
    with pytest.raises(InputError, match="order must be one of"):
        road(model, x, maps, order="mofr")
    with pytest.raises(InputError, match=r"percentiles .* \[0, 100\]"):
        road(model, x, maps, percentiles=[10, 120])
    with pytest.raises(InputError, match=r"percentiles"):
        road(model, x, maps, percentiles=[])
    with pytest.raises(InputError, match="NaN"):
        road(model, x, maps.masked_fill(maps > 0.9, float("nan")))
    with pytest.raises(InputError, match=r"inputs must be a float tensor"):
        road(model, x[0], maps)


# ------------------------------------------------------------------------ imputation by hand


def test_imputation_by_hand_interior_border_and_two_unknowns():
    img = torch.arange(9.0).view(1, 1, 3, 3)
    keep = torch.ones(1, 3, 3, dtype=torch.bool)
    keep[0, 1, 1] = False  # centre: 1/6 * (1 + 3 + 5 + 7) + 1/12 * (0 + 2 + 6 + 8) = 8/3 + 4/3 = 4
    assert noisy_linear_impute(img, keep)[0, 0, 1, 1].item() == pytest.approx(4.0, abs=1e-5)
    keep = torch.ones(1, 3, 3, dtype=torch.bool)
    keep[0, 0, 1] = False  # top edge: neighbours 0, 2, 4 (1/6 each) and 3, 5 (1/12 each), weights sum 2/3
    expected = (1 / 6 * (0 + 2 + 4) + 1 / 12 * (3 + 5)) / (2 / 3)
    assert noisy_linear_impute(img, keep)[0, 0, 0, 1].item() == pytest.approx(expected, abs=1e-5)
    # two coupled unknowns in a 1 x 4 row [1, ?, ?, 10]: each is the mean of its two row neighbours
    row = torch.tensor([[[[1.0, 0.0, 0.0, 10.0]]]])
    out = noisy_linear_impute(row, torch.tensor([[[True, False, False, True]]]), tol=1e-7)
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([1.0, 4.0, 7.0, 10.0]))


def test_imputation_matches_pytorch_grad_cam_and_adds_noise_only_where_removed():
    g = torch.Generator().manual_seed(3)
    images = torch.randn(4, 3, 40, 36, generator=g)  # odd / non-square grid
    keep = torch.rand(4, 40, 36, generator=g) < torch.tensor([0.1, 0.4, 0.7, 0.95])[:, None, None]
    keep[3] &= torch.rand(40, 36, generator=g) < 0.5
    exact = noisy_linear_impute(images, keep, tol=1e-6)
    imputer = pgc_road.NoisyLinearImputer(noise=0.0)
    ref = torch.stack([imputer(images[i], keep[i].float()) for i in range(4)])
    assert (exact - ref).abs().max() < 1e-4
    assert torch.equal(exact[keep[:, None].expand_as(exact)], images[keep[:, None].expand_as(images)])
    noisy = noisy_linear_impute(images, keep, noise=0.5, generator=torch.Generator().manual_seed(0), tol=1e-6)
    diff = noisy - exact
    assert diff[keep[:, None].expand_as(diff)].abs().max() == 0
    assert diff[~keep[:, None].expand_as(diff)].std().item() == pytest.approx(0.5, rel=0.05)
    # no known pixel: removed pixels become 0
    assert noisy_linear_impute(images[:1], torch.zeros(1, 40, 36, dtype=torch.bool)).abs().max() == 0


def test_multigrid_transfers_are_adjoint_and_coarse_operators_are_galerkin_products():
    from vizkit.metrics import imputation as imp

    g = torch.Generator().manual_seed(4)
    for h, w in ((9, 8), (10, 7), (2, 11)):
        size = (imp._coarse_size(h), imp._coarse_size(w))
        nc, nf = size[0] * size[1], h * w
        interp = imp._interpolate(torch.eye(nc, dtype=torch.float64).view(nc, 1, *size), (h, w)).view(nc, nf).T
        restrict = imp._restrict(torch.eye(nf, dtype=torch.float64).view(nf, 1, h, w), size).view(nf, nc).T
        torch.testing.assert_close(restrict, interp.T)
        # bilinear: a constant stays constant on the fine grid (the last coarse point may lie beyond it)
        torch.testing.assert_close(interp.sum(1), torch.ones(nf, dtype=torch.float64))
        unknown = torch.rand(2, 1, h, w, generator=g, dtype=torch.float64).lt(0.6).double()
        fine = imp._Fine(unknown)
        eye = torch.eye(nf, dtype=torch.float64).view(1, nf, h, w)
        dense = fine.operator(eye).view(2, nf, nf).transpose(1, 2)
        coarse = imp._galerkin(fine, size)
        got = imp._stencil_apply(coarse.stencil, torch.eye(nc, dtype=torch.float64).view(1, nc, *size))
        torch.testing.assert_close(got.view(2, nc, nc).transpose(1, 2), interp.T @ dense @ interp)


def test_imputation_of_elongated_images_coarsens_one_side_only():
    g = torch.Generator().manual_seed(5)
    images = torch.randn(2, 3, 2, 300, generator=g)
    keep = torch.rand(2, 2, 300, generator=g) < 0.3
    imputer = pgc_road.NoisyLinearImputer(noise=0.0)
    ref = torch.stack([imputer(images[i], keep[i].float()) for i in range(2)])
    assert (noisy_linear_impute(images, keep, tol=1e-7) - ref).abs().max() < 1e-4


# ----------------------------------------------------------------------- confidence change


def test_confidence_change_matches_pytorch_grad_cam():
    model, x, maps = _cnn_case(size=48, b=3)
    with torch.no_grad():
        predicted = model(x).argmax(1).tolist()
    for targets, classes in ((None, predicted), (2, [2, 2, 2]), ([0, 5, 9], [0, 5, 9])):
        pgc_targets = [ClassifierOutputTarget(c) for c in classes]
        drop = DropInConfidence()(x, maps.numpy(), pgc_targets, model)
        increase = IncreaseInConfidence()(x, maps.numpy(), pgc_targets, model)
        got = confidence_change(model, x, maps, targets)
        assert isinstance(got, ConfidenceChange)
        np.testing.assert_allclose(got.drop.numpy(), drop, atol=1e-5, rtol=0)
        np.testing.assert_array_equal(got.increase.numpy(), increase)
    # both outcomes occur in this case, so the test tells drop from increase
    scaled = confidence_change(model, x, torch.cat([maps[:2], torch.full_like(maps[2:], 3.0)]), predicted)
    assert (scaled.drop > 0).any() and (scaled.increase > 0).any()
    with pytest.raises(InputError, match="maps"):
        confidence_change(model, x, maps[:2])


# ---------------------------------------------------------------------- faithfulness_scores


def test_faithfulness_scores_equal_the_separate_calls():
    model, x, maps = _cnn_case(size=24, b=3)
    maps = maps / maps.amax(dim=(1, 2), keepdim=True)
    for targets in ([1, 4, 7], lambda out: out[:, 2] - out[:, 5]):
        kwargs = dict(percentiles=[20, 50, 80], noise=0.02, seed=3)
        got = faithfulness_scores(model, x, maps, targets, **kwargs)
        assert list(got) == ["road_morf", "road_lerf", "road_combined", "confidence_drop", "confidence_increase"]
        assert all(v.shape == (3,) for v in got.values())
        # with noise: the same draws as the combined call and road_curves (both orders in one pass)
        curves = road_curves(model, x, maps, targets, **kwargs)
        torch.testing.assert_close(got["road_morf"], curves["morf"].mean(1), rtol=0, atol=0)
        torch.testing.assert_close(got["road_lerf"], curves["lerf"].mean(1), rtol=0, atol=0)
        torch.testing.assert_close(got["road_combined"], road(model, x, maps, targets, **kwargs), rtol=0, atol=0)
        change = confidence_change(model, x, maps, targets)
        torch.testing.assert_close(got["confidence_drop"], change.drop, rtol=0, atol=0)
        torch.testing.assert_close(got["confidence_increase"], change.increase, rtol=0, atol=0)
    assert (got["road_morf"] != got["road_lerf"]).all()
    # without noise: each order alone gives the same numbers (up to the float sums of other chunks)
    exact = faithfulness_scores(model, x, maps, None, percentiles=[20, 50, 80], noise=0)
    for order in ("morf", "lerf"):
        alone = road(model, x, maps, None, percentiles=[20, 50, 80], order=order, noise=0)
        torch.testing.assert_close(exact[f"road_{order}"], alone, rtol=0, atol=1e-5)
    with pytest.raises(InputError, match="maps"):
        faithfulness_scores(model, x, maps[:2])


def test_road_channels_last_forwards_give_the_same_scores():
    model, x, maps = _cnn_case(size=32, b=2)
    plain = faithfulness_scores(model, x, maps, 3, percentiles=[30, 70], noise=0)
    fast = faithfulness_scores(model, x, maps, 3, percentiles=[30, 70], noise=0, channels_last=True)
    for key in plain:
        torch.testing.assert_close(fast[key], plain[key], rtol=0, atol=1e-4)


# ------------------------------------------------------------------------- random baseline


def test_random_map_baseline_scores_seeded_uniform_maps():
    model, x, _ = _cnn_case(size=32, b=2)
    state = torch.get_rng_state()
    base = random_map_baseline(road, model, x, 3, seed=5, percentiles=[20, 80], noise=0)
    assert torch.equal(torch.get_rng_state(), state)
    maps = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(base, road(model, x, maps, 3, percentiles=[20, 80], noise=0))
    g = torch.Generator().manual_seed(5)
    two = [confidence_change(model, x, torch.rand(2, 32, 32, generator=g), 3) for _ in range(2)]
    got = random_map_baseline(confidence_change, model, x, 3, seed=5, repeats=2)
    assert isinstance(got, ConfidenceChange)
    torch.testing.assert_close(got.drop, (two[0].drop + two[1].drop) / 2)
    torch.testing.assert_close(got.increase, (two[0].increase + two[1].increase) / 2)


# -------------------------------------------------------------------- parameter randomisation


class _Ramp(nn.Module):
    """A layer whose weight is a 4 x 4 map; ``reset_parameters`` sets ``scale * ramp``."""

    def __init__(self, scale: float, init: float):
        super().__init__()
        self.scale = scale
        self.weight = nn.Parameter(init * torch.arange(1.0, 17.0).view(4, 4))

    def reset_parameters(self):
        with torch.no_grad():
            self.weight.copy_(self.scale * torch.arange(1.0, 17.0).view(4, 4))

    def forward(self, x):
        return x + self.weight


class _TwoMaps(nn.Module):
    """Map = a.weight + b.weight. Original: a = ramp, b = 0 -> ramp. Random a = 0, random b = -2 ramp.
    ``b`` is registered first but called last, so it is the top layer."""

    def __init__(self):
        super().__init__()
        self.b = _Ramp(scale=-2.0, init=0.0)
        self.a = _Ramp(scale=0.0, init=1.0)

    def forward(self, x):
        return self.b(self.a(x)).flatten(1)


def _sum_map(model, inputs):
    return (model.a.weight + model.b.weight).expand(inputs.shape[0], 4, 4).detach()


def test_parameter_randomisation_known_similarities_cascade_and_independent():
    model = _TwoMaps()
    x = torch.zeros(2, 4, 4)
    assert parameterised_layers(model, x) == ["b", "a"]
    # cascade: b random -> -ramp (|.| = ramp); then a random too -> -2 ramp
    out = parameter_randomisation(model, x, _sum_map, targets=0)
    assert [name for name, _ in out] == ["b", "a"]
    assert [s.tolist() for _, s in out] == [[1.0, 1.0], [1.0, 1.0]]
    signed = parameter_randomisation(model, x, _sum_map, targets=0, similarity="spearman_signed")
    assert [s.tolist() for _, s in signed] == [[-1.0, -1.0], [-1.0, -1.0]]
    # independent: a random alone (b original = 0) -> a constant map: NaN
    independent = parameter_randomisation(model, x, _sum_map, targets=0, cascade=False, similarity="spearman_signed")
    assert [name for name, _ in independent] == ["b", "a"]
    assert independent[0][1].tolist() == [-1.0, -1.0] and torch.isnan(independent[1][1]).all()
    assert torch.equal(model.a.weight, torch.arange(1.0, 17.0).view(4, 4)) and not model.b.weight.any()


def test_parameter_randomisation_explainer_ignoring_the_model_scores_one():
    model = timm_vit()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fixed = torch.rand(2, 32, 32, generator=torch.Generator().manual_seed(1)) - 0.5
    layers = parameterised_layers(model, x)
    assert layers[0] == "head" and layers[-1] == ""  # the root owns cls_token / pos_embed: used first
    for name in ("blocks.1.attn.proj", "blocks.1.attn.qkv", "blocks.0.norm1", "norm", "patch_embed.proj"):
        assert name in layers
    assert layers.index("blocks.1.attn.proj") < layers.index("blocks.1.attn.qkv") < layers.index("blocks.0.mlp.fc2")
    out = parameter_randomisation(model, x, lambda m, inputs: fixed, similarity="ssim")
    assert [n for n, _ in out] == layers
    assert all(torch.allclose(s, torch.ones(2)) for _, s in out)


def test_parameter_randomisation_passes_the_original_target_and_restores_state_on_error():
    model = resnet18()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        predicted = model(x).argmax(1)
    seen, calls = [], []

    def explain(m, inputs, target):
        calls.append(1)
        seen.append(target.classes.clone())
        if len(calls) == 3:
            raise RuntimeError("explainer failed")
        out = m(inputs)
        return out[:, :1, None].expand(-1, 8, 8) * torch.linspace(0, 1, 64).view(1, 8, 8)

    rng = torch.get_rng_state()
    with pytest.raises(RuntimeError, match="explainer failed"):
        parameter_randomisation(model, x, explain, layers=["fc", "layer4.1.bn2", "conv1"])
    assert torch.equal(torch.get_rng_state(), rng)
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(s, predicted) for s in seen)  # the original prediction at every step
    # a successful independent run restores the state too
    parameter_randomisation(
        model, x, lambda m, inputs: m(inputs)[:, :9].view(2, 3, 3), cascade=False, layers=["fc", "layer4.1.bn2"]
    )
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)


def test_parameter_randomisation_errors_and_similarities():
    model = _TwoMaps()
    x = torch.zeros(1, 4, 4)
    with pytest.raises(InputError, match="similarity"):
        parameter_randomisation(model, x, _sum_map, similarity="pearson")
    with pytest.raises(InputError, match="unknown"):
        parameter_randomisation(model, x, _sum_map, layers=["b", "nope"])
    with pytest.raises(InputError, match=r"\[B, H, W\]"):
        parameter_randomisation(model, x, lambda m, inputs: torch.zeros(4, 4))
    # ssim equals scikit-image's on min-max scaled maps
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 16, 20, generator=g), torch.rand(2, 16, 20, generator=g) + torch.linspace(0, 1, 20)
    got = map_similarity(a, b, "ssim")
    for i in range(2):
        sa = (a[i] - a[i].min()) / (a[i].max() - a[i].min())
        sb = (b[i] - b[i].min()) / (b[i].max() - b[i].min())
        ref = structural_similarity(sa.double().numpy(), sb.double().numpy(), data_range=1.0)
        assert got[i].item() == pytest.approx(ref, abs=1e-5)


def test_randomization_sanity_check_is_the_cascade_of_parameter_randomisation_on_named_layers():
    model = _TwoMaps()
    x = torch.zeros(1, 4, 4)
    df = randomization_sanity_check(lambda m: _sum_map(m, x), model, ["b", "a"])
    new = parameter_randomisation(model, x, _sum_map, layers=["b", "a"], similarity="spearman_signed")
    np.testing.assert_array_equal(df["spearman"].to_numpy(), torch.cat([s for _, s in new]).numpy())
