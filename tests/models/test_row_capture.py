"""Row-mode attention capture (vizkit.hooks.RowAttentionCapture): the attention rows of the new
queries of chosen decoder layers during ``generate`` (KV cache on), through the core's
block-scoped torch-function mode.

Checked against eager ``output_attentions`` on tiny random models built in-process (a plain
Llama causal LM, LLaVA and Qwen2-VL from the scenario's ``save_random_vlm``; 4 query heads
over 2 key/value heads, so grouped-query attention is always exercised); generation under the
default sdpa must be bit-identical with and without the capture.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers as T
from models import all_hooks
from torch import nn
from torch.overrides import _get_current_function_mode_stack

from vizkit.errors import CaptureError, ParameterError
from vizkit.hooks import RowAttentionCapture

ATOL = 1e-5
PROMPT = "What colour is the star?"
NEW = 6  # generated tokens: one prefill call + NEW - 1 decoding calls


# ----------------------------------------------------------------------------- models
def tiny_llama() -> nn.Module:
    torch.manual_seed(0)
    cfg = T.LlamaConfig(
        vocab_size=100,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return T.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (model, inputs of a batch of one)."""
    import vlm_folders as VF
    from PIL import Image

    out = {
        "llama": (
            tiny_llama(),
            {
                "input_ids": torch.randint(3, 100, (1, 9), generator=torch.Generator().manual_seed(1)),
                "attention_mask": torch.ones(1, 9, dtype=torch.long),
            },
        )
    }
    root = tmp_path_factory.mktemp("row_capture_vlms")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (56, 84, 3), dtype=np.uint8))
    for arch, cls, tag, save in (
        ("llava", T.LlavaForConditionalGeneration, "<image>\n", VF.save_random_llava),
        (
            "qwen2_vl",
            T.Qwen2VLForConditionalGeneration,
            "<|vision_start|><|image_pad|><|vision_end|>",
            VF.save_random_qwen2_vl,
        ),
    ):
        folder = save(root / arch, layers=3)
        model = cls.from_pretrained(folder, dtype=torch.float32, local_files_only=True).eval()
        proc = T.AutoProcessor.from_pretrained(folder, local_files_only=True)
        inputs = proc(text=[f"USER: {tag}{PROMPT} ASSISTANT:"], images=[image], return_tensors="pt")
        out[arch] = (model, {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)})
    return out


def decoder(model: nn.Module) -> nn.ModuleList:
    inner = model.model
    return inner.language_model.layers if hasattr(inner, "language_model") else inner.layers


def blocks(model: nn.Module, layers) -> list[tuple[str, nn.Module]]:
    return [(f"layer{i}", decoder(model)[i]) for i in layers]


def vizkit_hooks(model: nn.Module) -> int:
    """Hooks of vizkit's left on any module (HF installs output-recording hooks of its own on first use)."""
    return sum(
        getattr(h, "__module__", "").startswith("vizkit")
        for m in model.modules()
        for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks)
        for h in d.values()
    )


def implementations(model: nn.Module) -> list[str]:
    return [model.config._attn_implementation] + [b.self_attn.config._attn_implementation for b in decoder(model)]


def generate(model, inputs, **kw):
    return model.generate(
        **inputs,
        max_new_tokens=NEW,
        min_new_tokens=NEW,
        do_sample=False,
        pad_token_id=0,
        return_dict_in_generate=True,
        output_scores=True,
        **kw,
    )


def eager_attentions(model, inputs, sequences) -> tuple[torch.Tensor, ...]:
    """Eager ``output_attentions`` ``[B, H, T, T]`` per layer of one teacher-forced forward over ``sequences``."""
    extra = sequences.shape[1] - inputs["input_ids"].shape[1]
    full = dict(inputs, input_ids=sequences, attention_mask=F.pad(inputs["attention_mask"], (0, extra), value=1))
    if "mm_token_type_ids" in inputs:
        full["mm_token_type_ids"] = F.pad(inputs["mm_token_type_ids"], (0, extra))
    impl = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(**full, output_attentions=True).attentions
    finally:
        model.set_attn_implementation(impl)


