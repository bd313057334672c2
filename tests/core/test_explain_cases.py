""":mod:`vizkit.explain` on hand-built cases a mutation run found untested: the rows of
:class:`AttentionGradients` (defaults, fusion, aggregation, the query bounds, models without a CLS
token, what an explanation records), CLS attention fused over heads, rollout of plain map lists,
the ``auto`` layer choice of the attention entry points, and the keyword inputs of a token-sequence
model."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from models import timm_vit, tiny_cnn

import vizkit
from vizkit import attention_math as am
from vizkit.errors import CaptureError, InputError, TargetError, VizkitError
from vizkit.explain import (
    AttentionGradients,
    AttentionMaps,
    _check_inputs,
    _layer_layout,
    _minmax,
    _spatial,
    attention_gradients,
    rollout,
)
from vizkit.methods.eigencam import eigencam
from vizkit.targets import Target
from vizkit.tokens import TokenLayout

G = torch.Generator().manual_seed(0)


def _ag(prefix: int = 1, targets: int = 2) -> AttentionGradients:
    """Two layers of [1, 2, 5, 5] attention (a CLS token and a 2 x 2 grid, or 4 patches and no CLS
    with a 5th token ignored), gradients for ``targets`` targets."""
    att = {n: torch.rand(1, 2, 5, 5, generator=G).softmax(-1) for n in ("b0", "b1")}
    grads = [{n: torch.randn(1, 2, 5, 5, generator=G) for n in att} for _ in range(targets)]
    scores = [torch.tensor([float(t) + 0.5]) for t in range(targets)]
    classes = [torch.tensor([t]) for t in range(targets)]
    grid = (2, 2) if prefix else (1, 5)
    return AttentionGradients(att, grads, scores, classes, ["b0", "b1"], grid, prefix, (8, 8), torch.ones(1, 3))


def _cls_grid(m: torch.Tensor) -> torch.Tensor:
    return m[:, 0, 1:].reshape(-1, 2, 2)


def test_matrix_relevance_and_layer_maps_by_hand():
    ag = _ag()
    a = [ag.attentions[n] for n in ("b0", "b1")]
    g1 = [ag.gradients[1][n] for n in ("b0", "b1")]
    g0 = [ag.gradients[0][n] for n in ("b0", "b1")]
    # defaults: target 0, mean fusion, all layers, Chefer's relevance
    assert torch.allclose(ag.matrix(), am.relevance_matrix(a, g0, "mean"))
    assert torch.allclose(ag.matrix(1, "max", None, "mean"), am.mean_relevance_matrix(a, g1, "max"))
    assert torch.allclose(ag.relevance(), _cls_grid(am.relevance_matrix(a, g0, "mean")).clamp(min=0))
    assert torch.allclose(
        ag.relevance(1, "min", ["b1"]), _cls_grid(am.relevance_matrix(a[1:], g1[1:], "min")).clamp(min=0)
    )
    assert torch.allclose(ag.layer_map(1, "b0", "max"), _cls_grid(am.gradient_weighted(a[0], g1[0], "max")))
    assert torch.allclose(ag.layer_map(1, "b0"), _cls_grid(am.gradient_weighted(a[0], g1[0], "mean")))


def test_token_relevance_rows_and_bounds():
    ag = _ag()
    m = ag.matrix(1, "max")
    assert torch.allclose(ag.token_relevance(2, 1, "max"), m[:, 2].clamp(min=0))
    assert torch.allclose(ag.token_relevance(-5, 1, "max"), m[:, 0].clamp(min=0))  # -N is the first position
    assert torch.allclose(ag.token_relevance(0), ag.matrix()[:, 0].clamp(min=0))
    for bad in (5, -6):
        with pytest.raises(VizkitError, match=f"query position {bad} is out of range for 5 positions"):
            ag.token_relevance(bad)
    # N is read from the keys: a [1, 2, 3, 5] row block (3 queries over 5 keys) has 5 positions
    rows = AttentionGradients(
        {"b": torch.ones(1, 2, 3, 5)}, [{"b": torch.ones(1, 2, 3, 5)}], [torch.ones(1)], [None], ["b"], None, 0, None
    )
    with pytest.raises(VizkitError, match="query position 5 is out of range for 5 positions"):
        rows.token_relevance(5)


def test_rows_of_a_model_without_a_cls_token_are_averaged():
    ag = _ag(prefix=0)
    a, g = [ag.attentions[n] for n in ("b0", "b1")], [ag.gradients[0][n] for n in ("b0", "b1")]
    r = am.relevance_matrix(a, g, "mean")
    assert torch.allclose(ag.relevance(), r.mean(1).reshape(1, 1, 5).clamp(min=0))


def test_what_an_explanation_records():
    ag = _ag()
    e = ag.explanation(1, "max", ["b1"], "mean")
    assert e.method == "gradient_attention[max, mean]" and e.layers == ["b1"]
    assert e.scores is ag.scores[1] and e.targets is ag.classes[1] and e.output is ag.output
    assert (
        e.heatmap.shape == (1, 8, 8) and set(e.layer_heatmaps) == {"b1"} and e.layer_heatmaps["b1"].shape == (1, 8, 8)
    )
    assert torch.allclose(e.layer_maps["b1"], ag.layer_map(1, "b1", "max"))
    raw = ag.relevance(1, "max", ["b1"], "mean")
    want = raw - raw.amin()
    want = want / (want.amax() + min(1e-7, 1e-4 * float(want.amax())))
    small = torch.nn.functional.interpolate(want[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(e.heatmap, small, atol=1e-6)
    d = ag.explanation()
    assert d.method == "gradient_attention[mean]" and d.layers == ["b0", "b1"] and d.scores is ag.scores[0]
    assert torch.allclose(d.layer_maps["b0"], ag.layer_map(0, "b0", "mean"))
    assert torch.isfinite(d.heatmap).all() and d.heatmap.shape == (1, 8, 8)


def test_cls_attention_fused_or_per_head():
    maps = {"b": torch.rand(2, 3, 5, 5, generator=G).softmax(-1)}
    am_ = AttentionMaps(maps, ["b"], (2, 2), 1)
    assert torch.allclose(am_.cls_attention("b", "max"), maps["b"].amax(1)[:, 0, 1:].reshape(2, 2, 2))
    assert torch.allclose(am_.cls_attention(0), maps["b"].mean(1)[:, 0, 1:].reshape(2, 2, 2))
    assert torch.allclose(am_.cls_attention(0, None), maps["b"][:, :, 0, 1:].reshape(2, 3, 2, 2))


def test_rollout_of_plain_maps():
    maps = [torch.rand(1, 2, 5, 5, generator=G).softmax(-1) for _ in range(3)]
    r = am.rollout_matrix(maps, "mean")
    # a CLS token and a 2 x 2 grid by default (prefix_tokens=1)
    assert torch.allclose(rollout(maps), r[:, 0, 1:].reshape(1, 2, 2))
    # an explicit grid of 5 tokens without a prefix: the mean of all rows
    assert torch.allclose(rollout(maps, grid=(1, 5), prefix_tokens=0), r.mean(1).reshape(1, 1, 5))
    assert torch.allclose(rollout(maps, start_layer=2), am.rollout_matrix(maps[2:])[:, 0, 1:].reshape(1, 2, 2))
    two = [torch.rand(1, 2, 6, 6, generator=G).softmax(-1)]  # 2 prefix tokens and a 2 x 2 grid
    assert torch.allclose(rollout(two, prefix_tokens=2), am.rollout_matrix(two)[:, 0, 2:].reshape(1, 2, 2))
    for bad in (3, -1):
        with pytest.raises(VizkitError, match=f"start_layer {bad} is out of range for 3 layers"):
            rollout(maps, start_layer=bad)


@pytest.fixture(scope="module")
def vit():
    return timm_vit(depth=2, img_size=32)


@pytest.mark.parametrize("spec", ["auto", " Auto "])
def test_auto_layers_of_the_attention_entry_points_are_all_blocks(vit, spec):
    x = torch.rand(1, 3, 32, 32, generator=G)
    assert vizkit.attention(vit, x, layers=spec).layers == ["blocks.0", "blocks.1"]
    assert attention_gradients(vit, x, [1], layers=spec).layers == ["blocks.0", "blocks.1"]
    assert vizkit.gradient_attention(vit, x, 1).layers == ["blocks.0", "blocks.1"]  # the default: all


def test_gradient_attention_calls_forward(vit):
    x = torch.rand(2, 3, 32, 32, generator=G)
    calls = []

    def forward(t):
        calls.append(t.shape[0])
        return vit(t) * 2

    e = vizkit.gradient_attention(vit, x, 3, forward=forward)
    assert calls and torch.allclose(e.scores, 2 * vit(x)[:, 3].detach(), atol=1e-5)


@pytest.fixture(scope="module")
def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return LlamaForCausalLM(cfg).eval()


def test_keyword_inputs_of_a_token_sequence_model(llama):
    ids = torch.tensor([[3, 5, 7]])
    ag = attention_gradients(llama, {"input_ids": ids, "use_cache": False}, [lambda out: out.logits[:, -1, 4]])
    assert ag.grid is None and ag.prefix_tokens == 0 and ag.attentions[ag.layers[0]].shape == (1, 2, 3, 3)
    one = attention_gradients(llama, {"input_ids": ids[:, :1]}, [lambda out: out.logits[:, -1, 4]])
    assert one.attentions[one.layers[0]].shape == (1, 2, 1, 1)
    for bad in (torch.zeros(0, 3, dtype=torch.long), torch.zeros(1, 0, dtype=torch.long)):
        with pytest.raises(InputError, match="input_ids is empty"):
            attention_gradients(llama, {"input_ids": bad}, [lambda out: out.logits[:, -1, 4]])
    with pytest.raises(VizkitError, match="no image grid"):
        _ = ag.layout


def test_token_layout_of_attention_maps():
    maps = {"b": torch.rand(1, 2, 5, 5, generator=G).softmax(-1)}
    assert AttentionMaps(maps, ["b"], (2, 2), 1).layout == TokenLayout((2, 2), 1)


def test_explanation_passes_the_aggregation_on():
    ag = _ag()
    raw = {a: ag.relevance(1, "max", None, a) for a in am.AGGREGATIONS}
    assert not torch.allclose(raw["relevance"], raw["mean"])  # two layers: the aggregations differ
    for a, r in raw.items():
        want = r - r.amin()
        want = want / (want.amax() + min(1e-7, 1e-4 * float(want.amax())))
        small = torch.nn.functional.interpolate(want[:, None], size=(8, 8), mode="bilinear", align_corners=False)
        assert torch.allclose(ag.explanation(1, "max", None, a).heatmap, small[:, 0], atol=1e-6), a


def test_rollout_layout_of_plain_maps_with_many_prefix_tokens():
    """25 tokens, 9 of them prefix: a 4 x 4 grid (the whole 5 x 5 square would be the guess without prefix)."""
    maps = [torch.rand(1, 2, 25, 25, generator=G).softmax(-1) for _ in range(2)]
    r = am.rollout_matrix(maps, "mean")
    assert torch.allclose(rollout(maps, prefix_tokens=9), r[:, 0, 9:].reshape(1, 4, 4))
    assert torch.allclose(rollout(maps, grid=(4, 4), prefix_tokens=9), r[:, 0, 9:].reshape(1, 4, 4))


class _OneHead(torch.nn.Module):
    """Single-head attention written out: an explicit softmax over ``[B, 1, N, N]``."""

    def __init__(self, d: int):
        super().__init__()
        self.qkv = torch.nn.Linear(d, 3 * d)

    def forward(self, x):
        q, k, v = self.qkv(x)[:, None].chunk(3, -1)
        return (torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1) @ v)[:, 0]


class _Block(torch.nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.attn = _OneHead(d)

    def forward(self, x):
        return x + self.attn(x)


class _LinearPatchViT(torch.nn.Module):
    """A ViT whose patch embedding is a Linear on unfolded 8 x 8 patches (no strided Conv2d to measure
    the grid from), a CLS token and two blocks."""

    def __init__(self, d: int = 8):
        super().__init__()
        self.embed = torch.nn.Linear(3 * 64, d)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, d, generator=G))
        self.blocks = torch.nn.Sequential(_Block(d), _Block(d))
        self.head = torch.nn.Linear(d, 3)

    def forward(self, x):
        b = x.shape[0]
        t = x.unfold(2, 8, 8).unfold(3, 8, 8).permute(0, 2, 3, 1, 4, 5).reshape(b, -1, 3 * 64)
        t = torch.cat([self.cls.expand(b, -1, -1), self.embed(t)], 1)
        return self.head(self.blocks(t)[:, 0])


def test_grid_from_the_image_shape_without_a_patch_convolution():
    """16 x 32 px in 8 px patches: 1 + 2 x 4 tokens. Without a measured grid the image's aspect ratio
    decides (9 tokens would otherwise be a 3 x 3 square)."""
    torch.manual_seed(0)
    model = _LinearPatchViT().eval()
    x = torch.rand(2, 3, 16, 32, generator=G)
    a = vizkit.attention(model, x)
    assert (a.grid, a.prefix_tokens, a.layers) == ((2, 4), 1, ["blocks.0", "blocks.1"])
    assert a.image_size == (16, 32)
    assert a.maps["blocks.0"].shape == (2, 1, 9, 9)
    ag = attention_gradients(model, x, [0])
    assert (ag.grid, ag.prefix_tokens) == ((2, 4), 1)
    assert vizkit.gradient_attention(model, x, 0).layer_maps["blocks.1"].shape == (2, 2, 4)


def test_grid_measured_on_a_non_square_patch_convolution():
    """32 x 32 px in 16 x 8 px patches: a 2 x 4 grid that only the patch convolution can tell (the
    image is square, and 9 tokens would be a 3 x 3 square)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=(16, 8),
        embed_dim=16,
        depth=1,
        num_heads=2,
        num_classes=3,
    ).eval()
    x = torch.rand(1, 3, 32, 32, generator=G)
    a = vizkit.attention(model, x)
    assert (a.grid, a.prefix_tokens) == ((2, 4), 1)
    ag = attention_gradients(model, x, [0])
    assert (ag.grid, ag.prefix_tokens) == ((2, 4), 1)
    want = a.maps["blocks.0"].mean(1)[:, 0, 1:].reshape(1, 2, 4)
    assert torch.allclose(a.cls_attention("blocks.0"), want)


