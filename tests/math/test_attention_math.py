"""Rollout and gradient-weighted attention against hand-computed cases and a full-backward reference."""

import pytest
import torch
from models import timm_vit

import vizkit
from vizkit import attention_math as am

# one head, N = 3 tokens: CLS + a 1x2 patch grid; rows sum to 1
A1 = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6]])
A2 = torch.tensor([[0.2, 0.4, 0.4], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])


def heads(*rows):
    return torch.stack(rows)[None]  # [1, H, N, N]


def test_rollout_one_layer():
    # (A1 + I) / 2 = [[.75, .125, .125], [.1, .8, .1], [.05, .15, .8]] (rows already sum to 1)
    out = vizkit.rollout([heads(A1)], grid=(1, 2))
    torch.testing.assert_close(out, torch.tensor([[[0.125, 0.125]]]))


def test_rollout_two_layers():
    # a2 = (A2 + I)/2 = [[.6, .2, .2], [.25, .75, 0], [0, 0, 1]];  row 0 of a2 @ a1 = [.48, .265, .255]
    out = vizkit.rollout([heads(A1), heads(A2)], grid=(1, 2))
    torch.testing.assert_close(out, torch.tensor([[[0.265, 0.255]]]))
    full = am.rollout_matrix([heads(A1), heads(A2)])
    torch.testing.assert_close(full[0, 0], torch.tensor([0.48, 0.265, 0.255]))
    torch.testing.assert_close(full.sum(-1), torch.ones(1, 3))  # rows renormalised (vit-explain #6)


def test_rollout_without_prefix_tokens_averages_all_rows():
    # A1 read as 3 patch tokens (a 1x3 grid, no CLS): (A1 + I)/2 columns averaged over the rows
    # = [(.75+.1+.05)/3, (.125+.8+.15)/3, (.125+.1+.8)/3] = [.3, .358333, .341667]
    out = vizkit.rollout([heads(A1)], grid=(1, 3), prefix_tokens=0)
    torch.testing.assert_close(out, torch.tensor([[[0.3, 1.075 / 3, 1.025 / 3]]]))


def test_rollout_start_layer_skips_layers():
    out = vizkit.rollout([heads(A2), heads(A1)], grid=(1, 2), start_layer=1)
    torch.testing.assert_close(out, torch.tensor([[[0.125, 0.125]]]))


def test_rollout_discard_ratio_never_touches_cls_row_or_column():
    # ratio 0.5 of the (N-1)^2 = 4 patch-patch entries: A1 loses (1,2)=.2 and (2,1)=.3
    # a1 rows: [.75, .125, .125], [.1, .8, 0]/.9, [.05, 0, .8]/.85 ; a2 loses nothing (its two lowest are 0)
    # row 0 of a2 @ a1 over patches = [.6*.125 + .2*.8/.9, .6*.125 + .2*.8/.85]
    out = vizkit.rollout([heads(A1), heads(A2)], grid=(1, 2), discard_ratio=0.5)
    torch.testing.assert_close(out, torch.tensor([[[0.075 + 0.16 / 0.9, 0.075 + 0.16 / 0.85]]]))
    # a CLS column far lower than everything else is still kept
    low = torch.tensor([[0.98, 0.01, 0.01], [0.001, 0.5, 0.499], [0.001, 0.499, 0.5]])
    kept = am.discard_lowest(low[None], 0.5)
    assert kept[0, 1, 0] == 0.001 and kept[0, 2, 0] == 0.001 and kept[0, 0, 1] == 0.01
    assert int((kept[0, 1:, 1:] == 0).sum()) == 2


def test_head_fusion():
    two = heads(A1, A2)
    torch.testing.assert_close(am.fuse_heads(two, "max")[0], torch.maximum(A1, A2))
    torch.testing.assert_close(am.fuse_heads(two, "min")[0], torch.minimum(A1, A2))
    torch.testing.assert_close(am.fuse_heads(two, "mean")[0], (A1 + A2) / 2)
    with pytest.raises(vizkit.VizkitError, match="head_fusion"):
        am.fuse_heads(two, "median")


G1 = torch.tensor([[1.0, -2.0, 4.0], [0.0, 1.0, 0.0], [2.0, 0.0, -1.0]])


