"""DeepfakeBench CNN detector checkpoints (Xception) on timm architectures.

DeepfakeBench's ``XceptionDetector`` saves ``model.state_dict()``: every key is ``backbone.*``
(``module.backbone.*`` under DataParallel), laid out as in the FaceForensics++ Xception.
timm's ``legacy_xception`` has the same modules under the same names, so the mapping is:

- ``backbone.`` (and a ``module.`` wrapper) removed; every other name kept as is
  (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``blockN.skip`` / ``skipbn`` / ``rep.I.*``,
  ``conv3`` / ``bn3``, ``conv4`` / ``bn4``);
- ``last_linear.*`` (or ``last_linear.1.*`` when trained with dropout) -> ``fc.*``;
- ``adjust_channel.*`` dropped: DeepfakeBench builds it in every mode but uses it only in mode
  ``adjust_channel``.

In mode ``original`` the two compute the same function: features ``[B, 2048, h, w]`` (``bn4``,
then ``act4`` = the ReLU DeepfakeBench's classifier applies), average pooling, linear layer;
P(fake) = ``softmax(logits)[:, 1]``. EfficientNet-B4 checkpoints are recognised and refused
(see :data:`EFFICIENTNET_B4_UNSUPPORTED`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .load_common import CheckpointError, fit_report, strip_prefixes

_XCEPTION_MARKERS = (
    "backbone.block1.rep.0.pointwise.weight",
    "backbone.block12.skip.weight",
    "backbone.conv4.pointwise.weight",
)
_EFFNET_PREFIX = "backbone.efficientnet."
_MODES_SUPPORTED = "'original' (the XceptionDetector default)"
_UNSUPPORTED_MODES = {
    "adjust_channel": "it adds a 2048->512 conv + BatchNorm + ReLU after bn4",
    "shallow_xception": "it skips blocks 4-11",
}
_MODEL_NAMES = {"xception": "xception", "efficientnetb4": "efficientnetb4"}

#: Why DeepfakeBench's EfficientNet-B4 cannot be reproduced by timm or torchvision.
EFFICIENTNET_B4_UNSUPPORTED = (
    "DeepfakeBench EfficientNet-B4 checkpoints (backbone.efficientnet.*) are not supported: their "
    "padding has no timm/torchvision equivalent. DeepfakeBench replaces efficientnet_pytorch's stem by an "
    "unpadded nn.Conv2d(3, 48, 3, stride=2), while every stride-2 depthwise conv keeps the fixed "
    "TensorFlow-'same' padding efficientnet_pytorch computed for 380-px inputs (3x3: 0 before / 1 after; "
    "5x5: 2/2 and 1/2), whatever the actual input size. timm's tf_efficientnet_b4 pads the stem and those "
    "convs for the actual size, timm's efficientnet_b4 and torchvision's efficientnet_b4 pad symmetrically "
    "(k//2, and BatchNorm eps 1e-5 instead of 1e-3): at 256 px DeepfakeBench's feature maps are "
    "127/63/32/16/8 pixels wide against 128/64/32/16/8, so the probabilities would differ. Supported "
    "DeepfakeBench CNN detector: xception (backbone_config.mode 'original')"
)


def _strip(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return strip_prefixes(dict(sd), ("module.", "_orig_mod."))


def deepfakebench_cnn_kind(sd: Mapping[str, torch.Tensor]) -> str | None:
    """``"xception"``, ``"efficientnetb4"`` or None, read off the keys of a DeepfakeBench
    detector state dict (a ``module.`` prefix on every key is ignored)."""
    keys = _strip(sd).keys()
    if all(k in keys for k in _XCEPTION_MARKERS):
        return "xception"
    if any(k.startswith(_EFFNET_PREFIX) for k in keys):
        return "efficientnetb4"
    return None


def _to_timm_xception(sd: dict[str, torch.Tensor], source: object) -> dict[str, torch.Tensor]:
    """DeepfakeBench ``backbone.*`` keys -> timm ``legacy_xception`` keys (see the module docstring)."""
    others = [k for k in sd if not k.startswith("backbone.")]
    if others:
        raise CheckpointError(
            f"{source} holds an Xception backbone plus {len(others)} key(s) outside 'backbone.' "
            f"({', '.join(others[:5])}): that is another DeepfakeBench detector built on Xception, not "
            f"XceptionDetector (model_name: xception), whose checkpoints hold backbone.* only"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        name = key[len("backbone.") :]
        if name.startswith("adjust_channel."):
            continue
        for old in ("last_linear.1.", "last_linear."):
            if name.startswith(old):
                name = "fc." + name[len(old) :]
                break
        out[name] = value
    return out


def _check_config(sd: dict[str, torch.Tensor], backbone_config: Mapping | None, source: object) -> None:
    cfg = dict(backbone_config or {})
    mode = cfg.get("mode")
    if mode in _UNSUPPORTED_MODES:  # DeepfakeBench compares exactly; any other value acts as 'original'
        raise CheckpointError(
            f"{source}: DeepfakeBench Xception backbone_config.mode {mode!r} is not supported "
            f"({_UNSUPPORTED_MODES[mode]}, "
            f"which timm's legacy_xception cannot represent); supported mode: {_MODES_SUPPORTED}"
        )
    inc, classes = int(sd["conv1.weight"].shape[1]), int(sd["fc.weight"].shape[0])
    for field, found in (("inc", inc), ("num_classes", classes)):
        if field in cfg and cfg[field] is not None and int(cfg[field]) != found:
            raise CheckpointError(
                f"{source}: backbone_config.{field} is {cfg[field]} but the weights have {found}; "
                f"the YAML does not belong to this checkpoint"
            )
    if (inc, classes) != (3, 2):
        raise CheckpointError(
            f"{source}: an Xception with {inc} input channel(s) and {classes} classes; vizkit supports DeepfakeBench's "
            f"XceptionDetector as trained by xception.yaml: 3 input channels (RGB) and 2 classes (1 = fake)"
        )


def build_deepfakebench_cnn(
    sd: Mapping[str, torch.Tensor],
    *,
    model_name: str | None = None,
    backbone_config: Mapping | None = None,
    source: object = "state dict",
) -> nn.Module:
    """timm ``legacy_xception`` (eval mode) holding the weights of a DeepfakeBench Xception detector.

    ``sd``: the detector's state dict (``backbone.*``, optionally ``module.``-prefixed);
    ``model_name`` / ``backbone_config``: from its YAML, checked against the weights when given
    (no ``mode`` means DeepfakeBench's default, 'original'). The model maps ``[B, 3, H, W]`` to
    logits ``[B, 2]``; ``softmax(logits)[:, 1]`` is DeepfakeBench's P(fake). The final feature map
    ``[B, 2048, h, w]`` is ``bn4`` / ``act4``. Raises :class:`CheckpointError` for any other
    layout, an EfficientNet-B4 checkpoint, an unsupported mode or weights that do not fit.
    """
    flat = _strip(sd)
    kind = deepfakebench_cnn_kind(flat)
    if model_name is not None:
        wanted = _MODEL_NAMES.get(str(model_name).lower())
        if wanted != kind:
            found = f"a DeepfakeBench {kind} checkpoint" if kind else "no DeepfakeBench Xception/EfficientNet-B4 keys"
            raise CheckpointError(
                f"model_name {model_name!r} (from the YAML) does not match {source}: its keys are {found}. "
                f"Pass the YAML the checkpoint was trained with; supported model_name: xception"
            )
    if kind == "efficientnetb4":
        raise CheckpointError(f"{source}: {EFFICIENTNET_B4_UNSUPPORTED}")
    if kind is None:
        raise CheckpointError(
            f"{source} is not a DeepfakeBench Xception detector: expected keys like {', '.join(_XCEPTION_MARKERS)} "
            f"(optionally 'module.'-prefixed); found {', '.join(list(flat)[:5])}"
        )
    mapped = _to_timm_xception(flat, source)
    if "fc.weight" not in mapped or "conv1.weight" not in mapped:
        raise CheckpointError(
            f"{source}: a DeepfakeBench Xception needs backbone.conv1.weight and "
            f"backbone.last_linear[.1].weight; one is missing"
        )
    _check_config(mapped, backbone_config, source)

    import timm

    model = timm.create_model("legacy_xception", pretrained=False, num_classes=2)
    for key, value in model.state_dict().items():  # counters only; they do not change eval outputs
        if key.endswith("num_batches_tracked"):
            mapped.setdefault(key, torch.zeros_like(value))
    report = fit_report(model, mapped)
    if report:
        raise CheckpointError(
            f"the weights in {source} do not fit timm legacy_xception (DeepfakeBench Xception, mode original): {report}"
        )
    model.load_state_dict(mapped, strict=True)
    return model.eval()