def test_a_token_sequence_model_runs_through_the_given_forward(llama):
    ids = torch.tensor([[3, 5, 7]])
    calls = []

    def forward(kw):
        calls.append(sorted(kw))
        return llama(**kw, use_cache=False)

    ag = attention_gradients(llama, {"input_ids": ids}, [lambda out: out.logits[:, -1, 4]], forward=forward)
    assert calls == [["input_ids"]]
    with torch.no_grad():
        want = llama(input_ids=ids, use_cache=False).logits
    assert torch.allclose(ag.output, want, atol=1e-5) and torch.allclose(ag.scores[0], want[:, -1, 4], atol=1e-5)


class _TwoTowers(torch.nn.Module):
    """Two lists of transformer blocks, only the first one run: "all" must mean the executed one."""

    def __init__(self):
        super().__init__()
        self.vit = timm_vit(depth=2, img_size=32)
        self.spare = timm_vit(depth=3, img_size=32)

    def forward(self, x):
        return self.vit(x)


def test_predicted_class_output_and_the_executed_block_list():
    model = _TwoTowers().eval()
    x = torch.rand(2, 3, 32, 32, generator=G)
    with torch.no_grad():
        out = model(x)
    ag = attention_gradients(model, x, [None, 1])
    assert ag.layers == ["vit.blocks.0", "vit.blocks.1"] and torch.allclose(ag.output, out, atol=1e-6)
    assert torch.equal(ag.classes[0], out.argmax(1)) and torch.allclose(ag.scores[0], out.amax(1))
    assert torch.allclose(ag.scores[1], out[:, 1])
    a = vizkit.attention(model, x)
    assert a.layers == ["vit.blocks.0", "vit.blocks.1"] and torch.allclose(a.output, out, atol=1e-6)