def test_head_fusion_by_hand():
    # one head each, N = 3 tokens (tests/core/test_explain.py's attention_gradients case)
    a1 = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.1, 0.1, 0.8]])
    g1 = torch.tensor([[2.0, -4.0, 4.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # (g1*a1)+ = [[1,0,1],[0,.6,0],[.1,.1,.8]]
    a2 = torch.tensor([[0.4, 0.4, 0.2], [0.3, 0.3, 0.4], [0.5, 0.25, 0.25]])
    g2 = torch.tensor([[1.0, 1.0, -1.0], [2.0, 2.0, 2.0], [0.0, 4.0, 0.0]])  # (g2*a2)+ = [[.4,.4,0],[.6,.6,.8],[0,1,0]]
    attn = torch.stack([a1, a2])[None]  # [1, 2 heads, 3, 3]
    grad = torch.stack([g1, g2])[None]
    w1 = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.6, 0.0], [0.1, 0.1, 0.8]])
    w2 = torch.tensor([[0.4, 0.4, 0.0], [0.6, 0.6, 0.8], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(am.gradient_weighted(attn, grad, "max")[0], torch.maximum(w1, w2))
    torch.testing.assert_close(am.gradient_weighted(attn, grad, "min")[0], torch.minimum(w1, w2))
    torch.testing.assert_close(am.gradient_weighted(attn, grad, "mean")[0], (w1 + w2) / 2)


def test_relevance_one_and_two_layers():
    # Ā1 = relu(G1 * A1) = [[.5, 0, 1], [0, .6, 0], [.2, 0, 0]];  R1 = I + Ā1
    r1 = am.relevance_matrix([heads(A1)], [heads(G1)])
    torch.testing.assert_close(r1[0], torch.tensor([[1.5, 0.0, 1.0], [0.0, 1.6, 0.0], [0.2, 0.0, 1.0]]))
    # layer 2 with unit gradients: Ā2 = A2;  R2 = R1 + A2 @ R1, row 0 = [1.88, .64, 1.6]
    r2 = am.relevance_matrix([heads(A1), heads(A2)], [heads(G1), heads(torch.ones(3, 3))])
    torch.testing.assert_close(r2[0, 0], torch.tensor([1.88, 0.64, 1.6]))


def test_relevance_clamps_before_fusing_heads():
    # head 1 contributes +1 and head 2 -1 at entry (0, 1): clamp-then-mean gives .5, not 0
    a = torch.ones(1, 2, 2, 2)
    g = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]], [[0.0, -1.0], [0.0, 0.0]]]])
    r = am.relevance_matrix([a], [g])
    assert r[0, 0, 1] == pytest.approx(0.5)


def chefer_reference(model, x, classes):
    """Chefer et al.'s recipe with plain hooks: non-fused attention, full backward, grads by
    tensor hooks, paired with their layer by name."""
    attns, grads = {}, {}
    handles = []
    for i, blk in enumerate(model.blocks):
        blk.attn.fused_attn = False

        def hook(module, inputs, output, i=i):
            attns[i] = output
            output.register_hook(lambda g, i=i: grads.__setitem__(i, g))

        handles.append(blk.attn.attn_drop.register_forward_hook(hook))
    try:
        logits = model(x)
        logits[torch.arange(len(classes)), torch.tensor(classes)].sum().backward()
    finally:
        for h in handles:
            h.remove()
        for blk in model.blocks:
            blk.attn.fused_attn = True
        model.zero_grad()
    n = attns[0].shape[-1]
    r = torch.eye(n).expand(len(classes), n, n)
    for i in range(len(model.blocks)):
        cam = (grads[i] * attns[i]).clamp(min=0).mean(1)
        r = r + cam @ r
    return r[:, 0, 1:].reshape(len(classes), 4, 4).detach()


def test_gradient_attention_equals_full_backward_reference():
    model = timm_vit(depth=3)
    x = torch.randn(2, 3, 32, 32)
    exp = vizkit.gradient_attention(model, x, [1, 3], layers="all")
    ref = chefer_reference(model, x, [1, 3])
    relevance = exp.layer_maps  # per-layer maps exist for every block
    assert list(relevance) == ["blocks.0", "blocks.1", "blocks.2"]
    # compare before normalisation: rebuild the raw map from the same pipeline
    raw = vizkit.gradient_attention(model, x, [1, 3])
    expected = ref.clamp(min=0)
    expected = expected - expected.flatten(1).min(1).values[:, None, None]
    expected = expected / (expected.flatten(1).max(1).values[:, None, None] + 1e-7)
    up = torch.nn.functional.interpolate(expected[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(raw.heatmap, up, atol=1e-5, rtol=0)
    assert exp.heatmap.shape == (2, 32, 32) and exp.targets.tolist() == [1, 3]


def test_rollout_of_captured_attention_by_hand():
    """timm's own attention probabilities (its non-fused path, read at ``attn_drop``) rolled out by
    hand -- heads' max, ``(A + I) / 2`` renormalised per row, ``R = A_l R`` -- against vizkit's
    capture and rollout."""
    model = timm_vit(depth=2)
    x = torch.randn(2, 3, 32, 32)
    out = vizkit.rollout(vizkit.attention(model, x), head_fusion="max")
    probs = []
    hooks = [b.attn.attn_drop.register_forward_hook(lambda m, i, o: probs.append(o.detach())) for b in model.blocks]
    fused = [b.attn.fused_attn for b in model.blocks]
    try:
        for b in model.blocks:
            b.attn.fused_attn = False
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        for b, f in zip(model.blocks, fused):
            b.attn.fused_attn = f
    assert len(probs) == 2 and probs[0].shape == (2, 2, 17, 17)
    eye = torch.eye(17)
    r = eye.expand(2, 17, 17)
    for p in probs:
        a = (p.amax(1) + eye) / 2
        r = (a / a.sum(-1, keepdim=True)) @ r
    torch.testing.assert_close(out, r[:, 0, 1:].reshape(2, 4, 4))
