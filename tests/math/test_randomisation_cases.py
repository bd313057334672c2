""":mod:`vizkit.metrics.randomisation` on exact cases a mutation run found untested: every parameter a
randomisation step draws, replayed by hand from the same seed (own parameters only or whole
modules, ``reset_parameters`` or normal(0, 0.02) weights and zero biases), the target handed to a
three-argument ``explain``, argument checks, and the similarities (Spearman by hand, SSIM against
scikit-image)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity
from torch import nn

from vizkit.errors import InputError
from vizkit.metrics import map_similarity, parameter_randomisation, randomization_sanity_check


class Own(nn.Module):
    """A leaf owning a weight and a bias, without ``reset_parameters``."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 1.5, 3))
        self.bias = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x * self.weight + self.bias


class Block(nn.Module):
    """Owns ``scale``, has a parameterised child and a ``reset_parameters`` that resets both."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))
        self.child = nn.Linear(3, 3)

    def reset_parameters(self):
        nn.init.zeros_(self.scale)
        self.child.reset_parameters()

    def forward(self, x):
        return self.child(x) * self.scale


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.own = Own()
        self.block = Block()
        self.stack = nn.Sequential(Own())  # no reset_parameters, one parameterised child
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.stack(self.block(self.own(x))))


def _net() -> Net:
    torch.manual_seed(5)
    return Net()


def _state(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _assert_states_equal(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


def _normal_own(m: Own) -> None:
    m.weight.normal_(0.0, 0.02)
    m.bias.zero_()


X = torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 3.0]])


def _maps(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``[B, 2, 3]``: the logits times the first layer's output, a map that every layer changes."""
    return m(x)[:, :, None] * m.own(x)[:, None, :]


def test_own_parameters_of_each_layer_independently_replayed_by_hand():
    net = _net()
    original = _state(net)
    seen = []

    def explain(m, x):
        seen.append(_state(m))
        return _maps(m, x)

    out = parameter_randomisation(net, X, explain, layers=["own", "block", "stack", "head"], cascade=False)
    assert [name for name, _ in out] == ["own", "block", "stack", "head"]
    _assert_states_equal(_state(net), original)  # restored

    ref = _net()
    want = [_state(ref)]
    with torch.no_grad():
        torch.manual_seed(0)  # the default seed, once for all steps
        _normal_own(ref.own)  # a leaf without reset_parameters: normal weights, zero biases
        want.append(_state(ref))
        ref.load_state_dict(original)
        ref.block.scale.normal_(0.0, 0.02)  # children with parameters: only its own, never reset_parameters()
        want.append(_state(ref))
        ref.load_state_dict(original)  # the Sequential owns nothing: unchanged
        want.append(_state(ref))
        ref.load_state_dict(original)
        ref.head.reset_parameters()  # a leaf with reset_parameters
        want.append(_state(ref))
    assert len(seen) == len(want)
    for got, w in zip(seen, want):
        _assert_states_equal(got, w)


def test_whole_modules_cumulatively_replayed_by_hand():
    net = _net()
    seen = []

    def explain_fn(m):
        seen.append(_state(m))
        return _maps(m, X)

    df = randomization_sanity_check(explain_fn, net, ["block", "stack", "own"])
    assert list(df.columns) == ["step", "layer", "sample", "spearman", "spearman_abs"]
    assert df.layer.tolist() == ["block", "block", "stack", "stack", "own", "own"]

    ref = _net()
    want = [_state(ref)]
    with torch.no_grad():
        torch.manual_seed(0)
        ref.block.reset_parameters()  # the block's own reset_parameters, then its child's again
        ref.block.child.reset_parameters()
        want.append(_state(ref))
        _normal_own(ref.stack[0])  # the Sequential has none: its child's own parameters
        want.append(_state(ref))
        _normal_own(ref.own)
        want.append(_state(ref))
    assert len(seen) == len(want)
    for got, w in zip(seen, want):
        _assert_states_equal(got, w)
    # the correlations are those of the flattened maps with the reference maps
    ref_maps = _maps(_net(), X).detach().numpy().reshape(2, -1)
    last = _maps(_loaded(seen[-1]), X).detach().numpy().reshape(2, -1)
    for sample in range(2):
        row = df[(df.step == 2) & (df["sample"] == sample)].iloc[0]
        assert row.spearman == pytest.approx(spearmanr(ref_maps[sample], last[sample]).statistic)
        assert row.spearman_abs == pytest.approx(spearmanr(np.abs(ref_maps[sample]), np.abs(last[sample])).statistic)