class _ThreeDSoftmax(torch.nn.Module):
    """Attention whose softmax runs on [B, N, N] (3-D): nothing vizkit can capture."""

    def __init__(self, d: int):
        super().__init__()
        self.qkv = torch.nn.Linear(d, 3 * d)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, -1)
        return torch.softmax(q @ k.transpose(-1, -2), -1) @ v


def test_a_container_of_blocks_whose_attention_cannot_be_seen():
    model = _LinearPatchViT()
    for block in model.blocks:
        block.attn = _ThreeDSoftmax(8)
    x = torch.rand(1, 3, 16, 16, generator=G)
    # "blocks" holds attention modules (it is no Linear or the like): the message says nothing was computed
    with pytest.raises(vizkit.CaptureError, match=r"no attention probabilities were computed inside blocks\. "):
        vizkit.attention(model, x, layers=["blocks"])
    with pytest.raises(vizkit.CaptureError, match=r"'head' is a Linear, 'embed' is a Linear, not an attention"):
        vizkit.attention(model, x, layers=["head", "embed"])


def test_scorecam_with_a_plain_callable_target_scores_whole_batches():
    """A plain callable sees the outputs of a batch aligned with the inputs (here: one class per image,
    by row), whatever batch_size says: the same maps as the per-image class targets."""
    model = tiny_cnn()
    x = torch.rand(3, 3, 8, 8, generator=G)
    classes = torch.tensor([0, 2, 3])
    want = vizkit.cam(model, x, classes.tolist(), "2", "scorecam", batch_size=5)
    for batch_size in (2, 5):
        got = vizkit.cam(model, x, lambda out: out[torch.arange(3), classes], "2", "scorecam", batch_size=batch_size)
        torch.testing.assert_close(got.layer_maps["2"], want.layer_maps["2"], atol=1e-6, rtol=1e-6)


