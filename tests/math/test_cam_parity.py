"""Parity with pytorch-grad-cam (the reference) for all seven methods."""

import numpy as np
import pytest
import torch
from gradcam_reference import REFERENCE, TOL
from models import resnet18, timm_vit
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import vizkit


def reference(model, layer, x, classes, method, reshape=None):
    with REFERENCE[method](model=model, target_layers=[layer], reshape_transform=reshape) as ref:
        ref.batch_size = 64
        return ref(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])


def vit_reshape(grid):
    def reshape(t):
        return t[:, 1:, :].reshape(t.shape[0], *grid, t.shape[2]).permute(0, 3, 1, 2)

    return reshape


@pytest.fixture(scope="module")
def cnn():
    return resnet18()


@pytest.mark.parametrize("method", list(REFERENCE))
def test_resnet18_layer4(cnn, method):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    classes = [3, 7]
    ours = vizkit.cam(cnn, x, classes, layers="layer4", method=method, batch_size=64)
    ref = reference(cnn, cnn.layer4, x, classes, method)
    assert ours.heatmap.shape == (2, 64, 64) and ours.heatmap.dtype == torch.float32
    assert ours.layers == ["layer4"] and ours.layer_maps["layer4"].shape == (2, 2, 2)
    diff = np.abs(ours.heatmap.numpy() - ref).max()
    assert diff <= TOL.get(method, 1e-4), diff
    assert ours.heatmap.min() >= 0 and ours.heatmap.max() <= 1
    assert ours.targets.tolist() == classes
    logits = cnn(x).detach()
    assert torch.allclose(ours.scores, logits[torch.arange(2), torch.tensor(classes)], atol=1e-5)


@pytest.mark.parametrize("method", [m for m in REFERENCE if m != "eigencam"])
def test_timm_vit_last_block_tokens(method):
    # global average pooling: the last block's patch tokens reach the score
    model = timm_vit(global_pool="avg", depth=3, img_size=48)
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    ours = vizkit.cam(model, x, [1, 4], layers="last", method=method)
    assert ours.layers == ["blocks.2"]
    ref = reference(model, model.blocks[-1], x, [1, 4], method, vit_reshape((6, 6)))
    assert np.abs(ours.heatmap.numpy() - ref).max() <= TOL.get(method, 1e-4)
    assert ours.heatmap.std() > 0.05  # a real map, not a constant


def test_timm_vit_eigencam_up_to_the_singular_vector_sign():
    """A singular vector's sign is arbitrary, and numpy's LAPACK (pytorch-grad-cam) and
    torch's pick differently on some inputs. The projection must agree up to that sign, and
    the heatmap must equal the reference built from the same sign."""
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    model = timm_vit(global_pool="avg", depth=3, img_size=48)
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    ours = vizkit.cam(model, x, None, layers="last", method="eigencam")
    with torch.no_grad():
        acts = vit_reshape((6, 6))(_block_output(model, x))
    proj = get_2d_projection(acts.numpy())
    ours_proj = vizkit.methods.eigencam(acts)
    for b in range(2):
        sign = float(np.sign((ours_proj[b].numpy() * proj[b]).sum()))
        assert np.abs(ours_proj[b].numpy() - sign * proj[b]).max() <= 1e-4
        # the reference pipeline: per-layer scaling to the input size, then the aggregate's scaling
        ref = scale_cam_image(scale_cam_image(np.maximum(sign * proj[b : b + 1], 0), (48, 48)))
        assert np.abs(ours.heatmap[b].numpy() - ref[0]).max() <= 1e-4


def _block_output(model, x):
    out = {}
    h = model.blocks[-1].register_forward_hook(lambda m, i, o: out.setdefault("o", o))
    try:
        model(x)
    finally:
        h.remove()
    return out["o"]


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_timm_vit_cls_token_auto_layer(method):
    # CLS-token classifier: auto reads the last block at its input (blocks[-1].norm1)
    model = timm_vit(global_pool="token", depth=2)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    ours = vizkit.cam(model, x, [0, 2], layers="auto", method=method)
    assert ours.layers == ["blocks.1.norm1"]
    ref = reference(model, model.blocks[-1].norm1, x, [0, 2], method, vit_reshape((4, 4)))
    assert np.abs(ours.heatmap.numpy() - ref).max() <= 1e-4


def test_multi_layer_aggregate_matches_reference(cnn):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    ours = vizkit.cam(cnn, x, [1, 2], layers=["layer3", "layer4"])
    with GradCAM(model=cnn, target_layers=[cnn.layer3, cnn.layer4]) as ref:
        r = ref(input_tensor=x, targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(2)])
    assert np.abs(ours.heatmap.numpy() - r).max() <= 1e-4
    assert set(ours.layer_heatmaps) == {"layer3", "layer4"}
    mean = torch.stack([ours.layer_heatmaps["layer3"], ours.layer_heatmaps["layer4"]]).mean(0)
    expected = mean - mean.flatten(1).min(1).values[:, None, None]
    expected = expected / (expected.flatten(1).max(1).values[:, None, None] + 1e-7)
    assert torch.allclose(ours.heatmap, expected, atol=1e-6)