def fuse(att: torch.Tensor, heads) -> torch.Tensor:
    """``[..., H, K]`` -> ``[..., H', K]`` as the capture reduces heads."""
    if heads == "mean":
        return att.mean(-2, keepdim=True)
    if heads == "max":
        return att.amax(-2, keepdim=True)
    if heads == "all":
        return att
    h = heads % att.shape[-2]
    return att[..., h : h + 1, :]


def assert_rows_match(cap, att, layers, batch=0, heads="all"):
    """Each kept row equals the eager row at its position; keys after the position are 0."""
    pos = cap.positions().tolist()
    for bi, layer in enumerate(layers):
        rows = cap.rows(bi, batch_index=batch)
        assert rows.dtype == torch.float32 and rows.shape[0] == len(pos)
        for j, p in enumerate(pos):
            ref = fuse(att[layer][batch, :, p, : p + 1], heads)
            torch.testing.assert_close(rows[j, :, : p + 1], ref, atol=ATOL, rtol=0)
            assert (rows[j, :, p + 1 :] == 0).all()


# ----------------------------------------------------------------------------- generate
@pytest.mark.parametrize("name", ["llama", "llava", "qwen2_vl"])
def test_generate_is_unchanged_and_rows_equal_eager(models, name):
    model, inputs = models[name]
    layers = [0, 2]
    assert implementations(model) == ["sdpa"] * 4
    ref = generate(model, inputs)
    hooks = all_hooks(model)
    with RowAttentionCapture(blocks(model, layers), rows="last") as cap:
        assert vizkit_hooks(model) == 2 * len(layers)  # a pre- and a post-hook per captured block
        assert not _get_current_function_mode_stack()  # the mode is on only while a captured block runs
        out = generate(model, inputs)
    # the same tokens and bit-identical logits: the block's own sdpa computed the output
    assert torch.equal(out.sequences, ref.sequences)
    assert all(torch.equal(a, b) for a, b in zip(out.scores, ref.scores))
    assert implementations(model) == ["sdpa"] * 4 and all_hooks(model) == hooks and vizkit_hooks(model) == 0
    L = inputs["input_ids"].shape[1]
    assert cap.positions().tolist() == list(range(L - 1, L - 1 + NEW))
    # one record per forward call; the prefill's key count is the prompt, each step adds one
    assert [t.shape for _, t in cap.records["layer2"]] == [(1, 4, 1, L + j) for j in range(NEW)]
    assert cap.rows("layer2").shape == (NEW, 4, L + NEW - 1)
    torch.testing.assert_close(cap.rows(1).sum(-1), torch.ones(NEW, 4), atol=ATOL, rtol=0)
    assert_rows_match(cap, eager_attentions(model, inputs, out.sequences), layers)


@pytest.mark.parametrize("part", ["layer", "self_attn"])
def test_padded_batch_generate_with_packed_grouped_query_attention(models, part):
    """Left padding gives HF's sdpa a mask, so each decoding step packs the single query of
    4 heads over 2 key/value heads into ``q [B, 2, 2, d]``; the rows must still be per head.
    The captured block may be the decoder layer or its attention module."""
    model, _ = models["llama"]
    ids = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    ids[1, :3], mask[1, :3] = 0, 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    layers = [0, 1, 2]
    ref = generate(model, inputs)
    chosen = blocks(model, layers) if part == "layer" else [(n, b.self_attn) for n, b in blocks(model, layers)]
    with RowAttentionCapture(chosen, rows="last", heads="all") as cap:
        out = generate(model, inputs)
    assert torch.equal(out.sequences, ref.sequences)
    assert all(torch.equal(a, b) for a, b in zip(out.scores, ref.scores))
    assert [t.shape[:3] for _, t in cap.records["layer0"]] == [(2, 4, 1)] * NEW
    att = eager_attentions(model, inputs, out.sequences)
    for b in (0, 1):
        assert_rows_match(cap, att, layers, batch=b)
    assert (cap.rows(0, batch_index=1)[:, :, :3] == 0).all()  # padding keys get nothing
    assert cap.rows(0, batch_index=None).shape == (2, NEW, 4, 9 + NEW - 1)