class _DeadBranch(torch.nn.Module):
    """A convolution whose output never reaches the logits (an auxiliary head left in the graph)."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.aux = torch.nn.Conv2d(3, 2, 3, padding=1)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, x):
        self.aux(x)
        return self.head(self.body(x).mean((2, 3)))


def test_a_layer_the_score_does_not_reach_gets_a_zero_gradient_map():
    x = torch.rand(2, 3, 8, 8, generator=G)
    e = vizkit.cam(_DeadBranch().eval(), x, 1, ["aux", "body"], "gradcam")
    assert torch.equal(e.layer_maps["aux"], torch.zeros(2, 8, 8)) and e.layer_maps["body"].abs().sum() > 0


def test_a_token_layer_refuses_a_map_layout(vit):
    x = torch.rand(1, 3, 32, 32, generator=G)
    for layout in ("nchw", "nhwc"):
        with pytest.raises(
            InputError, match=rf"outputs tokens \(1, 17, 32\) \[B, N, C\], not a 4-D map: layout='{layout}'"
        ):
            vizkit.cam(vit, x, 0, "blocks.1", layout=layout)
    assert vizkit.cam(vit, x, 0, "blocks.1", layout="tokens").layer_maps["blocks.1"].shape == (1, 4, 4)


class _PosConvBlock(_Block):
    """A block that also runs a strided convolution over its 2 x 4 patch tokens (a positional probe whose
    output is unused): a Conv2d with stride == kernel that is not the patch embedding."""

    def __init__(self, d: int):
        super().__init__(d)
        self.pos = torch.nn.Conv2d(d, d, 2, stride=2)

    def forward(self, x):
        self.pos(x[:, 1:].transpose(1, 2).reshape(x.shape[0], -1, 2, 4))
        return x + self.attn(x)


def test_a_strided_convolution_inside_a_block_is_not_the_patch_embedding():
    """16 x 32 px in 8 px patches: 1 + 2 x 4 tokens. The 2 x 2 stride-2 convolution inside block 0 has a 1 x 2
    output; it must not be taken for the patch embedding (the grid comes from the image's aspect ratio)."""
    torch.manual_seed(0)
    model = _LinearPatchViT().eval()
    model.blocks[0] = _PosConvBlock(8)
    x = torch.rand(2, 3, 16, 32, generator=G)
    a = vizkit.attention(model, x, layers=["blocks.0", "blocks.1"])
    assert (a.grid, a.prefix_tokens, a.layers) == ((2, 4), 1, ["blocks.0", "blocks.1"])
    ag = attention_gradients(model, x, [0], layers=["blocks.0", "blocks.1"])
    assert (ag.grid, ag.prefix_tokens) == ((2, 4), 1)


class _NoSoftmaxAttention(torch.nn.Module):
    """Named like an attention module, but computes no attention probabilities vizkit can see."""

    def __init__(self, d: int):
        super().__init__()
        self.proj = torch.nn.Linear(d, d)

    def forward(self, x):
        return self.proj(x)


class _ConfiguredModel(torch.nn.Module):
    """The pixels of an image as tokens through one ``_NoSoftmaxAttention``, with a Hugging Face-like ``config``
    naming its attention."""

    def __init__(self, impl: str | None):
        super().__init__()
        self.config = SimpleNamespace(_attn_implementation=impl)
        self.attention = _NoSoftmaxAttention(3)

    def forward(self, x):
        return self.attention(x.flatten(2).transpose(1, 2)).mean(1)


@pytest.mark.parametrize("impl", ["sdpa", None])
def test_a_missing_map_names_the_models_attention_implementation(impl):
    model = _ConfiguredModel(impl).eval()
    extra = f" (attention implementation {impl!r})" if impl else ""
    with pytest.raises(
        CaptureError,
        match=r"^no attention probabilities were computed inside attention" + re.escape(extra) + r"\. Pass",
    ):
        vizkit.attention(model, torch.rand(1, 3, 4, 4), layers=["attention"])


class _MixedStage(torch.nn.Module):
    """A convolution then a Linear: 64 x 64 px -> a channels-last [B, 8, 8, 8] map. Both readings fit the
    input (stride 8 either way) and the module mixes convolutions and Linears: no shape or content rule
    decides, only the class names of the enclosing modules can."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 8, stride=8)
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(self.conv(x).permute(0, 2, 3, 1))


class SwinTransformerToy(torch.nn.Module):
    """A Swin-family class name on the model only; its stage is a plain ``_MixedStage``."""

    def __init__(self):
        super().__init__()
        self.stage = _MixedStage()

    def forward(self, x):
        return self.stage(x)


class PatchMerging(_MixedStage):
    """A Swin-family class name on the layer itself."""


class _PlainWrapper(torch.nn.Module):
    """A model of no known family holding a ``PatchMerging`` layer."""

    def __init__(self):
        super().__init__()
        self.body = PatchMerging()

    def forward(self, x):
        return self.body(x)


def _nhwc_gradcam(act: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of a channels-last ``[B, h, w, C]`` activation under the score ``(act * weight).sum()``
    (its gradient is ``weight``): channel weights = spatial mean of ``weight``, clamped at 0."""
    w = weight.mean((0, 1))  # [C]
    return (act * w).sum(-1).clamp(min=0)


@pytest.mark.parametrize("which", ["model", "layer"])
def test_an_ambiguous_map_is_channels_last_by_an_enclosing_swin_class(which):
    """[B, 8, 8, 8] from 64 x 64 px in a mixed module: the Swin-family class of the model (rule 3: the model
    encloses its layers, and the model itself as the layer ``""``) or of the layer itself makes it NHWC."""
    torch.manual_seed(0)
    model = (SwinTransformerToy() if which == "model" else _PlainWrapper()).eval()
    layers = ["stage", model] if which == "model" else ["body"]
    names = ["stage", ""] if which == "model" else ["body"]
    x = torch.rand(2, 3, 64, 64, generator=G)
    weight = torch.randn(8, 8, 8, generator=G)
    with torch.no_grad():
        act = model(x)
    want = _nhwc_gradcam(act, weight)
    assert not torch.allclose(want, (act * weight.mean((0, 1))).sum(1).clamp(min=0))  # NCHW would differ
    e = vizkit.cam(model, x, lambda out: (out * weight).sum((1, 2, 3)), layers, "gradcam")
    assert e.layers == names
    for n in names:
        torch.testing.assert_close(e.layer_maps[n], want, atol=1e-5, rtol=1e-5)


def test_an_ambiguous_map_without_a_family_class_is_refused():
    """The same mixed stage in a plain Sequential: no rule decides."""
    model = torch.nn.Sequential(_MixedStage()).eval()
    x = torch.rand(1, 3, 64, 64, generator=G)
    with pytest.raises(InputError, match=r"layer '0' output \(1, 8, 8, 8\) is ambiguous"):
        vizkit.cam(model, x, lambda out: out.sum((1, 2, 3)), ["0"], "gradcam")


def test_a_layout_callable_applies_to_a_token_layer(vit):
    """A callable ``layout`` is used on [B, N, C] tokens too (not replaced by the token reshape): a callable
    that reshapes the 4 x 4 patch grid and mirrors it gives the mirrored token-layout maps."""
    x = torch.rand(1, 3, 32, 32, generator=G)
    calls = []

    def mirrored(t):
        calls.append(tuple(t.shape))
        return t[:, 1:].reshape(t.shape[0], 4, 4, -1).permute(0, 3, 1, 2).flip(-1)

    plain = vizkit.cam(vit, x, 0, "blocks.0", layout="tokens").layer_maps["blocks.0"]
    got = vizkit.cam(vit, x, 0, "blocks.0", layout=mirrored).layer_maps["blocks.0"]
    assert calls == [(1, 17, 32), (1, 17, 32)]  # activations and gradients
    assert not torch.allclose(plain, plain.flip(-1))
    torch.testing.assert_close(got, plain.flip(-1), atol=1e-6, rtol=1e-6)


def test_layer_layout_and_spatial_defaults():
    """``_layer_layout`` names a 3-D tensor's layout ``"tokens"`` (``layout`` None or "tokens"); ``_spatial``
    reads a map as NCHW when no layout is given."""
    m = torch.nn.Identity()
    for lay in (None, "tokens"):
        assert _layer_layout(torch.zeros(1, 5, 3), lay, (4, 4), "b", m, m) == "tokens"
    t = torch.arange(24.0).reshape(1, 2, 3, 4)
    assert _spatial(t, 1, None, (3, 4), "b") is t


def test_spatial_reads_tokens_by_the_measured_grid_the_image_and_the_batch():
    """Tokens -> [B, C, h, w]: a measured 3 x 3 grid wins over the 2 x 4 (+ 1 prefix) guess a 16 x 32 image
    gives; without a grid the image's 1 : 2 aspect ratio decides (not the square 3 x 3); sequence-first
    [N, B, C] tokens are put batch first."""
    t = torch.arange(18.0).reshape(1, 9, 2)
    by_grid = t.reshape(1, 3, 3, 2).permute(0, 3, 1, 2)
    torch.testing.assert_close(_spatial(t, 1, (3, 3), (16, 32), "b", "tokens"), by_grid)
    by_image = t[:, 1:].reshape(1, 2, 4, 2).permute(0, 3, 1, 2)
    torch.testing.assert_close(_spatial(t, 1, None, (16, 32), "b", "tokens"), by_image)
    seq_first = torch.arange(36.0).reshape(9, 2, 2)
    want = seq_first.transpose(0, 1).reshape(2, 3, 3, 2).permute(0, 3, 1, 2)
    torch.testing.assert_close(_spatial(seq_first, 2, (3, 3), (24, 24), "b", "tokens"), want)


def test_minmax_keeps_a_range_of_nine_float_steps():
    """A map spanning 9 float32 steps at magnitude 1 is above the 8-eps constant threshold: it is stretched
    to [0, 1] (less the relative epsilon, 1e-4 of the range), not blanked."""
    eps = torch.finfo(torch.float32).eps
    x = torch.tensor([[[1.0, 1.0 + 9 * eps]]])
    assert x[0, 0, 1] - x[0, 0, 0] == 9 * eps
    torch.testing.assert_close(_minmax(x), torch.tensor([[[0.0, 1 / 1.0001]]]), atol=1e-6, rtol=0)


def test_cam_runs_the_given_forward():
    """``forward`` replaces ``model(x)``: with the logits reversed, class 0 is the model's last class."""
    torch.manual_seed(0)
    model = tiny_cnn().eval()
    x = torch.rand(2, 3, 8, 8, generator=G)
    with torch.no_grad():
        n = model(x).shape[1]
    got = vizkit.cam(model, x, 0, "2", forward=lambda inp: model(inp).flip(1))
    want = vizkit.cam(model, x, n - 1, "2")
    torch.testing.assert_close(got.layer_maps["2"], want.layer_maps["2"])
    torch.testing.assert_close(got.scores, want.scores)
    assert not torch.allclose(want.layer_maps["2"], vizkit.cam(model, x, 0, "2").layer_maps["2"])


def test_cam_of_a_vit_with_register_tokens_uses_the_measured_patch_grid():
    """16 x 16 px in 8 px patches with a CLS and 4 register tokens: 9 tokens. Only the patch embedding's
    measured 2 x 2 grid reads them right (from the count alone they would be a 3 x 3 grid)."""
    model = timm_vit(img_size=16, reg_tokens=4).eval()
    x = torch.rand(1, 3, 16, 16, generator=G)
    e = vizkit.cam(model, x, 0, "blocks.0", layout="tokens")
    assert e.layer_maps["blocks.0"].shape == (1, 2, 2)
    by_hand = vizkit.cam(model, x, 0, "blocks.0", layout=lambda t: t[:, 5:].reshape(1, 2, 2, -1).permute(0, 3, 1, 2))
    torch.testing.assert_close(e.layer_maps["blocks.0"], by_hand.layer_maps["blocks.0"])


# ----------------------------------------------------------------------------- inputs, outputs and scores


def test_inputs_are_moved_to_the_models_device():
    model = tiny_cnn().to("meta")
    assert _check_inputs(model, torch.rand(1, 3, 4, 4)).device.type == "meta"


def test_integer_and_float64_inputs():
    """A uint8 batch is explained as the same values in float32; a float64 batch stays float64 for a float64 model
    (the same maps as in float32)."""
    model = tiny_cnn()
    pixels = torch.randint(0, 256, (2, 3, 8, 8), generator=G, dtype=torch.uint8)
    by_int = vizkit.cam(model, pixels, 0, "2")
    by_float = vizkit.cam(model, pixels.float(), 0, "2")
    torch.testing.assert_close(by_int.layer_maps["2"], by_float.layer_maps["2"], rtol=0, atol=0)
    x = torch.rand(2, 3, 8, 8, generator=G)
    double = vizkit.cam(tiny_cnn().double(), x.double(), 0, "2")
    assert double.scores.dtype == torch.float64
    torch.testing.assert_close(double.layer_maps["2"], vizkit.cam(model, x, 0, "2").layer_maps["2"])


def test_the_main_output_is_logits_then_image_embeds():
    """``output`` is the ``logits`` entry of a dict output when it has one, else its ``image_embeds``, else its
    first tensor; ``hidden`` comes first in each dict below."""
    model = _LinearPatchViT().eval()
    x = torch.rand(1, 3, 16, 16, generator=G)
    with torch.no_grad():
        o = model(x)
    outputs = {
        "logits": lambda t: {"hidden": model(t) + 1, "image_embeds": 2 * o, "logits": 3 * o},
        "image_embeds": lambda t: {"hidden": model(t) + 1, "image_embeds": 2 * o},
        "first": lambda t: {"hidden": model(t) + 1, "pooled": 2 * o},
    }
    want = {"logits": 3 * o, "image_embeds": 2 * o, "first": o + 1}
    for name, forward in outputs.items():
        torch.testing.assert_close(vizkit.attention(model, x, forward=forward).output, want[name])


class _FirstColumn(Target):
    """A user's ``Target`` that returns ``[B, 1]``, not one score per image."""

    def __call__(self, output):
        return output[:, :1]


def test_a_target_of_the_right_length_but_two_dimensions_is_refused():
    x = torch.rand(2, 3, 8, 8, generator=G)
    with pytest.raises(TargetError, match=r"^the target returned scores of shape \(2, 1\); expected \[2\]$"):
        vizkit.cam(tiny_cnn(), x, _FirstColumn(), "2")


def test_the_autograd_graph_is_freed_after_the_last_gradient(vit):
    """``cam`` takes one ``autograd.grad``, ``attention_gradients`` one per target, keeping the graph only between
    them (its saved tensors are the memory of a forward): the forward's output cannot be differentiated again
    afterwards."""
    for model, explain in (
        (tiny_cnn(), lambda m, x, f: vizkit.cam(m, x, 0, "2", forward=f)),
        (vit, lambda m, x, f: attention_gradients(m, x, [0, 1], ["blocks.1"], forward=f)),
    ):
        outputs = []

        def forward(t, model=model, outputs=outputs):
            outputs.append(model(t))
            return outputs[-1]

        explain(model, torch.rand(1, 3, 32, 32, generator=G), forward)
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            outputs[0][:, 0].sum().backward()


def test_a_layer_that_does_not_run_is_named():
    model = tiny_cnn()
    with pytest.raises(CaptureError, match=r"^layer\(s\) 2 did not run in the forward pass$"):
        vizkit.cam(model, torch.rand(1, 3, 8, 8, generator=G), 0, "2", forward=lambda t: model[:2](t).mean((2, 3)))


# ----------------------------------------------------------------------------- the layer probe and its cache


class _TwoStage(torch.nn.Module):
    """Two convolutions; ``forward`` pools the second into logits, ``encode`` the first, so ``layers="auto"`` is
    ``stage2`` for ``forward`` and ``stage1`` for ``encode``. ``batches`` records the batch size of every pass
    (a probe runs one image)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stage1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.stage2 = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.batches: list[int] = []

    def encode(self, x):
        self.batches.append(x.shape[0])
        return self.stage1(x).relu().mean((2, 3))

    def forward(self, x):
        self.batches.append(x.shape[0])
        return self.stage2(self.stage1(x).relu()).relu().mean((2, 3))


def test_the_auto_layer_probe_is_cached_for_the_model_and_its_methods_only():
    """``layers="auto"`` probes with one image. The probe is cached per model for ``model(x)`` and for each of the
    model's own methods (each has its own entry: its own layer); any other callable is probed on every call."""
    model = _TwoStage().eval()
    x = torch.rand(2, 3, 8, 8, generator=G)
    calls = [
        ("model", None, ["stage2"], [1, 2]),
        ("model again", None, ["stage2"], [2]),
        ("a method", model.encode, ["stage1"], [1, 2]),
        ("the method again", model.encode, ["stage1"], [2]),
        ("a callable", lambda t: model.encode(t), ["stage1"], [1, 2]),
        ("another callable", lambda t: model(t), ["stage2"], [1, 2]),
        ("a callable again", lambda t: model.encode(t), ["stage1"], [1, 2]),
    ]
    for what, forward, layers, batches in calls:
        model.batches.clear()
        e = vizkit.cam(model, x, 0, forward=forward)
        assert (e.layers, model.batches) == (layers, batches), what


# ----------------------------------------------------------------------------- the CAM loop


def test_scorecam_scores_32_masked_images_per_pass_by_default():
    model = tiny_cnn(widths=(4, 40))
    sizes = []
    model.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    vizkit.cam(model, torch.rand(1, 3, 8, 8, generator=G), 0, "2", "scorecam")
    assert sizes == [1, 32, 8]  # the explained image, then 40 channel masks


def test_gradient_free_methods_run_the_forward_without_autograd():
    model = tiny_cnn()
    enabled = []
    model.register_forward_pre_hook(lambda module, args: enabled.append(torch.is_grad_enabled()))
    x = torch.rand(1, 3, 8, 8, generator=G)
    for method in ("gradcam", "eigencam"):
        enabled.clear()
        vizkit.cam(model, x, 0, "2", method)
        assert enabled == [method == "gradcam"], method


def test_eigencam_passes_sign_correction_on():
    """Eigen-CAM's maps from ``cam`` equal the method on the layer's activations (clamped at 0), with and without
    ``sign_correction``, and the option changes them here."""
    model = tiny_cnn()
    x = torch.rand(4, 3, 8, 8, generator=G)
    with torch.no_grad():
        acts = model[:3](x)
    maps = {}
    for flip in (False, True):
        e = vizkit.cam(model, x, 0, "2", "eigencam", sign_correction=flip)
        assert e.method == "eigencam"
        maps[flip] = e.layer_maps["2"]
        torch.testing.assert_close(maps[flip], eigencam(acts, sign_correction=flip).clamp(min=0))
    assert not torch.allclose(maps[False], maps[True])


def test_cam_of_tokens_without_a_patch_convolution_reads_the_grid_from_the_image():
    """16 x 32 px in 8 px patches, embedded by a Linear: 1 + 2 x 4 tokens, laid out by the image's aspect ratio
    for the activations and the gradients alike (9 tokens alone would be a 3 x 3 square)."""
    torch.manual_seed(0)
    model = _LinearPatchViT().eval()
    x = torch.rand(2, 3, 16, 32, generator=G)
    e = vizkit.cam(model, x, 0, "blocks.1")
    by_hand = vizkit.cam(model, x, 0, "blocks.1", layout=lambda t: t[:, 1:].reshape(2, 2, 4, -1).permute(0, 3, 1, 2))
    assert e.layer_maps["blocks.1"].shape == (2, 2, 4)
    torch.testing.assert_close(e.layer_maps["blocks.1"], by_hand.layer_maps["blocks.1"])


def test_cam_of_a_model_with_a_strided_convolution_inside_a_block():
    """As for attention: the 2 x 2 stride-2 convolutions inside the blocks (one block class, so a block list) are not
    the patch embedding; the tokens of 16 x 32 px in 8 px patches are a 2 x 4 grid."""
    torch.manual_seed(0)
    model = _LinearPatchViT().eval()
    model.blocks = torch.nn.Sequential(_PosConvBlock(8), _PosConvBlock(8))
    e = vizkit.cam(model, torch.rand(2, 3, 16, 32, generator=G), 0, "blocks.1")
    assert e.layer_maps["blocks.1"].shape == (2, 2, 4)


def test_a_layout_callable_with_a_wrong_result_names_the_layer(vit):
    """The callable's result is checked on the activations and on the gradients."""
    x = torch.rand(1, 3, 32, 32, generator=G)
    calls = []

    def right_once(t):
        calls.append(1)
        return t[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2) if len(calls) == 1 else t

    for layout in (lambda t: t, right_once):
        with pytest.raises(InputError, match=r"^layout callable returned \(1, 17, 32\) for layer 'blocks\.0''s"):
            vizkit.cam(vit, x, 0, "blocks.0", layout=layout)
    assert len(calls) == 2
