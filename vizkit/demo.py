"""End-to-end demo: explain one bundled photo with a CNN and a ViT, offline.

    python -m vizkit.demo --output-dir runs/demo [--overwrite]

Writes ``demo_explanations.png`` and ``summary.json`` into the output directory and
nothing anywhere else. The models have RANDOM weights (seeded): no pretrained weights are
available offline, so the maps show how each method works, not what a trained model looks
at. Trained models come later (the model zoo).

- ResNet-18 (torchvision, ``weights=None``): :func:`vizkit.cam` with gradcam, gradcam++,
  layercam and eigencam, ``layers="auto"``, for the predicted class.
- ViT-Tiny/16 (timm ``vit_tiny_patch16_224``, ``pretrained=False``):
  :func:`vizkit.gradient_attention` and :func:`vizkit.rollout` of :func:`vizkit.attention`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import VizkitError
from .io import write_json

# set before anything imports matplotlib / huggingface; explicit settings win
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SAMPLE_IMAGE = Path(__file__).resolve().parent.parent / "data" / "sample" / "chelsea.png"
IMAGE_SIZE = 224
SEED = 0
CAM_METHODS = ("gradcam", "gradcam++", "layercam", "eigencam")
FIGURE_NAME = "demo_explanations.png"
SUMMARY_NAME = "summary.json"
WEIGHTS_NOTE = (
    "random weights (seed 0): no pretrained weights are available offline, so these maps "
    "show how each method works, not what a trained model looks at"
)

_TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "layercam": "LayerCAM", "eigencam": "Eigen-CAM"}


# --------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------
def load_image() -> tuple[Any, str]:
    """The bundled photo as uint8 ``224 x 224 x 3`` RGB and a description of its source.

    Reads ``data/sample/chelsea.png``; if it is missing (e.g. an installed copy without the
    data directory) the same crop is made from ``skimage.data.chelsea()``.
    """
    import numpy as np
    from PIL import Image

    if SAMPLE_IMAGE.is_file():
        with Image.open(SAMPLE_IMAGE) as im:
            img = im.convert("RGB")
        source = str(SAMPLE_IMAGE)
    else:
        from skimage import data

        arr = data.chelsea()  # 300 x 451, CC0 (scikit-image sample data)
        h, w = arr.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        img = Image.fromarray(arr[top : top + side, left : left + side])
        source = "skimage.data.chelsea() (centre crop)"
    if img.size != (IMAGE_SIZE, IMAGE_SIZE):
        img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
    return np.array(img, dtype=np.uint8), source


def to_batch(image: Any, mean: Sequence[float], std: Sequence[float]):
    """uint8 ``H x W x 3`` -> normalised float tensor ``[1, 3, H, W]``."""
    import torch

    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return ((x - m) / s).unsqueeze(0)


def class_names() -> list[str]:
    """ImageNet-1k class names (shipped inside torchvision, no download)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


# --------------------------------------------------------------------------------------
# explanations
# --------------------------------------------------------------------------------------
def _upsample01(maps, size: tuple[int, int]):
    """Raw ``[B, h, w]`` maps -> ``[B, H, W]`` in [0, 1] (bilinear, then min-max per image)."""
    import torch.nn.functional as F

    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    flat = up.flatten(1)
    lo, hi = flat.amin(1)[:, None, None], flat.amax(1)[:, None, None]
    return ((up - lo) / (hi - lo).clamp(min=1e-12)).clamp(0.0, 1.0)


