"""Channels-last feature maps (issue 16, item 1): Swin from timm, torchvision (V1 and V2) and
Hugging Face, against pytorch-grad-cam with the permuting / reshaping transform."""

import math

import numpy as np
import pytest
import torch
from gradcam_reference import REFERENCE, TOL
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import vizkit
from vizkit.layers import get_module

CLASSES = [1, 3]


def nhwc_to_nchw(t):
    return t.permute(0, 3, 1, 2)


def tokens_to_nchw(t):
    t = t[0] if isinstance(t, tuple) else t
    side = math.isqrt(t.shape[1])
    return t.reshape(t.shape[0], side, side, t.shape[2]).permute(0, 3, 1, 2)


class Logits(nn.Module):
    """pytorch-grad-cam calls ``model(x)`` and reads a tensor: unwrap a HF output."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


def reference(model, layer, x, method, reshape):
    with REFERENCE[method](model=model, target_layers=[layer], reshape_transform=reshape) as ref:
        ref.batch_size = 256
        return ref(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in CLASSES])


def timm_swin():
    import timm

    torch.manual_seed(0)
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        img_size=64,
        window_size=4,
        embed_dim=16,
        depths=(1, 1, 2, 1),
        num_heads=(1, 1, 2, 2),
        num_classes=5,
    ).eval()


def torchvision_swin(v2=False):
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2

    torch.manual_seed(0)
    extra = dict(block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2) if v2 else {}
    return SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[1, 1, 2, 1],
        num_heads=[1, 1, 2, 2],
        window_size=[4, 4],
        num_classes=5,
        **extra,
    ).eval()


def hf_swin():
    from transformers import SwinConfig, SwinForImageClassification

    torch.manual_seed(0)  # window 2: HF Swin breaks on a last stage smaller than its window
    cfg = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 2, 2],
        num_heads=[1, 1, 2, 2],
        window_size=2,
        num_labels=5,
    )
    return SwinForImageClassification(cfg).eval()


# (build, what auto picks, an inner block whose output also feeds the next block's residual)
SWINS = {
    "timm": (timm_swin, "layers.3.blocks.0", "layers.2.blocks.0"),
    "torchvision": (torchvision_swin, "features.7.0", "features.5.0"),
    "torchvision_v2": (lambda: torchvision_swin(v2=True), "features.7.0", "features.5.0"),
}


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module", params=list(SWINS))
def swin(request):
    build, last, inner = SWINS[request.param]
    return request.param, build(), last, inner


def block_output(model, name, x):
    kept = {}
    handle = get_module(model, name).register_forward_hook(lambda m, i, out: kept.update(t=out))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return kept["t"]


@pytest.mark.parametrize("method", list(REFERENCE))
def test_all_methods_equal_pytorch_grad_cam_on_swin(swin, x, method):
    """Every method, for ``auto`` and for an explicit inner block. HiResCAM is checked on the
    inner block only: the last block feeds nothing but a LayerNorm, and a LayerNorm's input
    gradient is orthogonal to its input, so sum_c(grad * act) there is zero up to rounding
    (both implementations return rounding noise). Eigen-CAM's singular vector has an
    arbitrary sign (LAPACK vs torch): its maps must equal ReLU(+p) or ReLU(-p) of the
    reference projection."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    family, model, last, inner = swin
    for spec, expected in (("auto", last), (inner, inner)):
        ours = vizkit.cam(model, x, CLASSES, layers=spec, method=method, batch_size=256)
        assert ours.layers == [expected], (family, spec, ours.layers)
        side = 2 if expected == last else 4  # 64 px / patch 4 = 16, merged 2x per stage
        assert ours.layer_maps[expected].shape == (2, side, side)
        if method == "hirescam" and expected == last:
            continue
        if method == "eigencam":
            proj = get_2d_projection(nhwc_to_nchw(block_output(model, expected, x)).numpy())
            for b in range(2):
                m = ours.layer_maps[expected][b].numpy()
                assert min(np.abs(m - np.maximum(s * proj[b], 0)).max() for s in (1, -1)) <= 1e-4
            continue
        ref = reference(model, get_module(model, expected), x, method, nhwc_to_nchw)
        diff = np.abs(ours.heatmap.numpy() - ref).max()
        assert diff <= TOL.get(method, 1e-4), (family, spec, method, diff)
        assert ours.heatmap.std() > 0.05  # a real map, not a constant


