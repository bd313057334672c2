"""DeepfakeBench's side of the parity tests (a helper module, not a test): its detector configs as
published (``deepfakebench_configs/``), random-weight detectors laid out as its ``CLIPDetector`` /
``XceptionDetector`` save them, its test transform, face-crop-like frames, and an independent
functional forward of its Xception written from its key names."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# DeepfakeBench's training/config/detector/clip.yaml and xception.yaml, verbatim
CONFIGS = Path(__file__).resolve().parent / "deepfakebench_configs"
CLIP_YAML = (CONFIGS / "clip.yaml").read_text(encoding="utf-8")
XCEPTION_YAML = (CONFIGS / "xception.yaml").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- CLIP detector
def clip_backbone(hidden: int, heads: int, layers: int = 1, patch: int = 16, image: int = 224) -> torch.nn.Module:
    """DeepfakeBench's backbone: ``CLIPModel(...).vision_model`` (its get_clip_visual), random."""
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        vision_config=dict(
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            image_size=image,
            patch_size=patch,
        ),
        text_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64
        ),
        projection_dim=16,
    )
    return CLIPModel(cfg).vision_model.eval()


class DFBClipDetector(torch.nn.Module):
    """The module layout DeepfakeBench's CLIPDetector saves: ``backbone`` + ``head = Linear(hidden, 2)``."""

    def __init__(self, backbone: torch.nn.Module, hidden: int):
        super().__init__()
        self.backbone, self.head = backbone, torch.nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)["pooler_output"])


def dfb_inputs(paths, resolution: int, mean=(0.5,) * 3, std=(0.5,) * 3) -> torch.Tensor:
    """DeepfakeBench's test transform: cv2.imread, BGR->RGB, cv2.resize INTER_CUBIC, ToTensor, Normalize."""
    xs = []
    for p in paths:
        img = cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
        img = cv2.resize(img, (resolution, resolution), interpolation=cv2.INTER_CUBIC)
        x = torch.from_numpy(img.transpose(2, 0, 1).copy()).float().div(255)
        xs.append((x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])
    return torch.stack(xs)


@torch.no_grad()
def dfb_fake_probs(model: torch.nn.Module, paths, resolution: int) -> dict[str, float]:
    probs = torch.softmax(model(dfb_inputs(paths, resolution)), 1)[:, 1]
    return {Path(p).stem: float(v) for p, v in zip(paths, probs)}


def write_frames(folder: Path, seed: int = 0) -> list[Path]:
    """Face-crop-like PNG frames as DeepfakeBench stores them: 256 px (resized to 224 by CLIP),
    224 px (as is), a grey PNG and an RGBA PNG (cv2.imread makes both 3 channels)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, shape in (
        ("frame256", (256, 256, 3)),
        ("frame224", (224, 224, 3)),
        ("grey256", (256, 256)),
        ("rgba256", (256, 256, 4)),
    ):
        base = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (0, 0), 3)
        img = np.clip(base.astype(np.int16) * 2 - 128 + rng.integers(-20, 21, shape), 0, 255).astype(np.uint8)
        if len(shape) == 3 and shape[2] == 4:
            img[..., 3] = rng.integers(0, 256, shape[:2], dtype=np.uint8)  # alpha must be ignored, not composited
        path = folder / f"{name}.png"
        cv2.imwrite(str(path), img)
        out.append(path)
    return out


def save_dfb_clip(
    tmp_path: Path, hidden: int, heads: int, prefix: str = "", patch: int = 16, seed: int = 0
) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(seed)
    det = DFBClipDetector(clip_backbone(hidden, heads, patch=patch), hidden).eval()
    sd = {f"{prefix}{k}": v for k, v in det.state_dict().items()}
    assert any(k.startswith(f"{prefix}backbone.embeddings.") for k in sd)  # DeepfakeBench's own key layout
    path = tmp_path / f"ckpt_best_{hidden}{prefix.strip('.')}.pth"
    torch.save(sd, path)
    return det, path


# --------------------------------------------------------------------------- Xception detector
# DeepfakeBench Xception blocks: (in, out, reps, stride, start_with_relu, grow_first)
BLOCKS = (
    [(64, 128, 2, 2, False, True), (128, 256, 2, 2, True, True), (256, 728, 2, 2, True, True)]
    + [(728, 728, 3, 1, True, True)] * 8
    + [(728, 1024, 2, 2, True, False)]
)


def rep_ops(cin: int, cout: int, reps: int, start_with_relu: bool, grow_first: bool) -> list[tuple]:
    """DeepfakeBench's ``rep`` list: ('relu',) / ('sep', cin, cout) / ('bn', c), index = key index."""
    ops: list[tuple] = []
    filters = cin
    if grow_first:
        ops += [("relu",), ("sep", cin, cout), ("bn", cout)]
        filters = cout
    for _ in range(reps - 1):
        ops += [("relu",), ("sep", filters, filters), ("bn", filters)]
    if not grow_first:
        ops += [("relu",), ("sep", cin, cout), ("bn", cout)]
    return ops if start_with_relu else ops[1:]