def _loaded(state: dict) -> Net:
    m = _net()
    m.load_state_dict(state)
    return m


def test_explain_gets_the_target_resolved_on_the_original_model():
    net = _net()
    predicted = net(X).argmax(-1).tolist()
    chosen = [1 - c for c in predicted]
    seen = []

    def explain(m, x, target):
        seen.append(target.classes.tolist())
        return _maps(m, x)

    parameter_randomisation(net, X, explain, chosen, layers=["head"])
    assert seen == [chosen, chosen]
    seen.clear()

    def star(*args):  # a target is passed to anything that takes a third positional argument
        seen.append(args[2].classes.tolist())
        return _maps(args[0], args[1])

    parameter_randomisation(net, X, star, layers=["head"])
    assert seen == [predicted, predicted]


class _Unreadable:
    """An explain callable whose signature cannot be read: it is called with (model, inputs)."""

    __signature__ = "not a signature"

    def __call__(self, m, x):
        return _maps(m, x)


def test_explain_whose_signature_cannot_be_read():
    out = parameter_randomisation(_net(), X, _Unreadable(), layers=["head"])
    assert len(out) == 1 and out[0][1].shape == (2,)


def test_parameter_randomisation_argument_checks():
    net = _net()
    with pytest.raises(InputError, match="inputs must be a batched tensor"):
        parameter_randomisation(net, X.tolist(), _maps, layers=["head"])
    with pytest.raises(InputError, match="inputs must be a batched tensor"):
        parameter_randomisation(net, X[0], _maps, layers=["head"])
    seq = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    for layers in ("10", []):  # a string (its characters are module names here) or nothing
        with pytest.raises(InputError, match="layers must be a non-empty list of module names"):
            parameter_randomisation(seq, X, lambda m, x: m(x)[:, :, None], layers=layers)
    for bad in (lambda m, x: _maps(m, x)[:1], lambda m, x: _maps(m, x)[:, 0]):  # [B-1, H, W] or [B, H]
        with pytest.raises(InputError, match=r"explain must return a Tensor \[B, H, W\]"):
            parameter_randomisation(net, X, bad, layers=["head"])


def test_map_similarity_spearman_variants_by_hand():
    a = torch.tensor([[[1.0, -4.0], [2.0, 3.0]]])
    b = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    # signed ranks [2, 1, 3, 4] vs [1, 2, 3, 4]: rho = 1 - 6 * 2 / (4 * 15) = 0.8; absolute [1, 4, 2, 3]: rho = 0.4
    assert map_similarity(a, b, "spearman_signed").tolist() == [pytest.approx(0.8)]
    assert map_similarity(a, b).tolist() == [pytest.approx(0.4)]  # the default: absolute values
    with pytest.raises(InputError, match="expected two maps"):
        map_similarity(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert map_similarity(a, b).dtype == torch.float32
    finally:
        torch.set_default_dtype(default)


@pytest.mark.parametrize("shape", [(7, 7), (9, 12)])
def test_ssim_equals_scikit_image(shape):
    g = torch.Generator().manual_seed(3)
    # mostly dark maps with a few bright pixels: small local means, where SSIM's constants matter
    a = torch.rand(2, *shape, generator=g) ** 8
    b = torch.rand(2, *shape, generator=g) ** 8
    ours = map_similarity(a, b, "ssim")

    def scaled(m):
        m = m.double().numpy()
        return (m - m.min()) / (m.max() - m.min())

    ref = [structural_similarity(scaled(a[i]), scaled(b[i]), data_range=1.0) for i in range(2)]
    assert ours.tolist() == pytest.approx(ref, rel=1e-5)
    with pytest.raises(InputError, match="ssim needs maps of at least 7x7 pixels"):
        map_similarity(a[:, :6], b[:, :6], "ssim")