def test_explicit_layout_and_callable_equal_the_decided_one(x):
    model = timm_swin()
    decided = vizkit.cam(model, x, CLASSES, layers="layers.2.blocks.0")
    for layout in ("nhwc", nhwc_to_nchw):
        forced = vizkit.cam(model, x, CLASSES, layers="layers.2.blocks.0", layout=layout)
        torch.testing.assert_close(forced.heatmap, decided.heatmap)
    # the wrong explicit layout is obeyed (the caller decided) and gives another map
    wrong = vizkit.cam(model, x, CLASSES, layers="layers.2.blocks.0", layout="nchw")
    assert wrong.layer_maps["layers.2.blocks.0"].shape == (2, 4, 64)
    with pytest.raises(vizkit.InputError, match="layout='nwhc' is not valid: use one of 'nchw', 'nhwc', 'tokens'"):
        vizkit.cam(model, x, CLASSES, layers="layers.2.blocks.0", layout="nwhc")
    with pytest.raises(vizkit.InputError, match=r"outputs a 4-D map .* not tokens"):
        vizkit.cam(model, x, CLASSES, layers="layers.2.blocks.0", layout="tokens")
    with pytest.raises(vizkit.InputError, match=r"layout callable returned \(2, 512\)"):
        vizkit.cam(model, x, CLASSES, layers="layers.3.blocks.0", layout=lambda t: t.flatten(1))