def random_deepfakebench_xception(dropout: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """A DeepfakeBench XceptionDetector state dict (``backbone.*``, adjust_channel included) with
    random weights and BatchNorm statistics."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}

    def conv(name: str, cout: int, cin: int, k: int, bias: bool = False) -> None:
        sd[f"{name}.weight"] = torch.randn(cout, cin, k, k, generator=g) * math.sqrt(2.0 / (cin * k * k))
        if bias:
            sd[f"{name}.bias"] = torch.randn(cout, generator=g) * 0.1

    def bn(name: str, c: int) -> None:  # running statistics: see calibrate() below
        sd[f"{name}.weight"] = 0.5 + torch.rand(c, generator=g)
        sd[f"{name}.bias"] = torch.randn(c, generator=g) * 0.2
        sd[f"{name}.num_batches_tracked"] = torch.tensor(1234)

    def sep(name: str, cin: int, cout: int) -> None:
        conv(f"{name}.conv1", cin, 1, 3)
        conv(f"{name}.pointwise", cout, cin, 1)

    conv("backbone.conv1", 32, 3, 3)
    bn("backbone.bn1", 32)
    conv("backbone.conv2", 64, 32, 3)
    bn("backbone.bn2", 64)
    for i, (cin, cout, reps, stride, start, grow) in enumerate(BLOCKS, 1):
        p = f"backbone.block{i}"
        if cin != cout or stride != 1:
            conv(f"{p}.skip", cout, cin, 1)
            bn(f"{p}.skipbn", cout)
        for j, op in enumerate(rep_ops(cin, cout, reps, start, grow)):
            if op[0] == "sep":
                sep(f"{p}.rep.{j}", op[1], op[2])
            elif op[0] == "bn":
                bn(f"{p}.rep.{j}", op[1])
    sep("backbone.conv3", 1024, 1536)
    bn("backbone.bn3", 1536)
    sep("backbone.conv4", 1536, 2048)
    bn("backbone.bn4", 2048)
    head = "backbone.last_linear.1" if dropout else "backbone.last_linear"
    sd[f"{head}.weight"] = torch.randn(2, 2048, generator=g) * 0.02
    sd[f"{head}.bias"] = torch.randn(2, generator=g) * 0.1
    conv("backbone.adjust_channel.0", 512, 2048, 1, bias=True)
    bn("backbone.adjust_channel.1", 512)
    sd["backbone.adjust_channel.1.running_mean"] = torch.randn(512, generator=g)
    sd["backbone.adjust_channel.1.running_var"] = 0.5 + torch.rand(512, generator=g)

    def calibrate(p: str, t: torch.Tensor) -> None:
        """Random running statistics near those of a random batch, so that activations keep a
        sensible scale through 36 layers and the probabilities do not saturate."""
        c = t.shape[1]
        mean, var = t.mean((0, 2, 3)), t.var((0, 2, 3))
        sd[f"backbone.{p}.running_mean"] = mean + 0.2 * var.sqrt() * torch.randn(c, generator=g)
        sd[f"backbone.{p}.running_var"] = var * (0.7 + 0.6 * torch.rand(c, generator=g)) + 1e-3

    with torch.no_grad():
        reference_logits(sd, torch.randn(4, 3, 160, 160, generator=g), fill_stats=calibrate)
    return sd


def reference_logits(
    sd: dict[str, torch.Tensor],
    x: torch.Tensor,
    final_relu: bool = True,
    fill_stats: Callable[[str, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """DeepfakeBench's Xception (mode original) written functionally from its key names:
    ``[B, 3, H, W] -> [B, num_classes]``. ``fill_stats(name, input)`` (used while building
    random weights) sets a BatchNorm's running statistics before it is applied."""
    strip = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in sd.items()}
    w = {k[len("backbone.") :]: v for k, v in strip.items()}

    def bn(t: torch.Tensor, p: str) -> torch.Tensor:
        if fill_stats is not None:
            fill_stats(p, t)
            w[f"{p}.running_mean"], w[f"{p}.running_var"] = (
                sd[f"backbone.{p}.running_mean"],
                sd[f"backbone.{p}.running_var"],
            )
        return F.batch_norm(
            t, w[f"{p}.running_mean"], w[f"{p}.running_var"], w[f"{p}.weight"], w[f"{p}.bias"], training=False, eps=1e-5
        )

    def sep(t: torch.Tensor, p: str) -> torch.Tensor:
        t = F.conv2d(t, w[f"{p}.conv1.weight"], stride=1, padding=1, groups=t.shape[1])
        return F.conv2d(t, w[f"{p}.pointwise.weight"])

    t = F.relu(bn(F.conv2d(x, w["conv1.weight"], stride=2, padding=0), "bn1"))
    t = F.relu(bn(F.conv2d(t, w["conv2.weight"], stride=1, padding=0), "bn2"))
    for i, (cin, cout, reps, stride, start, grow) in enumerate(BLOCKS, 1):
        p = f"block{i}"
        y = t
        for j, op in enumerate(rep_ops(cin, cout, reps, start, grow)):
            y = F.relu(y) if op[0] == "relu" else sep(y, f"{p}.rep.{j}") if op[0] == "sep" else bn(y, f"{p}.rep.{j}")
        if stride != 1:
            y = F.max_pool2d(y, 3, stride, 1)
        skip = (
            bn(F.conv2d(t, w[f"{p}.skip.weight"], stride=stride), f"{p}.skipbn") if (cin != cout or stride != 1) else t
        )
        t = y + skip
    t = F.relu(bn(sep(t, "conv3"), "bn3"))
    t = bn(sep(t, "conv4"), "bn4")  # DeepfakeBench's "features"
    if final_relu:  # classifier: relu, pool, linear
        t = F.relu(t)
    t = F.adaptive_avg_pool2d(t, 1).flatten(1)
    head = "last_linear.1" if "last_linear.1.weight" in w else "last_linear"
    return F.linear(t, w[f"{head}.weight"], w[f"{head}.bias"])


def write_yaml(path: Path, **keys) -> Path:
    """A detector config YAML holding ``keys`` at ``path``."""
    import yaml

    path.write_text(yaml.safe_dump(keys))
    return path


def cv2_reference(image, size: int, mean, std) -> torch.Tensor:
    """DeepfakeBench's test transform written out: cv2 INTER_CUBIC resize, ToTensor, Normalize; ``[3, size, size]``."""
    import cv2

    a = cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)
    x = torch.from_numpy(a.transpose(2, 0, 1).copy()).float() / 255.0
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
