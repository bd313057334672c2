"""vizkit.state.preserved_state around every entry point: train/eval mode, requires_grad and the
attention implementation are restored, and no hook is left, after 200 calls and after an exception
mid-backward."""

import pytest
import torch
from models import all_hooks, hf_vit, resnet18, timm_vit
from torch import nn

import vizkit


def snapshot(model):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        getattr(getattr(model, "config", None), "_attn_implementation", None),
    )


def mixed_state(model):
    model.train()
    for i, m in enumerate(model.modules()):
        m.training = i % 3 == 0
    for i, p in enumerate(model.parameters()):
        p.requires_grad_(i % 2 == 0)
    return snapshot(model)


def test_two_hundred_calls_leave_nothing_behind():
    model = timm_vit(depth=2)
    before = mixed_state(model)
    x = torch.randn(1, 3, 32, 32)
    calls = [
        lambda: vizkit.cam(model, x, 0, layers="auto"),
        lambda: vizkit.cam(model, x, 1, layers="all", method="gradcam++"),
        lambda: vizkit.gradient_attention(model, x, 0),
        lambda: vizkit.attention(model, x),
    ]
    for i in range(200):
        calls[i % 4]()
    assert all_hooks(model) == 0
    assert snapshot(model) == before
    assert all(p.grad is None for p in model.parameters())  # no parameter gradient was computed


class Boom(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("boom in backward")


class Explodes(nn.Module):
    def forward(self, x):
        return Boom.apply(x)


def test_exception_mid_backward_restores_everything():
    model = resnet18()
    model.layer4.append(Explodes())  # runs after the captured layer3, so backward reaches it
    before = mixed_state(model)
    with pytest.raises(RuntimeError, match="boom in backward"):
        vizkit.cam(model, torch.randn(2, 3, 64, 64), [0, 1], layers="layer3")
    assert all_hooks(model) == 0
    assert snapshot(model) == before
    assert torch.backends.mha.get_fastpath_enabled()


def test_exception_mid_backward_in_gradient_attention():
    model = timm_vit(depth=2)
    model.blocks[1].mlp.fc2 = nn.Sequential(model.blocks[1].mlp.fc2, Explodes())
    before = mixed_state(model)
    with pytest.raises(RuntimeError, match="boom"):
        vizkit.gradient_attention(model, torch.randn(1, 3, 32, 32), 0)
    assert all_hooks(model) == 0 and snapshot(model) == before
    # the torch-function mode is gone: plain softmax is untouched afterwards
    from torch.overrides import _get_current_function_mode_stack

    assert not _get_current_function_mode_stack()


def test_attention_implementation_is_restored():
    model = hf_vit()
    before = snapshot(model)
    vizkit.gradient_attention(model, torch.randn(1, 3, 32, 32), 0)
    vizkit.cam(model, torch.randn(1, 3, 32, 32), 0)
    assert snapshot(model) == before and all_hooks(model) == 0