def test_non_square_vit_grid():
    model = timm_vit(global_pool="avg", depth=2, img_size=(32, 48), dynamic_img_size=False)
    x = torch.randn(2, 3, 32, 48)
    ours = vizkit.cam(model, x, 1, layers="last")
    assert ours.layer_maps["blocks.1"].shape == (2, 4, 6)
    ref = reference(model, model.blocks[-1], x, [1, 1], "gradcam", vit_reshape((4, 6)))
    assert np.abs(ours.heatmap.numpy() - ref).max() <= 1e-4


def test_register_tokens_are_dropped():
    model = timm_vit(global_pool="avg", depth=2, reg_tokens=4)
    x = torch.randn(1, 3, 32, 32)
    ours = vizkit.cam(model, x, 0, layers="last")
    assert ours.layer_maps["blocks.1"].shape == (1, 4, 4)

    def reshape(t):
        return t[:, 5:, :].reshape(1, 4, 4, t.shape[2]).permute(0, 3, 1, 2)

    ref = reference(model, model.blocks[-1], x, [0], "gradcam", reshape)
    assert np.abs(ours.heatmap.numpy() - ref).max() <= 1e-4


def test_hf_model_output_and_predicted_class():
    from models import hf_vit

    model = hf_vit()
    x = torch.randn(2, 3, 32, 32)
    ours = vizkit.cam(model, x, None, layers="auto")
    assert ours.layers == ["vit.layers.1.layernorm_before"]
    logits = model(pixel_values=x).logits
    assert ours.targets.tolist() == logits.argmax(-1).tolist()
    assert torch.allclose(ours.scores, logits.max(-1).values, atol=1e-5)


def test_timm_vit_eigencam_up_to_the_svd_sign():
    """Eigen-CAM on ViT tokens. A singular vector's sign is arbitrary, and LAPACK (numpy, which
    pytorch-grad-cam uses) and torch may pick opposite ones. So each of our per-layer maps must
    equal ReLU(+p) or ReLU(-p) of the reference projection ``p`` (pytorch-grad-cam's
    ``get_2d_projection`` on the same tokens); with the sign fixed to the one torch picked, the final
    heatmap must equal pytorch-grad-cam's pipeline (scaled to the input, then the aggregate's scaling)."""
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    model = timm_vit(global_pool="avg", depth=3, img_size=48)
    x = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    ours = vizkit.cam(model, x, [1, 4], layers="last", method="eigencam")
    assert ours.layers == ["blocks.2"] and ours.heatmap.std() > 0.05
    tokens = {}
    handle = model.blocks[-1].register_forward_hook(lambda m, i, out: tokens.setdefault("t", out.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    proj = get_2d_projection(vit_reshape((6, 6))(tokens["t"]).numpy())  # [2, 6, 6]
    maps = ours.layer_maps["blocks.2"].numpy()
    for b in range(2):
        same = np.abs(maps[b] - np.maximum(proj[b], 0)).max()
        flipped = np.abs(maps[b] - np.maximum(-proj[b], 0)).max()
        assert min(same, flipped) <= 1e-4, (b, same, flipped)
        sign = 1.0 if same <= flipped else -1.0
        ref = scale_cam_image(scale_cam_image(np.maximum(sign * proj[b : b + 1], 0), (48, 48)))
        assert np.abs(ours.heatmap[b].numpy() - ref[0]).max() <= 1e-4, (b, sign)


def test_method_flags_drive_dispatch():
    """cam() calls each method by its flags: a method registered under a new name with the
    flags of Score-CAM / Eigen-CAM behaves like them (no dispatch on names)."""
    from dataclasses import replace

    from vizkit.methods import METHODS

    model, x = resnet18(), torch.rand(2, 3, 32, 32)
    for name in ("scorecam", "eigencam", "gradcam"):
        alias = replace(METHODS[name], name=f"renamed-{name}")
        METHODS[alias.name] = alias
        try:
            a = vizkit.cam(model, x, targets=1, layers="layer4", method=name, sign_correction=True, batch_size=128)
            b = vizkit.cam(
                model, x, targets=1, layers="layer4", method=alias.name, sign_correction=True, batch_size=128
            )
        finally:
            del METHODS[alias.name]
        assert torch.allclose(a.heatmap, b.heatmap, atol=1e-6), name
    assert METHODS["eigencam"].options == ("sign_correction",) and METHODS["scorecam"].uses_scores