def _stats(heatmap) -> dict[str, Any]:
    h = heatmap.detach().float().cpu()
    peak = int(h.flatten().argmax())
    return {
        "shape": list(h.shape),
        "min": round(float(h.min()), 6),
        "max": round(float(h.max()), 6),
        "mean": round(float(h.mean()), 6),
        "std": round(float(h.std()), 6),
        "peak_yx": [peak // h.shape[-1], peak % h.shape[-1]],
    }


def explain_cnn(image, names: list[str]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """ResNet-18 (random, seeded) with the four CAM methods on its predicted class."""
    import torch
    from torchvision.models import resnet18

    import vizkit

    torch.manual_seed(SEED)
    model = resnet18(weights=None).eval()
    x = to_batch(image, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    with torch.no_grad():
        logits = model(x)
    cls = int(logits.argmax(1))
    prob = float(logits.softmax(1)[0, cls])
    maps, results = [], []
    for method in CAM_METHODS:
        exp = vizkit.cam(model, x, targets=cls, layers="auto", method=method)
        heat = exp.heatmap[0]
        maps.append((method, heat))
        results.append(
            {"method": method, "layers": exp.layers, "score": round(float(exp.scores[0]), 6), "heatmap": _stats(heat)}
        )
    info = {
        "model": "torchvision resnet18(weights=None), torch.manual_seed(0)",
        "weights": "random",
        "input_normalisation": "ImageNet mean/std",
        "predicted_class": {"index": cls, "name": names[cls], "probability": round(prob, 6)},
        "explanations": results,
    }
    return info, maps


def explain_vit(image, names: list[str]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """timm ViT-Tiny/16 (random, seeded): gradient-weighted attention and attention rollout."""
    import timm
    import torch
    from timm.data import resolve_data_config

    import vizkit

    torch.manual_seed(SEED)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    cfg = resolve_data_config({}, model=model)
    x = to_batch(image, cfg["mean"], cfg["std"])
    with torch.no_grad():
        logits = model(x)
    cls = int(logits.argmax(1))
    prob = float(logits.softmax(1)[0, cls])
    size = (x.shape[-2], x.shape[-1])

    ga = vizkit.gradient_attention(model, x, targets=cls)
    attn = vizkit.attention(model, x)
    roll = _upsample01(vizkit.rollout(attn), size)[0]
    last_cls = _upsample01(attn.cls_attention(-1), size)[0]
    maps = [("gradient_attention", ga.heatmap[0]), ("rollout", roll), ("cls_attention_last", last_cls)]
    results = [
        {
            "method": "gradient_attention",
            "head_fusion": "mean",
            "layers": ga.layers,
            "score": round(float(ga.scores[0]), 6),
            "heatmap": _stats(ga.heatmap[0]),
        },
        {
            "method": "rollout",
            "head_fusion": "mean",
            "discard_ratio": 0.0,
            "layers": attn.layers,
            "heatmap": _stats(roll),
        },
        {"method": "cls_attention", "head_fusion": "mean", "layers": [attn.layers[-1]], "heatmap": _stats(last_cls)},
    ]
    info = {
        "model": "timm vit_tiny_patch16_224 (pretrained=False), torch.manual_seed(0)",
        "weights": "random",
        "input_normalisation": f"mean {list(cfg['mean'])}, std {list(cfg['std'])}",
        "patch_grid": list(attn.grid),
        "prefix_tokens": attn.prefix_tokens,
        "predicted_class": {"index": cls, "name": names[cls], "probability": round(prob, 6)},
        "explanations": results,
    }
    return info, maps


# --------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------
def draw(image, cnn: dict, cnn_maps: list, vit: dict, vit_maps: list, out: Path) -> Path:
    from . import render

    def short(layers: list[str]) -> str:
        return layers[0] if len(layers) == 1 else f"{len(layers)} blocks"

    c, v = cnn["predicted_class"], vit["predicted_class"]
    cnn_layers = {e["method"]: e["layers"] for e in cnn["explanations"]}
    cnn_row = [render.Panel(image=image, title=f"predicted {c['index']}:\n{c['name']}", kind="image")]
    cnn_row += [
        render.Panel(image=image, heatmap=h, title=f"{_TITLES[m]}\n@ {short(cnn_layers[m])}") for m, h in cnn_maps
    ]
    vit_titles = {
        "gradient_attention": f"gradient-weighted attn\n@ {short(vit['explanations'][0]['layers'])}",
        "rollout": f"attention rollout\n@ {short(vit['explanations'][1]['layers'])}",
        "cls_attention_last": f"CLS attention\n@ {vit['explanations'][2]['layers'][0]}",
    }
    vit_row = [render.Panel(image=image, title=f"predicted {v['index']}:\n{v['name']}", kind="image")]
    vit_row += [render.Panel(image=image, heatmap=h, title=vit_titles[m]) for m, h in vit_maps]
    fig = render.figure_grid(
        [cnn_row, vit_row],
        titles=["ResNet-18", "ViT-Tiny/16"],
        suptitle=(
            "vizkit demo - RANDOM weights (seed 0), no pretrained weights offline:\n"
            "the maps show how each method works, not what a trained model looks at"
        ),
    )
    return render.save_figure(fig, out / FIGURE_NAME)


def run(output_dir: Path, overwrite: bool = False) -> dict[str, Path]:
    """Run the demo into ``output_dir``; returns the written paths."""
    from .runs import run_folder

    out = run_folder(Path(output_dir), "demo", overwrite=overwrite, overwrite_hint="pass --overwrite")
    start = time.perf_counter()
    image, source = load_image()
    names = class_names()
    cnn, cnn_maps = explain_cnn(image, names)
    vit, vit_maps = explain_vit(image, names)
    figure = draw(image, cnn, cnn_maps, vit, vit_maps, out)

    import torch

    import vizkit

    summary = {
        "vizkit_version": vizkit.__version__,
        "torch_version": torch.__version__,
        "note": WEIGHTS_NOTE,
        "image": {
            "source": source,
            "size": [IMAGE_SIZE, IMAGE_SIZE],
            "origin": "scikit-image sample data 'chelsea' (CC0, photo by Stefan van der Walt)",
        },
        "heatmaps": "each heatmap is [224, 224] with values in [0, 1]",
        "cnn": cnn,
        "vit": vit,
        "figure": FIGURE_NAME,
        "seconds": round(time.perf_counter() - start, 2),
    }
    return {"figure": figure, "summary": write_json(out / SUMMARY_NAME, summary), "data": summary}


def run_notebooks(notebooks: Sequence[Path], output_dir: Path) -> int:
    """``make demo``: execute each notebook into ``output_dir`` (the executed copy beside its run
    folder ``output_dir/<stem>``); one line per notebook; 1 if one failed (the others still run)."""
    from papermill.exceptions import PapermillExecutionError

    from .distributed.execute import execute_notebook

    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for nb in notebooks:
        nb = Path(nb).resolve()
        start = time.perf_counter()
        try:
            execute_notebook(
                nb, output_dir / nb.name, {"output_dir": str(output_dir / nb.stem), "interactive": False}, cwd=nb.parent
            )
        except PapermillExecutionError as err:
            failed += 1
            print(f"vizkit.demo: {nb.name} failed in cell {err.exec_count}: {err.ename}: {err.evalue}", file=sys.stderr)
            continue
        print(f"{nb.name}: executed in {time.perf_counter() - start:.0f} s -> {output_dir / nb.stem}/")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vizkit.demo",
        description="Explain a bundled photo with a ResNet-18 (Grad-CAM family) and a ViT-Tiny "
        "(gradient-weighted attention, rollout). Models have random weights (offline).",
    )
    parser.add_argument("--output-dir", required=True, type=Path, help="directory to write into (created)")
    parser.add_argument(
        "--overwrite", action="store_true", help="allow a non-empty output directory (its demo files are replaced)"
    )
    parser.add_argument(
        "--notebooks",
        nargs="+",
        type=Path,
        default=None,
        help="instead: execute these notebooks (papermill, kernel on IPC sockets) into the output "
        "directory, each with output_dir=<output dir>/<stem> and interactive=False",
    )
    args = parser.parse_args(argv)
    if args.notebooks:
        return run_notebooks(args.notebooks, args.output_dir)
    try:
        result = run(args.output_dir, args.overwrite)
    except VizkitError as exc:
        print(f"vizkit.demo: error: {exc}", file=sys.stderr)
        return 2
    data = result["data"]
    c, v = data["cnn"]["predicted_class"], data["vit"]["predicted_class"]
    print(f"vizkit demo ({data['seconds']} s) on {data['image']['source']}")
    print(f"  NOTE: {WEIGHTS_NOTE}")
    print(
        f"  ResNet-18 predicts {c['index']} '{c['name']}': "
        + ", ".join(f"{e['method']} @ {','.join(e['layers'])}" for e in data["cnn"]["explanations"])
    )
    print(
        f"  ViT-Tiny/16 predicts {v['index']} '{v['name']}': gradient_attention and rollout over "
        f"{len(data['vit']['explanations'][1]['layers'])} blocks"
    )
    print(f"  figure:  {result['figure']}")
    print(f"  summary: {result['summary']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