def test_eager_model_records_the_softmax_rows_only(models):
    model, inputs = models["llama"]
    model.set_attn_implementation("eager")
    try:
        ref = generate(model, inputs)
        with RowAttentionCapture(blocks(model, [1]), rows="last", heads="mean") as cap:
            out = generate(model, inputs)
        assert implementations(model) == ["eager"] * 4
    finally:
        model.set_attn_implementation("sdpa")
    assert torch.equal(out.sequences, ref.sequences)
    assert all(torch.equal(a, b) for a, b in zip(out.scores, ref.scores))
    # only the kept row is stored, not a view that keeps the model's [q, k] matrix alive
    for _, t in cap.records["layer1"]:
        assert t.shape[:3] == (1, 1, 1) and t.untyped_storage().nbytes() == t.numel() * 4
    assert_rows_match(cap, eager_attentions(model, inputs, out.sequences), [1], heads="mean")


# ----------------------------------------------------------------------------- teacher forcing
@pytest.mark.parametrize("heads", ["all", "mean", "max", 1, -1])
@pytest.mark.parametrize("name", ["llama", "llava", "qwen2_vl"])
def test_all_rows_of_a_forward_equal_eager(models, name, heads):
    model, inputs = models[name]
    layers = [0, 1, 2]
    with torch.no_grad():
        ref = model(**inputs).logits
        with RowAttentionCapture(blocks(model, layers), rows="all", heads=heads) as cap:
            logits = model(**inputs).logits
    assert torch.equal(logits, ref)
    T_ = inputs["input_ids"].shape[1]
    assert cap.positions().tolist() == list(range(T_))
    att = eager_attentions(model, inputs, inputs["input_ids"])
    for bi, layer in enumerate(layers):
        rows = cap.rows(bi)
        assert rows.shape == (T_, 4 if heads == "all" else 1, T_)
        torch.testing.assert_close(rows, fuse(att[layer][0].transpose(0, 1), heads), atol=ATOL, rtol=0)


class SDPA(nn.Module):
    """A block that calls ``F.scaled_dot_product_attention`` directly (twice: only the first counts)."""

    def forward(self, q, k, v, **kw):
        out = F.scaled_dot_product_attention(q, k, v, **kw)
        F.scaled_dot_product_attention(q, k, v, **kw)
        return out


