"""vizkit.hooks: attention capture equals each family's own attention, without changing the model;
captured activations are not corrupted by in-place ops after the layer."""

import math

import torch
import torch.nn.functional as F
from models import all_hooks, hf_clip, hf_vit, open_clip_vit, resnet18, timm_vit
from torch import nn

import vizkit
from vizkit.hooks import AttentionCapture


def test_hf_vit_equals_eager_output_attentions_and_keeps_sdpa():
    model = hf_vit()
    assert model.config._attn_implementation == "sdpa"  # transformers 5 default: empty attentions
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(pixel_values=x, output_attentions=True).attentions in (None, ()) or all(
            a is None for a in model(pixel_values=x, output_attentions=True).attentions
        )
    attn = vizkit.attention(model, x)
    assert model.config._attn_implementation == "sdpa"
    assert attn.layers == ["vit.layers.0", "vit.layers.1"]
    assert attn.grid == (4, 4) and attn.prefix_tokens == 1
    model.set_attn_implementation("eager")
    with torch.no_grad():
        ref = model(pixel_values=x, output_attentions=True)
    for i, name in enumerate(attn.layers):
        assert attn.maps[name].shape == (2, 4, 17, 17)
        torch.testing.assert_close(attn.maps[name], ref.attentions[i], atol=1e-6, rtol=0)
    torch.testing.assert_close(attn.output, ref.logits, atol=1e-5, rtol=0)


def test_hf_clip_vision_tower_equals_eager():
    model = hf_clip()
    x = torch.randn(2, 3, 32, 32)
    attn = vizkit.attention(model, x, forward=lambda t: model.get_image_features(pixel_values=t))
    assert attn.layers == [f"vision_model.encoder.layers.{i}" for i in range(3)]
    model.set_attn_implementation("eager")
    with torch.no_grad():
        ref = model.vision_model(pixel_values=x, output_attentions=True)
    for i, name in enumerate(attn.layers):
        torch.testing.assert_close(attn.maps[name], ref.attentions[i], atol=1e-6, rtol=0)


def manual_timm(block, tokens):
    y = block.norm1(tokens)
    b, n, _ = y.shape
    qkv = block.attn.qkv(y).reshape(b, n, 3, block.attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    q, k = block.attn.q_norm(q), block.attn.k_norm(k)
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


def test_timm_fused_equals_manual_softmax():
    model = timm_vit(depth=2)
    assert model.blocks[0].attn.fused_attn
    x = torch.randn(2, 3, 32, 32)
    attn = vizkit.attention(model, x)
    with torch.no_grad():
        h = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        for i, blk in enumerate(model.blocks):
            torch.testing.assert_close(attn.maps[f"blocks.{i}"], manual_timm(blk, h), atol=1e-6, rtol=0)
            h = blk(h)
        torch.testing.assert_close(attn.output, model(x), atol=1e-5, rtol=0)
    assert model.blocks[0].attn.fused_attn


def manual_mha(mha: nn.MultiheadAttention, x):  # x [B, N, E]
    q, k, _ = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, -1)
    b, n, e = x.shape
    h = mha.num_heads
    q = q.reshape(b, n, h, e // h).transpose(1, 2)
    k = k.reshape(b, n, h, e // h).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(e // h), dim=-1)


def test_open_clip_equals_manual_softmax():
    model = open_clip_vit()
    x = torch.randn(2, 3, 32, 32)
    attn = vizkit.attention(model, x, forward=model.encode_image)
    assert attn.layers == ["visual.transformer.resblocks.0", "visual.transformer.resblocks.1"]
    assert attn.grid == (4, 4) and attn.prefix_tokens == 1
    v = model.visual
    with torch.no_grad():
        h = v.conv1(x).flatten(2).transpose(1, 2)
        h = torch.cat([v.class_embedding.expand(2, 1, -1), h], 1) + v.positional_embedding
        h = v.ln_pre(v.patch_dropout(h))
        for i, blk in enumerate(v.transformer.resblocks):
            torch.testing.assert_close(
                attn.maps[f"visual.transformer.resblocks.{i}"], manual_mha(blk.attn, blk.ln_1(h)), atol=1e-6, rtol=0
            )
            h = blk(h)
        torch.testing.assert_close(attn.output, model.encode_image(x), atol=1e-5, rtol=0)


def test_explicit_mha_matches_torch_with_masks():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x = torch.randn(3, 5, 16)
    pad = torch.tensor([[False] * 5, [False] * 4 + [True], [False] * 3 + [True] * 2])
    causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    ref_out, ref_w = mha(x, x, x, key_padding_mask=pad, attn_mask=causal, average_attn_weights=False)
    cap = AttentionCapture([("mha", mha)])
    with torch.no_grad(), cap:
        out, w = mha(x, x, x, key_padding_mask=pad, attn_mask=causal, average_attn_weights=False)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=0)
    torch.testing.assert_close(w, ref_w, atol=1e-6, rtol=0)
    torch.testing.assert_close(cap.maps["mha"], ref_w, atol=1e-6, rtol=0)
    assert all_hooks(mha) == 0 and torch.backends.mha.get_fastpath_enabled()


def test_explicit_sdpa_matches_torch():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 6, 8), torch.randn(2, 2, 6, 8), torch.randn(2, 2, 6, 8)
    mask = torch.rand(6, 6) > 0.3
    mask.fill_diagonal_(True)
    cap = AttentionCapture([])
    cap._stack.append("x")
    for kwargs in ({"is_causal": True}, {"attn_mask": mask}, {"attn_mask": torch.randn(6, 6)}, {"scale": 0.3}):
        ref = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kwargs)
        cap.maps.clear()
        torch.testing.assert_close(cap.sdpa(q, k, v, enable_gqa=True, **kwargs), ref, atol=1e-5, rtol=0)
        assert cap.maps["x"].shape == (2, 4, 6, 6)
        torch.testing.assert_close(cap.maps["x"].sum(-1), torch.ones(2, 4, 6))


def test_transformer_encoder_layer_fast_path_is_bypassed():
    torch.manual_seed(0)

    class TinyViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = nn.Conv2d(1, 16, 7, 7)
            self.cls = nn.Parameter(torch.zeros(1, 1, 16))
            layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.1, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
            self.head = nn.Linear(16, 10)

        def forward(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)
            return self.head(self.encoder(t)[:, 0])

    model = TinyViT().eval()
    x = torch.randn(2, 1, 28, 28)
    attn = vizkit.attention(model, x)
    assert attn.layers == [f"encoder.layers.{i}" for i in range(3)]
    assert attn.grid == (4, 4) and attn.prefix_tokens == 1
    with torch.no_grad():
        torch.testing.assert_close(attn.output, model(x), atol=1e-5, rtol=0)
        h = torch.cat([model.cls.expand(2, -1, -1), model.patch(x).flatten(2).transpose(1, 2)], 1)
        first = model.encoder.layers[0]
        torch.testing.assert_close(attn.maps["encoder.layers.0"], manual_mha(first.self_attn, h), atol=1e-6, rtol=0)


def test_fully_masked_query_row_gives_zeros_like_torch():
    q, k, v = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8)
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[0] = False
    cap = AttentionCapture([])
    cap._stack.append("x")
    out = cap.sdpa(q, k, v, attn_mask=mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6, rtol=0)
    assert not out.isnan().any() and (cap.maps["x"][:, :, 0] == 0).all()


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