def test_hugging_face_swin_tokens_map_to_their_merged_grid(x):
    """HF Swin blocks and its final LayerNorm emit [B, N, C] tokens without a CLS token; each
    stage holds the patch grid merged 2x per stage."""
    model = hf_swin()
    auto = vizkit.cam(model, x, CLASSES, layers="auto")
    assert auto.layers == ["swin.encoder.layers.3.blocks.1"]  # the last stage's last block
    assert auto.layer_maps[auto.layers[0]].shape == (2, 2, 2)
    wrapped = Logits(model)
    for name, side in (("swin.layernorm", 2), ("swin.encoder.layers.1.blocks.0.layernorm_after", 8)):
        for method in ("gradcam", "gradcam++", "layercam"):
            ours = vizkit.cam(model, x, CLASSES, layers=name, method=method)
            assert ours.layer_maps[name].shape == (2, side, side)
            ref = reference(wrapped, get_module(model, name), x, method, tokens_to_nchw)
            assert np.abs(ours.heatmap.numpy() - ref).max() <= 1e-4, (name, method)
    # the block's output is a tuple: the same map as a hand-computed Grad-CAM on its tensor
    block = get_module(model, "swin.encoder.layers.3.blocks.1")
    kept = {}
    handle = block.register_forward_hook(lambda m, i, out: kept.update(t=out[0] if isinstance(out, tuple) else out))
    try:
        logits = model(pixel_values=x).logits
    finally:
        handle.remove()
    acts = kept["t"]
    (grads,) = torch.autograd.grad(logits[torch.arange(2), torch.tensor(CLASSES)].sum(), acts)
    a, g = tokens_to_nchw(acts.detach()), tokens_to_nchw(grads)
    raw = (g.mean((2, 3), keepdim=True) * a).sum(1).clamp(min=0)
    up = torch.nn.functional.interpolate(raw[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    lo = up.flatten(1).min(1).values[:, None, None]
    up = up - lo
    hand = up / (up.flatten(1).max(1).values[:, None, None] + 1e-7)
    torch.testing.assert_close(auto.heatmap, hand, atol=1e-5, rtol=0)


class Mixed(nn.Module):
    """A conv and a Linear in one module whose [B, 8, 8, 8] output reads as NCHW and as NHWC."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 8, stride=8)
        self.mix = nn.Linear(8, 8)

    def forward(self, x):
        y = self.conv(x)
        return y + self.mix(y.mean((2, 3)))[:, :, None, None]


class Ambiguous(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = Mixed()
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def test_an_undecidable_layout_raises_and_names_the_argument():
    torch.manual_seed(1)
    model = Ambiguous().eval()
    x = torch.randn(2, 3, 64, 64)
    with pytest.raises(
        vizkit.InputError,
        match=r"'features' output \(2, 8, 8, 8\) is ambiguous.*layout='nchw' or "
        r"layout='nhwc'",
    ):
        vizkit.cam(model, x, CLASSES, layers="features")
    ours = vizkit.cam(model, x, CLASSES, layers="features", layout="nchw")
    ref = reference(model, model.features, x, "gradcam", None)
    assert np.abs(ours.heatmap.numpy() - ref).max() <= 1e-4


def test_convnets_are_unchanged(x):
    """The rules never re-read an ordinary CNN's maps (ResNet stages, a ConvNeXt stage)."""
    import timm
    from models import resnet18

    cnn = resnet18()
    ours = vizkit.cam(cnn, x, CLASSES, layers=["layer3", "layer4"])
    assert {k: tuple(v.shape) for k, v in ours.layer_maps.items()} == {"layer3": (2, 4, 4), "layer4": (2, 2, 2)}
    torch.manual_seed(0)
    convnext = timm.create_model("convnext_atto", pretrained=False, num_classes=5).eval()
    e = vizkit.cam(convnext, x, CLASSES, layers="auto")
    assert e.layer_maps[e.layers[0]].shape == (2, 2, 2)
    ref = reference(convnext, get_module(convnext, e.layers[0]), x, "gradcam", None)
    assert np.abs(e.heatmap.numpy() - ref).max() <= 1e-4


def save_swin_detector(folder):
    """A two-class timm Swin as a user's detector: ``swin.safetensors`` and ``cfg.yaml``
    (``model_name: timm:...`` with its kwargs, resolution, mean, std) in ``folder``."""
    from safetensors.torch import save_file

    model = timm_swin()
    model.reset_classifier(2)
    save_file(model.state_dict(), folder / "swin.safetensors")
    kwargs = (
        "{img_size: 64, window_size: 4, embed_dim: 16, depths: [1, 1, 2, 1], num_heads: [1, 1, 2, 2], num_classes: 2}"
    )
    (folder / "cfg.yaml").write_text(
        f"model_name: timm:swin_tiny_patch4_window7_224\nmodel_kwargs: {kwargs}\n"
        "resolution: 64\nmean: [0.5, 0.5, 0.5]\nstd: [0.5, 0.5, 0.5]\n"
    )


def test_the_detector_gradcam_cli_takes_layout(tmp_path):
    """A timm Swin detector from a YAML + weights file: ``--layout nhwc`` equals the decided
    layout, ``--layout nchw`` (wrong for Swin) is obeyed and gives another map."""
    from PIL import Image

    from vizkit.cli import main

    save_swin_detector(tmp_path)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "face.png")
    pngs = {}
    for layout in (None, "nhwc", "nchw"):
        out = tmp_path / f"out-{layout}"
        argv = [
            "detector-gradcam",
            "--input",
            str(tmp_path / "face.png"),
            "--output",
            str(out),
            "--config",
            str(tmp_path / "cfg.yaml"),
            "--weights",
            str(tmp_path / "swin.safetensors"),
            "--layers",
            "layers.2.blocks.0",
            "--cpu",
        ] + (["--layout", layout] if layout else [])
        assert main(argv) == 0
        pngs[layout] = (out / "gradcam_layers.2.blocks.0_face.png").read_bytes()
    assert pngs["nhwc"] == pngs[None] and pngs["nchw"] != pngs[None]


def test_the_evaluate_cli_takes_layout(tmp_path):
    """`vizkit evaluate --layout` reaches cam() in every chunk: on a Swin detector `nhwc` gives the
    decided maps, `nchw` other ones (and the manifest records it)."""
    import json

    from PIL import Image

    from vizkit.cli import main

    save_swin_detector(tmp_path)
    rng = np.random.default_rng(0)
    for label in ("real", "fake"):
        (tmp_path / "set" / label).mkdir(parents=True)
        for k in range(2):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
                tmp_path / "set" / label / f"{k}.png"
            )
    maps = {}
    for layout in (None, "nhwc", "nchw"):
        out = tmp_path / f"eval-{layout}"
        argv = [
            "evaluate",
            "--detector_path",
            str(tmp_path / "cfg.yaml"),
            "--weights_path",
            str(tmp_path / "swin.safetensors"),
            "--test_dataset",
            str(tmp_path / "set"),
            "--gradcam_enabled",
            "--save_all_predictions",
            "--gradcam_samples",
            "4",
            "--layers",
            "layers.2.blocks.0",
            "--table-methods",
            "gradcam",
            "--gradcam_output_dir",
            str(out),
            "--cpu",
        ]
        assert main(argv + (["--layout", layout] if layout else [])) in (0, 1)
        assert json.loads((out / "manifest.json").read_text())["layout"] == layout
        maps[layout] = sorted(p.read_bytes() for p in out.rglob("*.png") if "layers.2.blocks.0" in p.name)
        assert maps[layout]
    assert maps["nhwc"] == maps[None] and maps["nchw"] != maps[None]
