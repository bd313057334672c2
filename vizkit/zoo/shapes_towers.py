"""Image towers of the zoo's ``shapes_clip`` (a ViT) and ``shapes_clip_cnn`` (a small ResNet),
registered as timm models so that open_clip builds them from a plain config
(``vision_cfg.timm_model_name``; open_clip then adds the max pooling and a linear projection).

Why not open_clip's own ``VisionTransformer`` / ``ModifiedResNet``: on these 64 x 64 scenes a
shape covers a few percent of the image, and towers that read it through a CLS token or an
attention pool, after an 8 x 8 patchify or a stride-4 stem, learn colour at once but shape
barely above chance within a CPU budget (measured: 4-way shape accuracy 0.52 after 600 x 64
scenes for a 3-layer patch-8 ViT, 0.28 for a stride-32 ResNet), while full-resolution 3 x 3
convolutions with a global *max* pool reach 0.96 after 400 x 64. So both towers start with
full-resolution convolutions and end with a max pool:

- ``vizkit_shapes_vit``: a hybrid ViT (Dosovitskiy et al. 2021, section 3.1; "early
  convolutions", Xiao et al. 2021): a 3-stage conv stem (3 x 3 conv, ReLU, 2 x 2 max pool;
  stride 8) gives an 8 x 8 grid of tokens, then 3 pre-norm transformer blocks (width 128,
  4 heads), no class token, max pool over the 64 tokens. timm ``VisionTransformer`` with
  ``HybridEmbed``, so every vizkit ViT path (token grid, attention capture) applies.
- ``vizkit_shapes_resnet``: a small ResNet of timm ``BasicBlock`` s whose stem keeps full
  resolution: stem (3 x 3 conv, BN, ReLU) at 64 x 64, ``layer1`` 32 ch at 64 x 64, ``layer2`` 64
  ch at 32 x 32, ``layer3`` 128 ch at 16 x 16, ``layer4`` 128 ch at 8 x 8, global max pool.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

IMAGE_SIZE = 64


def _cfg() -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 0,
        "input_size": (3, IMAGE_SIZE, IMAGE_SIZE),
        "pool_size": None,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25),
        "first_conv": "",
        "classifier": "head",
    }


def conv_stem(widths: tuple[int, ...] = (32, 64, 64)) -> nn.Sequential:
    """``[B, 3, H, W] -> [B, widths[-1], H/8, W/8]``: per stage a 3 x 3 conv, ReLU, 2 x 2 max pool."""
    layers: list[nn.Module] = []
    c = 3
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c = w
    return nn.Sequential(*layers)


class ShapesResNet(nn.Module):
    """A small ResNet (timm ``BasicBlock`` s) with a full-resolution stem and a global max pool.

    ``forward``: ``[B, 3, H, W] -> [B, num_features]`` (or class logits after ``reset_classifier(n)``).
    """

    def __init__(
        self,
        channels: tuple[int, int, int, int] = (32, 64, 128, 128),
        strides: tuple[int, int, int, int] = (1, 2, 2, 2),
        num_classes: int = 0,
        global_pool: str = "max",
    ):
        from timm.layers import SelectAdaptivePool2d
        from timm.models.resnet import BasicBlock

        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels[0], 3, padding=1, bias=False), nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True)
        )
        stages, c = [], channels[0]
        for w, stride in zip(channels, strides):
            down = None
            if stride != 1 or c != w:
                down = nn.Sequential(nn.Conv2d(c, w, 1, stride=stride, bias=False), nn.BatchNorm2d(w))
            stages.append(BasicBlock(c, w, stride=stride, downsample=down))
            c = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = c
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.fc: nn.Module = nn.Linear(c, num_classes) if num_classes else nn.Identity()
        self.pretrained_cfg = self.default_cfg = _cfg()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        from timm.layers import SelectAdaptivePool2d

        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool or "", flatten=True)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W] -> [B, C, H/8, W/8]`` (default strides)."""
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.global_pool(self.forward_features(x)))


def _drop_factory_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return kwargs


def vizkit_shapes_vit(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """The hybrid ViT tower of ``shapes_clip`` (random weights; the zoo loads the trained ones)."""
    from timm.models.vision_transformer import VisionTransformer
    from timm.models.vision_transformer_hybrid import HybridEmbed

    if pretrained:
        raise ValueError("vizkit_shapes_vit has no downloadable weights: load the zoo checkpoint")
    opts = dict(
        img_size=IMAGE_SIZE,
        patch_size=1,
        embed_dim=128,
        depth=3,
        num_heads=4,
        mlp_ratio=2.0,
        class_token=False,
        global_pool="max",
        num_classes=0,
        embed_layer=partial(HybridEmbed, backbone=conv_stem()),
    )
    opts.update(_drop_factory_kwargs(kwargs))
    model = VisionTransformer(**opts)
    model.pretrained_cfg = model.default_cfg = _cfg()
    return model


def vizkit_shapes_resnet(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """The small ResNet tower of ``shapes_clip_cnn`` (random weights)."""
    if pretrained:
        raise ValueError("vizkit_shapes_resnet has no downloadable weights: load the zoo checkpoint")
    return ShapesResNet(**_drop_factory_kwargs(kwargs))


def register_timm_models() -> None:
    """Make ``timm.create_model("vizkit_shapes_vit" / "vizkit_shapes_resnet")`` work (idempotent)."""
    from timm.models import is_model, register_model

    for fn in (vizkit_shapes_vit, vizkit_shapes_resnet):
        if not is_model(fn.__name__):
            register_model(fn)