@pytest.mark.parametrize(
    "case", ["plain", "causal", "causal_q_shorter", "bool", "float", "broadcast", "scale", "gqa", "fully_masked"]
)
def test_sdpa_rows_are_the_kernels_probabilities(case):
    """The rows recorded for any sdpa call multiply the values into the kernel's own output."""
    g = torch.Generator().manual_seed(0)
    B, H, Hk, Lq, Lk, d = 2, 4, 4, 5, 7, 8
    kw: dict = {}
    if case == "causal":
        Lk, kw = Lq, {"is_causal": True}
    elif case == "causal_q_shorter":  # torch aligns is_causal to the first key (tril of [q, k])
        kw = {"is_causal": True}
    elif case == "bool":
        kw = {"attn_mask": torch.rand(B, 1, Lq, Lk, generator=g) > 0.4}
        kw["attn_mask"][..., 0] = True
    elif case == "float":
        kw = {"attn_mask": torch.randn(B, H, Lq, Lk, generator=g)}
    elif case == "broadcast":
        kw = {"attn_mask": torch.rand(1, 1, 1, Lk, generator=g) > 0.3}
        kw["attn_mask"][..., -1] = True
    elif case == "scale":
        kw = {"scale": 0.37}
    elif case == "gqa":
        Hk, kw = 2, {"enable_gqa": True}
    elif case == "fully_masked":
        kw = {"attn_mask": torch.ones(Lq, Lk, dtype=torch.bool)}
        kw["attn_mask"][1] = False
    q, k, v = (
        torch.randn(B, H, Lq, d, generator=g),
        torch.randn(B, Hk, Lk, d, generator=g),
        torch.randn(B, Hk, Lk, d, generator=g),
    )
    block = SDPA()
    ref = F.scaled_dot_product_attention(q, k, v, **kw)
    with RowAttentionCapture([("b", block)], rows="all") as full, torch.no_grad():
        out = block(q, k, v, **kw)
    with RowAttentionCapture([("b", block)], rows="last") as last, torch.no_grad():
        block(q, k, v, **kw)
    assert torch.equal(out, ref)
    assert len(full.records["b"]) == 1  # the first attention of the call
    probs = full.rows("b", batch_index=None).transpose(1, 2)  # [B, H, Lq, Lk]
    v_rep = v.repeat_interleave(H // Hk, dim=1)
    torch.testing.assert_close(probs @ v_rep, torch.nan_to_num(ref), atol=ATOL, rtol=0)
    torch.testing.assert_close(last.rows("b", batch_index=None)[:, 0], probs[:, :, -1], atol=0, rtol=0)
    assert full.positions().tolist() == list(range(Lk - Lq, Lk)) and last.positions().tolist() == [Lk - 1]
    if case == "fully_masked":
        assert (probs[:, :, 1] == 0).all()
    else:
        torch.testing.assert_close(probs.sum(-1), torch.ones(B, H, Lq), atol=ATOL, rtol=0)
    if case == "causal_q_shorter":
        assert (probs[:, :, 0, 1:] == 0).all() and (probs[:, :, 0, 0] == 1).all()


# ----------------------------------------------------------------------------- cleanup, errors
class Explodes(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom inside the block")


@pytest.mark.parametrize("name", ["llama", "llava"])
def test_exception_inside_a_captured_block_leaves_nothing_behind(models, name):
    model, inputs = models[name]
    generate(model, inputs)  # HF installs its own output-recording hooks on the first call
    hooks = all_hooks(model)
    layer = decoder(model)[1]
    mlp = layer.mlp
    layer.mlp = nn.Sequential(mlp, Explodes())
    try:
        with pytest.raises(RuntimeError, match="boom inside the block"):
            with RowAttentionCapture(blocks(model, [0, 1]), rows="last") as cap:
                generate(model, inputs)
    finally:
        layer.mlp = mlp
    assert all_hooks(model) == hooks and vizkit_hooks(model) == 0 and not _get_current_function_mode_stack()
    assert implementations(model) == ["sdpa"] * 4 and torch.backends.mha.get_fastpath_enabled()
    assert not cap._stack and not cap._calls
    # layer 1's attention ran before its MLP raised: both layers recorded the prefill row
    assert len(cap.records["layer0"]) == len(cap.records["layer1"]) == 1
    with RowAttentionCapture(blocks(model, [1])) as again:
        generate(model, inputs)
    assert again.rows(0).shape[0] == NEW


def test_bad_arguments_and_empty_results(models):
    model, inputs = models["llama"]
    with pytest.raises(ParameterError, match="rows="):
        RowAttentionCapture(blocks(model, [0]), rows="first")
    for bad in ("median", True, 1.5, None):
        with pytest.raises(ParameterError, match="heads="):
            RowAttentionCapture(blocks(model, [0]), heads=bad)
    with pytest.raises(CaptureError, match="head 4 is out of range"):
        with RowAttentionCapture(blocks(model, [0]), heads=4):
            generate(model, inputs)
    assert vizkit_hooks(model) == 0 and implementations(model) == ["sdpa"] * 4
    with RowAttentionCapture(blocks(model, [0])) as cap:
        pass
    with pytest.raises(CaptureError, match="no attention was captured"):
        cap.rows(0)
    with pytest.raises(CaptureError, match="not captured"):
        cap.rows("layer7")
    with pytest.raises(CaptureError, match="out of range"):
        cap.rows(3)
    assert cap.positions().tolist() == []
