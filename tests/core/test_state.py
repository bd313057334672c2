"""Hooks are always removed and model state is always restored."""

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


def test_works_inside_no_grad_and_matches_outside():
    model = resnet18()
    x = torch.randn(2, 3, 64, 64)
    vit, y = timm_vit(depth=2), torch.randn(1, 3, 32, 32)
    outside = vizkit.cam(model, x, [1, 2], layers="layer4")
    with torch.no_grad():
        inside = vizkit.cam(model, x, [1, 2], layers="layer4")
        rel_inside = vizkit.gradient_attention(vit, y, 0)
    rel_outside = vizkit.gradient_attention(vit, y, 0)
    torch.testing.assert_close(inside.heatmap, outside.heatmap)
    torch.testing.assert_close(rel_inside.heatmap, rel_outside.heatmap)
    assert rel_inside.heatmap.std() > 0.01


def test_in_place_ops_after_the_layer_do_not_corrupt_activations():
    # torchvision BasicBlock does `out += identity` right after bn2
    model = resnet18()
    x = torch.randn(1, 3, 64, 64)
    exp = vizkit.cam(model, x, 0, layers="layer4.1.bn2", method="hirescam")
    store = {}

    def keep(module, inputs, output):
        store["a"] = output.detach().clone()  # returns None: the output is not replaced

    h = model.layer4[1].bn2.register_forward_hook(keep)
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    a = store["a"].requires_grad_(True)
    # the rest of the network from bn2's output on, written out (HiResCAM = relu(sum_c grad * A))
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        identity = model.layer4[0](model.layer3(model.layer2(model.layer1(stem))))
    out = model.fc(torch.flatten(model.avgpool(torch.relu(a + identity)), 1))
    (g,) = torch.autograd.grad(out[0, 0], a)
    torch.testing.assert_close(exp.layer_maps["layer4.1.bn2"], (g * a).sum(1).clamp(min=0).detach(), atol=1e-5, rtol=0)


def test_input_requiring_grad_is_not_touched():
    model = resnet18()
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    vizkit.cam(model, x, 0, layers="layer4")
    assert x.grad is None
