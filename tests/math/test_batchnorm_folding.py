""":func:`vizkit.metrics.batchnorm_folding.fold_batchnorm` and the ``fold_batchnorm`` option of the ROAD functions:
the folded weights by hand, the same outputs and scores as the unfolded model, the caller's model untouched,
and one clear error for a model in training mode or one torch.fx cannot trace."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vizkit.errors import InputError
from vizkit.metrics import faithfulness_scores, road, road_curves
from vizkit.metrics.batchnorm_folding import fold_batchnorm


def _bn_cnn() -> nn.Sequential:
    """Conv-BN-ReLU twice, pool, Linear, eval mode, with BatchNorm statistics and affine parameters far from
    the identity (a fold that ignored any of them would change the outputs)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, padding=1),
        nn.BatchNorm2d(5),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    )
    g = torch.Generator().manual_seed(1)
    for bn in (model[1], model[4]):
        c = bn.num_features
        bn.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        bn.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
        bn.bias.data.copy_(torch.rand(c, generator=g) - 0.5)
    return model.eval()


def test_fold_of_one_conv_and_batchnorm_by_hand():
    # 1x1 convolution w = 2, b = 1 then BN (mean 3, var 4 - eps, gamma 5, beta 7): scale = 5 / sqrt(4) = 2.5,
    # folded weight 2 * 2.5 = 5, folded bias (1 - 3) * 2.5 + 7 = 2
    conv, bn = nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)
    conv.weight.data.fill_(2.0)
    conv.bias.data.fill_(1.0)
    bn.running_mean.fill_(3.0)
    bn.running_var.fill_(4.0 - bn.eps)
    bn.weight.data.fill_(5.0)
    bn.bias.data.fill_(7.0)
    folded = fold_batchnorm(nn.Sequential(conv, bn).eval())
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert len(convs) == 1
    assert convs[0].weight.item() == pytest.approx(5.0, abs=1e-6)
    assert convs[0].bias.item() == pytest.approx(2.0, abs=1e-6)
    x = torch.tensor([[[[0.0, 1.0], [-2.0, 0.5]]]])
    torch.testing.assert_close(folded(x), 5 * x + 2)


def test_folded_copy_computes_the_same_and_leaves_the_model_alone():
    model = _bn_cnn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3, 12, 10, generator=torch.Generator().manual_seed(2))
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)
    # the caller's model: same modules, same tensors, still in eval mode
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 2
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_fold_refuses_training_mode_and_untraceable_models():
    with pytest.raises(InputError, match="eval mode"):
        fold_batchnorm(_bn_cnn().train())

    class Branchy(nn.Module):  # control flow on a tensor's value: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else -self.conv(x)

    with pytest.raises(
        InputError, match=r"cannot fold BatchNorm into the convolutions of Branchy.*leave fold_batchnorm"
    ):
        fold_batchnorm(Branchy().eval())


def _bn_calls(model: nn.Sequential) -> list[int]:
    """A counter of the forward calls of the model's BatchNorm modules (a folded copy never calls them)."""
    calls = [0]
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_road_scores_with_folded_batchnorm_equal_the_unfolded_ones():
    model = _bn_cnn()
    calls = _bn_calls(model)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 3, 12, 10, generator=g)
    maps = torch.rand(3, 12, 10, generator=g)
    kw = {"percentiles": (20, 50, 80), "noise": 0.01, "seed": 4, "batch_size": 4}

    plain = road_curves(model, x, maps, **kw)
    assert calls[0] > 0
    calls[0] = 0
    folded = road_curves(model, x, maps, fold_batchnorm=True, **kw)
    assert calls[0] == 0  # every forward (the clean one too) went through the folded copy
    for order in ("morf", "lerf"):
        torch.testing.assert_close(folded[order], plain[order], atol=1e-5, rtol=0)

    for order in ("morf", "lerf", "combined"):
        torch.testing.assert_close(
            road(model, x, maps, order=order, fold_batchnorm=True, **kw), road(model, x, maps, order=order, **kw)
        )
    assert calls[0] > 0  # the unfolded calls above
    calls[0] = 0
    scores = faithfulness_scores(model, x, maps, fold_batchnorm=True, **kw)
    assert calls[0] == 0  # the clean, imputed and map-weighted forwards
    for key, value in faithfulness_scores(model, x, maps, **kw).items():
        torch.testing.assert_close(scores[key], value, atol=1e-5, rtol=0)
    assert not math.isnan(float(scores["road_combined"].sum()))


def test_road_functions_pass_fold_batchnorm_on():
    # the option reaches the fold: a model in training mode is refused by each entry point
    model = _bn_cnn().train()
    x, maps = torch.randn(1, 3, 6, 6), torch.rand(1, 6, 6)
    for fn in (road_curves, road, faithfulness_scores):
        with pytest.raises(InputError, match="eval mode"):
            fn(model, x, maps, percentiles=(50,), fold_batchnorm=True)
